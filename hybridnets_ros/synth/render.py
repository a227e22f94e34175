"""Rasterises a synthetic ``World`` at one instant into an image and its exact labels.

Everything is filled with ``cv2.fillPoly`` in painter's order (sky, distant silhouette, ground, roadside, road, lane
paint, then vehicles and roadside objects from far to near). The labels come from the same polygons: the drivable mask
is the road polygon, the lane mask the painted lines (widened to a minimum label width), and both lose every pixel
that a vehicle or roadside object covers. Each vehicle's box is its full projected extent (as in BDD100K), kept
when at least ``MIN_VISIBLE`` of its own pixels are visible after occlusion and image borders.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from hybridnets_ros.synth.geometry import RoadView
from hybridnets_ros.synth.statics import StaticObject, static_polygons
from hybridnets_ros.synth.vehicles import Color, vehicle_polygons
from hybridnets_ros.synth.world import MIN_RENDER_DEPTH, LaneLine, Traffic, World

SHIFT = 4  # fillPoly fixed-point bits: sub-pixel polygon vertices
MIN_VISIBLE = 0.2  # keep a vehicle's box when at least this fraction of it is visible
MAX_ROAD_DEPTH = 300.0
MAX_LANE_DEPTH = 150.0
STATIC_ID = 255
TAIL_LIGHT: Color = (40.0, 40.0, 255.0)
HEAD_LIGHT: Color = (215.0, 240.0, 255.0)


@dataclass(frozen=True)
class Scene:
    """One rendered frame with its labels.

    image_bgr: (H, W, 3) uint8. boxes: (N, 4) float32 x1, y1, x2, y2 in pixels. categories: N BDD100K names
    (car, truck, bus). ids: (N,) int64 vehicle IDs, stable across the frames of a drive. drivable_mask, lane_mask:
    (H, W) uint8 in {0, 255}.
    """

    image_bgr: np.ndarray
    boxes: np.ndarray
    categories: list[str]
    ids: np.ndarray
    drivable_mask: np.ndarray
    lane_mask: np.ndarray


def _fixed(points: np.ndarray) -> list[np.ndarray]:
    """Polygon(s) (n, 2) or (k, n, 2) float px -> list of int32 fixed-point arrays for fillPoly."""
    pts = np.round(np.asarray(points, dtype=np.float64) * (1 << SHIFT)).astype(np.int32)
    return [pts] if pts.ndim == 2 else list(pts)


def _fill(canvas: np.ndarray, points: np.ndarray, color, antialias: bool = False) -> None:
    if np.asarray(points).size == 0:
        return
    value = tuple(int(round(c)) for c in color) if isinstance(color, tuple) else int(color)
    cv2.fillPoly(canvas, _fixed(points), value, cv2.LINE_AA if antialias else cv2.LINE_8, SHIFT)


def _strip(view: RoadView, x_left: float, x_right: float, z: np.ndarray) -> np.ndarray:
    """Ground polygon between two lateral offsets over depths z (m,) -> (2m, 2) px."""
    zeros = np.zeros_like(z)
    left = view.project(np.full_like(z, x_left), zeros, z)
    right = view.project(np.full_like(z, x_right), zeros, z)
    return np.concatenate([left, right[::-1]])


def _lane_polygons(view: RoadView, line: LaneLine, z_near: float, z_far: float,
                   min_label_half: float) -> tuple[np.ndarray, np.ndarray]:
    """Painted and label polygons of one line, each (k, 2m, 2) px (k dashes, or one solid strip)."""
    if line.dash is None:
        z = np.geomspace(z_near, z_far, 64)[None, :]
    else:
        period, length = line.dash
        first = np.floor((view.s0 + z_near - line.phase - length) / period)
        last = np.ceil((view.s0 + z_far - line.phase) / period)
        starts = line.phase + np.arange(first, last + 1) * period - view.s0
        z0, z1 = np.clip(starts, z_near, z_far), np.clip(starts + length, z_near, z_far)
        keep = z1 > z0 + 1e-3
        if not keep.any():
            empty = np.zeros((0, 2, 2))
            return empty, empty
        t = np.linspace(0.0, 1.0, 6)
        z = z0[keep, None] + (z1 - z0)[keep, None] * t
    centre = view.project(np.full_like(z, line.offset), np.zeros_like(z), z)
    edge = view.project(np.full_like(z, line.offset + line.width / 2), np.zeros_like(z), z)
    half = np.abs(edge[..., 0] - centre[..., 0])

    def band(half_px: np.ndarray) -> np.ndarray:
        dx = np.stack([half_px, np.zeros_like(half_px)], axis=-1)
        return np.concatenate([centre - dx, (centre + dx)[:, ::-1]], axis=1)

    return band(np.maximum(half, 0.6)), band(np.maximum(half * 1.15, min_label_half))


def _background(world: World, view: RoadView, ground_row: float) -> np.ndarray:
    """Sky gradient, distant hills or skyline on the ground line, flat ground below it: (H, W, 3) uint8."""
    style, cam = world.style, view.camera
    h, w = cam.height_px, cam.width
    t = np.clip(np.arange(h, dtype=np.float32) / max(ground_row, 1.0), 0.0, 1.0)[:, None, None] ** 1.5
    sky = np.asarray(style.sky_top, np.float32) * (1 - t) + np.asarray(style.sky_horizon, np.float32) * t
    img = cv2.resize(sky.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    u = np.linspace(0.0, w, 65)
    coeffs = world.far_profile
    k = np.arange(1, coeffs.size + 1)
    wave = (coeffs[None, :] * np.sin(np.outer(u / w * 2 * np.pi, k * 0.7) + k) / k).sum(axis=1)
    if style.environment == "urban":
        wave = np.repeat(wave[::4], 4)[: u.size]  # blocky skyline
        heights = h * (0.05 + 0.06 * np.abs(wave))
    else:
        heights = h * 0.05 * (1.2 + wave) * (0.3 if style.environment == "highway" else 1.0)
    ridge = np.stack([u, ground_row - np.clip(heights, 0, None)], axis=1)
    _fill(img, np.concatenate([ridge, [[w, ground_row + 1], [0, ground_row + 1]]]), style.far)
    _fill(img, np.array([[0, ground_row], [w, ground_row], [w, h], [0, h]], float), style.ground)
    return img


def _photometry(world: World, img: np.ndarray, shade: np.ndarray, ground_row: float,
                rng: np.random.Generator, depth: np.ndarray | None = None,
                lights: np.ndarray | None = None) -> np.ndarray:
    """Fog, shadows, texture, vignetting, haze, colour cast, contrast, lights, sensor noise and blur: (H, W, 3) uint8
    -> uint8.

    The smooth factors (texture, vignetting, colour gain, haze attenuation) are computed on a coarse grid and
    upsampled; all full-resolution work is saturating uint8 arithmetic in OpenCV, which keeps a 1280x720 frame cheap.
    ``depth`` (H, W) m is needed when the style has fog; ``lights`` (H, W, 3) uint8 glow is added after the gain
    (lights shine, they are not lit).
    """
    style = world.style
    h, w = img.shape[:2]
    if style.fog_density > 0:
        kept = np.exp(-style.fog_density * depth, dtype=np.float32)[..., None]
        img = (img * kept + np.asarray(style.fog_color, np.float32) * (1.0 - kept)).astype(np.uint8)
    gh, gw = max(2, h // 8), max(2, w // 8)
    texture = cv2.resize(world.texture, (gw, gh), interpolation=cv2.INTER_CUBIC)
    ys = np.linspace(-1, 1, gh, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, gw, dtype=np.float32)[None, :]
    smooth = (1.0 + style.texture_amp * texture) * (1.0 - style.vignette * 0.5 * (xs**2 + ys**2))
    rows = (np.arange(gh, dtype=np.float32) + 0.5) * (h / gh)
    haze_coarse = style.haze_strength * np.exp(-np.abs(rows - ground_row) / (0.12 * h))
    factor = smooth[..., None] * (1.0 - haze_coarse)[:, None, None] * np.asarray(style.gain, np.float32)
    field = cv2.resize(np.clip(factor * 128.0, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    if shade.min() < 255:
        field = cv2.multiply(field, cv2.merge([shade, shade, shade]), scale=1.0 / 255.0)
    out = cv2.multiply(img, field, scale=1.0 / 128.0)
    # Haze is additive only near the ground line, where it is strong enough to matter.
    band = np.nonzero(style.haze_strength * np.exp(-np.abs(np.arange(h) - ground_row) / (0.12 * h)) > 0.01)[0]
    if band.size:
        r0, r1 = int(band[0]), int(band[-1]) + 1
        haze = style.haze_strength * np.exp(-np.abs(np.arange(r0, r1) - ground_row) / (0.12 * h))
        offset = (haze[:, None] * np.asarray(style.haze, np.float32)[None, :]).astype(np.uint8)
        out[r0:r1] = cv2.add(out[r0:r1], cv2.resize(offset[:, None, :], (w, r1 - r0),
                                                    interpolation=cv2.INTER_NEAREST))
    if style.contrast != 1.0:
        # Around the image's own mean grey, so lower contrast does not also brighten a night scene.
        pivot = float(np.mean(cv2.mean(out)[:3]))
        out = cv2.convertScaleAbs(out, alpha=style.contrast, beta=pivot * (1.0 - style.contrast))
    if lights is not None:
        out = cv2.add(out, lights)
    tile = rng.normal(0.0, style.noise_sigma, (128, 128, 3))
    reps = (h // 128 + 1, w // 128 + 1)
    for sign, op in ((1.0, cv2.add), (-1.0, cv2.subtract)):
        part = np.clip(sign * tile, 0, 255).astype(np.uint8)
        out = op(out, cv2.repeat(part, *reps)[:h, :w])
    if style.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), style.blur_sigma)
    return out


def render(world: World, t: float, noise_rng: np.random.Generator) -> Scene:
    """Draw ``world`` at time ``t`` (s); ``noise_rng`` only drives the sensor noise."""
    view, placed = world.pose(t)
    cam, layout, style = view.camera, world.layout, world.style
    h, w = cam.height_px, cam.width
    z_near = max(0.5, 0.6 * cam.ground_depth_at_row(h))
    z_vis = view.visible_depth(z_near, MAX_ROAD_DEPTH)
    ground_row = float(view.project(np.zeros(1), np.zeros(1), np.array([z_vis]))[0, 1])
    img = _background(world, view, ground_row)

    road_z = np.geomspace(z_near, z_vis, 120)
    hw_road = layout.half_width
    if style.roadside_width > 0:
        for sign in (-1.0, 1.0):
            _fill(img, _strip(view, sign * hw_road, sign * (hw_road + style.roadside_width), road_z), style.roadside,
                  True)
    road_poly = _strip(view, -hw_road, hw_road, road_z)
    _fill(img, road_poly, style.road, True)
    drivable = np.zeros((h, w), np.uint8)
    _fill(drivable, road_poly, 255)

    lanes = np.zeros((h, w), np.uint8)
    min_label_half = max(2.0, 4.0 * w / 1280.0)
    for line in layout.lines:
        paint, label = _lane_polygons(view, line, z_near, min(z_vis, MAX_LANE_DEPTH), min_label_half)
        _fill(img, paint, line.color, True)
        _fill(lanes, label, 255)

    shade = np.full((h, w), 255, np.uint8)
    for shadow in world.shadows:
        zc = shadow.s - view.s0
        if zc - shadow.radius_along > z_near and zc + shadow.radius_along < z_vis:
            theta = np.linspace(0.0, 2 * np.pi, len(shadow.jitter), endpoint=False)
            jitter = np.asarray(shadow.jitter)
            outline = view.project(shadow.x + shadow.radius_across * jitter * np.cos(theta), np.zeros_like(theta),
                                   zc + shadow.radius_along * jitter * np.sin(theta))
            _fill(shade, outline, 255 * shadow.darkness)

    ids = np.zeros((h, w), np.uint8)
    labels, vehicles = _draw_objects(world, view, placed, z_vis, img, ids)
    occluded = ids > 0
    shade[occluded] = 255
    drivable[occluded] = 0
    lanes[occluded] = 0
    depth = _depth_map(view, ids, vehicles, placed, ground_row) if style.fog_density > 0 else None
    lights = _vehicle_lights(world, ids, vehicles, placed) if style.vehicle_lights else None
    image = _photometry(world, img, shade, ground_row, noise_rng, depth, lights)
    boxes = np.array([b for b, _, _ in labels], np.float32).reshape(-1, 4)
    return Scene(image, boxes, [c for _, c, _ in labels], np.array([i for _, _, i in labels], np.int64),
                 drivable, lanes)


def _depth_map(view: RoadView, ids: np.ndarray, vehicles: list[tuple[int, int, np.ndarray]],
               placed: list[tuple[Traffic, float]], ground_row: float) -> np.ndarray:
    """Approximate depth (m) of every pixel, (H, W) float32: a flat road's depth by image row (``MAX_ROAD_DEPTH``
    at and above the visible end of the road), each drawn vehicle at the depth of its near face. Roadside objects
    take their row's depth, which is enough for fog."""
    cam = view.camera
    h, w = ids.shape
    rows = np.arange(h, dtype=np.float32) + 0.5
    by_row = cam.focal * cam.height / np.maximum(rows - cam.horizon, 1e-3)
    by_row = np.where(rows > max(ground_row, cam.horizon), np.minimum(by_row, MAX_ROAD_DEPTH), MAX_ROAD_DEPTH)
    depth = np.repeat(by_row.astype(np.float32)[:, None], w, axis=1)
    by_id = np.zeros(256, np.float32)
    for id_value, index, _ in vehicles:
        by_id[id_value] = placed[index][1]
    on_vehicle = (ids > 0) & (ids < STATIC_ID)
    depth[on_vehicle] = by_id[ids[on_vehicle]]
    return depth


def _vehicle_lights(world: World, ids: np.ndarray, vehicles: list[tuple[int, int, np.ndarray]],
                    placed: list[tuple[Traffic, float]]) -> np.ndarray:
    """Glow of two lamps low on each drawn vehicle's facing side (red tail-lights, white headlights on oncoming
    vehicles), only where the lamp itself is visible: (H, W, 3) uint8."""
    h, w = ids.shape
    lamps = np.zeros((h, w, 3), np.float32)
    for id_value, index, (x1, y1, x2, y2) in vehicles:
        width = x2 - x1
        radius = max(1, int(round(0.05 * width)))
        color = HEAD_LIGHT if placed[index][0].lane < world.layout.num_oncoming else TAIL_LIGHT
        y = int(y1 + 0.62 * (y2 - y1))
        for x in (int(x1 + 0.2 * width), int(x2 - 0.2 * width)):
            if 0 <= x < w and 0 <= y < h and ids[y, x] == id_value:
                cv2.circle(lamps, (x, y), radius, color, -1, cv2.LINE_AA)
    if not lamps.any():
        return lamps.astype(np.uint8)
    glow = cv2.GaussianBlur(lamps, (0, 0), max(2.0, 0.006 * w))
    return np.clip(lamps + 1.5 * glow, 0, 255).astype(np.uint8)


def _draw_objects(world: World, view: RoadView, placed: list[tuple[Traffic, float]], z_vis: float, img: np.ndarray,
                  ids: np.ndarray) -> tuple[list[tuple[list[float], str, int]], list[tuple[int, int, np.ndarray]]]:
    """Vehicles and roadside objects far to near into ``img`` and the occlusion map ``ids``.

    ``placed`` is ``World.pose``'s list of (vehicle, depth of its near face). Returns the labels, which carry each
    vehicle's ``uid``, and every drawn vehicle as (its value in ``ids``, its index in ``placed``, its (4,) box).
    """
    cam, style = view.camera, world.style
    h, w = cam.height_px, cam.width
    z_max_vehicle = cam.focal * 1.8 / (0.02 * w) * 1.15
    # (painter depth, index in ``placed`` or -1, object, depth of its near face)
    entries: list[tuple[float, int, Traffic | StaticObject, float]] = []
    for index, (vehicle, z) in enumerate(placed):
        if MIN_RENDER_DEPTH <= z <= z_max_vehicle and z + vehicle.shape.length < z_vis:
            entries.append((z, index, vehicle, z))
    for obj in world.statics:
        z = obj.s - view.s0
        if obj.kind == "building" and z < 1.0 < z + obj.length:  # cut off the part beside or behind the camera
            obj, z = replace(obj, length=z + obj.length - 1.0), 1.0
        if 1.0 <= z < z_vis:
            entries.append((obj.sort_depth(z), -1, obj, z))
    entries.sort(key=lambda e: -e[0])

    shadow_color: Color = tuple(c * 0.3 for c in style.road)  # type: ignore[assignment]
    drawn: list[tuple[int, int, np.ndarray, list[np.ndarray]]] = []  # (traffic index, id value, bbox, polygons)
    for _, index, item, z in entries:
        if isinstance(item, StaticObject):
            for pts, color in static_polygons(view, item, z, style.shading):
                _fill(img, pts, color, True)
                _fill(ids, pts, STATIC_ID)
            continue
        if len(drawn) >= STATIC_ID - 1:  # the occlusion map has one byte per pixel
            continue
        x = world.layout.lane_center(item.lane) + item.lateral
        polys = vehicle_polygons(view, item.shape, x, z, style.shading)
        _fill(img, polys.shadow, shadow_color, True)
        id_value = len(drawn) + 1
        for pts, color in polys.polygons:
            _fill(img, pts, color, True)
            _fill(ids, pts, id_value)
        all_pts = np.concatenate([p.reshape(-1, 2) for p, _ in polys.polygons])
        bbox = np.concatenate([all_pts.min(axis=0), all_pts.max(axis=0)])
        drawn.append((index, id_value, bbox, [p for p, _ in polys.polygons]))

    min_side = max(4.0, 0.008 * w)
    labels = []
    for index, id_value, bbox, polygons in drawn:
        full = _pixel_count(polygons, bbox)
        if full == 0 or _visible_count(ids, id_value, bbox) < MIN_VISIBLE * full:
            continue
        x1, y1 = float(np.clip(bbox[0], 0, w)), float(np.clip(bbox[1], 0, h))
        x2, y2 = float(np.clip(bbox[2], 0, w)), float(np.clip(bbox[3], 0, h))
        if x2 - x1 >= min_side and y2 - y1 >= min_side:
            vehicle = placed[index][0]
            labels.append(([x1, y1, x2, y2], vehicle.shape.category, vehicle.uid))
    return labels, [(id_value, index, bbox) for index, id_value, bbox, _ in drawn]


def _visible_count(ids: np.ndarray, id_value: int, bbox: np.ndarray) -> int:
    """Pixels of the occlusion map ``ids`` (H, W) still showing vehicle ``id_value`` inside its box."""
    h, w = ids.shape
    x0, y0 = max(0, int(np.floor(bbox[0]))), max(0, int(np.floor(bbox[1])))
    x1, y1 = min(w, int(np.ceil(bbox[2])) + 1), min(h, int(np.ceil(bbox[3])) + 1)
    if x1 <= x0 or y1 <= y0:
        return 0
    return int(np.count_nonzero(ids[y0:y1, x0:x1] == id_value))


def _pixel_count(polygons: list[np.ndarray], bbox: np.ndarray) -> int:
    """Pixels a vehicle covers drawn alone and uncropped (its area before occlusion and image borders)."""
    x0, y0 = np.floor(bbox[:2]) - 1
    size = np.ceil(bbox[2:] - bbox[:2]).astype(int) + 3
    canvas = np.zeros((int(size[1]), int(size[0])), np.uint8)
    for pts in polygons:
        _fill(canvas, pts - np.array([x0, y0]), 1)
    return int(np.count_nonzero(canvas))
