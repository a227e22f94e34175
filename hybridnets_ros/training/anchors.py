"""``hybridnets-anchors``: fit anchor scales and ratios to a dataset's boxes
(:mod:`hybridnets_ros.training.anchor_fit`), compare them with a model config's current anchors, and write a copy of
that config with the fitted ones.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hybridnets_ros.cli_support import configure_logging, run_command
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.resources import resolve_model_config
from hybridnets_ros.training.anchor_fit import (
    QUALITY_KEYS,
    AnchorSet,
    choose_octaves,
    dataset_boxes,
    evaluate_anchor_set,
    fit_anchors,
    usable_sizes,
    write_model_config,
)
from hybridnets_ros.training.dataset import BddDataset, LabelError
from hybridnets_ros.training.project import ProjectConfig, ProjectConfigError

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridnets-anchors",
        description="Fit anchor scales and ratios to a dataset's boxes (k-means in log space, boxes in network pixels "
        "after the letterbox) and write them into a copy of a model config.",
    )
    parser.add_argument("--project", required=True, help="project/dataset yaml (dataroot, labelroot, ...)")
    parser.add_argument("--model-config", required=True, help="model config to start from (name or yaml)")
    parser.add_argument("--output", required=True, help="model config yaml to write (the input with new anchors)")
    parser.add_argument("--split", default="train", help="split whose boxes are used (default: train)")
    parser.add_argument("--name", default=None, help="new config name (default: keep the input's)")
    parser.add_argument("--num-scales", type=int, default=3,
                        help="scales per level (default 3; another count changes the head, so old checkpoints "
                        "will not load)")
    parser.add_argument("--num-ratios", type=int, default=3, help="ratios per level (default 3; see --num-scales)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-means starts and of the positional sample")
    parser.add_argument("--restarts", type=int, default=10, help="random k-means starts besides the current anchors")
    parser.add_argument("--iterations", type=int, default=100, help="Lloyd iterations per start")
    parser.add_argument("--positional-samples", type=int, default=2000,
                        help="boxes sampled for the anchor-grid metrics and the octave choice (default 2000)")
    parser.add_argument("--skip-bad-labels", action="store_true", help="leave out (and count) images with bad labels")
    parser.add_argument("--report", default=None, help="also write the comparison as JSON to this file")
    return parser


def format_report(report: dict[str, Any]) -> str:
    """The current and fitted anchors and their quality side by side (rows: metric)."""
    current, fitted = report["current"], report["fitted"]
    rows = [("", "current", "fitted")]
    for key in ("anchor_scales", "anchor_ratios"):
        rows.append((key, _fmt(current[key]), _fmt(fitted[key])))
    for key in QUALITY_KEYS:
        rows.append((key, f"{current[key]:.4f}", f"{fitted[key]:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _fmt(values: Any) -> str:
    return json.dumps(values).replace(" ", "")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fit, compare and write as the parsed CLI arguments say; returns the report."""
    config = ModelConfig.from_yaml(resolve_model_config(args.model_config))
    project = ProjectConfig.from_yaml(args.project)
    dataset = BddDataset(project, args.split, config, skip_bad_labels=args.skip_bad_labels)
    boxes = dataset_boxes(dataset)
    wh = usable_sizes(boxes)
    logger.info("%d boxes in %d images (%d usable for fitting)", boxes.shape[0], len(dataset), wh.shape[0])
    current = AnchorSet.of(config)
    fitted = fit_anchors(wh, config.anchor_scale, args.num_scales, args.num_ratios, args.seed, args.restarts,
                         args.iterations, initial=current)
    gen = torch.Generator().manual_seed(args.seed)
    sample = torch.randperm(boxes.shape[0], generator=gen)[: args.positional_samples]
    fitted = choose_octaves(fitted, boxes[sample], config).rounded()
    quality = {
        "current": evaluate_anchor_set(boxes, config, current, sample),
        "fitted": evaluate_anchor_set(boxes, config, fitted, sample),
    }
    before, after = quality["current"], quality["fitted"]
    grid_keys = ("bpr_positional", "mean_best_iou_positional")
    if tuple(after[k] for k in grid_keys) < tuple(before[k] for k in grid_keys):
        logger.warning("the fitted anchors cover the sampled boxes worse than the current ones on the anchor grid; "
                       "consider keeping the anchors of %s", args.model_config)
    changes = ", ".join(f"{key} {before[key]:.4f} -> {after[key]:.4f}" for key in QUALITY_KEYS)
    comment = (
        f"Anchors fitted by hybridnets-anchors to {boxes.shape[0]} boxes of {project.source} split '{args.split}' "
        f"(seed {args.seed}).\n{changes}"
    )
    write_model_config(args.model_config, args.output, fitted, args.name, comment)
    report = {
        "boxes": int(boxes.shape[0]),
        "usable_boxes": int(wh.shape[0]),
        "current": {"anchor_scales": list(current.scales), "anchor_ratios": [list(r) for r in current.ratios],
                    **quality["current"]},
        "fitted": {"anchor_scales": list(fitted.scales), "anchor_ratios": [list(r) for r in fitted.ratios],
                   **quality["fitted"]},
        "output": str(args.output),
    }
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridnets-anchors``; exit codes as :mod:`hybridnets_ros.cli_support` says."""
    args = build_parser().parse_args(argv)
    configure_logging()
    return run_command("hybridnets-anchors", lambda: _fit_and_print(args), bad_input=(ProjectConfigError, LabelError))


def _fit_and_print(args: argparse.Namespace) -> None:
    report = run(args)
    print(format_report(report))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
