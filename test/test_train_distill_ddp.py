"""hybridnets-distill and hybridnets-train --semi-supervised cst run in one process: under torchrun every rank refuses
with one clear line and exit code 2, and nothing is trained or written (rather than each rank training its own copy
and overwriting the others' checkpoints)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from hybridnets_ros.resources import resolve_model_config
from train_support import PYTHON, free_port, make_toy_dataset, small_config, subprocess_env

BUNDLED = Path(resolve_model_config("hybridnets_d0_synth")).with_suffix(".pt")


def _torchrun(module: str, args: list[str]) -> str:
    """Two local ranks of ``module``; returns the launcher's output after asserting that both ranks exited 2."""
    command = [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
               "-m", module, *args]
    try:
        done = subprocess.run(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"torchrun did not finish: {err.output!s:.3000}") from err
    assert done.returncode != 0, done.stdout[-3000:]
    assert done.stdout.count("exitcode  : 2") + done.stdout.count("exitcode: 2") >= 1, done.stdout[-3000:]
    return done.stdout


def _unlabeled_folder(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(root / f"{i}.jpg"), rng.integers(0, 255, (96, 160, 3), dtype=np.uint8))
    return root


@pytest.mark.slow
def test_distill_refuses_torchrun(tmp_path: Path) -> None:
    output = tmp_path / "run"
    log = _torchrun("hybridnets_ros.training.distill_train",
                    ["--teacher", str(BUNDLED), "--student", str(small_config(tmp_path)),
                     "--unlabeled", str(_unlabeled_folder(tmp_path / "frames")), "--output", str(output),
                     "--max-steps", "1", "--batch-size", "1", "--device", "cpu"])
    assert log.count("ERROR hybridnets-distill: hybridnets-distill runs in one process; start it without "
                     "torchrun") == 2, log[-3000:]
    assert not (output / "last.pt").exists()


@pytest.mark.slow
def test_cst_refuses_torchrun(tmp_path: Path) -> None:
    output = tmp_path / "run"
    log = _torchrun("hybridnets_ros.training.train",
                    ["--project", str(make_toy_dataset(tmp_path / "data", num_train=2, num_val=1)),
                     "--model-config", str(small_config(tmp_path)), "--output", str(output), "--max-steps", "1",
                     "--batch-size", "1", "--workers", "0", "--device", "cpu", "--semi-supervised", "cst",
                     "--unlabeled", str(_unlabeled_folder(tmp_path / "frames"))])
    assert log.count("ERROR hybridnets-train: --semi-supervised cst trains in one process; run it without "
                     "torchrun") == 2, log[-3000:]
    assert not (output / "last.pt").exists()
