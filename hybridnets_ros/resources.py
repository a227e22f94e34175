"""Where the package's data lives: model configs, bundled weights and node configs.

Installed (colcon or pip) the data sits in ``<prefix>/share/hybridnets_ros``; in a source checkout it sits beside
the Python package. Both are looked up, the installed share first.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG = logging.getLogger(__name__)

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


class WeightsFileError(FileNotFoundError):
    """The weights name no readable file (missing, a directory, or not readable); the message says which setting
    to change."""


def resolve_weights(weights: str | os.PathLike | None, setting: str = "weights") -> Path:
    """The checkpoint file to load: ``weights``, or the bundled model when it is None (logged once, here).

    ``setting`` names where the user gave the path (``--weights``, the parameter 'weights') for the remedy. Raises
    WeightsFileError when the file is missing, is a directory or cannot be read; whether its content is a usable
    checkpoint is :func:`hybridnets_ros.model.checkpoint.load_checkpoint`'s question.
    """
    if weights is None:
        try:
            path = bundled_weights()
        except FileNotFoundError as exc:  # no models/ folder at all
            raise WeightsFileError(f"no weights given and the bundled model cannot be located: {exc}") from exc
        if not path.is_file():
            raise WeightsFileError(
                f"no weights given and the bundled model {path} does not exist (an incomplete install): reinstall "
                f"the package, or set {setting} to a HybridNets checkpoint"
            )
        LOG.warning("no weights given: using the bundled model %s, trained on synthetic scenes only, so expect poor "
                    "results on real camera images; set %s (e.g. to the official hybridnets.pth) for real use",
                    path, setting)
        return path
    path = Path(weights).expanduser()
    problem = ("is a directory" if path.is_dir() else "does not exist" if not path.exists()
               else "cannot be read (permission denied)" if not os.access(path, os.R_OK) else None)
    if problem is not None:
        raise WeightsFileError(
            f"weights file '{path}' {problem}: set {setting} to a HybridNets checkpoint file (.pt, e.g. "
            "hybridnets.pth or one written by hybridnets-train), or give none for the bundled model"
        )
    return path
