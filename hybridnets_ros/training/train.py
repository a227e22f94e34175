"""``hybridnets-train``: train HybridNets on a BDD100K-layout dataset, on CPU, one GPU, or many through torchrun.

Single process::

    hybridnets-train --project data/project.yaml --model-config hybridnets_d0_synth --output runs/d0 --epochs 50

Several GPUs / nodes (DistributedDataParallel, one process per GPU; NCCL on CUDA, gloo on CPU)::

    torchrun --nproc_per_node 4 -m hybridnets_ros.training.train --project ... --sync-bn

Staged training as the reference recommends, where a frozen part really does not change: its parameters get no
gradient, its BatchNorm layers stay in eval mode (running statistics untouched, dropout and drop-connect off) and its
loss terms are not computed at all:

1. ``--freeze-seg`` (detection), 2. ``--freeze-backbone --freeze-det`` (segmentation), 3. end to end.

Semi-supervised: ``--semi-supervised cst --unlabeled SRC ...`` adds unlabeled frames (image folders, videos,
rosbag2) through cycle self-training (``cst.py``); the checkpoints hold student 1.

Beyond one machine and one GPU's memory (README, "Training at scale"): ``--grad-compression ternary|powersgd``
(compressed DDP gradients, :mod:`grad_compression`), ``--activation-checkpointing`` (:mod:`checkpointing`),
``--local-modules 2|4`` (InfoPro local learning, :mod:`infopro`); multi-node runs are torchrun with a c10d rendezvous.
Only rank 0 writes checkpoints, logs and TensorBoard; a checkpoint resumes under any world size.

The output folder receives ``last.pt`` (every ``--save-every`` epochs and at the end, with optimizer/scheduler state
for ``--resume``), ``best.pt`` (highest validation fitness, see :func:`~hybridnets_ros.training.trainer.fitness`) and
``tensorboard/`` (loss terms and learning rate per step, validation metrics and a few prediction images per
validation). Both checkpoints embed the model config, so the node loads them directly (``weights:=runs/d0/best.pt``).

This module is the command line only; the options and the training loop are :mod:`hybridnets_ros.training.trainer`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from hybridnets_ros.cli_support import (
    add_dataclass_arguments,
    configure_logging,
    dataclass_from_args,
    run_command,
)
from hybridnets_ros.model.checkpoint import CheckpointError
from hybridnets_ros.training import distributed
from hybridnets_ros.training.dataset import LabelError
from hybridnets_ros.training.project import ProjectConfigError
from hybridnets_ros.training.trainer import UNLABELED_FIELDS, Trainer, TrainOptions
from hybridnets_ros.training.unlabeled import add_unlabeled_arguments

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The flags are :class:`TrainOptions`' fields (defaults and help written there) and the unlabeled sources."""
    parser = argparse.ArgumentParser(
        prog="hybridnets-train",
        description="Train HybridNets (detection + drivable area + lane lines) on a BDD100K-layout dataset. "
        "Multi-GPU/multi-node: launch with torchrun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(parser, TrainOptions, skip=UNLABELED_FIELDS)
    add_unlabeled_arguments(parser, required=False)
    return parser


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    return dataclass_from_args(TrainOptions, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridnets-train``; exit codes as :mod:`hybridnets_ros.cli_support` says."""
    options = options_from_args(build_parser().parse_args(argv))
    configure_logging()
    return run_command("hybridnets-train", lambda: _train(options),
                       bad_input=(CheckpointError, ProjectConfigError, LabelError))


def _train(options: TrainOptions) -> None:
    context = distributed.init_distributed(options.device)
    configure_logging(logging.INFO if context.is_main else logging.WARNING)
    try:
        summary = Trainer(options, context).fit()
    finally:
        distributed.shutdown(context)
    if context.is_main:
        logger.info("done: %s", {k: v for k, v in summary.items() if k != "metrics"})


if __name__ == "__main__":
    sys.exit(main())
