"""Locally supervised training with information-propagation losses (InfoPro, Wang et al., ICLR 2021).

The network is cut into K gradient-isolated modules; what crosses a cut is detached. Every module but the last gets
a small auxiliary head on its outputs, trained with

    local loss = RECON_WEIGHT * MSE(reconstructed image, input image at 1/8 resolution)
               + TASK_WEIGHT * BCE(task logits, [segmentation classes | vehicle boxes] at 1/8 resolution),

so an early module is pushed to keep what the input holds (reconstruction) and what the tasks need (task term)
instead of collapsing onto features only its own head finds useful. The last module trains on the full HybridNets
loss. Each module runs backward right after its forward, so only one module's activations are alive at a time.

Cuts (K = 2): encoder | BiFPN + heads. (K = 4): stem and stages to p3 | stages to p5 | BiFPN | heads.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNets
from hybridnets_ros.model.layers import swish
from hybridnets_ros.training.losses import seg_target_one_hot

LOCAL_MODULE_COUNTS = (2, 4)
TARGET_STRIDE = 8       # reconstruction and task targets at 1/8 of the input resolution
HEAD_WIDTH = 32
RECON_WEIGHT = 1.0
TASK_WEIGHT = 1.0
IMAGE_CHANNELS = 3

Features = dict[str, torch.Tensor]
LocalModule = Callable[[Features], Features]


# --------------------------------------------------------------------------------------------- the modules
def split_modules(model: HybridNets, num_modules: int) -> list[LocalModule]:
    """The forward pass as ``num_modules`` functions; each reads the features before it and returns new ones.

    Feature names: ``image``; encoder ``enc2``..``enc5`` (strides 4..32); BiFPN ``fpn3``..``fpn7``; last module
    ``regression``, ``classification``, ``segmentation`` (as in HybridNetsOutput).
    """
    encoder = model.encoder
    e2, e3, e4, e5 = encoder.stage_ends

    def encoder_to_p3(f: Features) -> Features:
        enc2 = encoder.run_blocks(encoder.stem(f["image"]), 0, e2)
        return {"enc2": enc2, "enc3": encoder.run_blocks(enc2, e2, e3)}

    def encoder_to_p5(f: Features) -> Features:
        enc4 = encoder.run_blocks(f["enc3"], e3, e4)
        return {"enc4": enc4, "enc5": encoder.run_blocks(enc4, e4, e5)}

    def whole_encoder(f: Features) -> Features:
        first = encoder_to_p3(f)
        return {**first, **encoder_to_p5(first)}

    def bifpn(f: Features) -> Features:
        pyramid = model.bifpn((f["enc3"], f["enc4"], f["enc5"]))
        return {f"fpn{level}": feat for level, feat in zip(range(3, 8), pyramid)}

    def heads(f: Features) -> Features:
        pyramid = tuple(f[f"fpn{level}"] for level in range(3, 8))
        decoder = model.bifpndecoder(f["enc2"], pyramid)
        return {"regression": model.regressor(pyramid), "classification": model.classifier(pyramid),
                "segmentation": model.segmentation_head(decoder)}

    def bifpn_and_heads(f: Features) -> Features:
        return heads({**f, **bifpn(f)})

    if num_modules == 2:
        return [whole_encoder, bifpn_and_heads]
    if num_modules == 4:
        return [encoder_to_p3, encoder_to_p5, bifpn, heads]
    raise ValueError(f"--local-modules must be one of {LOCAL_MODULE_COUNTS} (or 0: end-to-end), got {num_modules}")


def module_parameter_prefixes(model: HybridNets, num_modules: int) -> list[tuple[str, ...]]:
    """State-dict name prefixes of the parameters each module owns (the encoder's unused head conv in none)."""
    _, e3, _, e5 = model.encoder.stage_ends

    def blocks(first: int, end: int) -> tuple[str, ...]:
        return tuple(f"encoder._blocks.{i}." for i in range(first, end))

    stem = ("encoder._conv_stem.", "encoder._bn0.")
    heads = ("regressor.", "classifier.", "bifpndecoder.", "segmentation_head.")
    if num_modules == 2:
        return [stem + blocks(0, e5), ("bifpn.",) + heads]
    return [stem + blocks(0, e3), blocks(e3, e5), ("bifpn.",), heads]


def run_modules(modules: list[LocalModule], images: torch.Tensor) -> Iterator[tuple[int, Features]]:
    """Yield (index, features the module produced, still attached to its graph); the next module sees them detached."""
    features: Features = {"image": images}
    for index, module in enumerate(modules):
        produced = module(features)
        yield index, produced
        features.update({name: value.detach() for name, value in produced.items()})


# ------------------------------------------------------------------------------------------- auxiliary heads
class AuxiliaryHead(nn.Module):
    """Features of one module -> (B, 3 + T, H/8, W/8): reconstructed image and task logits.

    Each input map is projected to HEAD_WIDTH channels and resized to the target grid; the sum goes through a 3x3
    and a 1x1 conv.
    """

    def __init__(self, in_channels: dict[str, int], task_channels: int) -> None:
        super().__init__()
        self.names = sorted(in_channels)
        self.project = nn.ModuleDict({n: nn.Conv2d(in_channels[n], HEAD_WIDTH, 1) for n in self.names})
        self.mix = nn.Conv2d(HEAD_WIDTH, HEAD_WIDTH, 3, padding=1)
        self.out = nn.Conv2d(HEAD_WIDTH, IMAGE_CHANNELS + task_channels, 1)

    def forward(self, features: Features, size: tuple[int, int]) -> torch.Tensor:
        total = sum(F.interpolate(self.project[n](features[n]), size=size, mode="bilinear", align_corners=False)
                    for n in self.names)
        return self.out(swish(self.mix(swish(total))))


def feature_channels(modules: list[LocalModule], config: ModelConfig, model: HybridNets) -> list[dict[str, int]]:
    """Channel count of every feature each module but the last produces (one no-grad forward of a tiny image)."""
    probe = torch.zeros(1, IMAGE_CHANNELS, *config.input_size, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [{name: value.shape[1] for name, value in produced.items()}
                    for _, produced in run_modules(modules[:-1], probe)]
    finally:
        model.train(was_training)


def build_auxiliary_heads(model: HybridNets, modules: list[LocalModule], config: ModelConfig) -> nn.ModuleList:
    """One head per module but the last; task channels = segmentation channels + 1 (vehicle boxes)."""
    task_channels = config.seg_out_channels + 1
    return nn.ModuleList(AuxiliaryHead(channels, task_channels)
                         for channels in feature_channels(modules, config, model))


# ------------------------------------------------------------------------------------------------ local losses
def box_coverage(annotations: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """(B,M,5) [x1,y1,x2,y2,cls] network px (cls < 0: padding) -> (B,1,h,w) 1 where a cell centre is in a box."""
    h, w = size
    ys = (torch.arange(h, device=annotations.device) + 0.5) * stride
    xs = (torch.arange(w, device=annotations.device) + 0.5) * stride
    boxes = annotations[..., None, None, :]  # (B,M,1,1,5)
    inside = ((xs >= boxes[..., 0]) & (xs < boxes[..., 2]) & (ys[:, None] >= boxes[..., 1])
              & (ys[:, None] < boxes[..., 3]) & (boxes[..., 4] >= 0))  # (B,M,h,w)
    return inside.any(dim=1, keepdim=True).float()


def local_targets(images: torch.Tensor, annotations: torch.Tensor, seg: torch.Tensor,
                  config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction target (B,3,h,w), task target (B,T,h,w) in [0,1]) at 1/TARGET_STRIDE of the input.

    images: normalised (B,3,H,W); annotations (B,M,5) network px; seg: the loader's segmentation target.
    """
    image_lowres = F.avg_pool2d(images, TARGET_STRIDE)
    one_hot = seg_target_one_hot(seg, config.seg_mode, config.seg_out_channels)
    seg_lowres = F.avg_pool2d(one_hot, TARGET_STRIDE)  # class fractions per cell
    boxes = box_coverage(annotations, image_lowres.shape[-2:], TARGET_STRIDE)
    return image_lowres, torch.cat([seg_lowres, boxes], dim=1)


def local_loss(prediction: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Scalar: RECON_WEIGHT * reconstruction MSE + TASK_WEIGHT * task BCE (prediction (B,3+T,h,w) logits)."""
    image_target, task_target = targets
    prediction = prediction.float()
    recon = F.mse_loss(prediction[:, :IMAGE_CHANNELS], image_target)
    task = F.binary_cross_entropy_with_logits(prediction[:, IMAGE_CHANNELS:], task_target)
    return RECON_WEIGHT * recon + TASK_WEIGHT * task
