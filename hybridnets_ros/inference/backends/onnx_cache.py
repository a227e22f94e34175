"""ONNX files for the ONNX-based backends, exported on demand and cached by content.

A backend gets the model as a torch module; exporting the d3 network takes tens of seconds, so the raw-heads ONNX
file is kept in a cache directory under a key made of everything that changes its content: a digest of the weights
(the state dict itself, so the same weights under another file name hit and changed weights in the same file miss),
the model config, the opset, the batch mode, the exporter and the torch version. A second start finds the file.

Cache directory: the ``cache_dir`` option, else ``$HYBRIDNETS_ROS_CACHE``, else ``$XDG_CACHE_HOME/hybridnets_ros``,
else ``~/.cache/hybridnets_ros``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from hybridnets_ros.inference.export import exporter as onnx_export
from hybridnets_ros.model.config import ModelConfig

LOG = logging.getLogger(__name__)

CACHE_ENV = "HYBRIDNETS_ROS_CACHE"
# Bump when the export wrapper changes in a way that changes the produced graph.
EXPORT_FORMAT_VERSION = 1
_CHUNK = 1 << 20


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory (created), see the module docstring for the lookup order."""
    if cache_dir is not None:
        root = Path(cache_dir)
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        root = base / "hybridnets_ros"
    root = root.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def state_dict_digest(model: nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the model's state dict (order-independent of devices)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_cache_key(
    weights_digest: str, config: ModelConfig, opset: int, batch: int | None, exporter: str, variant: str = "raw"
) -> str:
    """A short hex key for one exported ONNX file; any change of an argument (or of torch) changes it."""
    identity = {
        "format": EXPORT_FORMAT_VERSION,
        "weights": weights_digest,
        "config": config.to_dict(),
        "opset": int(opset),
        "batch": "dynamic" if batch is None else int(batch),
        "exporter": exporter,
        "variant": variant,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def check_raw_onnx(path: Path, config: ModelConfig) -> None:
    """ValueError unless ``path`` (if it carries our metadata) is a raw-heads export for ``config``'s input size."""
    meta = onnx_export.read_metadata(path)
    if meta.get("variant", "raw") != "raw":
        raise ValueError(f"ONNX file '{path}' is the '{meta['variant']}' variant; the backends run the raw heads: "
                         "export it with hybridnets-export --variant raw")
    exported = json.loads(meta["model_config"]) if "model_config" in meta else None
    if exported is not None and list(exported["input_size"]) != list(config.input_size):
        raise ValueError(f"ONNX file '{path}' was exported for input {exported['input_size']}, but the model config "
                         f"'{config.name}' has {list(config.input_size)}")


def cached_raw_onnx(
    model: nn.Module,
    config: ModelConfig,
    *,
    onnx_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    opset: int | None = None,
    exporter: str | None = None,
) -> Path:
    """The raw-heads ONNX file (dynamic batch) for ``model``: ``onnx_path`` when given, else from the cache,
    exporting it first when it is not there yet."""
    if onnx_path is not None:
        path = Path(onnx_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file '{path}' not found: export one with hybridnets-export --variant raw")
        check_raw_onnx(path, config)
        return path
    opset = onnx_export.DEFAULT_OPSET if opset is None else opset
    exporter = onnx_export.DEFAULT_EXPORTER if exporter is None else exporter
    key = onnx_cache_key(state_dict_digest(model), config, opset, None, exporter)
    path = cache_root(cache_dir) / f"{config.name}_raw_{key}.onnx"
    if path.is_file():
        LOG.info("using cached ONNX model %s", path)
        return path
    LOG.info("exporting '%s' to ONNX (%s exporter, opset %d) into the cache %s; this takes a while once, "
             "later starts reuse it", config.name, exporter, opset, path)
    start = time.perf_counter()
    onnx_export.export_onnx(model, config, path, variant="raw", opset=opset, batch=None, exporter=exporter)
    LOG.info("ONNX export finished in %.1f s", time.perf_counter() - start)
    return path
