"""Vehicle shapes of the synthetic scenes: boxes with cabins, windows, lights and wheels, as coloured polygons.

A vehicle is a few axis-aligned boxes ("parts") in its own frame: x across (centred), y up from the road, z away from
the camera starting at its near face (the rear of a vehicle driving away, the front of an oncoming one). Projecting it
through a ``RoadView`` gives painter-ordered polygons; the renderer fills them, so the labels come from the same
polygons as the pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cmp_to_key

import numpy as np

from hybridnets_ros.synth.geometry import RoadView

Color = tuple[float, float, float]  # BGR

BODY_COLORS: tuple[Color, ...] = (
    (235, 235, 235), (200, 200, 195), (150, 150, 150), (95, 95, 95), (40, 40, 40), (40, 40, 190), (35, 30, 125),
    (160, 85, 35), (210, 160, 100), (60, 115, 45), (40, 200, 230), (150, 190, 215), (30, 120, 230), (90, 60, 70),
)
GLASS: Color = (70, 55, 45)
TIRE: Color = (28, 28, 30)
# m behind the near face where the wheels peeking out under it touch the road: the lowest point of a vehicle's box.
NEAR_WHEEL_DEPTH = 0.6
TAIL_LIGHT: Color = (40, 40, 210)
HEAD_LIGHT: Color = (215, 240, 250)
PLATE: Color = (215, 225, 225)
TRIM: Color = (45, 45, 48)

# (category, width, height, length) ranges in metres; category follows BDD100K (vans and SUVs are cars).
VEHICLE_KINDS: dict[str, tuple[str, tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "sedan": ("car", (1.72, 1.90), (1.38, 1.52), (4.2, 4.9)),
    "suv": ("car", (1.80, 2.00), (1.62, 1.85), (4.3, 4.9)),
    "van": ("car", (1.90, 2.10), (2.00, 2.60), (4.8, 6.0)),
    "pickup": ("truck", (1.90, 2.05), (1.75, 1.95), (5.2, 5.9)),
    "box_truck": ("truck", (2.30, 2.50), (3.00, 3.80), (6.5, 9.0)),
    "bus": ("bus", (2.50, 2.55), (3.00, 3.30), (10.0, 12.5)),
}
KIND_WEIGHTS: dict[str, float] = {"sedan": 0.38, "suv": 0.25, "van": 0.1, "pickup": 0.09, "box_truck": 0.1, "bus": 0.08}


@dataclass(frozen=True)
class Part:
    """One box of a vehicle with its colour and the decorations painted on its near face and its sides."""

    x0: float
    x1: float
    y0: float
    y1: float
    z0: float
    z1: float
    color: Color
    near_decor: tuple[tuple[float, float, float, float, Color], ...] = ()  # (a0, a1, b0, b1, colour), face fractions
    side_decor: tuple[tuple[float, float, float, float, Color], ...] = ()  # (t0, t1, b0, b1, colour) along z, up y


@dataclass(frozen=True)
class VehicleShape:
    kind: str
    category: str
    width: float
    height: float
    length: float
    parts: tuple[Part, ...]
    wheels: tuple[tuple[float, float], ...]  # (z centre, radius) of each axle
    oncoming: bool


@dataclass(frozen=True)
class Shading:
    """Brightness factors of a box's faces under the scene's light."""

    near: float = 0.92
    side: float = 0.72
    top: float = 1.08


@dataclass
class VehiclePolygons:
    """Painter-ordered polygons of one vehicle: (points (n,2) px, BGR colour)."""

    polygons: list[tuple[np.ndarray, Color]] = field(default_factory=list)
    shadow: np.ndarray | None = None  # (4,2) px, the dark patch on the road under it


def scale_color(color: Color, factor: float) -> Color:
    """``color`` brightened or darkened by ``factor``, saturating at 255."""
    return tuple(float(min(255.0, c * factor)) for c in color)  # type: ignore[return-value]


def luma(color: Color) -> float:
    """Perceived brightness (BT.601) of a BGR colour."""
    b, g, r = color
    return 0.114 * b + 0.587 * g + 0.299 * r


def pick_body_color(rng: np.random.Generator, road_color: Color, min_contrast: float = 30.0) -> Color:
    """A body colour that differs from the road in brightness, so vehicles stay distinct from the asphalt."""
    for _ in range(8):
        color = BODY_COLORS[int(rng.integers(len(BODY_COLORS)))]
        color = scale_color(color, rng.uniform(0.9, 1.08))
        if abs(luma(color) - luma(road_color)) >= min_contrast:
            return color
    return scale_color(road_color, 2.2) if luma(road_color) < 100 else scale_color(road_color, 0.35)


def build_vehicle(rng: np.random.Generator, kind: str, oncoming: bool, body: Color) -> VehicleShape:
    """Random dimensions of ``kind`` and its parts, seen from behind (or from the front when ``oncoming``)."""
    category, w_range, h_range, l_range = VEHICLE_KINDS[kind]
    w, h, length = (float(rng.uniform(*r)) for r in (w_range, h_range, l_range))
    hw = w / 2
    lights = HEAD_LIGHT if oncoming else TAIL_LIGHT
    bumper = (0.0, 1.0, 0.0, 0.16, TRIM)
    plate = (0.38, 0.62, 0.2, 0.42, PLATE)
    lamp_pair = ((0.03, 0.2, 0.58, 0.84, lights), (0.8, 0.97, 0.58, 0.84, lights))
    grille = (0.3, 0.7, 0.3, 0.62, TRIM)

    def span(a: float, b: float) -> tuple[float, float]:
        """Along-length fractions measured from the rear, mirrored when the front faces the camera."""
        return (length * (1 - b), length * (1 - a)) if oncoming else (length * a, length * b)

    parts: list[Part]
    if kind in ("sedan", "suv", "pickup"):
        clearance, belt = 0.28, h * (0.52 if kind == "sedan" else 0.56)
        cabin = {"sedan": (0.22, 0.76), "suv": (0.04, 0.8), "pickup": (0.42, 0.8)}[kind]
        near = (bumper, grille, *lamp_pair) if oncoming else (bumper, plate, *lamp_pair)
        cz0, cz1 = span(*cabin)
        parts = [
            Part(-hw, hw, clearance, belt, 0.0, length, body, near, ()),
            Part(-hw * 0.86, hw * 0.86, belt, h, cz0, cz1, body,
                 ((0.07, 0.93, 0.08, 0.9, GLASS),), ((0.06, 0.94, 0.12, 0.86, GLASS),)),
        ]
        wheels = (span(0.16, 0.16)[0], span(0.8, 0.8)[0])
        radius = 0.34
    elif kind == "van":
        near_glass = ((0.06, 0.94, 0.6, 0.9, GLASS),) if oncoming else (
            (0.07, 0.47, 0.6, 0.88, GLASS), (0.53, 0.93, 0.6, 0.88, GLASS))
        decor = near_glass + (bumper, (0.02, 0.1, 0.3, 0.55, lights), (0.9, 0.98, 0.3, 0.55, lights))
        cab_window = (0.05, 0.28) if oncoming else (0.72, 0.95)
        side = ((0.06, 0.94, 0.6, 0.86, GLASS),) if rng.random() < 0.5 else ((*cab_window, 0.6, 0.86, GLASS),)
        parts = [Part(-hw, hw, 0.3, h, 0.0, length, body, decor, side)]
        wheels = (span(0.16, 0.16)[0], span(0.82, 0.82)[0])
        radius = 0.36
    elif kind == "box_truck":
        cargo = scale_color(BODY_COLORS[int(rng.integers(3))], rng.uniform(0.85, 1.0))
        cab_h = min(h * 0.78, 2.9)
        cz0, cz1 = span(0.72, 1.0)
        kz0, kz1 = span(0.0, 0.72)
        if oncoming:
            cab_decor = ((0.08, 0.92, 0.55, 0.9, GLASS), (0.05, 0.2, 0.22, 0.34, lights),
                         (0.8, 0.95, 0.22, 0.34, lights), (0.0, 1.0, 0.0, 0.12, TRIM))
        else:  # the back of the cab, mostly hidden by the cargo box
            cab_decor = ((0.3, 0.7, 0.65, 0.85, GLASS),)
        door = ((0.495, 0.505, 0.0, 1.0, TRIM), (0.0, 1.0, 0.0, 0.04, TRIM))
        parts = [
            Part(-hw * 0.96, hw * 0.96, 0.35, cab_h, cz0, cz1, body, cab_decor, ((0.15, 0.8, 0.62, 0.9, GLASS),)),
            Part(-hw, hw, 0.95, h, kz0, kz1, cargo, () if oncoming else door, ()),
            Part(-hw * 0.9, hw * 0.9, 0.45, 0.95, kz0, kz1, TRIM,
                 () if oncoming else ((0.0, 0.16, 0.4, 0.9, lights), (0.84, 1.0, 0.4, 0.9, lights)), ()),
        ]
        wheels = (span(0.12, 0.12)[0], span(0.3, 0.3)[0], span(0.86, 0.86)[0])
        radius = 0.5
    else:  # bus
        near = ((0.05, 0.95, 0.45 if oncoming else 0.68, 0.92, GLASS), bumper,
                (0.04, 0.16, 0.16, 0.3, lights), (0.84, 0.96, 0.16, 0.3, lights))
        side = tuple((t, t + 0.1, 0.55, 0.88, GLASS) for t in np.arange(0.04, 0.9, 0.125))
        parts = [Part(-hw, hw, 0.32, h, 0.0, length, body, near, side)]
        wheels = (span(0.18, 0.18)[0], span(0.8, 0.8)[0])
        radius = 0.5
    return VehicleShape(kind, category, w, h, length, tuple(parts), tuple((z, radius) for z in wheels), oncoming)


def _project_quad(view: RoadView, xs, ys, zs) -> np.ndarray:
    return view.project(np.asarray(xs, float), np.asarray(ys, float), np.asarray(zs, float))


def _face_points(face: str, part: Part, x_at: float, z_at: float, a: np.ndarray, b: np.ndarray):
    """Road-frame points of fractions (a, b) on a face: near face a across, b up; sides a along z, b up."""
    y = part.y0 + b * (part.y1 - part.y0)
    if face == "near":
        return x_at + part.x0 + a * (part.x1 - part.x0), y, np.full_like(a, z_at + part.z0)
    x = part.x0 if face == "left" else part.x1
    return np.full_like(a, x_at + x), y, z_at + part.z0 + a * (part.z1 - part.z0)


def _rect_on_face(view: RoadView, face: str, part: Part, x_at: float, z_at: float, a0, a1, b0, b1) -> np.ndarray:
    a = np.array([a0, a1, a1, a0], float)
    b = np.array([b0, b0, b1, b1], float)
    return _project_quad(view, *_face_points(face, part, x_at, z_at, a, b))


def vehicle_polygons(view: RoadView, shape: VehicleShape, x: float, z: float, shading: Shading) -> VehiclePolygons:
    """Polygons of ``shape`` whose near face is at depth ``z`` and centre at lateral ``x`` (road frame).

    Only faces the camera can see are emitted, part by part (see ``_draw_before``): side, top, near face and its
    decorations; the wheels on the visible side come last.
    """
    out = VehiclePolygons()
    hw, length = shape.width / 2, shape.length
    out.shadow = _project_quad(view, [x - hw * 1.08, x + hw * 1.08, x + hw * 1.08, x - hw * 1.08], [0.0] * 4,
                               [z - 0.25, z - 0.25, z + length + 0.2, z + length + 0.2])
    cam_x_left = view.to_camera(np.array(x - hw), 0.0, np.array(z))[0]
    cam_x_right = view.to_camera(np.array(x + hw), 0.0, np.array(z))[0]
    side_face = "left" if cam_x_left > 0 else "right" if cam_x_right < 0 else None

    # Wheels peeking out under the near face: flat dark rectangles just behind the bumper.
    for sign in (-1.0, 1.0):
        inner, outer = sign * hw * 0.5, sign * hw * 0.94
        out.polygons.append((_project_quad(view, [x + min(inner, outer), x + max(inner, outer)] * 2,
                                           [0.0, 0.0, 0.42, 0.42], [z + NEAR_WHEEL_DEPTH] * 4)[[0, 1, 3, 2]], TIRE))

    for part in sorted(shape.parts, key=cmp_to_key(_draw_before)):
        if side_face is not None:
            out.polygons.append((_rect_on_face(view, side_face, part, x, z, 0.0, 1.0, 0.0, 1.0),
                                 scale_color(part.color, shading.side)))
            for t0, t1, b0, b1, color in part.side_decor:
                out.polygons.append((_rect_on_face(view, side_face, part, x, z, t0, t1, b0, b1),
                                     scale_color(color, shading.side)))
        _, y_cam_top, _ = view.to_camera(np.array(x), np.array(part.y1), np.array(z + part.z0))
        if view.camera.height > float(y_cam_top):
            top = _project_quad(view, [x + part.x0, x + part.x1, x + part.x1, x + part.x0], [part.y1] * 4,
                                [z + part.z0, z + part.z0, z + part.z1, z + part.z1])
            out.polygons.append((top, scale_color(part.color, shading.top)))
        out.polygons.append((_rect_on_face(view, "near", part, x, z, 0.0, 1.0, 0.0, 1.0),
                             scale_color(part.color, shading.near)))
        for a0, a1, b0, b1, color in part.near_decor:
            out.polygons.append((_rect_on_face(view, "near", part, x, z, a0, a1, b0, b1), color))
    if side_face is not None:
        out.polygons.extend(_side_wheels(view, shape, side_face, x, z))
    return out


def _draw_before(a: Part, b: Part) -> int:
    """Painter order of two parts: the one wholly behind the other first; side by side in depth, the lower one
    first (a cabin or a cargo box sits on the body or chassis it overlaps)."""
    if a.z0 >= b.z1 or b.z0 >= a.z1:
        return -1 if a.z0 > b.z0 else 1
    return -1 if a.y0 < b.y0 else (1 if a.y0 > b.y0 else 0)


def _side_wheels(view: RoadView, shape: VehicleShape, face: str, x: float, z: float) -> list[tuple[np.ndarray, Color]]:
    """Wheels on the visible side as projected 12-gons (tyre) with a lighter hub."""
    theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    side_x = x + (-shape.width / 2 if face == "left" else shape.width / 2) * 1.01
    polys = []
    for zc, r in shape.wheels:
        for scale, color in ((1.0, TIRE), (0.5, (110.0, 110.0, 115.0))):
            zs = z + zc + r * scale * np.cos(theta)
            ys = r + r * scale * np.sin(theta)
            polys.append((_project_quad(view, np.full_like(zs, side_x), ys, zs), color))
    return polys
