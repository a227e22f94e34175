"""Measurements behind the README's "Training at scale" numbers (a benchmark: prints, asserts nothing).

``compression``: the same short ``hybridnets-train`` run on 2 CPU processes (gloo, ``torchrun --standalone``) once per
``--grad-compression``; bytes each rank sent per step, median step time, the loss curve, the final loss and the
validation metrics::

    python -m hybridnets_ros.training.scale_bench compression --project data/synth/dataset.yaml \\
        --model-config cfg_128x256.yaml --steps 40 --output /tmp/bench_comp

``memory``: one fresh process per variant (plain, ``--activation-checkpointing``, ``--local-modules 2/4``) training
on one fixed batch; peak resident memory of the training steps above the resting process (model, optimizer state,
data), and the median step time. Method: glibc is told to serve every allocation >= 64 KiB by mmap
(``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the resident set; after two warm-up steps the kernel's
high-water mark is reset (``/proc/self/clear_refs`` = 5) and ``VmHWM - VmRSS`` is read after the measured steps::

    python -m hybridnets_ros.training.scale_bench memory --project ... --model-config ... --batch-size 4

``paired-times``: plain and ``--variant`` (default checkpointing) alternate steps in one process; the median of the
per-pair step-time ratios (robust to load on a shared host)::

    python -m hybridnets_ros.training.scale_bench paired-times --project ... --model-config ... --batch-size 4

``accuracy``: single-process runs end-to-end and with ``--local-modules 2/4`` for the same steps; final losses and
validation metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

TRAIN_MODULE = ["-m", "hybridnets_ros.training.train"]
METRICS_SHOWN = ("det/recall", "det/map50", "seg/road/iou_dataset", "seg/lane/iou_dataset")
MEMORY_VARIANTS = {
    "plain": {},
    "checkpointing": {"activation_checkpointing": True},
    "infopro-2": {"local_modules": 2},
    "infopro-4": {"local_modules": 4},
}
CURVE_WINDOW = 5


# --------------------------------------------------------------------------------------------- training runs
def scalars(tensorboard_dir: Path) -> dict[str, list[float]]:
    """Every scalar series of a run's TensorBoard folder, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run_training(prefix: list[str], args: argparse.Namespace, output: Path, extra: list[str]) -> dict[str, Any]:
    """One hybridnets-train run of ``args.steps`` steps validated at the end; its curves, timing and metrics."""
    command = [*prefix, *TRAIN_MODULE, "--project", args.project, "--model-config", args.model_config,
               "--output", str(output), "--epochs", "1000", "--val-every", "1000", "--max-steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--optimizer", args.optimizer,
               "--workers", "0", "--device", "cpu",
               "--seed", str(args.seed), "--log-images", "0", "--precise-bn", "4", *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    series = scalars(output / "tensorboard")
    loss = series["train/total"]
    state = torch.load(output / "last.pt", map_location="cpu", weights_only=True)
    return {
        "command": " ".join(command),
        "wall_s": round(wall, 1),
        "bytes_per_step": statistics.median(series["train/comm_bytes"]) if "train/comm_bytes" in series else None,
        "step_s": round(statistics.median(series["train/step_seconds"]), 3),
        "loss_curve": [round(statistics.mean(loss[i:i + CURVE_WINDOW]), 3) for i in range(0, len(loss), CURVE_WINDOW)],
        "final_loss": round(statistics.mean(loss[-CURVE_WINDOW:]), 4),
        "metrics": {k: round(state["metrics"][k], 4) for k in METRICS_SHOWN},
    }


def compression(args: argparse.Namespace) -> dict[str, Any]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return {method: run_training(torchrun, args, Path(args.output) / method, ["--grad-compression", method])
            for method in args.methods.split(",")}


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    return {f"local-modules {k}": run_training([sys.executable], args, Path(args.output) / f"local{k}",
                                               ["--local-modules", str(k)])
            for k in (0, 2, 4)}


# ------------------------------------------------------------------------------------------------------ memory
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_variant(args: argparse.Namespace) -> dict[str, Any]:
    """In this (fresh) process: train on one fixed batch; peak memory above rest and step time."""
    from hybridnets_ros.training.dataset import collate
    from hybridnets_ros.training.trainer import Trainer, TrainOptions, set_train_mode

    torch.set_num_threads(args.threads)
    trainer = Trainer(TrainOptions(project=args.project, model_config=args.model_config, output=args.output,
                                   batch_size=args.batch_size, workers=0, val_every=0, device="cpu",
                                   no_augment=True, lr=1e-3, scheduler="none", seed=0,
                                   **MEMORY_VARIANTS[args.variant]))
    batch = collate([trainer.train_set[i] for i in range(args.batch_size)])
    set_train_mode(trainer.net, trainer.frozen)
    for _ in range(2):  # optimizer state and allocator pools exist from here on
        trainer.train_step(batch)
    Path("/proc/self/clear_refs").write_text("5")
    resting = _status_kib("VmRSS")
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - started)
    return {"peak_above_rest_mib": round((_status_kib("VmHWM") - resting) / 1024, 1),
            "resting_mib": round(resting / 1024, 1), "step_s_median": round(statistics.median(times), 3),
            "step_s_min": round(min(times), 3)}


def paired_times(args: argparse.Namespace) -> dict[str, Any]:
    """In one process: plain and checkpointed trainers take turns on the same batch, so load on the shared host
    hits both alike; the median of the per-pair time ratios."""
    from hybridnets_ros.training.dataset import collate
    from hybridnets_ros.training.trainer import Trainer, TrainOptions, set_train_mode

    torch.set_num_threads(args.threads)
    trainers = [Trainer(TrainOptions(project=args.project, model_config=args.model_config, output=args.output,
                                     batch_size=args.batch_size, workers=0, val_every=0, device="cpu",
                                     no_augment=True, lr=1e-3, scheduler="none", seed=0, **MEMORY_VARIANTS[name]))
                for name in ("plain", args.variant)]
    batch = collate([trainers[0].train_set[i] for i in range(args.batch_size)])
    times: list[list[float]] = [[], []]
    for step in range(args.steps + 1):
        for index, trainer in enumerate(trainers):
            set_train_mode(trainer.net, trainer.frozen)
            started = time.perf_counter()
            trainer.train_step(batch)
            if step:  # the first pair warms up
                times[index].append(time.perf_counter() - started)
    ratios = [b / a for a, b in zip(*times)]
    return {"variant": args.variant, "plain_step_s_median": round(statistics.median(times[0]), 3),
            "variant_step_s_median": round(statistics.median(times[1]), 3),
            "time_ratio_median": round(statistics.median(ratios), 3), "pairs": len(ratios)}


def memory(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(args.threads)}
    results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in MEMORY_VARIANTS}
    for _ in range(args.repeats):  # variants interleaved, so a burst of load on the shared host hits all of them
        for variant in MEMORY_VARIANTS:
            command = [sys.executable, "-m", "hybridnets_ros.training.scale_bench", "_measure", "--variant", variant,
                       "--project", args.project, "--model-config", args.model_config, "--batch-size",
                       str(args.batch_size), "--steps", str(args.steps), "--threads", str(args.threads),
                       "--output", str(Path(args.output) / variant)]
            done = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
            results[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {variant: {"peak_above_rest_mib": max(r["peak_above_rest_mib"] for r in runs),
                      "step_s_median": statistics.median(r["step_s_median"] for r in runs),
                      "step_s_min": min(r["step_s_min"] for r in runs)}
            for variant, runs in results.items()}


# --------------------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybridnets_ros.training.scale_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("compression", "memory", "paired-times", "accuracy", "_measure"))
    p.add_argument("--project", required=True)
    p.add_argument("--model-config", required=True)
    p.add_argument("--output", default="/tmp/scale_bench")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--seed", type=int, default=0, help="training runs: initial weights, data order, rounding draws")
    p.add_argument("--methods", default="none,ternary,powersgd", help="compression: comma-separated methods")
    p.add_argument("--threads", type=int, default=1, help="memory: torch threads of the measured process")
    p.add_argument("--repeats", type=int, default=2, help="memory: measurements of each variant")
    p.add_argument("--variant", choices=tuple(MEMORY_VARIANTS), default="checkpointing",
                   help="paired-times: the variant timed against plain")
    args = p.parse_args(argv)
    run = {"compression": compression, "memory": memory, "paired-times": paired_times, "accuracy": accuracy,
           "_measure": measure_variant}
    print(json.dumps(run[args.what](args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
