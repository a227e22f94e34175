"""Activation checkpointing for training: keep only each segment's input, recompute its insides during backward.

Segments: the encoder stem, each encoder stage (the blocks between the p2..p5 taps) and each BiFPN cell. Forward
results and gradients are those of the plain network (same operations in the same order; random drop-connect draws
are replayed). The forward methods are replaced on the module instances, so state-dict keys, checkpoints and
exports are unchanged.

BatchNorm layers update their running statistics when a segment runs in training mode; the recomputation during
backward would update them a second time, so it runs with those buffers saved and restored.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hybridnets_ros.model.hybridnets import HybridNets


def _batch_norm_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [buf for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for buf in m.buffers()]


def _run_once_then_replay(fn: Callable[..., Any], buffers: list[torch.Tensor]) -> Callable[..., Any]:
    """``fn``, whose calls after the first (the recomputations) leave ``buffers`` as they found them."""
    calls = {"count": 0}

    def run(*args: Any) -> Any:
        calls["count"] += 1
        if calls["count"] == 1:
            return fn(*args)
        saved = [buf.clone() for buf in buffers]
        try:  # recomputation may stop early (by exception) once the needed tensors exist
            return fn(*args)
        finally:
            with torch.no_grad():
                for buf, value in zip(buffers, saved):
                    buf.copy_(value)

    return run


def checkpointed(forward: Callable[..., Any], owner: nn.Module) -> Callable[..., Any]:
    """``forward`` (a bound method of ``owner``) that stores only its inputs when gradients are being recorded."""
    buffers = _batch_norm_buffers(owner)

    @functools.wraps(forward)
    def wrapper(*args: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args)
        return checkpoint(_run_once_then_replay(forward, buffers), *args, use_reentrant=False)

    return wrapper


def enable_activation_checkpointing(model: HybridNets) -> int:
    """Checkpoint the encoder stem and stages and every BiFPN cell of ``model``; returns the number of segments."""
    encoder = model.encoder
    encoder.stem = checkpointed(encoder.stem, encoder)
    encoder.run_blocks = checkpointed(encoder.run_blocks, encoder)
    for cell in model.bifpn:
        cell.forward = checkpointed(cell.forward, cell)
    return 1 + len(encoder.stage_ends) + len(model.bifpn)
