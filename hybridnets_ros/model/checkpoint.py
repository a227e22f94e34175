"""Reading and writing HybridNets checkpoints, and building a ready model from one.

Accepted inputs: our format ``{"format": "hybridnets_ros/1", "config": {...}, "model": state_dict, ...}``, a bare
upstream state dict (the official ``hybridnets.pth``), dicts wrapping a state dict under ``model``/``state_dict``,
and DDP ``module.``-prefixed keys.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from hybridnets_ros.model.config import ModelConfig, load_model_config
from hybridnets_ros.model.hybridnets import HybridNets
from hybridnets_ros.resources import DEFAULT_MODEL_CONFIG, resolve_weights

LOG = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hybridnets_ros/1"
_WRAPPER_KEYS = ("model", "state_dict")
_RESERVED_KEYS = ("format", "config", "model")
_SHOW = 5  # how many offending keys an error message lists


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file, the problem and the remedy."""


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for broken files
        raise CheckpointError(
            f"checkpoint '{path}' cannot be read as a torch file ({type(exc).__name__}: {_first_line(exc)}); "
            "it is truncated, corrupt, not a PyTorch checkpoint, or holds objects other than tensors and plain "
            "containers: re-download or re-export it"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Mapping[str, Any] | None]:
    """(state dict, embedded config dict or None) from any accepted layout."""
    if _is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if _is_state_dict(inner):
                embedded = obj.get("config")
                return dict(inner), embedded if isinstance(embedded, Mapping) else None
    what = f"a dict with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(
        f"checkpoint '{path}' holds {what}, not a HybridNets state dict (expected a dict of tensors, or one under "
        f"'model' or 'state_dict'): pass the model weights file, not an optimizer or other file"
    )


def _strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _expected_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    # Built on the meta device: the shapes without allocating or initialising any weights.
    with torch.device("meta"):
        model = HybridNets(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def check_state_dict(state_dict: Mapping[str, torch.Tensor], config: ModelConfig, source: str = "state dict") -> None:
    """Raise CheckpointError unless ``state_dict`` has exactly the keys and shapes of ``HybridNets(config)``."""
    expected = _expected_shapes(config)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(shape)}"
        for k, shape in expected.items()
        if k in state_dict and state_dict[k].shape != shape
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {missing[:_SHOW]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:_SHOW]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (first: {mismatched[:_SHOW]})")
    raise CheckpointError(
        f"{source} does not fit model config '{config.name}' (compound_coef {config.compound_coef}, "
        f"{config.num_classes} classes, {config.seg_out_channels} seg channels, {config.num_anchors} anchors): "
        + "; ".join(problems)
        + ". Pass the model_config matching the checkpoint, or use a checkpoint made for this config"
    )


def load_checkpoint(
    path: str | Path | None, config: ModelConfig | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, validated state dict on CPU) from a checkpoint file (None: the bundled model).

    The config is ``config`` when given, else the one embedded in the checkpoint, else the default d3 BDD100K
    config (bare upstream state dicts carry none). Raises WeightsFileError when there is no readable file and
    CheckpointError when its content is unusable.
    """
    path = resolve_weights(path)
    state_dict, embedded = _unwrap(_read(path), path)
    state_dict = _strip_prefix(state_dict)
    if config is None:
        if embedded is not None:
            try:
                config = ModelConfig.from_dict(embedded)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"checkpoint '{path}' has an invalid embedded model config ({exc}): pass model_config explicitly"
                ) from exc
        else:
            config = load_model_config(DEFAULT_MODEL_CONFIG)
    elif embedded is not None and embedded != config.to_dict():
        LOG.warning("checkpoint %s embeds config %r; using the given config %r instead", path,
                    embedded.get("name"), config.name)
    check_state_dict(state_dict, config, source=f"checkpoint '{path}'")
    return config, state_dict


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig, **extras: Any) -> Path:
    """Write ``{"format", "config", "model", **extras}`` atomically (a crash never leaves a half-written file).

    ``extras`` (epoch, optimizer state, ...) must be loadable with ``weights_only=True``: tensors, numbers, strings
    and containers of them.
    """
    clash = sorted(set(extras) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"save_checkpoint: extras may not use the reserved keys {clash}")
    model = getattr(model, "module", model)  # DataParallel / DDP
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "model": state_dict, **extras}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def build_model(
    weights: str | Path | None = None, config: ModelConfig | None = None, device: str | torch.device = "cpu"
) -> tuple[HybridNets, ModelConfig]:
    """A HybridNets in eval mode on ``device`` with ``weights`` (None: the bundled model) loaded strictly.

    An untrained network is not built here: ask for one explicitly with ``HybridNets(config)``.
    """
    config, state_dict = load_checkpoint(weights, config)
    model = HybridNets(config)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval(), config
