"""BatchNorm running statistics re-estimated as plain averages over batches, without labels or gradients.

Two uses: *precise BN* before a validation (``hybridnets-train --precise-bn``: with the reference's momentum of 0.01
the running statistics trail the weights by about a hundred steps), and *domain adaptation* (AdaBN, Li et al. 2016:
a model's statistics re-estimated on frames of a new camera, light or weather, ``--adapt-bn`` and
``hybridnets-adapt-bn``). The statistics are gathered with everything else in eval mode (no dropout, no
drop-connect), so they describe the network as it runs at inference.

Which layers adapt is a *scope*: ``encoder`` (the backbone's BatchNorms only) or ``all``. On the synthetic night/fog
shift of the README the encoder scope recovered the segmentation gap while keeping detection, whereas ``all`` also
moved the detection heads' statistics and lost 0.12 mAP@0.5: their layers follow features that the encoder's new
statistics have already aligned.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.training.evaluation import normalise_images

BN_SCOPES = ("encoder", "all")


def scope_batchnorms(model: nn.Module, scope: str) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that ``scope`` names: its ``encoder`` child's, or ``all``."""
    if scope not in BN_SCOPES:
        raise ValueError(f"BatchNorm adaptation scope must be one of {', '.join(BN_SCOPES)}, got {scope!r}")
    root = model if scope == "all" else model.get_submodule("encoder")
    return [m for m in root.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, layers: Sequence[nn.modules.batchnorm._BatchNorm],
                         inputs: Iterable[Tensor], num_batches: int) -> int:
    """Replace the running mean/var of ``layers`` by their average over the first ``num_batches`` of ``inputs``.

    ``inputs``: normalised (B,3,H,W) network inputs. Every batch weighs the same (cumulative average, momentum None);
    the other layers, and listed ones that the forward never reaches, keep their statistics. The model's mode and the
    layers' momenta are restored. Returns the batches used.
    """
    momenta = [bn.momentum for bn in layers]
    saved = [{name: buffer.clone() for name, buffer in bn.named_buffers()} for bn in layers]
    was_training = model.training
    model.eval()
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    used = 0
    try:
        for images in inputs:
            if used >= num_batches:
                break
            model(images)
            used += 1
    finally:
        for bn, momentum, buffers in zip(layers, momenta, saved):
            bn.momentum = momentum
            if not bn.num_batches_tracked:  # a layer the forward never reaches keeps what it had
                bn.load_state_dict(buffers, strict=False)
        model.train(was_training)
    return used


def freeze_statistics(model: nn.Module) -> None:
    """Eval mode for every BatchNorm of ``model`` (after ``model.train()``): they normalise with their running
    statistics and keep them, while their affine parameters still train."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def adapt_batchnorm(model: nn.Module, config: ModelConfig, images: Iterator[Tensor], device: torch.device,
                    num_batches: int, scope: str = "encoder") -> int:
    """AdaBN: re-estimate the ``scope`` BatchNorms of ``model`` on (B,3,H,W) uint8 RGB network-size batches of the
    new domain (normalised with ``config``'s mean/std). Returns the batches used; raises ValueError when
    ``images`` ends before ``num_batches``, since statistics of a few frames would be worse than the old ones."""
    inputs = (normalise_images(batch, config, device) for batch in images)
    used = reestimate_batchnorm(model, scope_batchnorms(model, scope), inputs, num_batches)
    if used < num_batches:
        raise ValueError(f"BatchNorm adaptation asked for {num_batches} batches but the frames gave only {used}; "
                         "lower the number of batches or the batch size")
    return used
