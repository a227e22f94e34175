"""The conventions written once (hybridnets_ros.conventions, requirements): everything that repeats a value agrees."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import re
from pathlib import Path

import pytest
import torch
import yaml

from hybridnets_ros.conventions import DetectionThresholds, check_input_hw
from hybridnets_ros.model import HybridNets, generate_anchors, load_model_config
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.requirements import PIP_REQUIREMENTS
from hybridnets_ros.ros import node as node_module

YAML = Path(__file__).resolve().parents[1] / "config" / "hybridnets.yaml"


def test_threshold_defaults_of_node_yaml_and_dataclass_agree() -> None:
    dataclass_defaults = dataclasses.asdict(DetectionThresholds())
    assert set(node_module.THRESHOLD_PARAMETERS) == set(dataclass_defaults)
    yaml_parameters = yaml.safe_load(YAML.read_text())["/**"]["ros__parameters"]
    for name, value in dataclass_defaults.items():
        for where, other in (("node", node_module.PARAMETER_DEFAULTS[name]), ("yaml", yaml_parameters[name])):
            assert other == value and type(other) is type(value), f"{name}: {where} {other!r}, dataclass {value!r}"


def test_input_size_is_checked_with_one_message() -> None:
    """Model config, anchors and the forward pass refuse a size that is not a multiple of 128 in the same words."""
    config = load_model_config("hybridnets_d0_synth")
    messages = []
    for refuse in (
        lambda: ModelConfig.from_dict({**config.to_dict(), "input_size": [384, 600]}),
        lambda: generate_anchors(config, (384, 600)),
        lambda: HybridNets(config).eval()(torch.zeros(1, 3, 384, 600)),
    ):
        with pytest.raises(ValueError) as err:
            refuse()
        messages.append(str(err.value))
    assert len({m.split(" 384x600 (HxW) ")[1] for m in messages}) == 1, messages
    assert "multiples of 128" in messages[0] and "384x640" in messages[0]
    assert check_input_hw([256, 512]) == (256, 512)


@pytest.mark.parametrize("extra, module", [("onnx", "onnx"), ("onnx", "onnxruntime"), ("openvino", "openvino"),
                                           ("openvino", "nncf")])
def test_setup_extras_pin_what_a_missing_backend_asks_for(extra: str, module: str) -> None:
    requires = importlib.metadata.distribution("hybridnets_ros").requires or []
    pinned = [re.sub(r"\s", "", r.split(";")[0]) for r in requires if re.search(rf"""extra\s*==\s*["']{extra}["']""", r)]
    assert PIP_REQUIREMENTS[module] in pinned
