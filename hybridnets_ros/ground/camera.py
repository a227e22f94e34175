"""Camera intrinsics as ROS ``sensor_msgs/CameraInfo`` describes them, mapped onto the image actually published.

CameraInfo gives K and the distortion for the full sensor at calibration resolution; binning and a region of interest
select and shrink part of it, and a driver may publish the result at yet another size. ``CameraModel`` folds all of
that into one affine map from published pixels to calibration pixels, so the rest of the package works in published
pixels only. Pixel centres are at integer coordinates (the ROS and OpenCV convention).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
# Image and calibration aspect ratios may differ by this much and still be taken as a plain resize.
ASPECT_TOLERANCE = 0.01
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)


class CameraModelError(ValueError):
    """CameraInfo that cannot describe the image: the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of a published image.

    ``k`` (3,3) and ``d`` (N,) are the calibration's; ``scale`` and ``offset`` map a published pixel to calibration
    pixels: ``u_cal = scale[0] * u + offset[0]``, likewise for v. ``size`` is the published (width, height).
    """

    k: np.ndarray
    d: np.ndarray
    distortion_model: str
    size: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)
    offset: tuple[float, float] = (0.0, 0.0)

    @property
    def distorted(self) -> bool:
        return bool(np.any(self.d != 0.0))

    def normalized(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Published pixel coordinates (N,) each -> undistorted normalised coordinates (N,2) (x/z, y/z, optical)."""
        u_cal = np.asarray(u, np.float64) * self.scale[0] + self.offset[0]
        v_cal = np.asarray(v, np.float64) * self.scale[1] + self.offset[1]
        if not self.distorted:
            return np.stack([(u_cal - self.k[0, 2]) / self.k[0, 0] - self.k[0, 1] * (v_cal - self.k[1, 2])
                             / (self.k[0, 0] * self.k[1, 1]), (v_cal - self.k[1, 2]) / self.k[1, 1]], axis=-1)
        points = np.stack([u_cal, v_cal], axis=-1).reshape(-1, 1, 2)
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(points, self.k, self.d, criteria=_UNDISTORT_CRITERIA)
        else:
            out = cv2.undistortPoints(points, self.k, self.d, criteria=_UNDISTORT_CRITERIA)
        return out.reshape(-1, 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Optical-frame points (N,3) with z > 0 -> published pixel coordinates (N,2) (u, v)."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        if not self.distorted:
            x = points[:, 0] / points[:, 2]
            y = points[:, 1] / points[:, 2]
            u_cal = self.k[0, 0] * x + self.k[0, 1] * y + self.k[0, 2]
            v_cal = self.k[1, 1] * y + self.k[1, 2]
        else:
            zero = np.zeros(3)
            if self.distortion_model == "equidistant":
                uv, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), zero, zero, self.k, self.d)
            else:
                uv, _ = cv2.projectPoints(points, zero, zero, self.k, self.d)
            u_cal, v_cal = uv.reshape(-1, 2).T
        return np.stack([(u_cal - self.offset[0]) / self.scale[0], (v_cal - self.offset[1]) / self.scale[1]], axis=-1)


def _axis_map(image_px: int, calib_px: float, binning: int, roi_offset: int) -> tuple[float, float]:
    """(scale, offset) along one axis from published pixels to calibration pixels (edge-based then centre-based)."""
    factor = binning * calib_px / image_px
    return factor, roi_offset + 0.5 * factor - 0.5


def camera_model(
    *,
    k: np.ndarray,
    d: np.ndarray,
    distortion_model: str,
    calib_size: tuple[int, int],
    image_size: tuple[int, int],
    binning: tuple[int, int] = (0, 0),
    roi: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> tuple[CameraModel, str | None]:
    """The model of an image of ``image_size`` (width, height) described by CameraInfo fields.

    ``k`` (9,) or (3,3), ``d`` the distortion coefficients, ``calib_size`` CameraInfo (width, height), ``binning``
    (x, y) (0 means 1), ``roi`` (x_offset, y_offset, width, height) (width 0 = full sensor). Returns the model and,
    when the image is a resize of what the CameraInfo describes, a note saying so (else None). Raises
    CameraModelError for a K that cannot be a camera, an unknown distortion model or a size that no resize explains.
    """
    k = np.asarray(k, np.float64).reshape(3, 3)
    d = np.asarray(d, np.float64).ravel()
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1.0:
        raise CameraModelError(f"K {k.ravel().tolist()} is not a camera matrix (needs fx, fy > 0 and K[8] = 1): "
                               "publish a calibrated camera_info (camera_calibration writes one)")
    if not np.all(np.isfinite(d)):
        raise CameraModelError(f"distortion D {d.tolist()} has non-finite values: recalibrate the camera")
    if d.size and np.any(d != 0.0):
        if distortion_model not in DISTORTION_MODELS:
            raise CameraModelError(f"distortion_model '{distortion_model}' is not supported: use one of "
                                   f"{', '.join(DISTORTION_MODELS)}, or publish a rectified image with D all zero")
        wanted = {"equidistant": (4,), "plumb_bob": (4, 5, 8), "rational_polynomial": (8, 12, 14)}[distortion_model]
        if d.size not in wanted:
            raise CameraModelError(f"distortion_model '{distortion_model}' needs {' or '.join(map(str, wanted))} "
                                   f"coefficients, D has {d.size}")
    calib_w, calib_h = calib_size
    if calib_w <= 0 or calib_h <= 0:
        raise CameraModelError(f"camera_info size {calib_w}x{calib_h} is empty: publish the calibration's width "
                               "and height")
    bin_x, bin_y = (max(int(b), 1) for b in binning)
    x_off, y_off, roi_w, roi_h = (int(v) for v in roi)
    sensor_w = (roi_w or calib_w) / bin_x
    sensor_h = (roi_h or calib_h) / bin_y
    image_w, image_h = image_size
    ratio_x, ratio_y = sensor_w / image_w, sensor_h / image_h
    if abs(ratio_x / ratio_y - 1.0) > ASPECT_TOLERANCE:
        raise CameraModelError(
            f"camera_info describes a {sensor_w:g}x{sensor_h:g} image (size {calib_w}x{calib_h}, binning "
            f"{bin_x}x{bin_y}, roi {roi_w}x{roi_h}) but the image is {image_w}x{image_h}, another aspect ratio: "
            "publish the camera_info that belongs to this image stream")
    scale_x, offset_x = _axis_map(image_w, sensor_w, bin_x, x_off)
    scale_y, offset_y = _axis_map(image_h, sensor_h, bin_y, y_off)
    note = None
    if abs(ratio_x - 1.0) > 1e-9 or abs(ratio_y - 1.0) > 1e-9:
        note = (f"the image is {image_w}x{image_h} but camera_info describes {sensor_w:g}x{sensor_h:g}: intrinsics "
                f"scaled by {1 / ratio_x:.4g}")
    model = CameraModel(k=k, d=d if d.size else np.zeros(0), distortion_model=distortion_model,
                        size=(int(image_w), int(image_h)), scale=(scale_x, scale_y), offset=(offset_x, offset_y))
    return model, note
