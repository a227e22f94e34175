"""Fitting anchor scales and ratios to a dataset's boxes (k-means); the ``hybridnets-anchors`` command is
:mod:`hybridnets_ros.training.anchors`.

Convention (``model/anchors.py``): at pyramid level l (stride s_l = 8, 16, ..., 128) the anchor of scale ``sc`` and
ratio ``(rw, rh)`` is ``anchor_scale * s_l * sc * rw`` wide and ``... * rh`` high. Ratios are written with
rw * rh = 1, like the upstream [(0.62, 1.58), (1, 1), (1.58, 0.62)] (product 0.98).

In log space a box (w, h) is a size coordinate ``u = log2(sqrt(w h) / (anchor_scale * s_0))`` (octaves above the
finest level's base size) and a shape coordinate ``v = ln(w / h) / 2``. An anchor sits at
``u = log2(s_l / s_0) + log2(sc)`` and ``v = ln(rw)``, so the squared distance between a box and an anchor splits
into a size part and a shape part, and k-means in log space separates into two one-dimensional problems:

* ratios: plain k-means of ``v`` (one centre per ratio);
* scales: k-means of ``u`` against a codebook repeated at every pyramid level, the centre of scale j being the mean
  of ``u - level_offset`` over the boxes whose nearest codeword is (any level, j).

Both are Lloyd iterations from several seeded starts (one of them the current anchors), keeping the lowest sum of
squared distances, so the result is deterministic for a given ``seed``. Shapes alone cannot tell scale s at level l
from 2s at the next finer level, so k-means returns scales in [1, 2) and ``choose_octaves`` then doubles those scales
for which the finer, denser grid covers the sampled boxes better (the upstream scales span 2**0..2**1.32 likewise).

Quality is reported as the mean best IoU and the best possible recall (BPR: the fraction of boxes that some anchor
matches well enough to be a positive for the detection loss: IoU >= 0.5, or >= 0.15 for boxes of at most 100 px^2).
``*_shape`` values compare shapes only (anchor and box sharing a centre, all levels); ``*_positional`` values use the
real anchor grid of the model config on a sample of boxes, as the loss's matcher sees it.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from hybridnets_ros.conventions import PYRAMID_STRIDES
from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.inference.nms import box_iou
from hybridnets_ros.model.anchors import generate_anchors
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.resources import resolve_model_config
from hybridnets_ros.training.dataset import BddDataset

# The detection loss's positive-anchor rule (reference FocalLoss): IoU >= 0.5, or >= 0.15 for boxes <= 100 px^2.
POSITIVE_IOU = 0.5
SMALL_BOX_POSITIVE_IOU = 0.15
SMALL_BOX_AREA = 100.0
MIN_BOX_SIDE = 1.0  # boxes thinner than a network pixel carry no shape information
DECIMALS = 4
QUALITY_KEYS = ("mean_best_iou_shape", "bpr_shape", "mean_best_iou_positional", "bpr_positional")


@dataclass(frozen=True)
class AnchorSet:
    """Per-level anchor multipliers: scales (S,) and ratios (R,) of (rw, rh) pairs."""

    scales: tuple[float, ...]
    ratios: tuple[tuple[float, float], ...]

    @classmethod
    def of(cls, config: ModelConfig) -> "AnchorSet":
        return cls(tuple(config.anchor_scales), tuple(tuple(r) for r in config.anchor_ratios))

    def rounded(self, decimals: int = DECIMALS) -> "AnchorSet":
        return AnchorSet(
            tuple(round(s, decimals) for s in self.scales),
            tuple((round(rw, decimals), round(rh, decimals)) for rw, rh in self.ratios),
        )


# ------------------------------------------------------------------------------------------------ quality metrics
def anchor_shapes(anchors: AnchorSet, anchor_scale: float, strides: Sequence[int] = PYRAMID_STRIDES) -> torch.Tensor:
    """(L*S*R, 2) float64 (w, h) of every anchor shape over all pyramid levels."""
    stride = torch.tensor(strides, dtype=torch.float64)[:, None, None]
    scale = torch.tensor(anchors.scales, dtype=torch.float64)[None, :, None]
    ratios = torch.tensor(anchors.ratios, dtype=torch.float64)  # (R, 2)
    base = (anchor_scale * stride * scale)[..., None]  # (L, S, 1, 1)
    return (base * ratios[None, None]).reshape(-1, 2)


def shape_iou(wh: torch.Tensor, anchor_wh: torch.Tensor) -> torch.Tensor:
    """IoU of boxes and anchors placed on a common centre: (M, 2) x (A, 2) -> (M, A)."""
    inter = torch.minimum(wh[:, None, 0], anchor_wh[None, :, 0]) * torch.minimum(wh[:, None, 1], anchor_wh[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchor_wh[:, 0] * anchor_wh[:, 1])[None, :] - inter
    return inter / union


def positive_iou(wh: torch.Tensor) -> torch.Tensor:
    """(M, 2) box sizes -> (M,) the IoU an anchor needs to be a positive for that box in the detection loss."""
    small = wh[:, 0] * wh[:, 1] <= SMALL_BOX_AREA
    return torch.where(small, SMALL_BOX_POSITIVE_IOU, POSITIVE_IOU).to(wh.dtype)


def shape_quality(wh: torch.Tensor, anchors: AnchorSet, anchor_scale: float, chunk: int = 65536) -> dict[str, float]:
    """``mean_best_iou_shape`` and ``bpr_shape`` of box sizes (M, 2) against every anchor shape (0.0 when M = 0)."""
    if wh.shape[0] == 0:
        return {"mean_best_iou_shape": 0.0, "bpr_shape": 0.0}
    wh = wh.to(torch.float64)
    shapes = anchor_shapes(anchors, anchor_scale)
    best = torch.cat([shape_iou(part, shapes).max(dim=1).values for part in wh.split(chunk)])  # bounded memory
    return {
        "mean_best_iou_shape": float(best.mean()),
        "bpr_shape": float((best >= positive_iou(wh)).to(torch.float64).mean()),
    }


def positional_quality(boxes: torch.Tensor, config: ModelConfig, anchors: AnchorSet, chunk: int = 128) -> dict[str, float]:
    """How the real anchor grid of ``config`` with ``anchors`` covers boxes (M, 4) x1y1x2y2 in network pixels.

    ``bpr_positional``: fraction of boxes that some anchor matches as a loss positive; ``mean_best_iou_positional``:
    mean over boxes of the best anchor IoU. Both 0.0 when M = 0.
    """
    if boxes.shape[0] == 0:
        return {"mean_best_iou_positional": 0.0, "bpr_positional": 0.0}
    candidate = replace(config, anchor_scales=anchors.scales, anchor_ratios=anchors.ratios)
    grid_xyxy = generate_anchors(candidate, config.input_size)[:, [1, 0, 3, 2]]
    boxes = boxes.to(torch.float32)
    best = torch.cat([box_iou(part, grid_xyxy).max(dim=1).values for part in boxes.split(chunk)])
    wh = boxes[:, 2:] - boxes[:, :2]
    return {
        "mean_best_iou_positional": float(best.to(torch.float64).mean()),
        "bpr_positional": float((best >= positive_iou(wh)).to(torch.float64).mean()),
    }


def choose_octaves(fitted: AnchorSet, boxes: torch.Tensor, config: ModelConfig) -> AnchorSet:
    """Among ``fitted`` and its copies with some scales doubled, the one whose real grid covers ``boxes`` best.

    A scale s at level l and 2s at the next finer level have the same shape, but the finer level's grid is twice as
    dense, so its anchors sit closer to the boxes; k-means on shapes cannot see that. Ranked by positional BPR, then
    mean best IoU; ties keep the fewest doublings (the first candidate).
    """
    best, best_key = fitted, None
    for doubled in itertools.product((False, True), repeat=len(fitted.scales)):
        scales = tuple(sorted(s * (2.0 if d else 1.0) for s, d in zip(fitted.scales, doubled)))
        candidate = AnchorSet(scales, fitted.ratios)
        quality = positional_quality(boxes, config, candidate)
        key = (round(quality["bpr_positional"], 9), round(quality["mean_best_iou_positional"], 9))
        if best_key is None or key > best_key:
            best, best_key = candidate, key
    return best


# ---------------------------------------------------------------------------------------------------------- k-means
@dataclass(frozen=True)
class _SortedValues:
    """1-D values sorted once, with prefix sums of v and v^2: any interval's count, sum and sum of squares in O(1)."""

    values: torch.Tensor  # (M,) ascending
    prefix: torch.Tensor  # (M+1,)
    prefix_sq: torch.Tensor  # (M+1,)

    @classmethod
    def of(cls, values: torch.Tensor) -> "_SortedValues":
        v = torch.sort(values.to(torch.float64)).values
        zero = torch.zeros(1, dtype=torch.float64)
        return cls(v, torch.cat([zero, v.cumsum(0)]), torch.cat([zero, (v * v).cumsum(0)]))


@dataclass(frozen=True)
class _Cells:
    """The nearest-codeword cells of a codebook over sorted values, codewords in ascending order (C = L*K)."""

    order: torch.Tensor  # (C,) flat codeword index (l * K + j) of each cell
    codeword: torch.Tensor  # (C,) its value
    count: torch.Tensor  # (C,) values in the cell
    total: torch.Tensor  # (C,) their sum
    inertia: float  # sum of squared distances of every value to its codeword


def _cells(data: _SortedValues, centres: torch.Tensor, offsets: torch.Tensor) -> _Cells:
    """In 1-D the cells are the intervals between midpoints of the sorted codewords: a search and prefix sums."""
    codewords = (offsets[:, None] + centres[None, :]).reshape(-1)
    order = torch.argsort(codewords, stable=True)
    cw = codewords[order]
    bounds = torch.searchsorted(data.values, (cw[1:] + cw[:-1]) / 2)
    last = torch.full((1,), data.values.numel(), dtype=torch.int64)
    edges = torch.cat([torch.zeros(1, dtype=torch.int64), bounds, last])
    count = (edges[1:] - edges[:-1]).to(torch.float64)
    total = data.prefix[edges[1:]] - data.prefix[edges[:-1]]
    total_sq = data.prefix_sq[edges[1:]] - data.prefix_sq[edges[:-1]]
    inertia = float((total_sq - 2 * cw * total + count * cw**2).sum().clamp(min=0))
    return _Cells(order, cw, count, total, inertia)


def _lloyd_1d(
    data: _SortedValues, centres: torch.Tensor, offsets: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, float]:
    """k-means of 1-D values against the codebook ``offsets[l] + centres[j]`` (every offset, every centre).

    Each exact Lloyd step costs O(L K log M) thanks to ``_cells``. Returns (centres (K,), inertia). Empty clusters
    keep their centre. offsets (L,): a single 0 gives plain k-means.
    """
    k = centres.numel()
    offset_of = offsets.repeat_interleave(k)  # flat codeword index l * K + j
    cluster_of = torch.arange(k).repeat(offsets.numel())
    for _ in range(iterations):
        cells = _cells(data, centres, offsets)
        residual = cells.total - cells.count * offset_of[cells.order]  # sum of (v - offset_l) over each cell
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, cluster_of[cells.order], residual)
        counts = torch.zeros(k, dtype=torch.float64).index_add_(0, cluster_of[cells.order], cells.count)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        converged = torch.allclose(updated, centres, rtol=0.0, atol=1e-12)
        centres = updated
        if converged:
            break
    return centres, _cells(data, centres, offsets).inertia


def _best_of(
    data: _SortedValues, starts: list[torch.Tensor], offsets: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, float]:
    """The lowest-inertia Lloyd result over ``starts`` (sorted centres, inertia); earlier starts win ties."""
    best, best_inertia = starts[0], math.inf
    for start in starts:
        centres, inertia = _lloyd_1d(data, start.to(torch.float64), offsets, iterations)
        if inertia < best_inertia * (1 - 1e-9):
            best, best_inertia = centres, inertia
    return torch.sort(best).values, best_inertia


def _canonical_scales(data: _SortedValues, logs: torch.Tensor, inertia: float, offsets: torch.Tensor) -> torch.Tensor:
    """Prefer log2 scales in [0, 1) (upstream's convention starts at 2**0) when that fits as well.

    A scale shifted by whole octaves gives the same codewords except at the finest and coarsest levels, so the
    fit cannot tell them apart when no box lives at those edges; the canonical form keeps results comparable.
    """
    canonical = torch.sort(logs - torch.floor(logs)).values
    return canonical if _cells(data, canonical, offsets).inertia <= inertia * (1 + 1e-9) + 1e-12 else logs


def _kmeans_pp_starts(values: torch.Tensor, k: int, count: int, gen: torch.Generator) -> list[torch.Tensor]:
    """``count`` k-means++ initialisations of 1-D values (M,) -> each (k,)."""
    starts = []
    for _ in range(count):
        chosen = [values[torch.randint(values.numel(), (1,), generator=gen)].item()]
        for _ in range(k - 1):
            d2 = (values[:, None] - torch.tensor(chosen, dtype=values.dtype)[None, :]).pow(2).min(dim=1).values
            probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / d2.numel())
            chosen.append(values[torch.multinomial(probs, 1, generator=gen)].item())
        starts.append(torch.tensor(chosen, dtype=torch.float64))
    return starts


def box_log_coordinates(
    wh: torch.Tensor, anchor_scale: float, strides: Sequence[int] = PYRAMID_STRIDES
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 2) box sizes -> (u (M,) size in octaves above the finest level's base size, v (M,) = ln(w/h)/2)."""
    wh = wh.to(torch.float64)
    u = torch.log2(torch.sqrt(wh[:, 0] * wh[:, 1]) / (anchor_scale * strides[0]))
    v = 0.5 * torch.log(wh[:, 0] / wh[:, 1])
    return u, v


def fit_anchors(
    wh: torch.Tensor,
    anchor_scale: float,
    num_scales: int = 3,
    num_ratios: int = 3,
    seed: int = 0,
    restarts: int = 10,
    iterations: int = 100,
    initial: AnchorSet | None = None,
    strides: Sequence[int] = PYRAMID_STRIDES,
) -> AnchorSet:
    """k-means anchor scales and ratios for box sizes wh (M, 2) in network pixels; see the module docstring.

    ``initial`` (e.g. the config's current anchors, when the counts agree) is one of the starts. Scales come out
    ascending and ratios by ascending rw (tall first), with rw * rh = 1.
    """
    if wh.shape[0] < max(num_scales, num_ratios):
        raise ValueError(f"need at least {max(num_scales, num_ratios)} boxes to fit anchors, got {wh.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    u, v = box_log_coordinates(wh, anchor_scale, strides)
    level_offsets = torch.log2(torch.tensor(strides, dtype=torch.float64) / strides[0])

    ratio_starts, scale_starts = [], []
    if initial is not None and len(initial.ratios) == num_ratios:
        ratio_starts.append(torch.tensor([0.5 * math.log(rw / rh) for rw, rh in initial.ratios], dtype=torch.float64))
    if initial is not None and len(initial.scales) == num_scales:
        scale_starts.append(torch.log2(torch.tensor(initial.scales, dtype=torch.float64)))
    ratio_starts += _kmeans_pp_starts(v, num_ratios, restarts, gen)
    # Scales live on a grid repeated every octave: evenly spaced starts with a random phase cover it well.
    for _ in range(restarts):
        phase = torch.rand(1, generator=gen, dtype=torch.float64)
        scale_starts.append(phase + torch.arange(num_scales, dtype=torch.float64) / num_scales)

    ratio_logs, _ = _best_of(_SortedValues.of(v), ratio_starts, torch.zeros(1, dtype=torch.float64), iterations)
    sizes = _SortedValues.of(u)
    scale_logs, inertia = _best_of(sizes, scale_starts, level_offsets, iterations)
    scale_logs = _canonical_scales(sizes, scale_logs, inertia, level_offsets)
    return AnchorSet(
        scales=tuple(float(2.0**s) for s in scale_logs),
        ratios=tuple((float(math.exp(r)), float(math.exp(-r))) for r in ratio_logs),
    )


# -------------------------------------------------------------------------------------------------------- dataset
def dataset_boxes(dataset: BddDataset) -> torch.Tensor:
    """Every box of the dataset in network-input pixels after the letterbox, (M, 4) x1y1x2y2 float32.

    Uses the labels and image sizes indexed by the dataset; no image is decoded.
    """
    parts = []
    for entry in dataset.entries:
        if len(entry.boxes) == 0:
            continue
        h0, w0 = entry.orig_hw
        letterbox = Letterbox.fit(entry.orig_hw, dataset.config.input_size)
        pixels = torch.from_numpy(entry.boxes * np.array([w0, h0, w0, h0], dtype=np.float32))
        parts.append(letterbox.boxes_to_net(pixels))
    return torch.cat(parts) if parts else torch.zeros((0, 4), dtype=torch.float32)


def usable_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """(M, 4) boxes -> (K, 2) (w, h) of those at least MIN_BOX_SIDE wide and high."""
    wh = boxes[:, 2:] - boxes[:, :2]
    return wh[(wh >= MIN_BOX_SIDE).all(dim=1)]


def evaluate_anchor_set(
    boxes: torch.Tensor, config: ModelConfig, anchors: AnchorSet, positional_sample: torch.Tensor
) -> dict[str, float]:
    """Shape metrics on every usable box, grid metrics on ``positional_sample`` (indices into ``boxes``)."""
    return {**shape_quality(usable_sizes(boxes), anchors, config.anchor_scale),
            **positional_quality(boxes[positional_sample], config, anchors)}


# ----------------------------------------------------------------------------------------------------- model yaml
def write_model_config(source: str | Path, output: str | Path, anchors: AnchorSet, name: str | None = None,
                       comment: str = "") -> ModelConfig:
    """Copy a model config yaml with new anchors (and optionally a new name); every other key is kept as is.

    The result is validated as a ModelConfig before it is written; returns it.
    """
    path = resolve_model_config(str(source))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"model config {path}: expected a mapping at the top level")
    data["anchor_scales"] = list(anchors.scales)
    data["anchor_ratios"] = [list(r) for r in anchors.ratios]
    if name:
        data["name"] = name
    config = ModelConfig.from_dict(data)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return config
