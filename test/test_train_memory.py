"""Memory-light training: activation checkpointing changes nothing but memory; InfoPro modules are gradient-isolated
and a short run lowers their objective."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.model.hybridnets import HybridNets
from hybridnets_ros.training import infopro
from hybridnets_ros.training.checkpointing import enable_activation_checkpointing
from hybridnets_ros.training.dataset import collate
from hybridnets_ros.training.trainer import set_train_mode
from train_support import small_config, small_trainer, synth_project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return synth_project(tmp_path_factory)


@pytest.fixture(scope="module")
def config_128(tmp_path_factory) -> Path:
    return small_config(tmp_path_factory.mktemp("cfg"))


def test_activation_checkpointing_gives_the_same_gradients_and_statistics(config_128: Path) -> None:
    torch.manual_seed(0)
    plain = HybridNets(load_model_config(str(config_128)))
    light = copy.deepcopy(plain)
    assert enable_activation_checkpointing(light) == 1 + 4 + len(light.bifpn)
    x = torch.randn(2, 3, 128, 256)
    losses = []
    for model in (plain, light):
        model.train()
        torch.manual_seed(1)  # the same drop-connect and dropout draws
        out = model(x)
        loss = out.regression.square().mean() + out.classification.mean() + out.segmentation.square().mean()
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    light_params = dict(light.named_parameters())
    compared = 0
    for name, p in plain.named_parameters():
        q = light_params[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
            compared += 1
    assert compared > 0.9 * len(light_params)
    # The recomputation during backward did not update BatchNorm statistics a second time.
    light_state = light.state_dict()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, light_state[name]), name
    # The state dict keys are the plain network's: checkpoints are unchanged.
    assert list(light_state) == list(plain.state_dict())


@pytest.mark.parametrize("num_modules", [2, 4])
def test_gradients_do_not_cross_module_boundaries(config_128: Path, num_modules: int) -> None:
    config = load_model_config(str(config_128))
    torch.manual_seed(0)
    model = HybridNets(config).train()
    modules = infopro.split_modules(model, num_modules)
    heads = infopro.build_auxiliary_heads(model, modules, config)
    images = torch.randn(2, 3, 128, 256)
    targets = (torch.randn(2, 3, 16, 32), torch.rand(2, config.seg_out_channels + 1, 16, 32))
    losses = []
    for index, produced in infopro.run_modules(modules, images):
        if index < num_modules - 1:
            losses.append(infopro.local_loss(heads[index](produced, (16, 32)), targets))
        else:
            losses.append(sum(t.float().square().mean() for t in produced.values()))
    prefixes = infopro.module_parameter_prefixes(model, num_modules)
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith(("encoder._conv_head.", "encoder._bn1."))]
    owned = [sum(n.startswith(own) for own in prefixes) for n, _ in named]
    assert owned == [1] * len(named)  # every used parameter belongs to exactly one module
    for index, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True, retain_graph=True)
        reached = {n for (n, _), g in zip(named, grads) if g is not None and g.abs().sum() > 0}
        mine = {n for n, _ in named if n.startswith(prefixes[index])}
        assert reached, index
        assert reached <= mine, f"module {index} loss reached {sorted(reached - mine)[:3]}"
        assert len(reached) > 0.5 * len(mine)


@pytest.mark.slow
def test_infopro_run_lowers_its_objective(project: Path, config_128: Path, tmp_path: Path) -> None:
    trainer = small_trainer(project, config_128, tmp_path, local_modules=4)
    batch = collate([trainer.train_set[0]])
    set_train_mode(trainer.net, trainer.frozen)
    head_before = trainer.aux_heads[0].out.weight.detach().clone()
    steps = [trainer.train_step(batch) for _ in range(12)]
    assert {"local1", "local2", "local3", "total"} <= set(steps[0])
    objective = [sum(v for k, v in s.items() if k == "total" or k.startswith("local")) for s in steps]
    assert np.mean(objective[-3:]) < 0.8 * np.mean(objective[:3]), objective
    for term in ("local1", "local3", "total"):
        assert np.mean([s[term] for s in steps[-3:]]) < np.mean([s[term] for s in steps[:3]]), term
    assert not torch.equal(head_before, trainer.aux_heads[0].out.weight)
