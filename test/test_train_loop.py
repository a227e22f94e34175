"""The training loop through its API: the loss goes down, freezing is total, the golden d3 weights train on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hybridnets_ros.model.checkpoint import load_checkpoint
from hybridnets_ros.training.dataset import collate
from hybridnets_ros.training.trainer import (
    FREEZE_GROUPS,
    cosine_with_warmup,
    precise_bn,
    set_train_mode,
)
from train_support import small_config, small_trainer, synth_project

# encoder._conv_head/_bn1 are kept for upstream key compatibility but never run, so they never change.
DEAD = ("encoder._conv_head.", "encoder._bn1.")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return synth_project(tmp_path_factory)


@pytest.fixture(scope="module")
def config_128(tmp_path_factory) -> Path:
    """d0 at 128x256: the same network as the bundled 384x640 one, 7.5x cheaper for loops of many steps."""
    return small_config(tmp_path_factory.mktemp("cfg"))


class _MustNotRun(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("the loss of a frozen head was computed")


@pytest.mark.slow
def test_a_few_dozen_steps_lower_the_loss(project: Path, config_128: Path, tmp_path: Path) -> None:
    trainer = small_trainer(project, config_128, tmp_path)
    batch = collate([trainer.train_set[0], trainer.train_set[1]])
    set_train_mode(trainer.net, trainer.frozen)
    losses = [trainer.train_step(batch) for _ in range(24)]
    # The total must fall by 40 %; each term must fall (the detection terms of a from-scratch model move slowest).
    for term, factor in (("total", 0.6), ("cls", 1.0), ("reg", 1.0), ("seg", 1.0)):
        first = np.mean([v[term] for v in losses[:4]])
        last = np.mean([v[term] for v in losses[-4:]])
        assert last < factor * first, f"{term}: first {first:.3f} last {last:.3f}"
    assert trainer.global_step == 24


@pytest.mark.parametrize(
    "flags",
    [{"freeze_backbone": True}, {"freeze_det": True}, {"freeze_seg": True},
     {"freeze_backbone": True, "freeze_det": True}],
    ids=["backbone", "det", "seg", "backbone+det"],
)
def test_frozen_parts_do_not_change_at_all(project: Path, config_128: Path, tmp_path: Path, flags: dict) -> None:
    trainer = small_trainer(project, config_128, tmp_path, **flags)
    frozen_names = {name for group, names in FREEZE_GROUPS.items() if flags.get(f"freeze_{group}") for name in names}
    frozen_prefixes = tuple(f"{name}." for name in frozen_names)
    if flags.get("freeze_det"):
        trainer.loss.det = _MustNotRun()
    if flags.get("freeze_seg"):
        trainer.loss.seg = _MustNotRun()
    model = trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = collate([trainer.train_set[0], trainer.train_set[1]])
    set_train_mode(trainer.net, trainer.frozen)
    for name, module in model.named_children():  # frozen parts in eval mode, down to every BatchNorm
        assert all(m.training == (name not in frozen_names) for m in module.modules()), name
    values = [trainer.train_step(batch) for _ in range(2)][-1]
    # Re-estimating BatchNorm statistics before a validation leaves the frozen parts alone too.
    assert precise_bn(model, trainer.frozen, iter([batch]), trainer.config, trainer.device, 1) == 1
    assert ("cls" in values) == (not flags.get("freeze_det")) and ("seg" in values) == (not flags.get("freeze_seg"))

    params = dict(model.named_parameters())
    after = model.state_dict()
    changed = 0
    for key, old in before.items():
        same = torch.equal(old, after[key])
        if key.startswith(frozen_prefixes):
            assert same, f"frozen {key} changed"
            if key in params:
                assert not params[key].requires_grad
        elif not key.startswith(DEAD):
            grad = params[key].grad if key in params else None
            # Unchanged is only acceptable for a parameter the loss did not reach (e.g. a pyramid level without
            # positive anchors in these two images gets no box-regression gradient).
            assert not same or (key in params and (grad is None or not grad.any())), f"trainable {key} did not change"
            changed += not same
    unfrozen = [k for k in before if not k.startswith(frozen_prefixes) and not k.startswith(DEAD)]
    assert changed >= 0.9 * len(unfrozen)


def test_golden_d3_state_dict_trains_on(golden_dir: Path, project: Path, tmp_path: Path) -> None:
    """The upstream-format variant A state dict (a bare state dict) initialises a d3 run that takes a step."""
    weights = golden_dir / "hybridnets_d3_seed0_state_dict.pt"
    config = small_config(tmp_path, (256, 384), base="hybridnets_d3_bdd100k")
    trainer = small_trainer(project, config, tmp_path / "run", weights=str(weights), batch_size=1, lr=1e-4)
    _, golden = load_checkpoint(weights, trainer.config)
    model_sd = trainer.model.state_dict()
    assert all(torch.equal(golden[k], model_sd[k]) for k in golden)
    set_train_mode(trainer.net, trainer.frozen)
    values = trainer.train_step(collate([trainer.train_set[0]]))
    assert np.isfinite(values["total"])
    moved = trainer.model.state_dict()["classifier.header.pointwise_conv.conv.bias"]
    assert not torch.equal(moved, golden["classifier.header.pointwise_conv.conv.bias"])


def test_amp_channels_last_sgd_clip_and_cosine_schedule_step(project: Path, config_128: Path, tmp_path: Path) -> None:
    trainer = small_trainer(project, config_128, tmp_path, amp=True, channels_last=True, optimizer="sgd", grad_clip=1.0,
                            scheduler="cosine", lr=0.01, epochs=2)
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.optimizer.defaults["nesterov"]
    assert trainer.total_steps == 8  # 8 images, batch 2, 2 epochs
    set_train_mode(trainer.net, trainer.frozen)
    before = trainer.model.classifier.header.pointwise_conv.conv.bias.clone()
    values = trainer.train_step(collate([trainer.train_set[0], trainer.train_set[1]]))
    assert all(np.isfinite(v) for v in values.values())
    assert not torch.equal(before, trainer.model.classifier.header.pointwise_conv.conv.bias)
    expected = 0.01 * cosine_with_warmup(8, 0)(1)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert expected < 0.01
