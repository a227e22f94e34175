"""Scene domains: the source domain (the default scenes, what the bundled model was trained on) and a shifted target.

The target domain changes what a fleet sees when a model trained on one kind of drive meets another: dusk/night light
(darker, lower contrast, a dark sky, more sensor noise, glowing head- and tail-lights), fog on some scenes (each pixel
blended towards the fog colour by 1 - exp(-density * depth)), a camera mounted higher with a wider field of view (a
truck or bus camera), and another lane-marking style (amber paint, short dashes with short gaps).

A target world is a source world from the same generator, shifted by ``shift_world`` with further draws from the
same generator after the source world is complete; the source path draws nothing more, so default scenes keep their
bytes. Labels stay exact: the boxes and masks come from the shifted geometry (lights, fog and contrast only change
pixel values).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hybridnets_ros.synth.geometry import Camera
from hybridnets_ros.synth.vehicles import Shading
from hybridnets_ros.synth.world import YELLOW_PAINT, RoadLayout, Style, World

__all__ = ["Domain", "DOMAINS", "SOURCE", "TARGET", "shift_world"]


@dataclass(frozen=True)
class Domain:
    """How a domain's scenes are drawn; ``shifted`` False is the source generator unchanged.

    Ranges are (low, high) of uniform draws.
    """

    name: str
    shifted: bool
    hfov_deg: tuple[float, float] = (60.0, 85.0)
    camera_height: tuple[float, float] = (1.25, 1.7)  # m
    horizon_fraction: tuple[float, float] = (0.38, 0.5)  # image row of the flat road's vanishing line / height
    brightness: tuple[float, float] = (1.0, 1.0)  # multiplies the scene's colour gain
    contrast: tuple[float, float] = (1.0, 1.0)  # scales pixel deviations from the image's mean grey
    fog_probability: float = 0.0
    fog_density: tuple[float, float] = (0.0, 0.0)  # 1/m
    dash: tuple[tuple[float, float], tuple[float, float]] | None = None  # (period m range, painted fraction range)


SOURCE = Domain("source", shifted=False)
TARGET = Domain("target", shifted=True, hfov_deg=(95.0, 115.0), camera_height=(2.2, 2.8),
                horizon_fraction=(0.34, 0.44), brightness=(0.3, 0.55), contrast=(0.55, 0.75), fog_probability=0.6,
                fog_density=(0.01, 0.035), dash=((3.5, 6.0), (0.5, 0.65)))
DOMAINS = {domain.name: domain for domain in (SOURCE, TARGET)}


def shift_world(world: World, rng: np.random.Generator, domain: Domain) -> World:
    """``world`` seen in ``domain``: the same road, traffic and roadside, another camera, light, fog and paint.

    Draws from ``rng`` only for a shifted domain; an unshifted one returns ``world`` itself.
    """
    if not domain.shifted:
        return world
    camera = _shift_camera(rng, world.camera, domain)
    # No sun, so no cast shadows of roadside trees and buildings.
    return dataclasses.replace(world, camera=camera, style=_shift_style(rng, world.style, domain),
                               layout=_shift_paint(rng, world.layout, domain), shadows=())


def _shift_camera(rng: np.random.Generator, camera: Camera, domain: Domain) -> Camera:
    hfov = np.deg2rad(rng.uniform(*domain.hfov_deg))
    focal = camera.width / 2 / np.tan(hfov / 2)
    return Camera(camera.width, camera.height_px, float(focal), camera.cx,
                  float(camera.height_px * rng.uniform(*domain.horizon_fraction)),
                  float(rng.uniform(*domain.camera_height)))


def _shift_style(rng: np.random.Generator, style: Style, domain: Domain) -> Style:
    """Dusk/night light: dark bluish sky, dimmed and bluer gain, flatter shading, more noise; fog on some scenes."""
    brightness = rng.uniform(*domain.brightness)
    sky = rng.uniform(25.0, 60.0)
    foggy = rng.random() < domain.fog_probability
    density = float(rng.uniform(*domain.fog_density)) if foggy else 0.0
    fog_grey = rng.uniform(120.0, 170.0)
    return dataclasses.replace(
        style,
        sky_top=(sky * 1.3, sky * 0.9, sky * 0.7),
        sky_horizon=(sky * 1.8, sky * 1.5, sky * 1.4),
        haze_strength=style.haze_strength * 0.3,
        gain=tuple(float(g * brightness * c) for g, c in zip(style.gain, (1.1, 0.95, 0.85))),  # type: ignore[arg-type]
        noise_sigma=float(rng.uniform(3.0, 8.0)),
        shading=Shading(near=0.8, side=0.6, top=0.85),
        contrast=float(rng.uniform(*domain.contrast)),
        fog_density=density,
        fog_color=(fog_grey * 1.03, fog_grey, fog_grey * 0.97),
        vehicle_lights=True,
    )


def _shift_paint(rng: np.random.Generator, layout: RoadLayout, domain: Domain) -> RoadLayout:
    """Every marking amber; dashed ones with the domain's shorter period and longer painted fraction."""
    (period_range, fraction_range) = domain.dash or ((9.0, 15.0), (0.25, 0.45))
    period = float(rng.uniform(*period_range))
    painted = period * float(rng.uniform(*fraction_range))
    lines = tuple(dataclasses.replace(line, color=YELLOW_PAINT,
                                      dash=None if line.dash is None else (period, painted),
                                      phase=float(rng.uniform(0.0, period)))
                  for line in layout.lines)
    return dataclasses.replace(layout, lines=lines)
