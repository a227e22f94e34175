"""Conformance of the network with the upstream golden vectors (../shared/golden)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybridnets_ros.model import (
    HybridNets,
    HybridNetsIntermediates,
    ModelConfig,
    build_model,
    generate_anchors,
    load_model_config,
)

STATE_DICT_A = "hybridnets_d3_seed0_state_dict.pt"
OVERRIDES_C = "hybridnets_d3_seed0_variantC_overrides.pt"
PARAMS_D3 = 13_424_170


def _load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _manifest(golden_dir: Path) -> dict[str, tuple[list[int], str]]:
    rows = {}
    for line in (golden_dir / "hybridnets_d3_state_dict_manifest.tsv").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape, dtype, *_ = line.split("\t")
        dims = [int(d) for d in shape.strip("[]").split(",") if d]
        rows[name] = (dims, dtype)
    return rows


@pytest.fixture(scope="module")
def d3_config() -> ModelConfig:
    return load_model_config("hybridnets_d3_bdd100k")


@pytest.fixture(scope="module")
def golden_c(golden_dir: Path) -> dict:
    return _load(golden_dir / "raw_seed0_variantC_demo1.pt")


@pytest.fixture(scope="module")
def run_c(golden_dir: Path, d3_config: ModelConfig) -> HybridNetsIntermediates:
    """Variant C (A + overrides) run once on the golden demo input."""
    model = HybridNets(d3_config).eval()
    state = {**_load(golden_dir / STATE_DICT_A), **_load(golden_dir / OVERRIDES_C)}
    model.load_state_dict(state, strict=True)
    x = _load(golden_dir / "input_demo1.pt")["x"]
    with torch.no_grad():
        return model.forward_intermediates(x)


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != golden {tuple(b.shape)}"
    return (a - b).abs().max().item()


def test_variant_a_loads_strictly_with_manifest_keys(golden_dir: Path) -> None:
    # A bare upstream state dict with no config: the default d3 BDD100K config must be picked.
    model, config = build_model(golden_dir / STATE_DICT_A)
    assert config.name == "hybridnets_d3_bdd100k"
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == PARAMS_D3
    manifest = _manifest(golden_dir)
    ours = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert len(manifest) == 1502
    assert ours == manifest


def test_encoder_features_match(run_c: HybridNetsIntermediates, golden_c: dict) -> None:
    for level, ours in zip(("p2", "p3", "p4", "p5"), run_c.encoder):
        assert _max_abs_diff(ours, golden_c[f"encoder_{level}"]) < 1e-3, level


def test_bifpn_features_match(run_c: HybridNetsIntermediates, golden_c: dict) -> None:
    assert len(run_c.bifpn) == 5
    for level, (ours, ref) in enumerate(zip(run_c.bifpn, golden_c["bifpn_features"]), start=3):
        assert _max_abs_diff(ours, ref) < 1e-2, f"P{level}"


def test_decoder_output_matches(run_c: HybridNetsIntermediates, golden_c: dict) -> None:
    assert _max_abs_diff(run_c.decoder, golden_c["decoder_out"]) < 2e-2


def test_heads_match(run_c: HybridNetsIntermediates, golden_c: dict) -> None:
    out = run_c.output
    assert _max_abs_diff(out.regression, golden_c["regression"]) < 2e-3
    assert _max_abs_diff(out.classification, golden_c["classification"]) < 5e-4
    assert _max_abs_diff(out.segmentation, golden_c["segmentation"]) < 2e-2


def test_segmentation_argmax_agrees(run_c: HybridNetsIntermediates, golden_c: dict) -> None:
    ours = run_c.output.segmentation.argmax(dim=1)
    ref = golden_c["segmentation"].argmax(dim=1)
    assert (ours == ref).float().mean().item() >= 0.999
    # The check means something only if the golden mask is not a single class.
    assert ref.unique().numel() == 3


def test_anchors_exact(golden_c: dict, d3_config: ModelConfig) -> None:
    # Exact on any CPU: float64 +, -, *, / (correctly rounded everywhere), then one rounding to float32.
    anchors = generate_anchors(d3_config, (384, 640))
    assert anchors.dtype == torch.float32
    assert torch.equal(anchors, golden_c["anchors"][0])
