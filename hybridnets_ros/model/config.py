"""Model configuration: the data that fixes a HybridNets architecture and its pre-processing.

A ``ModelConfig`` is read from ``models/<name>.yaml``; the per-compound-coefficient tables (EfficientDet style) live
here too so that everything derived from ``compound_coef`` has one source.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from hybridnets_ros.conventions import SEG_MODES, check_input_hw
from hybridnets_ros.resources import resolve_model_config


@dataclass(frozen=True)
class CoefSpec:
    """Architecture sizes for one compound coefficient."""

    backbone: str
    fpn_num_filters: int
    fpn_cell_repeats: int
    box_class_repeats: int
    anchor_scale: float


_BACKBONE_COEF = (0, 1, 2, 3, 4, 5, 6, 6, 7)
_FPN_NUM_FILTERS = (64, 88, 112, 160, 224, 288, 384, 384, 384)
_FPN_CELL_REPEATS = (3, 4, 5, 6, 7, 7, 8, 8, 8)
_BOX_CLASS_REPEATS = (3, 3, 3, 4, 4, 4, 5, 5, 5)
_ANCHOR_SCALE = (1.25, 1.25, 1.25, 1.25, 1.25, 1.25, 1.25, 1.25, 4.0)
MAX_COMPOUND_COEF = len(_BACKBONE_COEF) - 1


def coef_spec(compound_coef: int) -> CoefSpec:
    """The per-coefficient table row (coef 0..8)."""
    if not isinstance(compound_coef, int) or not 0 <= compound_coef <= MAX_COMPOUND_COEF:
        raise ValueError(f"compound_coef must be an integer in 0..{MAX_COMPOUND_COEF}, got {compound_coef!r}")
    i = compound_coef
    return CoefSpec(
        backbone=f"efficientnet-b{_BACKBONE_COEF[i]}",
        fpn_num_filters=_FPN_NUM_FILTERS[i],
        fpn_cell_repeats=_FPN_CELL_REPEATS[i],
        box_class_repeats=_BOX_CLASS_REPEATS[i],
        anchor_scale=_ANCHOR_SCALE[i],
    )


def _floats(value: Any, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model config: {what} must be a list of numbers, got {value!r}") from exc


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"model config: {what} must be a list of strings, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network's layers, outputs and input normalisation.

    ``input_size`` is the network input (H, W); both must be multiples of 128. ``anchor_ratios`` are (x, y)
    pairs as upstream. ``anchor_scale`` defaults to the per-coefficient table value.
    """

    name: str
    compound_coef: int
    input_size: tuple[int, int]
    obj_list: tuple[str, ...]
    seg_list: tuple[str, ...]
    seg_mode: str = "multiclass"
    anchor_scales: tuple[float, ...] = (2**0, 2**0.70, 2**1.32)
    anchor_ratios: tuple[tuple[float, float], ...] = ((0.62, 1.58), (1.0, 1.0), (1.58, 0.62))
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    anchor_scale: float | None = field(default=None)

    def __post_init__(self) -> None:
        # Normalise containers to tuples (hashable, immutable) and validate; frozen needs object.__setattr__.
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"model config: name must be a non-empty string, got {self.name!r}")
        spec = coef_spec(self.compound_coef)
        set_(self, "input_size", check_input_hw(self.input_size, f"model config '{self.name}': input_size"))
        set_(self, "obj_list", _strings(self.obj_list, "obj_list"))
        set_(self, "seg_list", _strings(self.seg_list, "seg_list"))
        if not self.obj_list:
            raise ValueError(f"model config '{self.name}': obj_list must name at least one detection class")
        if not self.seg_list:
            raise ValueError(f"model config '{self.name}': seg_list must name at least one segmentation class")
        if self.seg_mode not in SEG_MODES:
            raise ValueError(
                f"model config '{self.name}': seg_mode must be one of {list(SEG_MODES)}, got {self.seg_mode!r}"
            )
        if self.seg_mode == "binary" and len(self.seg_list) != 1:
            raise ValueError(
                f"model config '{self.name}': seg_mode 'binary' needs exactly one seg class, seg_list has "
                f"{len(self.seg_list)}; use 'multiclass' or 'multilabel'"
            )
        scales = _floats(self.anchor_scales, "anchor_scales")
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"model config '{self.name}': anchor_scales must be positive numbers, got {list(scales)}")
        set_(self, "anchor_scales", scales)
        ratios = tuple(_floats(r, "each anchor_ratios entry") for r in self.anchor_ratios)
        if not ratios or any(len(r) != 2 or min(r) <= 0 for r in ratios):
            raise ValueError(
                f"model config '{self.name}': anchor_ratios must be a list of positive [x, y] pairs, got "
                f"{[list(r) for r in ratios]}"
            )
        set_(self, "anchor_ratios", ratios)
        for what in ("mean", "std"):
            values = _floats(getattr(self, what), what)
            if len(values) != 3:
                raise ValueError(f"model config '{self.name}': {what} must have 3 values (RGB), got {list(values)}")
            set_(self, what, values)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"model config '{self.name}': std must be positive, got {list(self.std)}")
        anchor_scale = spec.anchor_scale if self.anchor_scale is None else float(self.anchor_scale)
        if not math.isfinite(anchor_scale) or anchor_scale <= 0:
            raise ValueError(f"model config '{self.name}': anchor_scale must be positive, got {self.anchor_scale!r}")
        set_(self, "anchor_scale", anchor_scale)

    @property
    def spec(self) -> CoefSpec:
        return coef_spec(self.compound_coef)

    @property
    def num_classes(self) -> int:
        return len(self.obj_list)

    @property
    def seg_out_channels(self) -> int:
        """1 for binary, else background + one per seg class."""
        return 1 if self.seg_mode == "binary" else len(self.seg_list) + 1

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.anchor_scales) * len(self.anchor_ratios)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model config: unknown keys {unknown}; known keys are {sorted(known)}")
        missing = sorted(k for k in ("name", "compound_coef", "input_size", "obj_list", "seg_list") if k not in data)
        if missing:
            raise ValueError(f"model config: missing required keys {missing}")
        return cls(**dict(data))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ModelConfig":
        yaml = _yaml()
        path = Path(path)
        with path.open("r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if not isinstance(data, Mapping):
            raise ValueError(f"model config {path}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain lists/str/float/int only (yaml- and ``torch.load(weights_only=True)``-safe)."""
        return {
            "name": self.name,
            "compound_coef": self.compound_coef,
            "input_size": list(self.input_size),
            "obj_list": list(self.obj_list),
            "seg_list": list(self.seg_list),
            "seg_mode": self.seg_mode,
            "anchor_scales": list(self.anchor_scales),
            "anchor_ratios": [list(r) for r in self.anchor_ratios],
            "mean": list(self.mean),
            "std": list(self.std),
            "anchor_scale": self.anchor_scale,
        }

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(_yaml().safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


def _yaml() -> Any:
    """PyYAML, imported on first use: the network itself (e.g. ``gpu_check`` on a bare machine) does not need it."""
    try:
        import yaml
    except ImportError as exc:
        raise ImportError("reading or writing model config files needs PyYAML: pip install pyyaml") from exc
    return yaml


def load_model_config(name_or_path: str | Path) -> ModelConfig:
    """A config from a yaml path or a bundled name (e.g. ``hybridnets_d3_bdd100k``)."""
    return ModelConfig.from_yaml(resolve_model_config(str(name_or_path)))
