"""``hybridnets-synth``: write synthetic driving scenes as a BDD100K-layout dataset with exact labels.

The layout it writes is described in :mod:`hybridnets_ros.synth.dataset`.
"""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from hybridnets_ros.cli_support import configure_logging, run_command
from hybridnets_ros.synth.dataset import DEFAULT_SIZES, parse_sizes, write_dataset
from hybridnets_ros.synth.domain import DOMAINS

LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridnets-synth", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output", required=True, help="dataset root folder (created)")
    parser.add_argument("--num-train", type=int, required=True, help="number of training images")
    parser.add_argument("--num-val", type=int, required=True, help="number of validation images")
    parser.add_argument("--seed", type=int, default=0, help="base seed; image i of a split uses seed + i")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="comma-separated WIDTHxHEIGHT[:WEIGHT] image sizes, drawn per image by weight")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes")
    parser.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of the images")
    parser.add_argument("--ground-truth", action="store_true",
                        help="also write ground_truth/<split>/<name>.json: CameraInfo, camera pose, road edges, lane "
                             "lines and vehicle contact points in metres")
    parser.add_argument("--domain", choices=tuple(DOMAINS), default="source",
                        help="source: the default scenes; target: the shifted domain (dusk/night light, fog on "
                             "some scenes, a higher camera with a wider field of view, amber short-dash markings)")
    parser.add_argument("--max-roll-deg", type=float, default=0.0,
                        help="turn each camera by a random real roll of up to this many degrees")
    parser.add_argument("--max-pitch-deg", type=float, default=0.0,
                        help="turn each camera by a random real pitch of up to this many degrees")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridnets-synth``; exit codes as :mod:`hybridnets_ros.cli_support` says."""
    args = build_parser().parse_args(argv)
    configure_logging()
    return run_command("hybridnets-synth", lambda: _write(args))


def _write(args: argparse.Namespace) -> None:
    if args.num_train < 0 or args.num_val < 0:
        raise ValueError("--num-train and --num-val must be >= 0")
    try:
        parse_sizes(args.sizes)
    except ValueError as err:
        raise ValueError(f"--sizes: {err}") from err
    if not (0 <= args.max_roll_deg <= 10 and 0 <= args.max_pitch_deg <= 10):
        raise ValueError("--max-roll-deg and --max-pitch-deg must be in [0, 10]")
    yaml_path = write_dataset(args.output, args.num_train, args.num_val, args.seed, args.sizes, args.workers,
                              args.jpeg_quality, args.ground_truth, args.max_roll_deg, args.max_pitch_deg, args.domain)
    LOG.info("project config: %s", yaml_path)


if __name__ == "__main__":
    raise SystemExit(main())
