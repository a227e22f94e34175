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
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from hybridnets_ros.cli_support import (
    add_dataclass_arguments,
    configure_logging,
    dataclass_from_args,
    option,
    run_command,
)
from hybridnets_ros.model.anchors import generate_anchors
from hybridnets_ros.model.checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from hybridnets_ros.model.config import ModelConfig, load_model_config
from hybridnets_ros.model.hybridnets import HybridNets, HybridNetsOutput
from hybridnets_ros.training import distributed
from hybridnets_ros.training.dataset import Batch, BddDataset, LabelError, collate
from hybridnets_ros.training.distill import (
    CLASS_LOSSES,
    SEG_LOSSES,
    balanced_sum,
    check_exclusive,
    distill_terms,
    parse_ownership,
    teacher_classes,
)
from hybridnets_ros.training.evaluation import evaluate_model, normalise_images
from hybridnets_ros.training.losses import HybridNetsLoss
from hybridnets_ros.training.project import ProjectConfig, ProjectConfigError
from hybridnets_ros.training.trainer import (
    UNLABELED_FIELDS,
    OptimiserOptions,
    _worker_context,
    _worker_init,
    build_optimizer,
    build_scheduler,
    fitness,
    optimisation_state,
    read_training_state,
)
from hybridnets_ros.training.unlabeled import add_unlabeled_arguments, stream_from_options

logger = logging.getLogger(__name__)


@dataclass
class DistillOptions(OptimiserOptions):
    """Every ``hybridnets-distill`` option; the CLI flags are these names with dashes."""

    teacher: list[str] = option(help_text="teacher checkpoint; repeat for several teachers, each followed by its "
                                          "--owns", action="append")
    student: str = option(help_text="student model config name (e.g. hybridnets_d0_synth) or yaml")
    unlabeled: list[str]
    owns: list[list[str]] | None = option(None, "what the preceding --teacher supervises: det (every class), seg, or "
                                                "class names", action="append", metavar="det|seg|CLASS")
    weights: str | None = option(None, "student checkpoint to start from (default: random initialisation)")
    labeled: str | None = option(None, "dataset yaml whose train split is mixed in (usual losses) and val split "
                                       "validated (best.pt)")
    topic: str | None = None
    every: int = 1
    min_gap: float = 0.0
    output: str = option("runs/distill", "folder for last.pt, best.pt and tensorboard/")
    max_steps: int = option(10000, "optimizer steps")
    class_loss: str = option("kl", "classification: binary KL to the teacher's probabilities, or their squared "
                                   "difference", choices=CLASS_LOSSES)
    seg_loss: str = option("kl", "segmentation: T^2-scaled KL of temperature-T distributions, or MSE of the logits",
                           choices=SEG_LOSSES)
    temperature: float = option(1.0, "segmentation distillation temperature T")
    val_every: int = option(1000, "validate on --labeled's val split every N steps")
    save_every: int = option(1000, "write last.pt every N steps (and at the end)")
    resume: bool = option(False, "continue OUTPUT/last.pt (weights, optimizer, stream)")

    def validate(self) -> None:
        if self.owns is None and len(self.teacher) > 1:
            raise ValueError("several --teacher need one --owns each (det, seg or class names), in teacher order")
        if self.owns is not None and len(self.owns) != len(self.teacher):
            raise ValueError(f"{len(self.teacher)} --teacher but {len(self.owns)} --owns: give each teacher one --owns")
        if self.scheduler not in ("cosine", "none"):
            raise ValueError(f"--scheduler must be cosine or none, got {self.scheduler!r}")
        if self.max_steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.save_every < 1:
            raise ValueError("--max-steps, --batch-size and --save-every must be >= 1 and --lr > 0")
        if min(self.val_every, self.grad_clip, self.workers) < 0:
            raise ValueError("--val-every, --grad-clip and --workers must not be negative")
        if self.resume and not (Path(self.output) / "last.pt").is_file():
            raise ValueError(f"--resume continues {Path(self.output) / 'last.pt'}, which is missing")


class Teacher:
    """A frozen network, its config and what it supervises."""

    def __init__(self, path: str, owns: Sequence[str] | None, student: ModelConfig, index: int,
                 device: torch.device) -> None:
        self.model, self.config = build_model(path, device=device)
        self.model.requires_grad_(False)
        where = f"teacher {index + 1} ({path})"
        self.ownership = parse_ownership(owns if owns is not None else ("det", "seg"), student, self.config, where)
        self.channels = teacher_classes(self.ownership, student, self.config)
        self.name = f"t{index + 1}"

    @torch.no_grad()
    def __call__(self, images: Tensor, device: torch.device) -> HybridNetsOutput:
        """(B,3,H,W) uint8 -> outputs at the student's input size, normalised with the teacher's own mean/std."""
        return self.model(normalise_images(images, self.config, device))


class Distiller:
    """One distillation run, built from :class:`DistillOptions`."""

    def __init__(self, options: DistillOptions) -> None:
        options.validate()
        self.options = options
        context = distributed.init_distributed(options.device)
        if context.is_distributed:
            raise ValueError("hybridnets-distill runs in one process; start it without torchrun")
        self.device = context.device
        self.output = Path(options.output)
        torch.manual_seed(options.seed)
        self.config = load_model_config(options.student)
        resume_state = read_training_state(self.output / "last.pt") if options.resume else None
        init = self.output / "last.pt" if resume_state is not None else options.weights
        self.model = HybridNets(self.config)
        if init is not None:
            self.model.load_state_dict(load_checkpoint(init, self.config)[1], strict=True)
        self.model.to(self.device)
        self.teachers = [Teacher(path, options.owns[i] if options.owns else None, self.config, i, self.device)
                         for i, path in enumerate(options.teacher)]
        check_exclusive([t.ownership for t in self.teachers], self.config)
        self.stream = stream_from_options(options, self.config.input_size)
        self.position = (0, 0)
        self.labeled_epoch = 0
        self.loss = HybridNetsLoss(self.config.seg_mode)
        self.anchors = generate_anchors(self.config, self.config.input_size).to(self.device)
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=options.amp and self.device.type == "cuda")
        self.train_set = self.val_loader = None
        if options.labeled:
            project = ProjectConfig.from_yaml(options.labeled)
            self.train_set = BddDataset(project, "train", self.config, augment=True, seed=options.seed)
            if options.val_every:
                self.val_loader = self._loader(BddDataset(project, "val", self.config), shuffle=False)
        self.optimizer = build_optimizer(list(self.model.parameters()), options)
        self.scheduler = build_scheduler(self.optimizer, options, options.max_steps)
        self.global_step = 0
        self.best_fitness = -math.inf
        if resume_state is not None:
            self._restore(resume_state)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.output / "tensorboard"))

    def _loader(self, dataset: BddDataset, shuffle: bool, epoch: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(self.options.seed * 1000 + epoch)
        return DataLoader(dataset, batch_size=self.options.batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.options.workers, collate_fn=collate, drop_last=shuffle,
                          worker_init_fn=_worker_init,
                          multiprocessing_context=_worker_context() if self.options.workers else None)

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = int(state["global_step"])
        self.best_fitness = float(state.get("best_fitness", -math.inf))
        self.position = tuple(int(v) for v in state["unlabeled_position"])
        self.labeled_epoch = int(state["epoch"])
        logger.info("resumed %s at step %d", self.output / "last.pt", self.global_step)

    def labeled_batches(self) -> Iterator[Batch]:
        """Endless augmented labeled batches, one reshuffled epoch after another."""
        while True:
            self.train_set.set_epoch(self.labeled_epoch)
            yield from self._loader(self.train_set, shuffle=True, epoch=self.labeled_epoch)
            self.labeled_epoch += 1

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.options.amp)

    def loss_terms(self, images: Tensor, labeled: Batch | None) -> dict[str, Tensor]:
        """Every term of one step: each teacher's on the (B,3,H,W) uint8 unlabeled images, and the labeled ones."""
        options = self.options
        with self.autocast():
            teacher_outputs = [teacher(images, self.device) for teacher in self.teachers]
            student = self.model(normalise_images(images, self.config, self.device))
        terms: dict[str, Tensor] = {}
        for teacher, target in zip(self.teachers, teacher_outputs):
            owned = distill_terms(student, target, teacher.ownership, teacher.channels, self.config.seg_mode,
                                  options.class_loss, options.seg_loss, options.temperature)
            terms.update({f"{teacher.name}/{name}": value for name, value in owned.items()})
        if labeled is not None:
            with self.autocast():
                out = self.model(normalise_images(labeled.images, self.config, self.device))
            labeled_terms = self.loss(out.regression, out.classification, out.segmentation, self.anchors,
                                      labeled.annotations.to(self.device), labeled.seg.to(self.device))
            terms.update({f"labeled/{name}": value for name, value in
                          zip(("cls", "reg", "seg"), labeled_terms) if value is not None})
        return terms

    def train_step(self, images: Tensor, labeled: Batch | None) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.loss_terms(images, labeled)
        loss = balanced_sum(terms)
        values = {name: float(value.detach()) for name, value in terms.items()}
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite distillation loss {values} at step {self.global_step}; lower --lr "
                                     "or set --grad-clip")
        self.scaler.scale(loss).backward()
        if self.options.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.global_step += 1
        return {**values, "total": float(loss.detach())}

    def checkpoint_extras(self, metrics: dict[str, float] | None) -> dict[str, Any]:
        return {
            "epoch": self.labeled_epoch,
            **optimisation_state(self.optimizer, self.scheduler, self.scaler, self.best_fitness, self.global_step,
                                 self.options, metrics),
            "unlabeled_position": list(self.position),
        }

    def validate(self) -> dict[str, float]:
        metrics = evaluate_model(self.model, self.config, self.val_loader, self.device, amp=self.options.amp)
        metrics["fitness_combined"] = fitness(metrics, self.config)
        for name, value in metrics.items():
            self.writer.add_scalar(f"val/{name}", value, self.global_step)
        if metrics["fitness_combined"] > self.best_fitness:
            self.best_fitness = metrics["fitness_combined"]
            save_checkpoint(self.output / "best.pt", self.model, self.config, **self.checkpoint_extras(metrics))
        return metrics

    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps``; returns the steps done, the first and last total loss and the checkpoint paths."""
        options = self.options
        unlabeled = self.stream.batches(options.batch_size, self.position)
        labeled = self.labeled_batches() if self.train_set is not None else None
        self.model.train()
        first = last = None
        metrics: dict[str, float] | None = None
        progress = tqdm(range(self.global_step, options.max_steps), initial=self.global_step,
                        total=options.max_steps, unit="step", dynamic_ncols=True, desc="distill")
        try:
            for _ in progress:
                images, pass_index, consumed = next(unlabeled)
                values = self.train_step(images, next(labeled) if labeled is not None else None)
                self.position = (pass_index, consumed)
                first = values["total"] if first is None else first
                last = values["total"]
                for name, value in values.items():
                    self.writer.add_scalar(f"train/{name}", value, self.global_step)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
                progress.set_postfix({k: f"{v:.3g}" for k, v in values.items()})
                final = self.global_step == options.max_steps
                if self.val_loader is not None and (self.global_step % options.val_every == 0 or final):
                    metrics = self.validate()
                    self.model.train()
                if final or self.global_step % options.save_every == 0:
                    save_checkpoint(self.output / "last.pt", self.model, self.config,
                                    **self.checkpoint_extras(metrics))
        finally:
            self.writer.close()
        best = self.output / "best.pt"
        return {"global_step": self.global_step, "first_loss": first, "last_loss": last,
                "last": str(self.output / "last.pt"), "best": str(best) if best.is_file() else None}


# ------------------------------------------------------------------------------------------------------- CLI
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
