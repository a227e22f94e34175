"""ModelConfig, per-coefficient tables, anchors and architecture sizes (no forward passes)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybridnets_ros.model import HybridNets, ModelConfig, coef_spec, generate_anchors, load_model_config
from hybridnets_ros.model.efficientnet import EfficientNetEncoder, round_filters
from hybridnets_ros.model.layers import MaxPool2dSamePadZero, swish


def _config(**overrides) -> ModelConfig:
    base = dict(name="t", compound_coef=0, input_size=[256, 512], obj_list=["car"], seg_list=["road", "lane"])
    return ModelConfig.from_dict({**base, **overrides})


def test_bundled_configs() -> None:
    d3 = load_model_config("hybridnets_d3_bdd100k")
    assert d3.compound_coef == 3 and d3.input_size == (384, 640)
    assert d3.obj_list == ("car",) and d3.seg_list == ("road", "lane") and d3.seg_mode == "multiclass"
    assert d3.anchor_scales == (2**0, 2**0.70, 2**1.32)
    assert d3.anchor_ratios == ((0.62, 1.58), (1.0, 1.0), (1.58, 0.62))
    assert d3.anchor_scale == 1.25 and d3.num_classes == 1 and d3.seg_out_channels == 3 and d3.num_anchors == 9
    d0 = load_model_config("hybridnets_d0_synth")
    assert d0.compound_coef == 0 and d0.input_size == (384, 640) and d0.seg_list == ("road", "lane")


def test_dict_and_yaml_round_trip(tmp_path: Path) -> None:
    cfg = _config(seg_mode="multilabel", anchor_scale=2.0)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "m.yaml"
    cfg.to_yaml(path)
    assert load_model_config(path) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"input_size": [384, 600]}, "divisible by 128"),
        ({"input_size": [480, 640]}, "divisible by 128"),
        ({"seg_mode": "softmax"}, "seg_mode must be one of"),
        ({"seg_mode": "binary"}, "exactly one seg class"),
        ({"compound_coef": 9}, "compound_coef must be an integer in 0..8"),
        ({"obj_list": []}, "at least one detection class"),
        ({"anchor_ratios": [[1.0]]}, "anchor_ratios"),
        ({"mean": [0.5, 0.5]}, "mean must have 3 values"),
        ({"colour": "red"}, "unknown keys \\['colour'\\]"),
    ],
)
def test_validation_messages(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_missing_required_key() -> None:
    with pytest.raises(ValueError, match="missing required keys \\['obj_list'\\]"):
        ModelConfig.from_dict({"name": "t", "compound_coef": 0, "input_size": [256, 512], "seg_list": ["road"]})


def test_seg_channels_per_mode() -> None:
    assert _config(seg_mode="binary", seg_list=["road"]).seg_out_channels == 1
    assert _config(seg_mode="multiclass").seg_out_channels == 3
    assert _config(seg_mode="multilabel").seg_out_channels == 3


def test_coef_tables() -> None:
    assert coef_spec(3).backbone == "efficientnet-b3"
    assert (coef_spec(3).fpn_num_filters, coef_spec(3).fpn_cell_repeats, coef_spec(3).box_class_repeats) == (160, 6, 4)
    assert coef_spec(7).backbone == "efficientnet-b6" and coef_spec(8).backbone == "efficientnet-b7"
    assert coef_spec(8).anchor_scale == 4.0 and _config(compound_coef=8).anchor_scale == 4.0


def test_round_filters() -> None:
    assert round_filters(32, 1.2) == 40 and round_filters(1280, 1.2) == 1536 and round_filters(112, 1.2) == 136


def test_anchors_reject_sizes_not_divisible_by_128() -> None:
    with pytest.raises(ValueError, match="divisible by 128"):
        generate_anchors(_config(), (480, 640))


def test_anchor_layout() -> None:
    cfg = _config(anchor_scales=[1.0], anchor_ratios=[[1.0, 1.0], [2.0, 0.5]])
    anchors = generate_anchors(cfg, (128, 256))
    assert anchors.shape == (2 * (16 * 32 + 8 * 16 + 4 * 8 + 2 * 4 + 1 * 2), 4)
    # First location of P3 (centre 4,4, base 1.25*8 = 10): ratio (1,1) then (2,0.5), as (y1, x1, y2, x2).
    assert anchors[0].tolist() == [-1.0, -1.0, 9.0, 9.0]
    assert anchors[1].tolist() == [1.5, -6.0, 6.5, 14.0]
    assert anchors[2].tolist() == [-1.0, 7.0, 9.0, 17.0]  # next x


def test_b3_static_pads_as_upstream() -> None:
    with torch.device("meta"):
        enc = EfficientNetEncoder("efficientnet-b3")
    assert enc.stage_ends == (5, 8, 18, 26) and enc.out_channels == (32, 48, 136, 384)
    assert enc._conv_stem.static_pads == (0, 1, 0, 1)
    expected = {2: (0, 1, 0, 1), 5: (2, 2, 2, 2), 8: (0, 1, 0, 1), 18: (2, 2, 2, 2)}
    for i, block in enumerate(enc._blocks):
        k = block.spec.kernel
        want = expected.get(i, (k // 2,) * 4)
        assert block._depthwise_conv.static_pads == want, i


@pytest.mark.parametrize(
    "coef, channels",
    [(0, (40, 112, 320)), (2, (48, 120, 352)), (4, (56, 160, 448)), (6, (72, 200, 576)), (8, (80, 224, 640))],
)
def test_every_coef_builds(coef: int, channels: tuple[int, int, int]) -> None:
    with torch.device("meta"):
        model = HybridNets(_config(compound_coef=coef))
    assert model.encoder.out_channels[1:] == channels
    spec = coef_spec(coef)
    assert len(model.bifpn) == spec.fpn_cell_repeats
    assert model.bifpn[0].p3_down_channel[0].conv.in_channels == channels[0]
    assert model.bifpndecoder.seg_p2.block[0].block[0].conv.in_channels == model.encoder.out_channels[0]
    assert len(model.regressor.conv_list) == spec.box_class_repeats


def test_maxpool_pads_with_zeros() -> None:
    x = -torch.ones(1, 1, 4, 4)
    y = MaxPool2dSamePadZero(3, 2)(x)
    assert y.shape == (1, 1, 2, 2)
    # The right/bottom windows reach the zero padding; -inf padding would give -1 there.
    assert y.tolist() == [[[[-1.0, 0.0], [0.0, 0.0]]]]


def test_swish_is_x_sigmoid_x() -> None:
    x = torch.linspace(-6, 6, 101)
    assert torch.equal(swish(x), x * torch.sigmoid(x))


def test_stage_ends_follow_upstream_for_every_backbone() -> None:
    # Upstream's table: b0 takes its stride-16 feature after block 8, not at the end of the 112-channel stage.
    expected = {0: (3, 5, 9, 16), 1: (5, 8, 16, 23), 2: (5, 8, 16, 23), 3: (5, 8, 18, 26), 4: (6, 10, 22, 32)}
    for b, ends in expected.items():
        with torch.device("meta"):
            enc = EfficientNetEncoder(f"efficientnet-b{b}")
        assert enc.stage_ends == ends, b
