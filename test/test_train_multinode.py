"""Two torchrun "nodes" on 127.0.0.1 sharing a c10d rendezvous train together; only rank 0 writes; the checkpoint
resumes in a run of another world size."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from hybridnets_ros.model.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from train_support import PYTHON, free_port, small_config, subprocess_env, synth_project

TRAIN_MODULE = ["-m", "hybridnets_ros.training.train"]


def _node_command(port: int, run_id: str, train_args: list[str]) -> list[str]:
    return [PYTHON, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
            *TRAIN_MODULE, *train_args]


def _finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"launcher timed out:\n{output[-4000:]}")
    assert process.returncode == 0, output[-6000:]
    return output


@pytest.mark.slow
def test_two_nodes_train_rank0_writes_and_a_single_process_resumes(tmp_path_factory, tmp_path: Path) -> None:
    project = synth_project(tmp_path_factory)  # 8 train images
    config = small_config(tmp_path)  # d0 at 128x256
    common = ["--project", str(project), "--model-config", str(config), "--epochs", "2", "--max-steps", "2",
              "--batch-size", "2", "--workers", "0", "--val-every", "1", "--log-images", "1", "--device", "cpu",
              "--grad-compression", "ternary"]
    port = free_port()
    outputs = [tmp_path / f"node{i}" for i in range(2)]  # each launcher names its own folder
    launchers = [subprocess.Popen(_node_command(port, "h6test", [*common, "--output", str(out)]),
                                  env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for out in outputs]
    logs = [_finish(p, timeout=400) for p in launchers]

    # Exactly one launcher hosted rank 0; only its folder exists, with the checkpoints and TensorBoard events.
    written = [out for out in outputs if out.exists()]
    assert len(written) == 1, (logs[0][-2000:], logs[1][-2000:])
    run = written[0]
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt", "tensorboard"]
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["global_step"] == 2 and state["epoch"] == 0
    assert state["train_options"]["grad_compression"] == "ternary"
    assert not any(key.startswith("module.") for key in state["model"])
    loaded_config, _ = load_checkpoint(run / "last.pt")
    assert loaded_config.input_size == (128, 256)

    # World size 2 -> 1: the optimizer continues where the two nodes stopped (next epoch, one more step).
    resumed = tmp_path / "resumed"
    result = subprocess.run(
        [PYTHON, *TRAIN_MODULE, "--project", str(project), "--weights", str(run / "last.pt"), "--resume",
         "--output", str(resumed), "--epochs", "2", "--max-steps", "3", "--batch-size", "2", "--workers", "0",
         "--val-every", "0", "--device", "cpu"],
        env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    after = torch.load(resumed / "last.pt", map_location="cpu", weights_only=True)
    assert after["epoch"] == 1 and after["global_step"] == 3
    assert after["optimizer"]["state"][0]["step"] == state["optimizer"]["state"][0]["step"] + 1
