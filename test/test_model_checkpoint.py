"""Checkpoint reading/writing, error messages, and the compact d0 model."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from hybridnets_ros.model import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    HybridNets,
    ModelConfig,
    build_model,
    generate_anchors,
    load_checkpoint,
    load_model_config,
    save_checkpoint,
)
from hybridnets_ros.resources import WeightsFileError, bundled_weights, resolve_weights


@pytest.fixture(scope="module")
def d0_config() -> ModelConfig:
    return load_model_config("hybridnets_d0_synth")


@pytest.fixture(scope="module")
def d0_model(d0_config: ModelConfig) -> HybridNets:
    torch.manual_seed(0)
    return HybridNets(d0_config).eval()


@pytest.fixture(scope="module")
def d0_state(d0_model: HybridNets) -> dict[str, torch.Tensor]:
    return d0_model.state_dict()


@pytest.fixture(scope="module")
def d0_checkpoint(tmp_path_factory: pytest.TempPathFactory, d0_model: HybridNets, d0_config: ModelConfig) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "d0.pt"
    save_checkpoint(path, d0_model, d0_config, epoch=7, best_fitness=0.5)
    return path


def test_d0_forward_shapes(d0_model: HybridNets, d0_config: ModelConfig) -> None:
    with torch.no_grad():
        out = d0_model(torch.randn(2, 3, 256, 512))
    n = generate_anchors(d0_config, (256, 512)).shape[0]
    assert n == 9 * (32 * 64 + 16 * 32 + 8 * 16 + 4 * 8 + 2 * 4)
    assert out.regression.shape == (2, n, 4)
    assert out.classification.shape == (2, n, 1)
    assert out.segmentation.shape == (2, 3, 256, 512)
    assert 0.0 <= out.classification.min().item() and out.classification.max().item() <= 1.0
    assert d0_model.encoder.out_channels == (24, 40, 112, 320)


def test_forward_rejects_bad_input_size(d0_model: HybridNets) -> None:
    with pytest.raises(ValueError, match="multiples of 128"):
        d0_model(torch.zeros(1, 3, 200, 512))


def test_round_trip(d0_checkpoint: Path, d0_model: HybridNets, d0_config: ModelConfig) -> None:
    raw = torch.load(d0_checkpoint, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["epoch"] == 7 and raw["config"] == d0_config.to_dict()
    model, config = build_model(d0_checkpoint)
    assert config == d0_config
    assert not model.training
    x = torch.randn(1, 3, 256, 512)
    with torch.no_grad():
        a, b = model(x), d0_model(x)
    for ours, ref in zip(a, b):
        assert torch.equal(ours, ref)


def test_save_rejects_reserved_extras(tmp_path: Path, d0_model: HybridNets, d0_config: ModelConfig) -> None:
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", d0_model, d0_config, format="other")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(WeightsFileError, match="does not exist") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_a_directory_is_named_as_one_with_the_setting_to_change(tmp_path: Path) -> None:
    with pytest.raises(WeightsFileError) as err:
        resolve_weights(tmp_path, "--weights")
    assert f"weights file '{tmp_path}' is a directory: set --weights to a HybridNets checkpoint" in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.pt"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(WeightsFileError, match="cannot be read"):
        resolve_weights(path)


def test_no_weights_means_the_bundled_model_said_once(caplog) -> None:
    with caplog.at_level(logging.INFO):
        model, config = build_model()
    assert config.name == "hybridnets_d0_synth" and not model.training
    said = [r.getMessage() for r in caplog.records if "bundled model" in r.getMessage()]
    assert len(said) == 1 and str(bundled_weights()) in said[0] and "synthetic" in said[0]


def test_truncated_file(tmp_path: Path, d0_checkpoint: Path) -> None:
    data = d0_checkpoint.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "truncated" in message and "re-download" in message


def test_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="cannot be read as a torch file"):
        load_checkpoint(path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match="not a HybridNets state dict"):
        load_checkpoint(path)


def test_shape_mismatch_names_key_and_shapes(tmp_path: Path, d0_state: dict, d0_config: ModelConfig) -> None:
    state = dict(d0_state)
    state["segmentation_head.0.weight"] = torch.zeros(2, 64, 1, 1)
    path = tmp_path / "bad_shape.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, d0_config)
    message = str(err.value)
    assert "segmentation_head.0.weight: checkpoint [2, 64, 1, 1] vs model [3, 64, 1, 1]" in message
    assert "model_config" in message and str(path) in message


def test_missing_and_unexpected_keys_are_named(tmp_path: Path, d0_state: dict, d0_config: ModelConfig) -> None:
    state = dict(d0_state)
    del state["classifier.header.pointwise_conv.conv.bias"]
    del state["encoder._bn1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad_keys.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, d0_config)
    message = str(err.value)
    assert "2 missing keys" in message
    assert "classifier.header.pointwise_conv.conv.bias" in message and "encoder._bn1.weight" in message
    assert "1 unexpected keys" in message and "extra.weight" in message


def test_wrong_config_for_checkpoint(d0_checkpoint: Path) -> None:
    d3 = load_model_config("hybridnets_d3_bdd100k")
    with pytest.raises(CheckpointError, match="does not fit model config 'hybridnets_d3_bdd100k'"):
        load_checkpoint(d0_checkpoint, d3)


@pytest.mark.parametrize("layout", ["module_prefix", "model_key", "state_dict_key", "wrapped_module_prefix"])
def test_accepted_layouts(tmp_path: Path, d0_state: dict, d0_config: ModelConfig, layout: str) -> None:
    prefixed = {f"module.{k}": v for k, v in d0_state.items()}
    payload = {
        "module_prefix": prefixed,
        "model_key": {"model": d0_state, "epoch": 1},
        "state_dict_key": {"state_dict": d0_state},
        "wrapped_module_prefix": {"model": prefixed},
    }[layout]
    path = tmp_path / f"{layout}.pt"
    torch.save(payload, path)
    config, state = load_checkpoint(path, d0_config)
    assert config == d0_config
    assert state.keys() == d0_state.keys()
    assert all(torch.equal(state[k], d0_state[k]) for k in d0_state)
