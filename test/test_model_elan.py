"""The ELAN student backbone: a model config option whose network has d0's outputs and loads like any checkpoint."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from hybridnets_ros.model.checkpoint import build_model, save_checkpoint
from hybridnets_ros.model.config import ModelConfig, load_model_config
from hybridnets_ros.model.elan import ElanBlock, ElanEncoder
from hybridnets_ros.model.hybridnets import HybridNets
from hybridnets_ros.training.checkpointing import enable_activation_checkpointing


@pytest.fixture(scope="module")
def configs():
    small = {"input_size": (128, 256)}
    return (dataclasses.replace(load_model_config("hybridnets_d0_synth"), **small),
            dataclasses.replace(load_model_config("hybridnets_elan_synth"), **small))


def test_backbone_is_data_and_default_configs_serialise_as_before(configs):
    d0, elan = configs
    assert d0.backbone == "efficientnet" and "backbone" not in d0.to_dict()  # embedded configs stay unchanged
    assert elan.backbone == "elan" and elan.to_dict()["backbone"] == "elan"
    assert ModelConfig.from_dict(elan.to_dict()) == elan
    with pytest.raises(ValueError, match="backbone must be one of \\['efficientnet', 'elan'\\], got 'resnet'"):
        dataclasses.replace(d0, backbone="resnet")


def test_elan_network_has_d0_outputs_with_fewer_parameters(configs):
    d0, elan = configs
    torch.manual_seed(0)
    x = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        reference = HybridNets(d0).eval()(x)
        student_net = HybridNets(elan).eval()
        student = student_net(x)
    for ours, theirs in zip(student, reference):
        assert ours.shape == theirs.shape
    assert isinstance(student_net.encoder, ElanEncoder)
    assert student_net.num_parameters() < 0.6 * HybridNets(d0).num_parameters()


def test_elan_block_fuses_every_branch():
    block = ElanBlock(8, 16, pairs=3)
    assert block.fuse[0].in_channels == 8 * (3 + 2)  # two projections + three pairs, each out/2 channels
    assert block(torch.randn(1, 8, 8, 8)).shape == (1, 16, 8, 8)


def test_elan_checkpoint_loads_like_any_model_and_trains_with_activation_checkpointing(tmp_path, configs):
    _, elan = configs
    torch.manual_seed(1)
    model = HybridNets(elan)
    path = save_checkpoint(tmp_path / "elan.pt", model, elan)
    loaded, config = build_model(path)  # what the node does with weights:=
    assert config == elan
    x = torch.randn(1, 3, 128, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).segmentation, model.eval()(x).segmentation)
    # the encoder offers the stem / run_blocks / stage_ends interface that training splits at
    segments = enable_activation_checkpointing(loaded.train())
    assert segments == 1 + 4 + len(loaded.bifpn)
    loaded(x).segmentation.mean().backward()
    assert all(p.grad is not None for p in loaded.encoder.parameters())
