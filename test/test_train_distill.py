"""Distillation losses, self-balancing, teacher ownership, EMA teachers and CST pairing, on hand-computed cases."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.model.hybridnets import HybridNets, HybridNetsOutput
from hybridnets_ros.training.cst import STUDENT_GRADER, CycleSelfTraining, grader_of
from hybridnets_ros.training.distill import (
    Agreement,
    Ownership,
    balanced_sum,
    binary_kl,
    box_distill_loss,
    check_exclusive,
    class_distill_loss,
    distill_terms,
    ema_copy,
    ema_update,
    parse_ownership,
    seg_distill_loss,
    teacher_agreement,
    teacher_classes,
)

KL_08_05 = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # binary KL(q=0.8 || p=0.5)


def config(obj_list=("car",), **changes):
    base = load_model_config("hybridnets_d0_synth")
    return dataclasses.replace(base, obj_list=tuple(obj_list), input_size=(128, 128), **changes)


# ------------------------------------------------------------------------------------------------- losses
def test_binary_kl_is_zero_when_equal_and_matches_the_formula():
    assert binary_kl(torch.tensor([0.3]), torch.tensor([0.3])).item() == pytest.approx(0.0, abs=1e-7)
    assert binary_kl(torch.tensor([0.5]), torch.tensor([0.8])).item() == pytest.approx(KL_08_05, rel=1e-5)


def test_class_distill_kl_mse_and_weights():
    student = torch.tensor([[[0.5], [0.5]]])  # (B=1, N=2, C=1)
    teacher = torch.tensor([[[0.5], [0.8]]])
    assert class_distill_loss(student, teacher, "kl").item() == pytest.approx(KL_08_05 / 2, rel=1e-5)
    assert class_distill_loss(student, teacher, "mse").item() == pytest.approx(0.09 / 2, rel=1e-5)
    weight = torch.tensor([[[1.0], [0.0]]])  # the disagreeing anchor does not count
    assert class_distill_loss(student, teacher, "kl", weight).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="must be one of"):
        class_distill_loss(student, teacher, "l1")


def test_box_distill_weights_anchors_by_teacher_confidence():
    student = torch.zeros(1, 2, 4)
    teacher = torch.tensor([[[0.05] * 4, [1.0] * 4]])
    small = 0.5 * 0.05**2 * 9.0  # smooth-L1 below beta = 1/9
    large = 1.0 - 0.5 / 9.0       # smooth-L1 above beta
    confidence = torch.tensor([[0.9, 0.1]])
    expected = (0.9 * 4 * small + 0.1 * 4 * large) / (4 * 1.0)
    assert box_distill_loss(student, teacher, confidence).item() == pytest.approx(expected, rel=1e-5)
    assert box_distill_loss(student, teacher, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(small, rel=1e-5)


def test_seg_distill_kl_at_a_temperature_mse_and_binary():
    teacher = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)  # softmax: 0.75, 0.25
    student = torch.zeros(1, 2, 1, 1)                               # softmax: 0.5, 0.5
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert seg_distill_loss(student, teacher, "multiclass").item() == pytest.approx(kl, rel=1e-5)
    q = math.sqrt(3.0) / (math.sqrt(3.0) + 1.0)  # softmax of the logits / 2
    kl_t2 = 4.0 * (q * math.log(q / 0.5) + (1 - q) * math.log((1 - q) / 0.5))
    assert seg_distill_loss(student, teacher, "multiclass", temperature=2.0).item() == pytest.approx(kl_t2, rel=1e-5)
    assert seg_distill_loss(student, teacher, "multiclass", "mse").item() == pytest.approx(math.log(3.0)**2 / 2,
                                                                                           rel=1e-5)
    # binary: sigmoid(ln 3) = 0.75 against sigmoid(0) = 0.5
    binary = seg_distill_loss(student[:, :1], teacher[:, :1], "binary").item()
    assert binary == pytest.approx(kl, rel=1e-5)
    pixel_weight = torch.zeros(1, 1, 1)
    assert seg_distill_loss(student, teacher, "multiclass", weight=pixel_weight).item() == 0.0


def test_balanced_sum_gives_each_term_the_mean_magnitude_with_detached_scales():
    x = torch.tensor(1.0, requires_grad=True)
    y = torch.tensor(1.0, requires_grad=True)
    total = balanced_sum({"a": 2.0 * x, "b": 0.5 * y})
    assert total.item() == pytest.approx(2.5)  # both terms become (2 + 0.5) / 2
    total.backward()
    # d/dx (2x * 1.25/2) = 1.25 and d/dy (0.5y * 1.25/0.5) = 1.25: equal pulls despite 4x different sizes
    assert x.grad.item() == pytest.approx(1.25) and y.grad.item() == pytest.approx(1.25)


# ---------------------------------------------------------------------------------------------- ownership
def fake_outputs(classes: int, value: float, seg_value: float, requires_grad: bool = False) -> HybridNetsOutput:
    """Outputs of 3 anchors, ``classes`` classes and a 2x2 multiclass seg map of 3 channels, filled with constants."""
    out = HybridNetsOutput(torch.full((1, 3, 4), value), torch.full((1, 3, classes), value),
                           torch.full((1, 3, 2, 2), seg_value))
    return HybridNetsOutput(*(t.clone().requires_grad_(requires_grad) for t in out))


def test_each_output_is_supervised_only_by_its_owner():
    student_cfg = config(("car", "truck"))
    det_teacher = config(("truck", "car"))  # same classes, other order: mapped by name
    own_car = parse_ownership(["car"], student_cfg, det_teacher, "teacher 1")
    own_rest = parse_ownership(["truck", "seg"], student_cfg, config(("truck",)), "teacher 2")
    assert own_car == Ownership((0,), False) and own_rest == Ownership((1,), True)
    assert teacher_classes(own_car, student_cfg, det_teacher) == [1]
    check_exclusive([own_car, own_rest], student_cfg)

    student = fake_outputs(2, 0.5, 0.0, requires_grad=True)
    teacher = fake_outputs(2, 0.8, 1.0)
    terms = distill_terms(student, teacher, own_car, [1], "multiclass")
    assert set(terms) == {"cls", "box"}
    sum(terms.values()).backward()
    assert student.classification.grad[..., 0].abs().sum() > 0
    assert student.classification.grad[..., 1].abs().sum() == 0  # truck belongs to teacher 2
    assert student.segmentation.grad is None  # seg belongs to teacher 2
    seg_only = distill_terms(student, teacher, Ownership((), True), [], "multiclass")
    assert set(seg_only) == {"seg"}


def test_ownership_errors_name_the_teacher_and_the_remedy():
    student_cfg = config(("car", "truck"))
    with pytest.raises(ValueError, match="teacher 2 cannot own class 'truck': the teacher detects only car"):
        parse_ownership(["det"], student_cfg, config(("car",)), "teacher 2")
    with pytest.raises(ValueError, match="not det, seg or a student class"):
        parse_ownership(["bus"], student_cfg, student_cfg, "teacher 1")
    with pytest.raises(ValueError, match="cannot own seg: its seg_list"):
        parse_ownership(["seg"], student_cfg, config(("car", "truck"), seg_list=("road",)), "teacher 1")
    with pytest.raises(ValueError, match="anchors differ"):
        parse_ownership(["det"], student_cfg, config(("car", "truck"), anchor_scales=(1.0, 2.0, 3.0)), "teacher 1")
    with pytest.raises(ValueError, match="class 'car' is owned by teachers \\[1, 2\\]"):
        check_exclusive([Ownership((0,), False), Ownership((0, 1), True)], student_cfg)
    with pytest.raises(ValueError, match="seg is owned by teachers \\[1, 2\\]"):
        check_exclusive([Ownership((0,), True), Ownership((1,), True)], student_cfg)


# ----------------------------------------------------------------------------------------------------- EMA
def test_ema_update_moves_parameters_and_statistics_and_copies_counters():
    student = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    teacher = ema_copy(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    with torch.no_grad():
        teacher[0].weight.fill_(0.0)
        student[0].weight.fill_(1.0)
        student[1].running_mean.fill_(2.0)
        student[1].num_batches_tracked.fill_(7)
    ema_update(teacher, student, decay=0.9)
    assert teacher[0].weight.item() == pytest.approx(0.1)
    assert teacher[1].running_mean.item() == pytest.approx(0.2)
    assert teacher[1].num_batches_tracked.item() == 7
    ema_update(teacher, student, decay=0.9)
    assert teacher[0].weight.item() == pytest.approx(0.19)
    with pytest.raises(ValueError):
        ema_update(teacher, student, decay=1.5)


# ---------------------------------------------------------------------------------------------- agreement
def test_teacher_agreement_hand_values():
    first = HybridNetsOutput(torch.zeros(1, 2, 4), torch.tensor([[[0.9, 0.2], [0.1, 0.1]]]),
                             torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1))
    second = HybridNetsOutput(torch.zeros(1, 2, 4), torch.tensor([[[0.6, 0.2], [0.1, 0.5]]]),
                              torch.zeros(1, 2, 1, 1))
    agreement = teacher_agreement(first, second, "multiclass")
    torch.testing.assert_close(agreement.classification, torch.tensor([[[0.7, 1.0], [1.0, 0.6]]]))
    torch.testing.assert_close(agreement.box, torch.tensor([[0.85, 0.8]]))
    # softmax (0.75, 0.25) vs (0.5, 0.5): total variation 0.25
    torch.testing.assert_close(agreement.segmentation, torch.tensor([[[0.75]]]))
    binary = teacher_agreement(first, second, "multilabel")  # sigmoid(ln 3) = 0.75 vs 0.5; sigmoid(0) both
    torch.testing.assert_close(binary.segmentation, torch.tensor([[[1.0 - 0.25 / 2]]]))


def test_disagreement_removes_an_anchor_from_the_pseudo_label_loss():
    student = fake_outputs(1, 0.5, 0.0)
    teacher = HybridNetsOutput(torch.tensor([[[0.0] * 4, [1.0] * 4, [0.0] * 4]]),
                               torch.tensor([[[0.5], [0.8], [0.5]]]), torch.zeros(1, 3, 2, 2))
    full = Agreement(torch.ones(1, 3, 1), torch.ones(1, 3), torch.ones(1, 2, 2))
    none_on_1 = Agreement(torch.tensor([[[1.0], [0.0], [1.0]]]), torch.tensor([[1.0, 0.0, 1.0]]), torch.ones(1, 2, 2))
    owner = Ownership((0,), True)
    weighted = distill_terms(student, teacher, owner, [0], "multiclass", agreement=full)
    plain = distill_terms(student, teacher, owner, [0], "multiclass")
    for name in plain:
        torch.testing.assert_close(weighted[name], plain[name])
    assert weighted["cls"].item() == pytest.approx(KL_08_05 / 3, rel=1e-5)
    dropped = distill_terms(student, teacher, owner, [0], "multiclass", agreement=none_on_1)
    assert dropped["cls"].item() == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------------------------------------- CST pairs
def test_cycle_pairs_each_student_with_the_other_teacher():
    assert STUDENT_GRADER == (1, 0)
    assert all(grader_of(s) != s for s in (0, 1))  # teacher i is the EMA of student i: never its grader
    cfg = config()
    torch.manual_seed(1)
    first = HybridNets(cfg)
    torch.manual_seed(2)
    second = HybridNets(cfg)
    cst = CycleSelfTraining(first, second, cfg, stream=None, batch_size=1, decay=0.5)
    images = torch.randn(1, 3, 128, 128)
    targets, agreement = cst.pseudo_targets(images)
    own = [teacher(images).classification for teacher in cst.teachers]
    torch.testing.assert_close(targets[0].classification, own[1])  # student 1 <- teacher 2
    torch.testing.assert_close(targets[1].classification, own[0])  # student 2 <- teacher 1
    assert not torch.equal(own[0], own[1])
    assert agreement.segmentation.min() < 1.0  # two random initialisations disagree somewhere
    # the teachers follow their own students
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)
    before = [p.clone() for p in cst.teachers[1].parameters()]
    cst.after_step(step=1)
    moved = [(t - s).detach().abs().max() for t, s in zip(cst.teachers[0].parameters(), first.parameters())]
    assert float(max(moved)) == pytest.approx(0.5, rel=1e-5)  # halfway toward student 1
    assert all(torch.equal(b, a) for b, a in zip(before, cst.teachers[1].parameters()))  # student 2 did not move
