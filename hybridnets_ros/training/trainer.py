"""The training library behind ``hybridnets-train`` (its command line is :mod:`hybridnets_ros.training.train`).

:class:`TrainOptions` holds every option of a run (its fields are the command's flags); :class:`Trainer` is one run,
in one process or as one rank of a torchrun job: model and frozen parts, data loaders, optimiser and schedule,
the step and epoch loop, validation (:func:`~hybridnets_ros.training.evaluation.evaluate_model`, :func:`fitness`),
TensorBoard and the ``last.pt``/``best.pt`` checkpoints. :class:`OptimiserOptions`, :func:`build_optimizer`,
:func:`build_scheduler`, :func:`optimisation_state` and :func:`read_training_state` are shared with
``hybridnets-distill``.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from hybridnets_ros.cli_support import option
from hybridnets_ros.inference.postprocess import Detections, FrameResult
from hybridnets_ros.inference.predictor import HybridNetsPredictor
from hybridnets_ros.inference.visualize import draw_overlay
from hybridnets_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hybridnets_ros.model.config import ModelConfig, load_model_config
from hybridnets_ros.model.hybridnets import HybridNets
from hybridnets_ros.training import distributed, infopro
from hybridnets_ros.training import grad_compression as compression
from hybridnets_ros.training.adaptation import AdaptationOptions, adapt_networks
from hybridnets_ros.training.batchnorm import freeze_statistics, reestimate_batchnorm, scope_batchnorms
from hybridnets_ros.training.checkpointing import enable_activation_checkpointing
from hybridnets_ros.training.cst import SEMI_SUPERVISED, CycleSelfTraining, build_cst
from hybridnets_ros.training.dataset import Batch, BddDataset, collate, describe
from hybridnets_ros.training.evaluation import evaluate_model, normalise_images
from hybridnets_ros.training.losses import HybridNetsLoss, LossTerms
from hybridnets_ros.training.project import ProjectConfig
from hybridnets_ros.training.unlabeled import stream_from_options

logger = logging.getLogger(__name__)

# Submodules (upstream names) of each freezable part.
FREEZE_GROUPS = {
    "backbone": ("encoder", "bifpn"),
    "det": ("regressor", "classifier"),
    "seg": ("bifpndecoder", "segmentation_head"),
}
FITNESS_DET_WEIGHT = 0.5  # fitness = 0.5 * det fitness + 0.5 * mean seg IoU (see fitness())
MIN_LR_FACTOR = 0.01      # the cosine schedule ends at lr * MIN_LR_FACTOR
MAX_WARMUP_STEPS = 1000


@dataclass(kw_only=True)
class OptimiserOptions:
    """The options of the optimisation step that ``hybridnets-train`` and ``hybridnets-distill`` share
    (:func:`build_optimizer`, :func:`build_scheduler`, the step loop); keyword-only so that the commands' own
    options keep their order and their required fields."""

    batch_size: int = option(8, "per process (GPU)")
    lr: float = option(1e-4, "learning rate")
    weight_decay: float | None = option(None, "default: 0.01 for adamw, 0 for sgd")
    optimizer: str = option("adamw", "sgd: momentum 0.9, Nesterov", choices=("adamw", "sgd"))
    scheduler: str = option("cosine", "cosine: per step with linear warmup; plateau: x0.1 after 3 epochs without "
                            "loss improvement", choices=("cosine", "plateau", "none"))
    warmup_steps: int | None = option(None, "cosine warmup (default: 3%% of steps, <= 1000)")
    amp: bool = option(False, "mixed precision (CUDA: float16 + grad scaling; CPU: bfloat16)")
    grad_clip: float = option(0.0, "max gradient norm (0: off)")
    workers: int = option(2, "data loader processes per rank")
    seed: int = option(0, "seed of initialisation, sampling and augmentation")
    device: str = option("auto", "auto, cpu, cuda, cuda:N (under torchrun: auto or cuda)")


_SCALE = "training at scale (see the README's training section)"
_SEMI = "semi-supervised (see the README's 'Learning from unlabeled drives')"
# The option fields whose flags add_unlabeled_arguments adds (every command reading unlabeled frames shares them).
UNLABELED_FIELDS = ("unlabeled", "topic", "every", "min_gap")


@dataclass
class TrainOptions(OptimiserOptions, AdaptationOptions):
    """Every ``hybridnets-train`` option; the CLI flags are these names with dashes (:func:`build_parser`)."""

    project: str = option(help_text="dataset yaml (dataroot, labelroot, segroot, obj_list, ...)")
    model_config: str | None = option(None, "model config name (e.g. hybridnets_d0_synth) or yaml path; default: "
                                            "the config embedded in --weights")
    weights: str | None = option(None, "checkpoint to start from: ours, or a bare upstream state dict")
    resume: bool = option(False, "continue a run: optimizer, scheduler and epoch from --weights, or from "
                                 "OUTPUT/last.pt")
    output: str = option("runs/train", "folder for last.pt, best.pt and tensorboard/")
    epochs: int = option(100, "training epochs")
    channels_last: bool = option(False, "NHWC memory format (faster convolutions on GPUs)")
    freeze_backbone: bool = option(False, "freeze encoder + BiFPN")
    freeze_det: bool = option(False, "freeze box/class heads and skip the detection loss")
    freeze_seg: bool = option(False, "freeze the seg decoder/head and skip the seg loss")
    val_every: int = option(1, "validate every N epochs and at the end (0: never)")
    max_steps: int = option(0, "stop after this many optimizer steps (0: no limit)")
    sync_bn: bool = option(False, "SyncBatchNorm across ranks (CUDA, distributed)")
    no_augment: bool = option(False, "no perspective/HSV/flip augmentation")
    skip_bad_labels: bool = option(False, "leave out (and count) images with bad labels")
    log_images: int = option(4, "prediction images per validation in TensorBoard")
    precise_bn: int = option(0, "before each validation, re-estimate BatchNorm statistics over N training batches "
                                "(0: off)")
    save_every: int = option(1, "write last.pt every N epochs (and always at the end)")
    grad_compression: str = option("none", "DDP gradient exchange: fp32 all-reduce, TernGrad 2-bit all-gather, or "
                                           "torch's PowerSGD", choices=compression.COMPRESSIONS, group=_SCALE)
    ternary_clip: float = option(compression.DEFAULT_CLIP_SIGMAS, "ternary: clip each gradient tensor at this many "
                                 "times its root mean square", group=_SCALE)
    powersgd_rank: int = option(2, "powersgd: rank of the low-rank approximation", group=_SCALE)
    powersgd_start: int = option(10, "powersgd: plain fp32 all-reduce for this many steps first (>= 2)",
                                 group=_SCALE)
    activation_checkpointing: bool = option(False, "recompute encoder stages and BiFPN cells during backward "
                                                   "instead of storing them", group=_SCALE)
    local_modules: int = option(0, "InfoPro local learning: 2 or 4 gradient-isolated modules with auxiliary heads "
                                   "(one process; 0: end-to-end)", group=_SCALE)
    semi_supervised: str = option("none", "cst: cycle self-training of two student/EMA-teacher pairs on labeled + "
                                          "unlabeled batches", choices=SEMI_SUPERVISED, group=_SEMI)
    unlabeled: list[str] | None = None
    topic: str | None = None
    every: int = 1
    min_gap: float = 0.0
    ema_decay: float = option(0.999, "cst: teacher = EMA of its student", group=_SEMI)
    burn_in: int = option(0, "cst: steps on labeled batches only, teachers copying their students", group=_SEMI)

    def validate(self) -> None:
        self.validate_adaptation()
        if self.adapt_bn and not self.unlabeled:
            raise ValueError("--adapt-bn re-estimates BatchNorm statistics on unlabeled frames of the new domain: give "
                             "--unlabeled SRC")
        if self.adapt_bn and self.precise_bn:
            raise ValueError("--precise-bn re-estimates BatchNorm statistics on labeled batches before each "
                             "validation, which undoes --adapt-bn: use one of them")
        if self.unlabeled and not (self.adapt_bn or self.semi_supervised == "cst"):
            raise ValueError("--unlabeled frames are used by --adapt-bn and --semi-supervised cst: add one of them")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"--optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.scheduler not in ("cosine", "plateau", "none"):
            raise ValueError(f"--scheduler must be cosine, plateau or none, got {self.scheduler!r}")
        if self.freeze_det and self.freeze_seg:
            raise ValueError("--freeze-det with --freeze-seg leaves no loss to train on; freeze at most one head")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("--epochs and --batch-size must be >= 1 and --lr > 0")
        if min(self.max_steps, self.val_every, self.grad_clip, self.workers, self.precise_bn, self.log_images) < 0:
            raise ValueError("--max-steps, --val-every, --grad-clip, --workers, --precise-bn and --log-images must not "
                             "be negative")
        if self.save_every < 1:
            raise ValueError("--save-every must be >= 1")
        if self.grad_compression not in compression.COMPRESSIONS:
            raise ValueError(f"--grad-compression must be one of {', '.join(compression.COMPRESSIONS)}, "
                             f"got {self.grad_compression!r}")
        if not self.ternary_clip > 0 or self.powersgd_rank < 1 or self.powersgd_start < 2:
            raise ValueError("--ternary-clip must be > 0, --powersgd-rank >= 1 and --powersgd-start >= 2 (PowerSGD's "
                             "error feedback needs at least two uncompressed steps)")
        if self.local_modules and self.local_modules not in infopro.LOCAL_MODULE_COUNTS:
            raise ValueError(f"--local-modules must be 0 (end-to-end) or one of {infopro.LOCAL_MODULE_COUNTS}, "
                             f"got {self.local_modules}")
        if self.semi_supervised not in SEMI_SUPERVISED:
            raise ValueError(f"--semi-supervised must be one of {', '.join(SEMI_SUPERVISED)}, "
                             f"got {self.semi_supervised!r}")
        if self.semi_supervised == "cst" and (not self.unlabeled or self.local_modules or self.freeze_backbone
                                              or self.freeze_det or self.freeze_seg):
            raise ValueError("--semi-supervised cst needs --unlabeled sources and trains whole networks end to end "
                             "(no --freeze-* or --local-modules)")
        if self.resume and self.weights is None and not (Path(self.output) / "last.pt").is_file():
            raise ValueError(f"--resume without --weights continues {Path(self.output) / 'last.pt'}, which is missing")


# ------------------------------------------------------------------------------------------------ model parts
def frozen_modules(model: HybridNets, options: TrainOptions) -> list[nn.Module]:
    """The submodules the options freeze."""
    chosen = {"backbone": options.freeze_backbone, "det": options.freeze_det, "seg": options.freeze_seg}
    return [getattr(model, name) for group, on in chosen.items() if on for name in FREEZE_GROUPS[group]]


def freeze(modules: Sequence[nn.Module]) -> None:
    """No gradients for these modules' parameters (their eval mode is kept by :func:`set_train_mode`)."""
    for module in modules:
        module.requires_grad_(False)


def set_train_mode(model: nn.Module, frozen: Sequence[nn.Module]) -> None:
    """Train mode, except the frozen parts: eval mode keeps their BatchNorm statistics and disables their dropout."""
    model.train()
    for module in frozen:
        module.eval()


def fitness(metrics: dict[str, float], config: ModelConfig) -> float:
    """Best-checkpoint criterion: 0.5 * detection fitness + 0.5 * mean dataset-wide IoU of seg_list.

    The detection part is the reference's fitness, ``metrics["fitness"]`` of :func:`evaluate_model`; the reference
    ignores segmentation, which would let a segmentation-only stage never improve ``best.pt``.
    """
    det = metrics["fitness"]
    seg = float(np.mean([metrics[f"seg/{name}/iou_dataset"] for name in config.seg_list]))
    return FITNESS_DET_WEIGHT * det + (1.0 - FITNESS_DET_WEIGHT) * seg


def build_optimizer(params: Sequence[nn.Parameter], options: OptimiserOptions) -> torch.optim.Optimizer:
    """AdamW (default weight decay 0.01) or SGD with Nesterov momentum 0.9 (default weight decay 0)."""
    if options.optimizer == "adamw":
        decay = 0.01 if options.weight_decay is None else options.weight_decay
        return torch.optim.AdamW(params, lr=options.lr, weight_decay=decay)
    decay = 0.0 if options.weight_decay is None else options.weight_decay
    return torch.optim.SGD(params, lr=options.lr, momentum=0.9, nesterov=True, weight_decay=decay)


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor per optimizer step: linear warmup from 0.1 to 1, then cosine down to MIN_LR_FACTOR."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.1 + 0.9 * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return MIN_LR_FACTOR + (1.0 - MIN_LR_FACTOR) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, options: OptimiserOptions, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """cosine: per step with warmup (default 3% of the steps, at most 1000); plateau: x0.1 after 3 flat epochs
    of the mean training loss (the reference's); none: constant."""
    if options.scheduler == "cosine":
        warmup = options.warmup_steps
        if warmup is None:
            warmup = min(MAX_WARMUP_STEPS, int(0.03 * total_steps))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total_steps, warmup))
    if options.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=3)
    return None


def optimisation_state(
    optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler, best_fitness: float,
    global_step: int, options: OptimiserOptions, metrics: dict[str, float] | None,
) -> dict[str, Any]:
    """The checkpoint entries every trainer writes beside the weights, so that ``--resume`` continues exactly."""
    return {
        "global_step": global_step,
        "best_fitness": best_fitness,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "metrics": metrics or {},
        "train_options": {k: v for k, v in asdict(options).items() if v is not None},
    }


# --------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run: model, data, optimisation state and logging, built from :class:`TrainOptions`."""

    def __init__(self, options: TrainOptions, context: distributed.DistributedContext | None = None) -> None:
        options.validate()
        self.options = options
        self.context = context or distributed.init_distributed(options.device)
        self.device = self.context.device
        self.output = Path(options.output)
        torch.manual_seed(options.seed)
        resume_path = self._resume_path()
        self.config, model, resume_state = self._build_model(resume_path)
        torch.manual_seed(options.seed + self.context.rank)  # same initial weights, but per-rank dropout draws
        self.frozen = frozen_modules(model, options)
        freeze(self.frozen)
        self.model = model.to(self.device)
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if options.activation_checkpointing:
            segments = enable_activation_checkpointing(self.model)
            logger.info("activation checkpointing: %d segments recomputed during backward", segments)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("every parameter is frozen: nothing to train")
        self.local_modules: list[infopro.LocalModule] = []
        self.aux_heads: nn.ModuleList | None = None
        if options.local_modules:
            self._build_local_modules()
        unlabeled = stream_from_options(options, self.config.input_size) if options.unlabeled else None
        if options.adapt_bn and resume_state is None:
            # Every rank reads the same frames, so distributed ranks end with the same statistics.
            adapt_networks([(self.model, self.config)], unlabeled, options.batch_size, self.device, options)
        self.cst: CycleSelfTraining | None = None
        if options.semi_supervised == "cst":
            if self.context.is_distributed:
                raise ValueError("--semi-supervised cst trains in one process; run it without torchrun")
            self.cst = build_cst(self.model, self.config, unlabeled, options, self.device)
        self.net: nn.Module = self.model
        self.comm_stats: compression.CommStats | None = None
        self.dense_comm_bytes = 0
        if self.context.is_distributed:
            # The encoder's _conv_head/_bn1 exist only for upstream key compatibility and never run, hence
            # find_unused_parameters.
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=device_ids, find_unused_parameters=True)
            self.comm_stats = compression.register_compression(
                self.net, options.grad_compression, rank=self.context.rank, seed=options.seed,
                clip_sigmas=options.ternary_clip, powersgd_rank=options.powersgd_rank,
                powersgd_start=options.powersgd_start)
            self.dense_comm_bytes = compression.dense_bytes_per_step(self.trainable)
        elif options.grad_compression != "none":
            logger.warning("--grad-compression %s has no effect in a single process (nothing is exchanged)",
                           options.grad_compression)
        self.last_step_stats: dict[str, float] = {}

        self.loss = HybridNetsLoss(self.config.seg_mode, compute_det=not options.freeze_det,
                                   compute_seg=not options.freeze_seg)
        # The inference convention (default thresholds) for the overlays; its anchors are the loss's too.
        self.predictor = HybridNetsPredictor(self.config).to(self.device)
        self.anchors = self.predictor.anchors
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=options.amp and self.device.type == "cuda")

        project = ProjectConfig.from_yaml(options.project)
        self.train_set = BddDataset(project, "train", self.config, augment=not options.no_augment,
                                    skip_bad_labels=options.skip_bad_labels, seed=options.seed)
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.context.world_size,
                                          rank=self.context.rank, shuffle=True, seed=options.seed)
        self.train_loader = self._loader(self.train_set, self.sampler)
        self.val_loader: DataLoader | None = None
        if self.context.is_main and options.val_every:
            val_set = BddDataset(project, "val", self.config, skip_bad_labels=options.skip_bad_labels)
            self.val_loader = self._loader(val_set, None)
            logger.info("data: %s, %s", describe(self.train_set), describe(val_set))

        self.steps_per_epoch = len(self.train_loader)
        total = options.epochs * self.steps_per_epoch
        self.total_steps = min(total, options.max_steps) if options.max_steps else total
        optimized = self.trainable + (list(self.aux_heads.parameters()) if self.aux_heads is not None else [])
        optimized += self.cst.parameters() if self.cst is not None else []
        self.optimizer = build_optimizer(optimized, options)
        self.scheduler = build_scheduler(self.optimizer, options, self.total_steps)
        self.start_epoch = 0
        self.global_step = 0
        self.best_fitness = -math.inf
        self.last_metrics: dict[str, float] | None = None
        if resume_state is not None:
            self._restore(resume_state, resume_path)
        self.writer = None
        if self.context.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output / "tensorboard"))

    # ------------------------------------------------------------------------------------------- setup helpers
    def _build_model(self, resume_path: Path | None) -> tuple[ModelConfig, nn.Module, dict[str, Any] | None]:
        """(config, model with its initial weights, training state to resume or None), on the CPU."""
        options = self.options
        init_path = resume_path or options.weights
        given = load_model_config(options.model_config) if options.model_config else None
        if init_path is None and given is None:
            raise ValueError("give --model-config (training from scratch) or --weights (a checkpoint to start from)")
        config, state_dict = load_checkpoint(init_path, given) if init_path is not None else (given, None)
        model = HybridNets(config)
        if state_dict is not None:
            model.load_state_dict(state_dict, strict=True)
            logger.info("initialised from %s", init_path)
        if options.sync_bn and self.context.is_distributed:
            if self.device.type != "cuda":
                raise ValueError("--sync-bn needs CUDA ranks (PyTorch's SyncBatchNorm does not run on CPU)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        resume_state = read_training_state(resume_path) if resume_path is not None else None
        return config, model, resume_state

    def _build_local_modules(self) -> None:
        """InfoPro: the network cut into --local-modules gradient-isolated modules, auxiliary heads for all but the
        last (one process only: DDP reduces gradients once per backward, these modules run one backward each)."""
        if self.context.is_distributed:
            raise ValueError("--local-modules trains in one process; run it without torchrun (or drop the option)")
        self.local_modules = infopro.split_modules(self.model, self.options.local_modules)
        self.aux_heads = infopro.build_auxiliary_heads(self.model, self.local_modules, self.config).to(self.device)
        logger.info("InfoPro: %d local modules, auxiliary heads with %d parameters", len(self.local_modules),
                    sum(p.numel() for p in self.aux_heads.parameters()))

    def _resume_path(self) -> Path | None:
        if not self.options.resume:
            return None
        return Path(self.options.weights) if self.options.weights else self.output / "last.pt"

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        """Optimizer, scheduler, scaler, auxiliary heads and counters from a ``last.pt`` written by this trainer."""
        saved_modules = int(state.get("train_options", {}).get("local_modules", 0))
        if saved_modules != self.options.local_modules:
            raise ValueError(f"'{path}' was trained with --local-modules {saved_modules}; resume it with the same "
                             "value (or start a new run from it with --weights and without --resume)")
        if self.aux_heads is not None:
            self.aux_heads.load_state_dict(state["local_heads"])
        if self.cst is not None:
            if state.get("cst") is None:
                raise ValueError(f"'{path}' was not trained with --semi-supervised cst; start a new CST run from it "
                                 "with --weights and without --resume")
            self.cst.load_state_dict(state["cst"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.global_step = int(state["global_step"])
        self.best_fitness = float(state.get("best_fitness", -math.inf))
        logger.info("resumed %s at epoch %d, step %d", path, self.start_epoch, self.global_step)

    def _loader(self, dataset: BddDataset, sampler: DistributedSampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.options.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.options.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init,
            multiprocessing_context=_worker_context() if self.options.workers else None,
        )

    # ---------------------------------------------------------------------------------------------- training
    def network_input(self, batch: Batch) -> torch.Tensor:
        """The batch's images normalised, on the device, in the configured memory format."""
        images = normalise_images(batch.images, self.config, self.device)
        if self.options.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.options.amp)

    def compute_losses(self, batch: Batch) -> LossTerms:
        """Forward one batch and its loss terms (frozen heads' terms are None)."""
        with self.autocast():
            out = self.net(self.network_input(batch))
        # The losses run in float32 outside autocast: focal logs and Tversky sums are precision-sensitive.
        return self.loss(out.regression, out.classification, out.segmentation, self.anchors,
                         batch.annotations.to(self.device), batch.seg.to(self.device))

    def local_backward(self, batch: Batch) -> tuple[LossTerms, dict[str, float]]:
        """InfoPro: each module but the last forwards and backpropagates its local loss before the next one runs
        (so one module's activations are alive at a time); returns the last module's task loss terms, not yet
        backpropagated, and the local losses as ``local1``, ``local2``, ..."""
        images = self.network_input(batch)
        annotations = batch.annotations.to(self.device)
        targets = infopro.local_targets(images, annotations, batch.seg.to(self.device), self.config)
        modules = infopro.run_modules(self.local_modules, images)
        local = {}
        for index, head in enumerate(self.aux_heads):
            with self.autocast():
                _, produced = next(modules)
                prediction = head(produced, targets[0].shape[-2:])
            loss = infopro.local_loss(prediction, targets)
            self._check_finite(loss, {"local": float(loss.detach())}, batch)
            self.scaler.scale(loss).backward()
            local[f"local{index + 1}"] = float(loss.detach())
        with self.autocast():
            _, out = next(modules)
        terms = self.loss(out["regression"], out["classification"], out["segmentation"], self.anchors, annotations,
                          batch.seg.to(self.device))
        return terms, local

    def _check_finite(self, loss: torch.Tensor, values: dict[str, float], batch: Batch) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {values} at step {self.global_step} ({batch.paths}); "
                "lower --lr, set --grad-clip, or check these images' labels"
            )

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step; returns the loss terms, the total and (InfoPro) the local losses as floats.

        Also sets ``last_step_stats``: ``step_seconds`` and, in distributed runs, ``comm_bytes`` (gradient bytes this
        rank sent).
        """
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        local: dict[str, float] = {}
        if self.local_modules:
            terms, local = self.local_backward(batch)
        else:
            terms = self.compute_losses(batch)
        loss = terms.total()
        if self.cst is not None:
            loss, cst_values = self.cst.loss(self, batch, terms, self.global_step)
            local.update(cst_values)  # logged like InfoPro's local losses (the two never run together)
        self._check_finite(loss, terms.as_floats(), batch)
        self.scaler.scale(loss).backward()
        if self.options.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):
            self.scheduler.step()
        self.global_step += 1
        if self.cst is not None:
            self.cst.after_step(self.global_step)
        self.last_step_stats = {"step_seconds": time.perf_counter() - started}
        if self.context.is_distributed:
            sent = self.comm_stats.take() if self.comm_stats is not None else self.dense_comm_bytes
            self.last_step_stats["comm_bytes"] = float(sent)
        return {**terms.as_floats(), "total": float(loss.detach()), **local}

    def batches(self, epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        yield from self.train_loader

    def train_mode(self) -> None:
        """Train mode for the networks that learn; frozen parts, and BatchNorm statistics after ``--adapt-bn``,
        stay in eval mode."""
        set_train_mode(self.net, self.frozen)
        if self.options.adapt_bn:
            freeze_statistics(self.model)
        if self.cst is not None:
            self.cst.train_mode()

    def train_epoch(self, epoch: int) -> tuple[float, bool]:
        """(mean total loss over ranks, whether --max-steps was reached)."""
        self.train_mode()
        progress = tqdm(self.batches(epoch), total=self.steps_per_epoch, unit="step", dynamic_ncols=True,
                        desc=f"epoch {epoch + 1}/{self.options.epochs}", disable=not self.context.is_main)
        total, count, reached = 0.0, 0, False
        for batch in progress:
            values = self.train_step(batch)
            total += values["total"]
            count += 1
            if self.writer is not None:
                for name, value in values.items():
                    self.writer.add_scalar(f"train/{name}", value, self.global_step)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
                for name, value in self.last_step_stats.items():
                    self.writer.add_scalar(f"train/{name}", value, self.global_step)
            progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
            if self.options.max_steps and self.global_step >= self.options.max_steps:
                reached = True
                break
        mean = distributed.mean_over_ranks(torch.tensor([total / max(count, 1)], device=self.device), self.context)
        return float(mean.item()), reached

    def validate(self, epoch: int) -> dict[str, float]:
        """Rank 0: reference-protocol metrics on the val split, their fitness, and prediction images."""
        assert self.val_loader is not None
        metrics = evaluate_model(self.net, self.config, self.val_loader, self.device, amp=self.options.amp)
        metrics["fitness_combined"] = fitness(metrics, self.config)
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"val/{name}", value, epoch + 1)
            self._log_predictions(epoch)
        return metrics

    def _log_predictions(self, epoch: int) -> None:
        """The first ``log_images`` validation images with their predicted boxes and masks, to TensorBoard."""
        if not self.options.log_images or self.val_loader is None:
            return
        dataset = self.val_loader.dataset
        samples = [dataset[i] for i in range(min(self.options.log_images, len(dataset)))]
        batch = collate(samples)
        for i, overlay in enumerate(prediction_overlays(self.model, self.config, batch, self.predictor)):
            self.writer.add_image(f"predictions/{i}", overlay, epoch + 1, dataformats="HWC")

    def checkpoint_extras(self, epoch: int, metrics: dict[str, float] | None) -> dict[str, Any]:
        return {
            "epoch": epoch,
            **optimisation_state(self.optimizer, self.scheduler, self.scaler, self.best_fitness, self.global_step,
                                 self.options, metrics),
            "local_heads": self.aux_heads.state_dict() if self.aux_heads is not None else None,
            "cst": self.cst.state_dict() if self.cst is not None else None,
        }

    def fit(self) -> dict[str, Any]:
        """Run the epochs; returns a summary (last epoch, steps, best fitness, last metrics, checkpoint paths)."""
        epoch = self.start_epoch - 1
        try:
            for epoch in range(self.start_epoch, self.options.epochs):
                mean_loss, reached = self.train_epoch(epoch)
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(mean_loss)
                final = reached or epoch + 1 == self.options.epochs
                every = self.options.val_every
                validating = bool(every) and ((epoch + 1) % every == 0 or final)
                if validating and self.options.precise_bn:
                    # Every rank takes part: SyncBatchNorm layers average their statistics across ranks.
                    precise_bn(self.model, self.frozen, self.batches(epoch), self.config, self.device,
                               self.options.precise_bn)
                if self.context.is_main:
                    self._end_epoch(epoch, mean_loss, validating, final)
                distributed.barrier(self.context)
                if reached:
                    break
        finally:
            if self.writer is not None:
                self.writer.close()
        return {
            "epoch": epoch,
            "global_step": self.global_step,
            "best_fitness": self.best_fitness,
            "metrics": self.last_metrics or {},
            "last": str(self.output / "last.pt"),
            "best": str(self.output / "best.pt") if (self.output / "best.pt").is_file() else None,
        }

    def _end_epoch(self, epoch: int, mean_loss: float, validating: bool, final: bool) -> None:
        """Rank 0: validation, best.pt when the fitness improved, last.pt every --save-every epochs and at the end."""
        logger.info("epoch %d: mean loss %.4f", epoch + 1, mean_loss)
        self.writer.add_scalar("train/epoch_loss", mean_loss, epoch + 1)
        if validating:
            self.last_metrics = self.validate(epoch)
            score = self.last_metrics["fitness_combined"]
            logger.info("epoch %d: fitness %.4f (mAP@0.5 %.4f, mAP@0.5:0.95 %.4f)", epoch + 1, score,
                        self.last_metrics["det/map50"], self.last_metrics["det/map50_95"])
            if score > self.best_fitness:
                self.best_fitness = score
                save_checkpoint(self.output / "best.pt", self.model, self.config,
                                **self.checkpoint_extras(epoch, self.last_metrics))
        if final or (epoch + 1) % self.options.save_every == 0:
            save_checkpoint(self.output / "last.pt", self.model, self.config,
                            **self.checkpoint_extras(epoch, self.last_metrics))


def read_training_state(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, or CheckpointError when it holds no training state to resume."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    needed = ("optimizer", "epoch", "global_step")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise CheckpointError(
            f"checkpoint '{path}' has no training state ({', '.join(needed)}): it cannot be resumed; "
            "pass it as --weights without --resume to start a new run from its weights"
        )
    return state


def precise_bn(model: nn.Module, frozen: Sequence[nn.Module], batches: Iterator[Batch], config: ModelConfig,
               device: torch.device, num_batches: int) -> int:
    """Re-estimate the running statistics of the trainable BatchNorms as plain averages over ``num_batches``
    training batches (frozen parts are left untouched); returns the batches used.

    With the reference's BN momentum of 0.01 the running statistics trail the weights by about a hundred steps,
    which makes eval-mode results of short runs (fine-tuning stages, small datasets) much worse than the training
    loss suggests.
    """
    frozen_bns = {id(m) for part in frozen for m in part.modules()}
    layers = [bn for bn in scope_batchnorms(model, "all") if id(bn) not in frozen_bns]
    inputs = (normalise_images(batch.images, config, device) for batch in batches)
    return reestimate_batchnorm(model, layers, inputs, num_batches)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Loader workers come from a fork server, not from this process: validation starts OpenCV's thread pool here,
    and a worker forked from a process with that pool deadlocks in its first cv2 call (seen as a hang at the start of
    the epoch after a validation)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([BddDataset.__module__])  # torch and cv2 imported once, not once per worker
    return context


def _worker_init(_: int) -> None:
    # Loader workers already get one torch thread each; keep cv2 from spawning a pool per worker as well.
    cv2.setNumThreads(1)


@torch.no_grad()
def prediction_overlays(model: nn.Module, config: ModelConfig, batch: Batch,
                        predictor: HybridNetsPredictor) -> list[np.ndarray]:
    """(H,W,3) uint8 RGB network-size images with the predicted masks and boxes drawn, one per batch image
    (``predictor``: its device and thresholds)."""
    was_training = model.training
    model.eval()
    try:
        out = model(predictor.normalize(batch.images.to(predictor.anchors.device)))
    finally:
        model.train(was_training)
    selected = predictor.detect(out.regression, out.classification)
    masks = predictor.segment(out.segmentation).cpu().numpy()
    overlays = []
    for b, (image, mask, lb) in enumerate(zip(batch.images, masks, batch.letterboxes)):
        detections = Detections(*(t.cpu().numpy() for t in selected.image(b)))
        bgr = cv2.cvtColor(image.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR)
        drawn = draw_overlay(bgr, FrameResult(detections, mask, lb), config.obj_list, config.seg_list)
        overlays.append(cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB))
    return overlays
