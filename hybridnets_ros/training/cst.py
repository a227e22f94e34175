"""Cycle self-training (``hybridnets-train --semi-supervised cst``): two student/teacher pairs on labeled and
unlabeled frames.

Each teacher is the exponential moving average (EMA) of its own student. On an unlabeled batch both teachers predict;
student 1 learns from teacher 2 and student 2 from teacher 1 (S1 -> T1 -> S2 -> T2 -> S1), so no teacher grades its
own student and one pair's mistakes are not fed straight back to it. The pseudo-labels are the grading teacher's
soft outputs on the clean frame (the distillation terms of ``distill.py``), learnt by the students from a
photometrically jittered view of it (``--student-augment``), each anchor-class, anchor and pixel weighted by how much the
two teachers agree there (:func:`~hybridnets_ros.training.distill.teacher_agreement`). Every step also trains both
students on a labeled batch with the usual losses; each student's labeled and unlabeled terms are added with
self-balancing weights (:func:`~hybridnets_ros.training.distill.balanced_sum`).

Student 1 is the trainer's model (validated, written to ``best.pt``/``last.pt``); student 2 and both teachers travel
in the checkpoint for ``--resume``. During ``burn_in`` steps the teachers copy their students (decay 0) and no
unlabeled term is computed: pseudo-labels from untrained teachers would only teach noise.
"""
from __future__ import annotations

import copy
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor, nn

from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput
from hybridnets_ros.training.adaptation import StudentView, adapt_networks, student_train_mode
from hybridnets_ros.training.distill import (
    Agreement,
    Ownership,
    balanced_sum,
    distill_terms,
    ema_copy,
    ema_update,
    teacher_agreement,
)
from hybridnets_ros.training.evaluation import normalise_images
from hybridnets_ros.training.losses import LossTerms
from hybridnets_ros.training.unlabeled import UnlabeledStream

# Student i is graded by teacher STUDENT_GRADER[i]: teacher 2 grades student 1, teacher 1 grades student 2.
STUDENT_GRADER = (1, 0)
SEMI_SUPERVISED = ("none", "cst")


def grader_of(student: int) -> int:
    """Index of the teacher whose pseudo-labels train ``student`` (never the student's own teacher)."""
    return STUDENT_GRADER[student]


class LabeledTrainer(Protocol):
    """What CST uses of ``trainer.Trainer``."""

    device: torch.device
    anchors: Tensor

    def network_input(self, batch: Any) -> Tensor: ...
    def autocast(self) -> torch.autocast: ...
    def loss(self, *args: Tensor) -> LossTerms: ...


class CycleSelfTraining:
    """The second student, both EMA teachers and the unlabeled stream of a CST run."""

    def __init__(self, first: nn.Module, second: nn.Module, config: ModelConfig, stream: UnlabeledStream,
                 batch_size: int, decay: float, burn_in: int = 0,
                 view: StudentView = StudentView("none", 0), frozen_statistics: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {decay}")
        self.students = (first, second)
        self.teachers = (ema_copy(first), ema_copy(second))
        self.config = config
        self.stream = stream
        self.batch_size = batch_size
        self.decay = decay
        self.burn_in = burn_in
        self.view = view
        self.frozen_statistics = frozen_statistics
        self.position = (0, 0)  # (pass, frames consumed) of the unlabeled stream
        self.ownership = Ownership(tuple(range(config.num_classes)), seg=True)
        self._batches = None

    def train_mode(self) -> None:
        """Student 2 in train mode like the trainer's student 1 (BatchNorm statistics frozen after ``--adapt-bn``)."""
        student_train_mode(self.students[1], self.frozen_statistics)

    def parameters(self) -> list[nn.Parameter]:
        """Student 2's trainable parameters (student 1's are the trainer's own)."""
        return [p for p in self.students[1].parameters() if p.requires_grad]

    def next_unlabeled(self) -> Tensor:
        """The next (B,3,H,W) uint8 unlabeled batch; advances the stored position."""
        if self._batches is None:
            self._batches = self.stream.batches(self.batch_size, self.position)
        images, pass_index, consumed = next(self._batches)
        self.position = (pass_index, consumed)
        return images

    @torch.no_grad()
    def pseudo_targets(self, images: Tensor) -> tuple[list[HybridNetsOutput], Agreement]:
        """Normalised (B,3,H,W) images -> (the target of each student, agreement of the two teachers)."""
        outputs = [teacher(images) for teacher in self.teachers]
        agreement = teacher_agreement(outputs[0], outputs[1], self.config.seg_mode)
        return [outputs[grader_of(i)] for i in range(len(self.students))], agreement

    def unlabeled_terms(self, student: int, output: HybridNetsOutput, targets: Sequence[HybridNetsOutput],
                        agreement: Agreement) -> dict[str, Tensor]:
        terms = distill_terms(output, targets[student], self.ownership, self.ownership.classes,
                              self.config.seg_mode, agreement=agreement)
        return {f"unlabeled_{name}": value for name, value in terms.items()}

    def loss(self, trainer: LabeledTrainer, batch: Any, first_terms: LossTerms, step: int) -> tuple[Tensor,
                                                                                                     dict[str, float]]:
        """Both students' balanced losses for one step (``first_terms``: student 1's labeled terms, computed by the
        trainer); returns (total, floats for logging with ``s1/`` and ``s2/`` prefixes)."""
        first, second = self.students
        with trainer.autocast():
            out = second(trainer.network_input(batch))
        second_terms = trainer.loss(out.regression, out.classification, out.segmentation, trainer.anchors,
                                    batch.annotations.to(trainer.device), batch.seg.to(trainer.device))
        per_student = [_named(first_terms), _named(second_terms)]
        if step >= self.burn_in:
            raw = self.next_unlabeled().to(trainer.device)
            clean = normalise_images(raw, self.config, trainer.device)
            seen = normalise_images(self.view(raw, step), self.config, trainer.device)
            with trainer.autocast():
                targets, agreement = self.pseudo_targets(clean)
                outputs = [student(seen) for student in self.students]
            for index, output in enumerate(outputs):
                per_student[index].update(self.unlabeled_terms(index, output, targets, agreement))
        totals = [balanced_sum(terms) for terms in per_student]
        logged = {f"s{i + 1}/{name}": float(v.detach()) for i, terms in enumerate(per_student)
                  for name, v in terms.items()}
        return totals[0] + totals[1], logged

    def after_step(self, step: int) -> None:
        """Move the teachers toward their students (copy them during burn-in); ``step`` counts finished steps."""
        decay = 0.0 if step <= self.burn_in else self.decay
        for teacher, student in zip(self.teachers, self.students):
            ema_update(teacher, student, decay)

    def state_dict(self) -> dict[str, Any]:
        return {
            "student2": self.students[1].state_dict(),
            "teacher1": self.teachers[0].state_dict(),
            "teacher2": self.teachers[1].state_dict(),
            "position": list(self.position),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.students[1].load_state_dict(state["student2"])
        self.teachers[0].load_state_dict(state["teacher1"])
        self.teachers[1].load_state_dict(state["teacher2"])
        self.position = tuple(int(v) for v in state["position"])
        self._batches = None


def _named(terms: LossTerms) -> dict[str, Tensor]:
    return {name: value for name, value in zip(("cls", "reg", "seg"), terms) if value is not None}


def build_cst(first: nn.Module, config: ModelConfig, stream: UnlabeledStream, options: Any,
              device: torch.device) -> CycleSelfTraining:
    """CST for a trainer whose student 1 is ``first``, on the unlabeled frames of ``stream``; ``options`` are
    ``TrainOptions``.

    Student 2 starts from student 1's weights when those came from a checkpoint (``--weights``), else from its own
    random initialisation (seed + 1), so the two pairs differ from the first step. With ``--adapt-bn`` student 1
    comes with the unlabeled frames' BatchNorm statistics (the trainer re-estimated them); a copy keeps them, a new
    student 2 gets its own, unless resuming. The teachers start as copies of their students.
    """
    if options.weights:
        second = copy.deepcopy(first)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(options.seed + 1)
            second = type(first)(config)
        second = second.to(device)
        if options.adapt_bn and not options.resume:
            adapt_networks([(second, config)], stream, options.batch_size, device, options)
    return CycleSelfTraining(first, second, config, stream, options.batch_size, options.ema_decay, options.burn_in,
                             StudentView(options.student_augment, options.seed), options.adapt_bn > 0)
