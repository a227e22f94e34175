"""gpu_check: its CPU self-test on a bare interpreter (no ROS, no PyYAML), error recording, and the robust rule."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hybridnets_ros.inference.gpu_check import FP32_TOLERANCES, compare_detections

REPO = Path(__file__).resolve().parents[1]
# Packages a bare CUDA machine lacks (only torch, numpy and opencv are there): importing them fails as if absent.
ABSENT = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "vision_msgs", "diagnostic_msgs", "yaml", "tqdm",
          "PIL", "rosbags", "onnx", "onnxruntime", "openvino", "tensorrt", "nncf", "scipy")
BARE_RUNNER = f"""
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named '{{name}}' (hidden by the test)", name=name)
sys.meta_path.insert(0, Absent())
sys.argv = ['gpu_check'] + sys.argv[1:]
runpy.run_module('hybridnets_ros.inference.gpu_check', run_name='__main__')
"""


def run_bare(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """gpu_check from the source tree (not the installed package), with the ABSENT packages unimportable."""
    return subprocess.run([sys.executable, "-c", BARE_RUNNER, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cpu_self_test_runs_without_ros_or_yaml(golden_dir, tmp_path):
    proc = run_bare("--out", str(tmp_path), "--golden", str(golden_dir), "--device", "cpu", "--batches", "1",
                    "--repeats", "1", "--warmup", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert report["passed"] and sections["environment"]["device"] == "cpu"
    golden = sections["golden_fp32"]
    assert golden["status"] == "passed"
    assert golden["raw_demo1"]["seg_logits_max_abs"] <= FP32_TOLERANCES.seg_logits
    for index in (1, 2, 3):
        assert golden[f"pipeline_img{index}"]["detections"]["boxes_compared"] > 0
        assert golden[f"pipeline_img{index}"]["seg_mask"]["agreement"] >= 0.999
    assert sections["golden_fp16"]["status"] == "skipped" and "CUDA" in sections["golden_fp16"]["reason"]
    runs = sections["bench"]["runs"]
    measured = [r for r in runs if r["status"] == "measured"]
    assert [(r["mode"], r["precision"], r["batch"]) for r in measured] == [("eager", "fp32", 1)]
    assert measured[0]["latency_p50_ms"] > 0 and measured[0]["frames_per_s"] > 0
    assert set(measured[0]["stage_p50_ms"]) == {"preprocess", "forward", "postprocess"}
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert {r["mode"] + " " + r["precision"] for r in skipped} == {"eager fp16", "cuda_graphs fp16", "compile fp16"}
    assert all("CUDA only" in r["reason"] for r in skipped)
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| eager | fp32 | 1 |" in table and "skipped" in table


def test_failures_are_recorded_per_section(tmp_path):
    """A golden folder without the weights: every model part errors, yet the report is complete and says why."""
    empty = tmp_path / "golden"
    empty.mkdir()
    out = tmp_path / "out"
    proc = run_bare("--out", str(out), "--golden", str(empty), "--device", "cpu", "--batches", "1,2",
                    "--repeats", "1", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    sections = report["sections"]
    assert not report["passed"]
    assert sections["environment"]["status"] == "passed"
    assert sections["golden_fp32"]["status"] == "error"
    assert "hybridnets_d3_seed0_state_dict.pt" in sections["golden_fp32"]["error"]
    assert sections["golden_fp16"]["status"] == "skipped"
    runs = sections["bench"]["runs"]
    errors = [r for r in runs if r["status"] == "error"]
    assert [r["batch"] for r in errors] == [1, 2] and all("state_dict" in r["error"] for r in errors)
    assert (out / "gpu_check.md").is_file()


def _boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32).reshape(-1, 4)


def _classes(boxes: np.ndarray) -> np.ndarray:
    return np.zeros(len(boxes), dtype=np.int64)


def test_robust_rule_ignores_order_and_boxes_at_the_threshold():
    ref_boxes = _boxes((0, 0, 10, 10), (20, 20, 40, 40), (50, 50, 60, 60))
    ref_scores = np.array([0.9, 0.8, 0.5003], np.float32)  # the last sits on the threshold 0.5
    got_boxes = _boxes((20, 20, 40, 40.01), (0, 0, 10, 10))  # other order; the threshold box fell below it here
    got_scores = np.array([0.8002, 0.9001], np.float32)
    result = compare_detections(got_boxes, got_scores, _classes(got_boxes), ref_boxes, ref_scores, _classes(ref_boxes),
                                0.5, FP32_TOLERANCES)
    assert result["passed"] and result["boxes_compared"] == 2 and result["worst_best_iou"] >= 0.99


@pytest.mark.parametrize("change", ["moved", "missing", "extra", "score"])
def test_robust_rule_catches_real_differences(change):
    ref_boxes = _boxes((0, 0, 10, 10), (20, 20, 40, 40))
    ref_scores = np.array([0.9, 0.8], np.float32)
    got_boxes, got_scores = ref_boxes.copy(), ref_scores.copy()
    if change == "moved":
        got_boxes[1] += 1.0
    elif change == "missing":
        got_boxes, got_scores = got_boxes[:1], got_scores[:1]
    elif change == "extra":
        got_boxes = np.concatenate([got_boxes, _boxes((70, 70, 90, 90))])
        got_scores = np.append(got_scores, np.float32(0.7))
    else:
        got_scores[0] -= 0.01
    assert not compare_detections(got_boxes, got_scores, _classes(got_boxes), ref_boxes, ref_scores,
                                  _classes(ref_boxes), 0.5, FP32_TOLERANCES)["passed"]
