"""What training on unlabeled frames shares to adapt networks to their domain (``hybridnets-train --unlabeled``, with
or without cycle self-training, and ``hybridnets-distill``): the options, BatchNorm adaptation of every network before
the first step, the students' train mode under those statistics, and the students' augmented view."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from hybridnets_ros.cli_support import option
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.training.batchnorm import BN_SCOPES, adapt_batchnorm, freeze_statistics
from hybridnets_ros.training.photometric import STUDENT_VIEWS, step_seed, student_view
from hybridnets_ros.training.unlabeled import UnlabeledStream

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class AdaptationOptions:
    """Options of ``hybridnets-distill`` and ``hybridnets-train`` (whose ``--adapt-bn`` needs ``--unlabeled``; the
    students' view is used by distillation and CST)."""

    adapt_bn: int = option(0, "before the first step, re-estimate the BatchNorm statistics (--adapt-bn-scope) of "
                              "every network that trains or teaches on N unlabeled batches (AdaBN), then keep them "
                              "fixed while the weights train (0: off)")
    adapt_bn_scope: str = option("encoder", "the BatchNorms --adapt-bn re-estimates", choices=BN_SCOPES)
    student_augment: str = option("photometric", "the students' view of unlabeled frames: random brightness, "
                                                 "contrast, saturation, gamma, blur and noise (teachers see the "
                                                 "clean frame), or none", choices=STUDENT_VIEWS)

    def validate_adaptation(self) -> None:
        if self.adapt_bn < 0:
            raise ValueError(f"--adapt-bn must be >= 0 batches, got {self.adapt_bn}")
        student_view(self.student_augment)
        if self.adapt_bn_scope not in BN_SCOPES:
            raise ValueError(f"--adapt-bn-scope must be one of {', '.join(BN_SCOPES)}, got {self.adapt_bn_scope!r}")


def adapt_networks(networks: Sequence[tuple[nn.Module, ModelConfig]], stream: UnlabeledStream, batch_size: int,
                   device: torch.device, options: AdaptationOptions) -> None:
    """AdaBN for each (network, its config) on the same first ``options.adapt_bn`` batches of ``stream``."""
    for model, config in networks:
        batches = (images for images, _, _ in stream.batches(batch_size))
        adapt_batchnorm(model, config, batches, device, options.adapt_bn, options.adapt_bn_scope)
    logger.info("BatchNorm statistics (%s) of %d networks re-estimated on %d unlabeled frames", options.adapt_bn_scope,
                len(networks), options.adapt_bn * batch_size)


def student_train_mode(model: nn.Module, frozen_statistics: bool) -> None:
    """Train mode for a student; with ``frozen_statistics`` (``--adapt-bn``) its BatchNorms normalise with their
    running statistics and keep them, instead of following small augmented batches: in train mode a student
    adapted this way drifted back, and lost 0.35 mAP@0.5 in 50 steps in the README's study."""
    model.train()
    if frozen_statistics:
        freeze_statistics(model)


class StudentView:
    """The students' input of each step: the unlabeled batch as ``--student-augment`` changes it, drawn from the
    run's ``seed`` and the step (a resumed run sees the same views)."""

    def __init__(self, kind: str, seed: int) -> None:
        self.jitter = student_view(kind)
        self.seed = seed

    def __call__(self, images: Tensor, step: int) -> Tensor:
        """(B,3,H,W) uint8 -> (B,3,H,W) uint8, the same for the same step of a run."""
        return images if self.jitter is None else self.jitter(images, step_seed(self.seed, step))
