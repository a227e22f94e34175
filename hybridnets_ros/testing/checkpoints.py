"""Small randomly initialised checkpoints: benchmarks measure the node, not the quality of its model, and tests need
a model that loads in a second."""
from __future__ import annotations

from pathlib import Path

import torch

from hybridnets_ros.model.checkpoint import save_checkpoint
from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.model.hybridnets import HybridNets


def random_checkpoint(folder: Path, model_config: str = "hybridnets_d0_synth", seed: int = 0) -> Path:
    """A randomly initialised checkpoint of ``model_config`` (default: the compact d0) in ``folder``, seeded."""
    config = load_model_config(model_config)
    torch.manual_seed(seed)
    return save_checkpoint(Path(folder) / f"{config.name}_random{seed}.pt", HybridNets(config).eval(), config)
