"""The dataset side of a training run: where the BDD100K-layout data lives and which labels it uses.

A project config is a small yaml file, for example::

    dataroot: images                                   # <dataroot>/<split>/<name>.jpg
    labelroot: det_annotations                         # <labelroot>/<split>/<name>.json (BDD100K per-frame JSON)
    segroot: [da_seg_annotations, ll_seg_annotations]  # one mask folder per seg_list entry, same order
    obj_list: [car]                                    # detection classes, in class-ID order
    obj_combine: [car, bus, truck, train]              # categories merged into obj_list[0] (single-class projects)
    seg_list: [road, lane]                             # segmentation classes, IDs 1..S
    train_split: train
    val_split: val

Relative folders are resolved against the yaml file's own folder, so a dataset directory carries its project file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ProjectConfigError(ValueError):
    """A project config that cannot describe a dataset; the message names the file and the field."""


@dataclass(frozen=True)
class ProjectConfig:
    dataroot: Path
    labelroot: Path
    segroot: tuple[Path, ...]
    obj_list: tuple[str, ...]
    seg_list: tuple[str, ...]
    obj_combine: tuple[str, ...] = ()
    train_split: str = "train"
    val_split: str = "val"
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = f"project config {self.source}" if self.source else "project config"
        if not self.obj_list:
            raise ProjectConfigError(f"{where}: obj_list is empty; name at least one detection class")
        if len(self.segroot) != len(self.seg_list):
            raise ProjectConfigError(
                f"{where}: segroot has {len(self.segroot)} folders but seg_list has {len(self.seg_list)} classes; "
                "give one mask folder per seg_list entry, in the same order"
            )
        if self.obj_combine and len(self.obj_list) != 1:
            raise ProjectConfigError(
                f"{where}: obj_combine merges categories into a single class, but obj_list has {len(self.obj_list)}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: Path | None = None, source: Path | None = None) -> ProjectConfig:
        """Build from a parsed yaml dict; relative paths are taken relative to ``base_dir``."""
        where = f"project config {source}" if source else "project config"
        required = ("dataroot", "labelroot", "segroot", "obj_list", "seg_list")
        missing = [key for key in required if key not in data]
        if missing:
            raise ProjectConfigError(f"{where}: missing field(s) {missing}; required are {list(required)}")
        known = set(required) | {"obj_combine", "train_split", "val_split"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProjectConfigError(f"{where}: unknown field(s) {unknown}; known are {sorted(known)}")
        base = base_dir if base_dir is not None else Path.cwd()
        segroot = data["segroot"]
        if isinstance(segroot, str):
            segroot = [segroot]

        def resolve(value: str) -> Path:
            path = Path(value).expanduser()
            return path if path.is_absolute() else (base / path).resolve()

        return cls(
            dataroot=resolve(data["dataroot"]),
            labelroot=resolve(data["labelroot"]),
            segroot=tuple(resolve(p) for p in segroot),
            obj_list=tuple(str(c) for c in data["obj_list"]),
            seg_list=tuple(str(c) for c in data["seg_list"]),
            obj_combine=tuple(str(c) for c in data.get("obj_combine") or ()),
            train_split=str(data.get("train_split", "train")),
            val_split=str(data.get("val_split", "val")),
            source=source,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> ProjectConfig:
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise ProjectConfigError(f"project config {path} does not exist; pass --project PATH/TO/project.yaml")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ProjectConfigError(f"project config {path} is not valid yaml: {err}") from err
        if not isinstance(data, dict):
            raise ProjectConfigError(f"project config {path} must be a yaml mapping, got {type(data).__name__}")
        return cls.from_dict(data, base_dir=path.parent, source=path)

    def split_name(self, split: str) -> str:
        """``train``/``val`` aliases map to the configured folder names; any other name is used as is."""
        return {"train": self.train_split, "val": self.val_split}.get(split, split)

    def class_id(self, category: str) -> int | None:
        """Detection class ID of a BDD100K category, or None when the project does not detect it."""
        if category in self.obj_combine:
            return 0
        try:
            return self.obj_list.index(category)
        except ValueError:
            return None
