"""BDD100K-layout multi-task dataset: letterboxed images, boxes in network pixels and segmentation targets.

Layout (folders from the project config, see ``project.py``)::

    <dataroot>/<split>/<name>.jpg             images, any size
    <labelroot>/<split>/<name>.json           BDD100K per-frame JSON: frames[0].objects[*].{category, box2d}
    <segroot[k]>/<split>/<name>.png           grayscale mask of seg_list[k], the image's size, > 0 = on

Every label is read and checked when the dataset is built: a missing file, malformed JSON or an impossible box raises
``LabelError`` naming the file, unless ``skip_bad_labels`` is set, in which case that image is left out, counted in
``skipped`` and reported in the log. Box labels are normalised by the image's own size (read from its header), so
images of any resolution get correct boxes. Mask pixels are checked when a sample is loaded.

A sample is letterboxed with the inference pipeline's ``Letterbox`` (same geometry and resampling as at run time),
then optionally augmented (``augment.py``). Images stay uint8: the train step normalises them on the device exactly
as the pipeline does.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from hybridnets_ros.conventions import IMAGE_SUFFIXES
from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.training.augment import AugmentConfig, Sample, augment, pack_masks
from hybridnets_ros.training.project import ProjectConfig

logger = logging.getLogger(__name__)

# A box may poke out of its image by this fraction of the image side (annotation slack) before the label counts as
# malformed; beyond it the labels were most likely made for another resolution.
BOX_SLACK = 0.1


class LabelError(ValueError):
    """A missing or malformed label file; the message starts with the file's path."""


@dataclass(frozen=True)
class Entry:
    """One indexed image: its files, real size and boxes normalised by that size (x1,y1,x2,y2 in [0,1])."""

    name: str
    image: Path
    label: Path
    masks: tuple[Path, ...]
    orig_hw: tuple[int, int]
    boxes: np.ndarray    # (N,4) float32 normalised
    classes: np.ndarray  # (N,) int64


class TrainSample(NamedTuple):
    """image (3,H,W) uint8 RGB; annotations (N,5) float32 [x1,y1,x2,y2,cls] network px; seg per ``seg_target``.

    ``letterbox`` maps network pixels back to the original image; it is exact only without augmentation.
    """

    image: torch.Tensor
    annotations: torch.Tensor
    seg: torch.Tensor
    letterbox: Letterbox
    path: str


class Batch(NamedTuple):
    """images (B,3,H,W) uint8; annotations (B,M,5) float32 padded with -1 (M >= 1); seg (B,...) uint8."""

    images: torch.Tensor
    annotations: torch.Tensor
    seg: torch.Tensor
    letterboxes: list[Letterbox]
    paths: list[str]


def parse_det_label(path: Path, project: ProjectConfig, orig_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the project's classes in a BDD100K per-frame JSON, normalised by the image size.

    Returns (boxes (N,4) float32 in [0,1], classes (N,) int64). Objects without ``box2d`` (lanes, areas) and categories
    the project does not detect are ignored. Raises LabelError for anything malformed.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelError(f"{path}: cannot read the detection label as JSON ({err})") from err
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list) or not frames or not isinstance(frames[0], dict):
        raise LabelError(f"{path}: expected a BDD100K per-frame label with a non-empty 'frames' list")
    objects = frames[0].get("objects", [])
    if not isinstance(objects, list):
        raise LabelError(f"{path}: frames[0].objects must be a list, got {type(objects).__name__}")
    h0, w0 = orig_hw
    boxes, classes = [], []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("category"), str):
            raise LabelError(f"{path}: object {i} has no 'category' string")
        box = obj.get("box2d")
        if box is None:
            continue
        class_id = project.class_id(obj["category"])
        if class_id is None:
            continue
        try:
            x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
        except (KeyError, TypeError, ValueError) as err:
            raise LabelError(f"{path}: object {i} box2d must have numeric x1,y1,x2,y2 ({err!r})") from err
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            raise LabelError(f"{path}: object {i} has an impossible box {[x1, y1, x2, y2]}")
        sx, sy = BOX_SLACK * w0, BOX_SLACK * h0
        if x1 < -sx or y1 < -sy or x2 > w0 + sx or y2 > h0 + sy:
            raise LabelError(
                f"{path}: object {i} box {[x1, y1, x2, y2]} lies outside the {w0}x{h0} image; "
                "were the labels made for another resolution?"
            )
        boxes.append((x1 / w0, y1 / h0, x2 / w0, y2 / h0))
        classes.append(class_id)
    boxes_np = np.clip(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), 0.0, 1.0)
    classes_np = np.asarray(classes, dtype=np.int64)
    # Boxes entirely in the slack outside the image are empty after clipping: nothing to learn from them.
    keep = (boxes_np[:, 2] > boxes_np[:, 0]) & (boxes_np[:, 3] > boxes_np[:, 1])
    return boxes_np[keep], classes_np[keep]


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except OSError as err:
        raise LabelError(f"{path}: cannot read the image header ({err})") from err
    return height, width


def seg_target(labels: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor:
    """Packed label field (H,W) uint8 (bit k = class k+1) -> the training target of ``mode``, uint8.

    multiclass: (H,W) class IDs, 0 background, later classes winning overlaps (lane over road);
    binary: (1,H,W) 0/1 of the single class; multilabel: (S+1,H,W) 0/1 with channel 0 = no class at all.
    """
    bits = torch.stack([(labels >> k) & 1 for k in range(num_classes)])  # (S,H,W)
    if mode == "binary":
        return bits[:1].to(torch.uint8)
    if mode == "multilabel":
        background = (labels == 0).to(torch.uint8)[None]
        return torch.cat([background, bits.to(torch.uint8)])
    ids = torch.arange(1, num_classes + 1, dtype=torch.uint8).view(-1, 1, 1)
    return (bits.to(torch.uint8) * ids).amax(dim=0)


class BddDataset(torch.utils.data.Dataset):
    """Images and labels of one split, letterboxed to ``model_config.input_size``; see the module docstring."""

    def __init__(
        self,
        project: ProjectConfig,
        split: str,
        model_config: ModelConfig,
        augment: bool = False,
        skip_bad_labels: bool = False,
        augment_config: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        if (project.obj_list, project.seg_list) != (model_config.obj_list, model_config.seg_list):
            raise ValueError(
                f"project config {project.source or ''} has obj_list {list(project.obj_list)} and seg_list "
                f"{list(project.seg_list)} but model config '{model_config.name}' has {list(model_config.obj_list)} "
                f"and {list(model_config.seg_list)}; the head sizes and class IDs must agree"
            )
        self.project = project
        self.split = project.split_name(split)
        self.config = model_config
        self.augment = augment
        self.augment_config = augment_config or AugmentConfig()
        self.seed = seed
        self.epoch = 0
        self.skipped: list[tuple[Path, str]] = []
        self.entries = self._index(skip_bad_labels)
        if self.skipped:
            logger.warning(
                "%s split '%s': skipped %d of %d images with bad labels (first: %s)",
                project.source or project.dataroot, self.split, len(self.skipped),
                len(self.skipped) + len(self.entries), self.skipped[0][1],
            )

    def _index(self, skip_bad_labels: bool) -> list[Entry]:
        image_dir = self.project.dataroot / self.split
        if not image_dir.is_dir():
            raise LabelError(f"{image_dir}: image folder of split '{self.split}' does not exist")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise LabelError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in split '{self.split}'")
        entries = []
        for image in images:
            try:
                entries.append(self._entry(image))
            except LabelError as err:
                if not skip_bad_labels:
                    raise
                self.skipped.append((image, str(err)))
        if not entries:
            raise LabelError(
                f"{image_dir}: every image of split '{self.split}' has bad labels, e.g. {self.skipped[0][1]}"
            )
        return entries

    def _entry(self, image: Path) -> Entry:
        name = image.stem
        label = self.project.labelroot / self.split / f"{name}.json"
        masks = tuple(root / self.split / f"{name}.png" for root in self.project.segroot)
        for path in (label, *masks):
            if not path.is_file():
                raise LabelError(f"{path}: label file missing for image {image}")
        orig_hw = image_size(image)
        boxes, classes = parse_det_label(label, self.project, orig_hw)
        return Entry(name, image, label, masks, orig_hw, boxes, classes)

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation draws; loader workers see it when they are (re)started for the epoch."""
        self.epoch = epoch

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Entry]:
        """Original-size (image (H0,W0,3) uint8 RGB, boxes (N,4) float32 px, packed labels (H0,W0) uint8, entry)."""
        entry = self.entries[index]
        bgr = cv2.imread(str(entry.image), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise LabelError(f"{entry.image}: cannot decode the image")
        if bgr.shape[:2] != entry.orig_hw:
            raise LabelError(f"{entry.image}: decoded size {bgr.shape[:2]} differs from its header {entry.orig_hw}")
        masks = []
        for path in entry.masks:
            mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise LabelError(f"{path}: cannot decode the mask")
            if mask.shape != entry.orig_hw:
                raise LabelError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                 f"{entry.orig_hw[1]}x{entry.orig_hw[0]}")
            masks.append(mask)
        h0, w0 = entry.orig_hw
        boxes = entry.boxes * np.array([w0, h0, w0, h0], dtype=np.float32)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), boxes, pack_masks(np.stack(masks)), entry

    def __getitem__(self, index: int) -> TrainSample:
        image, boxes, labels, entry = self.load(index)
        letterbox = Letterbox.fit(entry.orig_hw, self.config.input_size)
        image_net = letterbox.image(torch.from_numpy(image).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        labels_net = letterbox.mask(torch.from_numpy(labels)).numpy()
        boxes_net = letterbox.boxes_to_net(torch.from_numpy(boxes)).numpy()
        classes = entry.classes
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            content = (letterbox.pad_top, letterbox.pad_left, *letterbox.resized_hw)
            out = augment(Sample(image_net, boxes_net, classes, labels_net, content), self.augment_config, rng)
            image_net, boxes_net, classes, labels_net = out.image, out.boxes, out.classes, out.labels
        annotations = np.concatenate([boxes_net.reshape(-1, 4), classes.reshape(-1, 1).astype(np.float32)], axis=1)
        labels = torch.from_numpy(np.ascontiguousarray(labels_net))
        return TrainSample(
            image=torch.from_numpy(np.ascontiguousarray(image_net)).permute(2, 0, 1).contiguous(),
            annotations=torch.from_numpy(annotations.astype(np.float32)),
            seg=seg_target(labels, len(self.config.seg_list), self.config.seg_mode),
            letterbox=letterbox,
            path=str(entry.image),
        )


def collate(samples: Sequence[TrainSample]) -> Batch:
    """Stack samples; annotations are padded with -1 rows to the batch's largest box count (at least 1)."""
    most = max(1, max(len(s.annotations) for s in samples))
    annotations = torch.full((len(samples), most, 5), -1.0)
    for i, sample in enumerate(samples):
        annotations[i, : len(sample.annotations)] = sample.annotations
    return Batch(
        images=torch.stack([s.image for s in samples]),
        annotations=annotations,
        seg=torch.stack([s.seg for s in samples]),
        letterboxes=[s.letterbox for s in samples],
        paths=[s.path for s in samples],
    )


def describe(dataset: BddDataset) -> dict[str, Any]:
    """Counts for logs: images, boxes, skipped images."""
    return {
        "split": dataset.split,
        "images": len(dataset),
        "boxes": int(sum(len(e.classes) for e in dataset.entries)),
        "skipped": len(dataset.skipped),
    }
