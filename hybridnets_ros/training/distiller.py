"""Logit distillation of a student HybridNets from one or more teachers on unlabeled frames: the options
(:class:`DistillOptions`), the teachers and their output ownership, and the training loop (:class:`Distiller`).
The command line is :mod:`hybridnets_ros.training.distill_train` (``hybridnets-distill``)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from hybridnets_ros.cli_support import option
from hybridnets_ros.inference.predictor import HybridNetsPredictor
from hybridnets_ros.model.checkpoint import build_model, load_checkpoint, save_checkpoint
from hybridnets_ros.model.config import ModelConfig, load_model_config
from hybridnets_ros.model.hybridnets import HybridNets, HybridNetsOutput
from hybridnets_ros.training import distributed
from hybridnets_ros.training.adaptation import (
    AdaptationOptions,
    StudentView,
    adapt_networks,
    student_train_mode,
)
from hybridnets_ros.training.dataset import Batch, BddDataset, collate
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
from hybridnets_ros.training.project import ProjectConfig
from hybridnets_ros.training.style import restyle_like
from hybridnets_ros.training.trainer import (
    OptimiserOptions,
    _worker_context,
    _worker_init,
    build_optimizer,
    build_scheduler,
    fitness,
    optimisation_state,
    read_training_state,
)
from hybridnets_ros.training.unlabeled import stream_from_options

logger = logging.getLogger(__name__)


@dataclass
class DistillOptions(OptimiserOptions, AdaptationOptions):
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
    restyle_labeled: bool = option(False, "show each labeled frame with the colour mean and std of an unlabeled "
                                          "frame of the same step: the labels in the drives' colours")
    val_every: int = option(1000, "validate on --labeled's val split every N steps")
    save_every: int = option(1000, "write last.pt every N steps (and at the end)")
    resume: bool = option(False, "continue OUTPUT/last.pt (weights, optimizer, stream)")

    def validate(self) -> None:
        self.validate_adaptation()
        if self.owns is None and len(self.teacher) > 1:
            raise ValueError("several --teacher need one --owns each (det, seg or class names), in teacher order")
        if self.owns is not None and len(self.owns) != len(self.teacher):
            raise ValueError(f"{len(self.teacher)} --teacher but {len(self.owns)} --owns: give each teacher one --owns")
        if self.restyle_labeled and not self.labeled:
            raise ValueError("--restyle-labeled restyles the --labeled frames: give --labeled DATASET.yaml")
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
        if options.adapt_bn and resume_state is None:
            adapt_networks([(t.model, t.config) for t in self.teachers] + [(self.model, self.config)], self.stream,
                           options.batch_size, self.device, options)
        self.student_view = StudentView(options.student_augment, options.seed)
        self.position = (0, 0)
        self.labeled_epoch = 0
        self.loss = HybridNetsLoss(self.config.seg_mode)
        # The inference convention's anchors, as the trainer's loss uses them.
        self.anchors = HybridNetsPredictor(self.config).to(self.device).anchors
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
        """Every term of one step: each teacher's on the (B,3,H,W) uint8 unlabeled images (the teachers see them
        clean, the student through ``--student-augment``), and the labeled ones (in the unlabeled frames' colours
        with ``--restyle-labeled``)."""
        options = self.options
        images = images.to(self.device)
        with self.autocast():
            teacher_outputs = [teacher(images, self.device) for teacher in self.teachers]
            student_input = self.student_view(images, self.global_step)
            student = self.model(normalise_images(student_input, self.config, self.device))
        terms: dict[str, Tensor] = {}
        for teacher, target in zip(self.teachers, teacher_outputs):
            owned = distill_terms(student, target, teacher.ownership, teacher.channels, self.config.seg_mode,
                                  options.class_loss, options.seg_loss, options.temperature)
            terms.update({f"{teacher.name}/{name}": value for name, value in owned.items()})
        if labeled is not None:
            labeled_images = labeled.images.to(self.device)
            if options.restyle_labeled:
                labeled_images = restyle_like(labeled_images, images)
            with self.autocast():
                out = self.model(normalise_images(labeled_images, self.config, self.device))
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
        student_train_mode(self.model, options.adapt_bn > 0)
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
                    student_train_mode(self.model, options.adapt_bn > 0)
                if final or self.global_step % options.save_every == 0:
                    save_checkpoint(self.output / "last.pt", self.model, self.config,
                                    **self.checkpoint_extras(metrics))
        finally:
            self.writer.close()
        best = self.output / "best.pt"
        return {"global_step": self.global_step, "first_loss": first, "last_loss": last,
                "last": str(self.output / "last.pt"), "best": str(best) if best.is_file() else None}
