"""What a synthetic scene contains and how it moves: camera, road layout, colours, traffic, roadside objects.

A ``World`` is sampled once from a random generator; ``World.pose(t)`` places the camera and every vehicle at time t
(seconds). A single still image is the world at t = 0; a drive is the same world at t = k / fps, so the road, the
traffic and the roadside move smoothly from frame to frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridnets_ros.synth.geometry import Camera, RoadProfile, RoadView
from hybridnets_ros.synth.statics import StaticObject, sample_static
from hybridnets_ros.synth.vehicles import (
    KIND_WEIGHTS,
    Color,
    Shading,
    VehicleShape,
    build_vehicle,
    luma,
    pick_body_color,
)

WHITE_PAINT: Color = (240.0, 242.0, 242.0)
YELLOW_PAINT: Color = (35.0, 185.0, 225.0)
ENVIRONMENTS = ("rural", "urban", "highway", "desert")
MIN_RENDER_DEPTH = 3.5  # m; nearer vehicles are beside or under the camera and are not drawn


@dataclass(frozen=True)
class LaneLine:
    offset: float  # m from the road centre line
    width: float  # m of paint
    color: Color
    dash: tuple[float, float] | None  # (period, painted length) in m; None is a solid line
    phase: float  # m along the road where a dash starts


@dataclass(frozen=True)
class RoadLayout:
    lane_width: float
    num_lanes: int
    num_oncoming: int  # the leftmost lanes carry oncoming traffic
    margin: float  # m of asphalt outside the edge lines
    lines: tuple[LaneLine, ...]

    @property
    def half_width(self) -> float:
        return self.num_lanes * self.lane_width / 2 + self.margin

    def lane_center(self, lane: int) -> float:
        return (lane + 0.5 - self.num_lanes / 2) * self.lane_width


@dataclass(frozen=True)
class Style:
    """Colours and photometry of one scene."""

    environment: str
    sky_top: Color
    sky_horizon: Color
    ground: Color
    road: Color
    roadside: Color  # shoulder, gravel or sidewalk band beside the asphalt
    roadside_width: float  # m
    far: Color  # distant hills or skyline
    haze: Color
    haze_strength: float
    gain: tuple[float, float, float]  # per-channel multiplier (brightness and colour cast)
    texture_amp: float
    noise_sigma: float
    blur_sigma: float
    vignette: float
    shading: Shading
    # The source scenes keep these defaults; the target domain (synth.domain) sets them.
    contrast: float = 1.0  # pixel deviations from the image's mean grey scaled by this factor
    fog_density: float = 0.0  # 1/m; a pixel at depth z keeps exp(-density z) of its colour
    fog_color: Color = (0.0, 0.0, 0.0)
    vehicle_lights: bool = False  # glowing tail-lights (headlights on oncoming vehicles)


@dataclass(frozen=True)
class Traffic:
    shape: VehicleShape
    lane: int
    lateral: float  # m from the lane centre
    s: float  # m along the road at t = 0
    speed: float  # m/s along the road (negative: oncoming)
    sway: tuple[float, float, float]  # amplitude (m), angular rate (rad/s), phase of a smooth speed variation
    uid: int  # stable vehicle ID within its world

    def position(self, t: float) -> float:
        amp, rate, phase = self.sway
        return self.s + self.speed * t + amp * (np.sin(rate * t + phase) - np.sin(phase))


@dataclass(frozen=True)
class CastShadow:
    """A blotchy shadow of something off the road, lying on the ground around (s, x) with radii (m) along and
    across the road; ``darkness`` is the brightness factor inside it."""

    s: float
    x: float
    radius_along: float
    radius_across: float
    darkness: float
    jitter: tuple[float, ...]  # radius factors of its outline


@dataclass(frozen=True)
class World:
    camera: Camera
    profile: RoadProfile
    layout: RoadLayout
    style: Style
    traffic: tuple[Traffic, ...]
    statics: tuple[StaticObject, ...]
    shadows: tuple[CastShadow, ...]
    far_profile: np.ndarray  # (8,) Fourier coefficients of the distant silhouette
    texture: np.ndarray  # (h, w) float32 low-frequency brightness field, resized to the image
    ego_lane: int
    ego_lateral: float
    ego_speed: float
    bounce: tuple[float, float]  # px amplitude and rad/s of the camera's pitch bounce while driving

    def pose(self, t: float) -> tuple[RoadView, list[tuple[Traffic, float]]]:
        """Camera view at time t and the (vehicle, depth of its near face) pairs to draw, unsorted."""
        s_ego = self.ego_speed * t
        offset = self.layout.lane_center(self.ego_lane) + self.ego_lateral + 0.12 * np.sin(0.35 * t)
        amp, rate = self.bounce
        camera = self.camera
        if t:
            camera = Camera(camera.width, camera.height_px, camera.focal, camera.cx,
                            camera.horizon + amp * np.sin(rate * t), camera.height)
        view = RoadView(camera, self.profile, s_ego, float(offset))
        placed = [(v, float(v.position(t) - s_ego - v.shape.length / 2)) for v in self.traffic]
        return view, placed


def _sample_camera(rng: np.random.Generator, width: int, height: int) -> Camera:
    hfov = np.deg2rad(rng.uniform(60.0, 85.0))
    focal = width / 2 / np.tan(hfov / 2)
    return Camera(width, height, float(focal), float(width / 2 + rng.normal(0, width * 0.02)),
                  float(height * rng.uniform(0.38, 0.5)), float(rng.uniform(1.25, 1.7)))


def _sample_layout(rng: np.random.Generator, environment: str) -> RoadLayout:
    lane_width = rng.uniform(3.0, 3.8)
    if environment == "highway":
        num_lanes = int(rng.integers(2, 6))
        num_oncoming = 0
    else:
        num_lanes = int(rng.choice([1, 2, 2, 3, 4]))
        num_oncoming = int(rng.integers(1, num_lanes // 2 + 1)) if num_lanes >= 2 and rng.random() < 0.7 else 0
    margin = rng.uniform(0.3, 1.0)
    paint_w = rng.uniform(0.12, 0.2)
    period = rng.uniform(9.0, 15.0)
    dash_len = period * rng.uniform(0.25, 0.45)
    yellow_center = rng.random() < 0.5
    lines = []
    for j in range(num_lanes + 1):
        offset = (j - num_lanes / 2) * lane_width
        if j in (0, num_lanes):
            if rng.random() < 0.85:
                color = YELLOW_PAINT if j == 0 and num_oncoming == 0 and rng.random() < 0.3 else WHITE_PAINT
                lines.append(LaneLine(offset - np.sign(offset) * 0.15, paint_w, color, None, 0.0))
        elif j == num_oncoming:
            color = YELLOW_PAINT if yellow_center else WHITE_PAINT
            if rng.random() < 0.5:
                for d in (-0.17, 0.17):
                    lines.append(LaneLine(offset + d, paint_w * 0.8, color, None, 0.0))
            else:
                dash = None if rng.random() < 0.4 else (period, dash_len)
                lines.append(LaneLine(offset, paint_w, color, dash, float(rng.uniform(0, period))))
        else:
            dash = None if rng.random() < 0.12 else (period, dash_len)
            lines.append(LaneLine(offset, paint_w, WHITE_PAINT, dash, float(rng.uniform(0, period))))
    return RoadLayout(lane_width, num_lanes, num_oncoming, margin, tuple(lines))


def _jitter(rng: np.random.Generator, color: Color, spread: float) -> Color:
    return tuple(float(np.clip(c + rng.normal(0, spread), 0, 255)) for c in color)  # type: ignore[return-value]


def _sample_style(rng: np.random.Generator, environment: str) -> Style:
    weather = rng.choice(["sunny", "overcast", "dusk"], p=[0.6, 0.28, 0.12])
    road_l = rng.uniform(62, 125)
    road = _jitter(rng, (road_l, road_l * 1.01, road_l * 1.02), 4)
    ground = {
        "rural": (rng.uniform(35, 70), rng.uniform(105, 150), rng.uniform(60, 100)),
        "highway": (rng.uniform(40, 75), rng.uniform(110, 145), rng.uniform(80, 120)),
        "urban": (rng.uniform(120, 150),) * 3,
        "desert": (rng.uniform(100, 130), rng.uniform(150, 180), rng.uniform(180, 205)),
    }[environment]
    roadside = {
        "rural": (rng.uniform(100, 120), rng.uniform(120, 140), rng.uniform(128, 150)),
        "highway": (rng.uniform(130, 160),) * 3,
        "urban": (rng.uniform(165, 195),) * 3,
        "desert": (rng.uniform(110, 140), rng.uniform(150, 175), rng.uniform(170, 200)),
    }[environment]
    # Keep the road edge visible: the band beside the asphalt must differ from it in brightness.
    if abs(luma(roadside) - road_l) < 35:
        roadside = tuple(min(255.0, c + 45) for c in roadside)
    if weather == "sunny":
        sky_top, sky_horizon = (rng.uniform(170, 220), rng.uniform(120, 160), rng.uniform(60, 100)), (235, 215, 195)
        gain = (1.0, 1.0, 1.0)
        shading = Shading(near=rng.uniform(0.85, 1.0), side=rng.uniform(0.6, 0.8), top=rng.uniform(1.05, 1.2))
    elif weather == "overcast":
        grey = rng.uniform(170, 215)
        sky_top, sky_horizon = (grey, grey - 2, grey - 5), (grey + 20, grey + 20, grey + 18)
        gain = (0.92, 0.92, 0.9)
        shading = Shading(near=0.92, side=0.82, top=1.02)
    else:
        sky_top, sky_horizon = (120, 90, 80), (120, 170, 235)
        gain = (0.78, 0.85, 1.0)
        shading = Shading(near=0.85, side=0.65, top=1.0)
    brightness = rng.uniform(0.8, 1.15)
    cast = rng.uniform(0.93, 1.07, 3)
    return Style(
        environment=environment,
        sky_top=_jitter(rng, sky_top, 6),
        sky_horizon=_jitter(rng, sky_horizon, 6),
        ground=_jitter(rng, ground, 5),
        road=road,
        roadside=_jitter(rng, roadside, 4),
        roadside_width=float(rng.uniform(1.5, 3.5) if environment == "urban" else rng.uniform(0.0, 2.0)),
        far=_jitter(rng, (110, 120, 105) if environment != "urban" else (150, 140, 135), 12),
        haze=_jitter(rng, sky_horizon, 5),
        haze_strength=float(rng.uniform(0.15, 0.5)),
        gain=tuple(float(g * brightness * c) for g, c in zip(gain, cast)),  # type: ignore[arg-type]
        texture_amp=float(rng.uniform(0.03, 0.09)),
        noise_sigma=float(rng.uniform(1.0, 6.0)),
        blur_sigma=float(rng.choice([0.0, 0.0, rng.uniform(0.5, 1.3)])),
        vignette=float(rng.uniform(0.0, 0.25)),
        shading=shading,
    )


def _sample_lane(rng: np.random.Generator, layout: RoadLayout, style: Style, lane: int, ego_lane: int,
                 ego_speed: float, duration: float, z_max: float, density: float) -> list[Traffic]:
    """One lane's vehicles, spaced by random gaps, over the stretch of road a drive of ``duration`` s will see.

    Vehicles are laid out from a start point forwards and backwards with separate random streams, so a longer
    drive only adds vehicles at the ends: its first frames are the same as a shorter drive's.
    """
    params, ahead, behind = rng.spawn(3)
    oncoming = lane < layout.num_oncoming
    if oncoming:
        speed = -params.uniform(7.0, 13.0)
    else:
        speed = ego_speed + (0.0 if lane == ego_lane else params.uniform(-3.0, 3.0))
    relative = speed - ego_speed
    # Vehicles in the ego lane move with the camera: none closer than 6 m, none behind it.
    lo = 6.0 if lane == ego_lane else min(0.0, -relative * duration) - 10.0
    hi = z_max + max(0.0, -relative * duration)
    start = (8.0 if lane == ego_lane else -5.0) + params.exponential(20.0 / density)
    kinds = list(KIND_WEIGHTS)
    weights = np.array([KIND_WEIGHTS[k] for k in kinds])

    def vehicle(stream: np.random.Generator, z_near: float, uid: int) -> Traffic:
        kind = kinds[int(stream.choice(len(kinds), p=weights / weights.sum()))]
        shape = build_vehicle(stream, kind, oncoming, pick_body_color(stream, style.road))
        lateral = stream.uniform(-0.35, 0.35) * (layout.lane_width - shape.width)
        # Only gentle surges in the ego lane, so the car ahead never comes close to the camera.
        sway = (float(stream.uniform(0.0, 1.0 if lane == ego_lane else 2.0)), float(stream.uniform(0.1, 0.4)),
                float(stream.uniform(0, 2 * np.pi)))
        return Traffic(shape, lane, float(lateral), float(z_near + shape.length / 2), float(speed), sway, uid)

    def gap(stream: np.random.Generator) -> float:
        return 4.0 + stream.exponential(25.0 / density)

    traffic: list[Traffic] = []
    z, k = start, 0
    while z < hi:
        traffic.append(vehicle(ahead, z, lane * 100_000 + 50_000 + k))
        z += traffic[-1].shape.length + gap(ahead)
        k += 1
    z, k = start, 0
    while True:
        z -= gap(behind)
        car = vehicle(behind, 0.0, lane * 100_000 + 49_999 - k)
        z -= car.shape.length
        if z < lo:
            break
        traffic.append(Traffic(car.shape, lane, car.lateral, z + car.shape.length / 2, speed, car.sway, car.uid))
        k += 1
    return traffic


def _sample_statics(rng: np.random.Generator, layout: RoadLayout, style: Style, s_max: float) -> list[StaticObject]:
    """Roadside objects on both sides, every few metres, from just behind the camera to ``s_max``.

    Each (side, kind) row has its own random stream, so a longer drive only appends objects.
    """
    env = style.environment
    if env == "desert":
        choices = {"pole": (40.0, 0.6)}
    elif env == "urban":
        choices = {"building": (0.0, 1.0), "tree": (18.0, 0.5), "pole": (30.0, 0.8)}
    elif env == "highway":
        choices = {"tree": (20.0, 0.5), "pole": (45.0, 0.7)}
    else:
        choices = {"tree": (12.0, 0.9), "pole": (40.0, 0.4), "building": (0.0, 0.2)}
    edge = layout.half_width + style.roadside_width
    rows = [(side, kind, spacing, prob) for side in (-1.0, 1.0) for kind, (spacing, prob) in choices.items()]
    statics: list[StaticObject] = []
    for (side, kind, spacing, prob), stream in zip(rows, rng.spawn(len(rows))):
        if stream.random() > prob:
            continue
        s = stream.uniform(-10.0, 10.0)
        while s < s_max:
            if kind == "building":
                obj = sample_static(stream, kind, s, edge + stream.uniform(0.5, 6.0), side)
                statics.append(obj)
                s += obj.length + stream.uniform(0.5, 12.0)
                continue
            gap = stream.uniform(0.3, 8.0) if kind == "tree" else 0.4
            statics.append(sample_static(stream, kind, s, edge + gap, side))
            s += spacing * stream.uniform(0.6, 1.6)
    return statics


def _sample_shadows(rng: np.random.Generator, layout: RoadLayout, s_max: float) -> list[CastShadow]:
    """Blotchy shadows of off-road trees and buildings at the road's edges, every few tens of metres."""
    shadows = []
    s = rng.uniform(3.0, 30.0)
    while s < s_max:
        side = rng.choice([-1.0, 1.0])
        x = side * (layout.half_width + rng.uniform(-4.0, 3.0))
        shadows.append(CastShadow(float(s), float(x), float(rng.uniform(1.0, 3.5)), float(rng.uniform(1.5, 4.0)),
                                  float(rng.uniform(0.65, 0.85)), tuple(rng.uniform(0.75, 1.1, 12))))
        s += rng.uniform(8.0, 40.0)
    return shadows


def sample_world(rng: np.random.Generator, width: int, height: int, duration: float = 0.0) -> World:
    """A random world for ``width`` x ``height`` images, populated for a drive of ``duration`` seconds.

    Everything but the traffic, roadside objects and shadows is drawn first from ``rng``; those come from spawned
    streams that a longer ``duration`` only extends, so the world at time t does not depend on ``duration``.
    """
    environment = str(rng.choice(ENVIRONMENTS, p=[0.35, 0.25, 0.3, 0.1]))
    camera = _sample_camera(rng, width, height)
    curviness, hilliness = rng.uniform(0, 1, 2) ** 1.5
    profile = RoadProfile.sample(rng, curviness=float(curviness), hilliness=float(hilliness))
    layout = _sample_layout(rng, environment)
    style = _sample_style(rng, environment)
    ego_lane = int(rng.integers(layout.num_oncoming, layout.num_lanes))
    ego_speed = float(rng.uniform(8.0, 14.0))
    density = float(rng.uniform(0.6, 2.0)) if rng.random() > 0.05 else 0.05
    far_profile = rng.normal(0.0, 1.0, 8)
    texture = rng.normal(0.0, 1.0, (6, 10)).astype(np.float32)
    ego_lateral = float(rng.uniform(-0.3, 0.3) * (layout.lane_width - 1.9))
    bounce = (float(rng.uniform(0.0, 0.004) * height), float(rng.uniform(1.0, 3.0)))
    # Farthest vehicles are still ~2 % of the image width wide, so every labelled car is big enough to learn.
    z_max = camera.focal * 1.8 / (0.02 * width)
    lane_streams = rng.spawn(layout.num_lanes)
    statics_stream, shadow_stream = rng.spawn(2)
    traffic = [vehicle for lane, stream in enumerate(lane_streams)
               for vehicle in _sample_lane(stream, layout, style, lane, ego_lane, ego_speed, duration, z_max, density)]
    statics = _sample_statics(statics_stream, layout, style, 260.0 + ego_speed * duration)
    sunny = style.shading.side < 0.8
    shadows = _sample_shadows(shadow_stream, layout, 80.0 + ego_speed * duration) if sunny else []
    return World(
        camera=camera,
        profile=profile,
        layout=layout,
        style=style,
        traffic=tuple(traffic),
        statics=tuple(statics),
        shadows=tuple(shadows),
        far_profile=far_profile,
        texture=texture,
        ego_lane=ego_lane,
        ego_lateral=ego_lateral,
        ego_speed=ego_speed,
        bounce=bounce,
    )
