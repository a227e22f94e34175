"""Logit distillation for HybridNets: a teacher's outputs as soft targets for a student, without labels.

Terms (each a scalar; every weight is a non-negative tensor broadcast against the elements it weighs):

- classification: per anchor and class, the binary KL divergence from the teacher's probability q to the student's
  p, ``q log(q/p) + (1-q) log((1-q)/(1-p))`` (the binary cross-entropy minus the teacher's entropy, so it is 0 when
  they agree), or ``(p - q)^2``; a weighted mean over anchors and classes.
- box regression: smooth-L1 between the students' and the teacher's (dy, dx, dh, dw), each anchor weighted by the
  teacher's confidence (its highest class probability): background anchors, whose boxes mean nothing, hardly count.
- segmentation: the KL divergence of the temperature-T distributions, ``T^2 KL(softmax(t/T) || softmax(s/T))`` over
  channels (multiclass) or the binary KL of ``sigmoid(x/T)`` per channel (binary, multilabel), scaled by T^2 so its
  gradients keep their size across temperatures; or the MSE of the logits. A weighted mean over pixels.

Multi-teacher ownership (:class:`Ownership`): a teacher owns some detection classes and/or the segmentation; every
student output is supervised by its owner only. :func:`balanced_sum` adds terms scaled to a common magnitude.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput
from hybridnets_ros.training.losses import smooth_l1

PROB_EPS = 1e-6
CLASS_LOSSES = ("kl", "mse")
SEG_LOSSES = ("kl", "mse")


def _weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """sum(w * v) / sum(w) with ``weight`` broadcast to ``values``; the plain mean without weights."""
    if weight is None:
        return values.mean()
    weight = weight.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp(min=PROB_EPS)


def binary_kl(student: Tensor, teacher: Tensor) -> Tensor:
    """Element-wise KL(Bernoulli(teacher) || Bernoulli(student)) of probabilities, clamped away from 0 and 1."""
    p = student.clamp(PROB_EPS, 1.0 - PROB_EPS)
    q = teacher.clamp(PROB_EPS, 1.0 - PROB_EPS)
    return q * (q.log() - p.log()) + (1.0 - q) * ((1.0 - q).log() - (1.0 - p).log())


def class_distill_loss(student: Tensor, teacher: Tensor, kind: str = "kl", weight: Tensor | None = None) -> Tensor:
    """student, teacher (B,N,C) probabilities; weight broadcastable to (B,N,C) (e.g. (C,) class ownership mask)."""
    if kind not in CLASS_LOSSES:
        raise ValueError(f"classification distillation must be one of {CLASS_LOSSES}, got {kind!r}")
    student, teacher = student.float(), teacher.float()
    values = binary_kl(student, teacher) if kind == "kl" else (student - teacher).pow(2)
    return _weighted_mean(values, weight)


def box_distill_loss(student: Tensor, teacher: Tensor, confidence: Tensor) -> Tensor:
    """student, teacher (B,N,4) box deltas; confidence (B,N) teacher confidence per anchor (the weight).

    sum_n c_n * sum_k smoothL1(s_nk - t_nk) / (4 * sum_n c_n).
    """
    per_anchor = smooth_l1(student.float() - teacher.float()).sum(dim=-1)
    return (per_anchor * confidence).sum() / (4.0 * confidence.sum().clamp(min=PROB_EPS))


def seg_distill_loss(student: Tensor, teacher: Tensor, mode: str, kind: str = "kl", temperature: float = 1.0,
                     weight: Tensor | None = None) -> Tensor:
    """student, teacher (B,S,H,W) logits; weight (B,H,W) per pixel or None. See the module docstring."""
    if kind not in SEG_LOSSES:
        raise ValueError(f"segmentation distillation must be one of {SEG_LOSSES}, got {kind!r}")
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    student, teacher = student.float(), teacher.float()
    if kind == "mse":
        per_pixel = (student - teacher).pow(2).mean(dim=1)
    elif mode == "multiclass":
        log_p = F.log_softmax(student / temperature, dim=1)
        log_q = F.log_softmax(teacher / temperature, dim=1)
        per_pixel = (log_q.exp() * (log_q - log_p)).sum(dim=1) * temperature**2
    else:
        per_pixel = binary_kl((student / temperature).sigmoid(), (teacher / temperature).sigmoid()).sum(dim=1)
        per_pixel = per_pixel * temperature**2
    return _weighted_mean(per_pixel, weight)


def balanced_sum(terms: Mapping[str, Tensor], eps: float = 1e-8) -> Tensor:
    """Sum of the terms, each rescaled to the terms' mean magnitude; the scales are detached.

    Term i contributes ``t_i * m / |t_i|`` (m the mean of the detached |t_j|), so every term has the same value m and
    its gradient is scaled by m / |t_i|: no per-head weight to tune, and the total keeps the size of a plain mean.
    """
    if not terms:
        raise ValueError("balanced_sum needs at least one loss term")
    values = list(terms.values())
    magnitudes = torch.stack([t.detach().abs() for t in values]).clamp(min=eps)
    common = magnitudes.mean()
    return torch.stack([t * (common / m) for t, m in zip(values, magnitudes)]).sum()


# ------------------------------------------------------------------------------------------------- ownership
@dataclass(frozen=True)
class Ownership:
    """What one teacher supervises: ``classes`` (student class IDs) of detection and whether segmentation."""

    classes: tuple[int, ...]
    seg: bool

    @property
    def owns_det(self) -> bool:
        return bool(self.classes)


def parse_ownership(owns: Sequence[str], student: ModelConfig, teacher: ModelConfig, where: str) -> Ownership:
    """``--owns`` values of one teacher (``det``, ``seg`` or student class names) -> Ownership, checked against the
    teacher's config: it must predict each owned class (by name) and, for ``seg``, the student's seg classes."""
    classes: list[int] = []
    seg = False
    for item in owns:
        if item == "seg":
            if (teacher.seg_list, teacher.seg_mode) != (student.seg_list, student.seg_mode):
                raise ValueError(f"{where} cannot own seg: its seg_list {list(teacher.seg_list)} ({teacher.seg_mode}) "
                                 f"differs from the student's {list(student.seg_list)} ({student.seg_mode})")
            seg = True
            continue
        names = student.obj_list if item == "det" else (item,)
        for name in names:
            if name not in student.obj_list:
                raise ValueError(f"{where} --owns {item!r}: not det, seg or a student class "
                                 f"({', '.join(student.obj_list)})")
            if name not in teacher.obj_list:
                raise ValueError(f"{where} cannot own class '{name}': the teacher detects only "
                                 f"{', '.join(teacher.obj_list)}")
            classes.append(student.obj_list.index(name))
    if classes and (teacher.anchor_scales, teacher.anchor_ratios, teacher.anchor_scale) != (
            student.anchor_scales, student.anchor_ratios, student.anchor_scale):
        raise ValueError(f"{where} owns detection but its anchors differ from the student's; per-anchor distillation "
                         "needs the same anchor_scales, anchor_ratios and anchor_scale in both model configs")
    return Ownership(tuple(sorted(set(classes))), seg)


def check_exclusive(ownerships: Sequence[Ownership], student: ModelConfig) -> None:
    """Every student output has at most one owner, and at least one output is owned."""
    for class_id, name in enumerate(student.obj_list):
        owners = [i + 1 for i, o in enumerate(ownerships) if class_id in o.classes]
        if len(owners) > 1:
            raise ValueError(f"class '{name}' is owned by teachers {owners}: give each output to one teacher")
    seg_owners = [i + 1 for i, o in enumerate(ownerships) if o.seg]
    if len(seg_owners) > 1:
        raise ValueError(f"seg is owned by teachers {seg_owners}: give it to one teacher")
    if not any(o.owns_det or o.seg for o in ownerships):
        raise ValueError("no teacher owns any output: nothing to distil")


def teacher_classes(ownership: Ownership, student: ModelConfig, teacher: ModelConfig) -> list[int]:
    """The teacher's class channel for each owned student class, in ``ownership.classes`` order."""
    return [teacher.obj_list.index(student.obj_list[c]) for c in ownership.classes]


def distill_terms(student: HybridNetsOutput, teacher: HybridNetsOutput, ownership: Ownership, channels: Sequence[int],
                  seg_mode: str, class_kind: str = "kl", seg_kind: str = "kl", temperature: float = 1.0,
                  agreement: "Agreement | None" = None) -> dict[str, Tensor]:
    """The loss terms one teacher supervises (``cls``, ``box``, ``seg``), only on what it owns.

    ``channels``: the teacher's class channel of each owned class (:func:`teacher_classes`). ``agreement``
    (cycle self-training) further weighs every anchor-class, anchor and pixel.
    """
    terms: dict[str, Tensor] = {}
    if ownership.owns_det:
        owned = list(ownership.classes)
        student_probs = student.classification[..., owned]
        teacher_probs = teacher.classification[..., list(channels)].detach()
        cls_weight = agreement.classification[..., owned] if agreement is not None else None
        terms["cls"] = class_distill_loss(student_probs, teacher_probs, class_kind, cls_weight)
        confidence = teacher_probs.amax(dim=-1)
        if agreement is not None:
            confidence = confidence * agreement.box
        terms["box"] = box_distill_loss(student.regression, teacher.regression.detach(), confidence)
    if ownership.seg:
        seg_weight = agreement.segmentation if agreement is not None else None
        terms["seg"] = seg_distill_loss(student.segmentation, teacher.segmentation.detach(), seg_mode, seg_kind,
                                        temperature, seg_weight)
    return terms


# ------------------------------------------------------------------------------------ teachers that are averages
@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student for parameters and floating buffers (BatchNorm
    statistics); integer buffers (batch counters) are copied."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s.detach(), 1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.is_floating_point():
            t.lerp_(s, 1.0 - decay)
        else:
            t.copy_(s)


def ema_copy(student: nn.Module) -> nn.Module:
    """A frozen copy of the student in eval mode, to be moved by :func:`ema_update`."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.eval()


# ------------------------------------------------------------------------------------------- teacher agreement
@dataclass(frozen=True)
class Agreement:
    """How much two teachers agree: classification (B,N,C), box (B,N), segmentation (B,H,W), each in [0, 1]."""

    classification: Tensor
    box: Tensor
    segmentation: Tensor


def seg_probabilities(logits: Tensor, mode: str) -> Tensor:
    return logits.float().softmax(dim=1) if mode == "multiclass" else logits.float().sigmoid()


@torch.no_grad()
def teacher_agreement(first: HybridNetsOutput, second: HybridNetsOutput, seg_mode: str) -> Agreement:
    """Agreement of two teachers' outputs.

    classification: 1 - |p1 - p2| per anchor and class; box: the mean over classes of that, per anchor;
    segmentation: 1 - total variation distance of the pixel's class distributions (multiclass), or the mean over
    channels of 1 - |sigmoid difference| (binary, multilabel).
    """
    classification = 1.0 - (first.classification.float() - second.classification.float()).abs()
    p1, p2 = seg_probabilities(first.segmentation, seg_mode), seg_probabilities(second.segmentation, seg_mode)
    if seg_mode == "multiclass":
        segmentation = 1.0 - 0.5 * (p1 - p2).abs().sum(dim=1)
    else:
        segmentation = 1.0 - (p1 - p2).abs().mean(dim=1)
    return Agreement(classification, classification.mean(dim=-1), segmentation)
