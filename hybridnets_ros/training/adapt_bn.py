"""``hybridnets-adapt-bn``: a checkpoint with BatchNorm statistics re-estimated on unlabeled frames of a new domain
(AdaBN), in one pass without gradients::

    hybridnets-adapt-bn --weights models/hybridnets_d0_synth.pt --unlabeled night_drive.mcap \\
        --topic /camera/image_raw/compressed --min-gap 0.5 --output runs/night.pt

The output loads wherever the input did (node, ``hybridnets-eval``, ``--weights``/``--teacher`` of training). The
work is :func:`hybridnets_ros.training.batchnorm.adapt_batchnorm`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from hybridnets_ros.cli_support import configure_logging, run_command
from hybridnets_ros.inference.backends.base import resolve_device
from hybridnets_ros.model.checkpoint import CheckpointError, build_model, save_checkpoint
from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.training.batchnorm import BN_SCOPES, adapt_batchnorm
from hybridnets_ros.training.unlabeled import add_unlabeled_arguments, stream_from_options

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridnets-adapt-bn",
        description="Re-estimate a checkpoint's BatchNorm statistics on unlabeled frames of a new domain (AdaBN) "
                    "and write the adapted checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--weights", required=True, help="checkpoint to adapt")
    parser.add_argument("--model-config", default=None,
                        help="model config name or yaml (e.g. another input size); default: the checkpoint's")
    parser.add_argument("--output", required=True, help="adapted checkpoint (.pt) to write")
    parser.add_argument("--batches", type=int, default=40, help="unlabeled batches the statistics average over")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per batch")
    parser.add_argument("--scope", default="encoder", choices=BN_SCOPES,
                        help="which BatchNorms: the encoder's (keeps detection calibrated), or all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the frame shuffle")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_unlabeled_arguments(parser, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridnets-adapt-bn``; exit codes as :mod:`hybridnets_ros.cli_support` says."""
    args = build_parser().parse_args(argv)
    configure_logging()
    return run_command("hybridnets-adapt-bn", lambda: _adapt(args), bad_input=(CheckpointError,))


def _adapt(args: argparse.Namespace) -> None:
    if args.batches < 1 or args.batch_size < 1:
        raise ValueError(f"--batches and --batch-size must be >= 1, got {args.batches} and {args.batch_size}")
    device = resolve_device(args.device)
    config = load_model_config(args.model_config) if args.model_config else None
    model, config = build_model(args.weights, config, device)
    stream = stream_from_options(args, config.input_size)
    batches = (images for images, _, _ in stream.batches(args.batch_size))
    used = adapt_batchnorm(model, config, batches, device, args.batches, args.scope)
    save_checkpoint(args.output, model, config, adapted_from=str(args.weights),
                    adapted_batchnorm={"scope": args.scope, "frames": used * args.batch_size})
    logger.info("wrote %s: %s BatchNorm statistics from %d frames of %s", args.output, args.scope,
                used * args.batch_size, ", ".join(args.unlabeled))


if __name__ == "__main__":
    sys.exit(main())
