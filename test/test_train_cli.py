"""hybridnets-train as a command: checkpoints the node and hybridnets-infer load, resume, two-process DDP on CPU."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import pytest
import torch

from hybridnets_ros.inference import cli as infer_cli
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.model.checkpoint import CHECKPOINT_FORMAT
from train_support import PYTHON, small_config, subprocess_env, synth_project

TRAIN = [PYTHON, "-m", "hybridnets_ros.training.train"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return synth_project(tmp_path_factory)


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}"
    return result


def _val_image(project: Path) -> Path:
    return sorted((project.parent / "images" / "val").iterdir())[0]


@pytest.fixture(scope="module")
def trained(project: Path, tmp_path_factory) -> Path:
    """Two steps of the bundled d0 config (384x640) with a validation at the end: best.pt and last.pt."""
    output = tmp_path_factory.mktemp("run")
    _run([*TRAIN, "--project", str(project), "--model-config", "hybridnets_d0_synth", "--output", str(output),
          "--epochs", "3", "--batch-size", "2", "--workers", "1", "--max-steps", "2", "--device", "cpu",
          "--log-images", "2", "--seed", "1"])
    return output


@pytest.mark.slow
def test_checkpoints_embed_config_and_training_state(trained: Path) -> None:
    for name in ("best.pt", "last.pt"):
        state = torch.load(trained / name, map_location="cpu", weights_only=True)
        assert state["format"] == CHECKPOINT_FORMAT and state["config"]["name"] == "hybridnets_d0_synth"
        assert state["global_step"] == 2 and state["epoch"] == 0
        assert state["optimizer"]["state"] and "fitness_combined" in state["metrics"]
    events = list((trained / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000


@pytest.mark.slow
def test_checkpoint_loads_in_the_pipeline_and_runs_in_hybridnets_infer(trained: Path, project: Path,
                                                                       tmp_path: Path) -> None:
    image_path = _val_image(project)
    pipeline = HybridNetsPipeline.from_weights(str(trained / "best.pt"), device="cpu")
    assert pipeline.config.name == "hybridnets_d0_synth" and pipeline.config.input_size == (384, 640)
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    (result,) = pipeline([image])
    assert result.seg_mask.shape == image.shape[:2]

    assert infer_cli.main(["--weights", str(trained / "last.pt"), "--source", str(image_path),
                           "--output", str(tmp_path), "--device", "cpu"]) == 0
    record = json.loads((tmp_path / f"{image_path.stem}.json").read_text())
    assert record["image_size"] == list(image.shape[:2])
    assert cv2.imread(str(tmp_path / f"{image_path.stem}_seg.png"), cv2.IMREAD_GRAYSCALE).shape == image.shape[:2]


@pytest.mark.slow
def test_resume_continues_steps_and_optimizer(trained: Path, project: Path, tmp_path: Path) -> None:
    before = torch.load(trained / "last.pt", map_location="cpu", weights_only=True)
    _run([*TRAIN, "--project", str(project), "--weights", str(trained / "last.pt"), "--resume",
          "--output", str(tmp_path), "--epochs", "3", "--batch-size", "2", "--workers", "0", "--max-steps", "3",
          "--val-every", "0", "--device", "cpu"])
    after = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert after["epoch"] == 1 and after["global_step"] == 3  # one more step, in the next epoch
    step_before = before["optimizer"]["state"][0]["step"]
    assert after["optimizer"]["state"][0]["step"] == step_before + 1  # Adam moments continued, not restarted
    assert not (tmp_path / "best.pt").exists()  # no validation, no best


@pytest.mark.slow
def test_loader_workers_survive_epochs_that_follow_a_validation(project: Path, tmp_path: Path) -> None:
    # A run once hung at the start of the epoch after its first validation: the loader worker, forked from the
    # threaded training process, blocked forever on a lock. Workers now come from a fork server.
    output = tmp_path / "run"
    _run([*TRAIN, "--project", str(project), "--model-config", str(small_config(tmp_path)), "--output", str(output),
          "--epochs", "3", "--batch-size", "4", "--workers", "1", "--val-every", "1", "--log-images", "1",
          "--device", "cpu"], timeout=400)
    state = torch.load(output / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 6  # 8 images, batch 4: two steps in each of 3 epochs


def test_resume_of_a_bare_state_dict_is_refused(golden_dir: Path, project: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path, (256, 384), base="hybridnets_d3_bdd100k")
    result = subprocess.run(
        [*TRAIN, "--project", str(project), "--model-config", str(config), "--resume",
         "--weights", str(golden_dir / "hybridnets_d3_seed0_state_dict.pt"), "--output", str(tmp_path / "out"),
         "--workers", "0", "--device", "cpu", "--val-every", "0"],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "hybridnets_d3_seed0_state_dict.pt" in result.stderr and "no training state" in result.stderr


@pytest.mark.slow
def test_two_process_ddp_on_cpu_writes_a_checkpoint_the_pipeline_loads(project: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path)  # d0 at 128x256
    output = tmp_path / "ddp"
    _run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "hybridnets_ros.training.train", "--project", str(project), "--model-config", str(config),
          "--output", str(output), "--epochs", "1", "--batch-size", "2", "--workers", "0", "--precise-bn", "1",
          "--log-images", "1", "--device", "cpu"], timeout=400)
    state = torch.load(output / "last.pt", map_location="cpu", weights_only=True)
    # 8 images over 2 ranks of batch 2: 2 steps per epoch (one process alone would take 4).
    assert state["global_step"] == 2
    assert not any(key.startswith("module.") for key in state["model"])
    assert (output / "best.pt").is_file() and "fitness_combined" in state["metrics"]  # rank 0 validated
    pipeline = HybridNetsPipeline.from_weights(str(output / "best.pt"), device="cpu")
    image = cv2.cvtColor(cv2.imread(str(_val_image(project))), cv2.COLOR_BGR2RGB)
    (result,) = pipeline([image])
    assert result.seg_mask.shape == image.shape[:2]
