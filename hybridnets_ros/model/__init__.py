"""The HybridNets network (pure torch), its config, anchors and checkpoints."""
from hybridnets_ros.conventions import SEG_MODES
from hybridnets_ros.model.anchors import generate_anchors
from hybridnets_ros.model.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    build_model,
    check_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from hybridnets_ros.model.config import CoefSpec, ModelConfig, coef_spec, load_model_config
from hybridnets_ros.model.hybridnets import HybridNets, HybridNetsIntermediates, HybridNetsOutput

__all__ = [
    "CHECKPOINT_FORMAT",
    "SEG_MODES",
    "CheckpointError",
    "CoefSpec",
    "HybridNets",
    "HybridNetsIntermediates",
    "HybridNetsOutput",
    "ModelConfig",
    "build_model",
    "check_state_dict",
    "coef_spec",
    "generate_anchors",
    "load_checkpoint",
    "load_model_config",
    "save_checkpoint",
]
