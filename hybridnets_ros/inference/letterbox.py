"""Letterboxing: resize an image into the network input keeping its aspect ratio, pad the rest, and map back.

Shared by inference and training, so images, boxes and masks go through exactly the same geometry.
The resize follows OpenCV semantics so that results match the reference pre-processing bit for bit:
shrinking uses ``INTER_AREA`` (box-coverage averaging), enlarging uses bilinear interpolation, masks use
``INTER_NEAREST`` (floor of the source coordinate). Everything runs in torch on the tensors' device.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hybridnets_ros.conventions import PAD_VALUE


# cv2 ignores partial source cells narrower than this (computeResizeAreaTab).
_AREA_EPS = 1e-3


def _inverse_scale(src: int, dst: int) -> float:
    # OpenCV computes the source step as 1 / (dst / src); keep its double rounding so indices agree exactly.
    return 1.0 / (dst / src)


# The area taps of an axis are (dst, K) with K ~ src / dst: kilobytes for camera images, but ~60 MB for a 1-pixel-high
# image 5 M pixels wide. The cache of recently used ones is therefore bounded by bytes, not by entries.
AREA_TAPS_CACHE_BYTES = 64 * 2**20


class _BytesBoundedCache:
    """Least-recently-used cache of (index, weight) array pairs holding at most ``max_bytes``; thread-safe.
    A pair larger than the whole budget is not kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[int, int], entry: tuple[np.ndarray, np.ndarray]) -> None:
        size = sum(a.nbytes for a in entry)
        with self._lock:
            if size > self.max_bytes or key in self._entries:
                return
            self._entries[key] = entry
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= sum(a.nbytes for a in evicted)


_AREA_TAPS_CACHE = _BytesBoundedCache(AREA_TAPS_CACHE_BYTES)


def _area_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """``_compute_area_taps(src, dst)``, kept in a cache bounded by ``AREA_TAPS_CACHE_BYTES``."""
    taps = _AREA_TAPS_CACHE.get((src, dst))
    if taps is None:
        taps = _compute_area_taps(src, dst)
        _AREA_TAPS_CACHE.put((src, dst), taps)
    return taps


def _compute_area_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of each destination cell for an area (box) downscale along one axis.

    Returns ``(index (dst,K) int64, weight (dst,K) float32)``, taps in ascending source order, unused taps padded with
    weight 0. Destination cell ``d`` covers ``[d*s, (d+1)*s)`` in source coordinates with ``s = src/dst``; each source
    pixel contributes its overlap divided by the cell width, as cv2 ``INTER_AREA`` does.
    """
    scale = _inverse_scale(src, dst)
    rows: list[list[tuple[int, float]]] = []
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s2 = min(int(np.floor(f2)), src - 1)
        s1 = min(int(np.ceil(f1)), s2)
        taps: list[tuple[int, float]] = []
        if s1 - f1 > _AREA_EPS:
            taps.append((s1 - 1, (s1 - f1) / cell))
        taps.extend((s, 1.0 / cell) for s in range(s1, s2))
        if f2 - s2 > _AREA_EPS:
            taps.append((s2, min(f2 - s2, 1.0, cell) / cell))
        rows.append(taps)
    width = max(len(t) for t in rows)
    index = np.zeros((dst, width), dtype=np.int64)
    weight = np.zeros((dst, width), dtype=np.float32)
    for d, taps in enumerate(rows):
        for k, (s, w) in enumerate(taps):
            index[d, k] = s
            weight[d, k] = w
    return index, weight


def _take(x: torch.Tensor, dim: int, index: np.ndarray) -> torch.Tensor:
    """``x.index_select(dim, index)``, as a strided view when the indices are evenly spaced (integer scales)."""
    step = int(index[1] - index[0]) if len(index) > 1 else 1
    if step >= 1 and np.array_equal(index, index[0] + step * np.arange(len(index))):
        view = [slice(None)] * x.dim()
        view[dim] = slice(int(index[0]), int(index[-1]) + 1, step)
        return x[tuple(view)]
    return x.index_select(dim, torch.from_numpy(index).to(x.device))


def _area_axis(x: torch.Tensor, dim: int, dst: int) -> torch.Tensor:
    """Area-downscale ``x`` along ``dim`` to ``dst`` samples in float32, accumulating taps in cv2's order.

    Gathering before the float conversion keeps the first pass on uint8 (4x less memory traffic).
    """
    index, weight_np = _area_taps(x.shape[dim], dst)
    shape = [1] * x.dim()
    shape[dim] = dst
    weight = torch.from_numpy(weight_np).to(x.device)
    out = None
    for k in range(index.shape[1]):
        term = _take(x, dim, index[:, k]).to(torch.float32) * weight[:, k].reshape(shape)
        out = term if out is None else out + term
    return out


def _nearest_index(src: int, dst: int, device: torch.device) -> torch.Tensor:
    """cv2 INTER_NEAREST source index of each destination sample: floor(d * src/dst), capped at src-1. (dst,)"""
    idx = np.minimum(np.floor(np.arange(dst, dtype=np.float64) * _inverse_scale(src, dst)), src - 1)
    return torch.from_numpy(idx.astype(np.int64)).to(device)


def resize_area(images: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """cv2 ``INTER_AREA`` downscale of uint8 images (..., H, W) -> (..., out_h, out_w) uint8 (out <= in on both axes).

    Separable: rows of box-coverage weights along W, then along H, in float32 like OpenCV. Rounding matches cv2's
    paths: the exact 2x2 path rounds halves up, every other path rounds to nearest even.
    """
    h, w = images.shape[-2:]
    out_h, out_w = out_hw
    if out_h > h or out_w > w:
        raise ValueError(f"resize_area only shrinks: {h}x{w} -> {out_h}x{out_w}")
    x = _area_axis(images, images.dim() - 1, out_w)
    x = _area_axis(x, x.dim() - 2, out_h)
    if _inverse_scale(w, out_w) == 2.0 and _inverse_scale(h, out_h) == 2.0:
        x = torch.floor(x + 0.5)
    else:
        x = torch.round(x)
    return x.clamp_(0, 255).to(torch.uint8)


def resize_bilinear(images: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of uint8 (..., H, W) -> (..., out_h, out_w) uint8, pixel-centre aligned like cv2 INTER_LINEAR.

    cv2 uses 11-bit fixed point for uint8 and this float32, so values may differ from cv2's by one grey level.
    """
    lead = images.shape[:-2]
    x = images.reshape(-1, 1, *images.shape[-2:]).to(torch.float32)
    x = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False)
    x = torch.round(x).clamp_(0, 255).to(torch.uint8)
    return x.reshape(*lead, *out_hw)


def resize_image(images: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Resize uint8 (..., H, W) as cv2 ``INTER_AREA`` does: area when shrinking both axes, else bilinear."""
    h, w = images.shape[-2:]
    if (h, w) == tuple(out_hw):
        return images
    if out_hw[0] <= h and out_hw[1] <= w:
        return resize_area(images, out_hw)
    return resize_bilinear(images, out_hw)


def resize_nearest(masks: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """cv2 ``INTER_NEAREST`` resize of (..., H, W) (any dtype) -> (..., out_h, out_w)."""
    h, w = masks.shape[-2:]
    if (h, w) == tuple(out_hw):
        return masks
    rows = _nearest_index(h, out_hw[0], masks.device)
    cols = _nearest_index(w, out_hw[1], masks.device)
    return masks.index_select(-2, rows).index_select(-1, cols)


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterbox: original image -> resized -> padded to the network input.

    Scaling is uniform up to the rounding of the resized size, so the inverse uses per-axis scales
    ``resized/orig`` (for 16:9 inputs both equal the reference's single gain).
    """

    orig_hw: tuple[int, int]
    net_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    pad_top: int
    pad_left: int

    @classmethod
    def fit(cls, orig_hw: Sequence[int], net_hw: Sequence[int]) -> "Letterbox":
        """Largest uniform scale (up or down) that fits ``orig_hw`` into ``net_hw``, padding centred.

        Like the reference ``letterbox(auto=False)``: top = round(dh - 0.1), left = round(dw - 0.1).
        """
        h0, w0 = int(orig_hw[0]), int(orig_hw[1])
        net_h, net_w = int(net_hw[0]), int(net_hw[1])
        if h0 <= 0 or w0 <= 0:
            raise ValueError(f"cannot letterbox an empty image of size {h0}x{w0}")
        scale = min(net_h / h0, net_w / w0)
        new_h = min(net_h, max(1, int(round(h0 * scale))))
        new_w = min(net_w, max(1, int(round(w0 * scale))))
        top = int(round((net_h - new_h) / 2 - 0.1))
        left = int(round((net_w - new_w) / 2 - 0.1))
        return cls((h0, w0), (net_h, net_w), (new_h, new_w), max(top, 0), max(left, 0))

    @property
    def scale_xy(self) -> tuple[float, float]:
        """(sx, sy): network pixels per original pixel along x and y."""
        return self.resized_hw[1] / self.orig_hw[1], self.resized_hw[0] / self.orig_hw[0]

    def _place(self, resized: torch.Tensor, pad_value: int) -> torch.Tensor:
        out = resized.new_full((*resized.shape[:-2], *self.net_hw), pad_value)
        rh, rw = self.resized_hw
        out[..., self.pad_top : self.pad_top + rh, self.pad_left : self.pad_left + rw] = resized
        return out

    def _check_orig(self, hw: Sequence[int]) -> None:
        if tuple(hw) != self.orig_hw:
            raise ValueError(f"expected an image of size {self.orig_hw}, got {tuple(hw)}")

    def image(self, img: torch.Tensor, pad_value: int = PAD_VALUE) -> torch.Tensor:
        """(C,H0,W0) or (B,C,H0,W0) uint8 -> (..., net_h, net_w) uint8: area/bilinear resize, then pad."""
        self._check_orig(img.shape[-2:])
        return self._place(resize_image(img, self.resized_hw), pad_value)

    def mask(self, mask: torch.Tensor, pad_value: int = 0) -> torch.Tensor:
        """(..., H0, W0) label mask -> (..., net_h, net_w): nearest resize (labels stay labels), then pad."""
        self._check_orig(mask.shape[-2:])
        return self._place(resize_nearest(mask, self.resized_hw), pad_value)

    def boxes_to_net(self, boxes: torch.Tensor) -> torch.Tensor:
        """(..., 4) x1y1x2y2 in original pixels -> network-input pixels."""
        sx, sy = self.scale_xy
        scale = boxes.new_tensor([sx, sy, sx, sy])
        offset = boxes.new_tensor([self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        return boxes * scale + offset

    def boxes_to_orig(self, boxes: torch.Tensor) -> torch.Tensor:
        """(..., 4) x1y1x2y2 in network pixels -> original pixels, clipped to [0, w0] x [0, h0]."""
        sx, sy = self.scale_xy
        scale = boxes.new_tensor([sx, sy, sx, sy])
        offset = boxes.new_tensor([self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        h0, w0 = self.orig_hw
        upper = boxes.new_tensor([w0, h0, w0, h0])
        return torch.minimum(((boxes - offset) / scale).clamp_(min=0), upper)

    def crop_padding(self, mask: torch.Tensor) -> torch.Tensor:
        """(..., net_h, net_w) -> (..., resized_h, resized_w): the part of the network input the image covers."""
        if tuple(mask.shape[-2:]) != self.net_hw:
            raise ValueError(f"expected a mask of size {self.net_hw}, got {tuple(mask.shape[-2:])}")
        rh, rw = self.resized_hw
        return mask[..., self.pad_top : self.pad_top + rh, self.pad_left : self.pad_left + rw]

    def mask_to_orig(self, mask: torch.Tensor) -> torch.Tensor:
        """(..., net_h, net_w) -> (..., h0, w0): crop the padding, then nearest resize to the original size."""
        return resize_nearest(self.crop_padding(mask), self.orig_hw)


def letterbox_images(
    images: Sequence[torch.Tensor], net_hw: Sequence[int], pad_value: int = PAD_VALUE
) -> tuple[torch.Tensor, list[Letterbox]]:
    """Letterbox differently sized uint8 images (C,H,W), all on one device, into one (B,C,net_h,net_w) uint8 tensor.

    Images of equal size are resized together as one batch.
    """
    if not images:
        raise ValueError("letterbox_images needs at least one image")
    net_hw = (int(net_hw[0]), int(net_hw[1]))
    boxes = [Letterbox.fit(img.shape[-2:], net_hw) for img in images]
    first = images[0]
    out = first.new_full((len(images), first.shape[0], *net_hw), pad_value)
    groups: dict[Letterbox, list[int]] = {}
    for i, lb in enumerate(boxes):
        groups.setdefault(lb, []).append(i)
    for lb, members in groups.items():
        # stack copies into a contiguous (B,C,H,W): gathers along W on channel-interleaved (HWC) views are slow.
        batch = torch.stack([images[i] for i in members])
        resized = resize_image(batch, lb.resized_hw)
        rh, rw = lb.resized_hw
        index = torch.tensor(members, device=out.device)
        region = out[:, :, lb.pad_top : lb.pad_top + rh, lb.pad_left : lb.pad_left + rw]
        region.index_copy_(0, index, resized)
    return out, boxes
