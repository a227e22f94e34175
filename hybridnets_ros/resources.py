"""Where the package's data lives: model configs, bundled weights and node configs.

Installed (colcon or pip) the data sits in ``<prefix>/share/hybridnets_ros``; in a source checkout it sits beside
the Python package. Both are looked up, the installed share first.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_NAME = "hybridnets_ros"
DEFAULT_MODEL_CONFIG = "hybridnets_d3_bdd100k"
BUNDLED_MODEL = "hybridnets_d0_synth"


def _share_candidates() -> list[Path]:
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    shares = [Path(p) / "share" / PACKAGE_NAME for p in prefixes]
    shares.append(Path(__file__).resolve().parents[1])
    return shares


def data_dir(name: str) -> Path:
    """The first existing ``<share>/<name>`` folder (``models``, ``config`` or ``launch``)."""
    for share in _share_candidates():
        candidate = share / name
        if candidate.is_dir():
            return candidate
    searched = ", ".join(str(s / name) for s in _share_candidates())
    raise FileNotFoundError(f"hybridnets_ros data folder '{name}' not found (searched {searched}); reinstall the package")


def models_dir() -> Path:
    return data_dir("models")


def config_dir() -> Path:
    return data_dir("config")


def resolve_model_config(name_or_path: str) -> Path:
    """A model config yaml given as a path, or as a name of one in ``models/`` (with or without ``.yaml``)."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = models_dir() / f"{Path(name_or_path).stem}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in models_dir().glob("*.yaml"))
    raise FileNotFoundError(
        f"model config '{name_or_path}' not found: give a path to a .yaml file or one of the bundled names {known}"
    )


def bundled_weights() -> Path:
    """The checkpoint shipped in ``models/``, used when no ``weights`` is given."""
    return models_dir() / f"{BUNDLED_MODEL}.pt"
