"""``hybridnets-distill``: train a student on unlabeled frames from one or more teachers (logit distillation).

One teacher (it owns every output; self-distillation when it has the student's size)::

    hybridnets-distill --teacher runs/d3/best.pt --student hybridnets_d0_synth --unlabeled drive1/ drive2/ \\
        --topic /camera/image_raw/compressed --every 5 --output runs/distill --max-steps 20000

Several teachers, each owning detection (``det``, or single classes by name) and/or segmentation (``seg``); each
student output learns only from its owner. ``--owns`` follows the ``--teacher`` it belongs to::

    hybridnets-distill --teacher det.pt --owns det --teacher seg.pt --owns seg --student hybridnets_d0_synth ...

``--labeled PROJECT.yaml`` mixes one labeled batch (the usual losses, augmented) into every step and validates on its
val split, keeping ``best.pt``. The loss terms (``t1/cls``, ``t1/box``, ``t2/seg``, ``labeled/cls``, ...) are added
with self-balancing weights (:func:`~hybridnets_ros.training.distill.balanced_sum`). Like ``hybridnets-train``:
progress bar, ``tensorboard/``, ``--amp``, ``--resume`` (weights, optimizer, scheduler, step and the unlabeled
stream's position from ``OUTPUT/last.pt``), and checkpoints with the student's config embedded that the node loads
as they are. One process (no torchrun).

This module is the command line only; the options and the loop are :mod:`hybridnets_ros.training.distiller`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from hybridnets_ros.cli_support import add_dataclass_arguments, configure_logging, dataclass_from_args, run_command
from hybridnets_ros.model.checkpoint import CheckpointError
from hybridnets_ros.training.dataset import LabelError
from hybridnets_ros.training.distiller import Distiller, DistillOptions
from hybridnets_ros.training.project import ProjectConfigError
from hybridnets_ros.training.trainer import UNLABELED_FIELDS
from hybridnets_ros.training.unlabeled import add_unlabeled_arguments

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The flags are :class:`DistillOptions`' fields (defaults and help written there) and the unlabeled sources."""
    parser = argparse.ArgumentParser(
        prog="hybridnets-distill",
        description="Train a student HybridNets from teachers' outputs on unlabeled frames (image folders, videos, "
                    "rosbag2), optionally mixed with a labeled dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(parser, DistillOptions, skip=UNLABELED_FIELDS, overrides={
        "batch_size": {"help": "unlabeled frames per step (and labeled, if any)"},
        "scheduler": {"choices": ("cosine", "none"), "help": "cosine: per step with linear warmup"},
        "workers": {"help": "labeled data loader processes"},
        "device": {"help": "auto, cpu, cuda, cuda:N"},
    })
    add_unlabeled_arguments(parser, required=True)
    return parser


def options_from_args(args: argparse.Namespace) -> DistillOptions:
    return dataclass_from_args(DistillOptions, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridnets-distill``; exit codes as :mod:`hybridnets_ros.cli_support` says."""
    options = options_from_args(build_parser().parse_args(argv))
    configure_logging()
    return run_command("hybridnets-distill", lambda: _distill(options),
                       bad_input=(CheckpointError, ProjectConfigError, LabelError))


def _distill(options: DistillOptions) -> None:
    summary = Distiller(options).fit()
    logger.info("done: %s", summary)


if __name__ == "__main__":
    sys.exit(main())
