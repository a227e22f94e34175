"""evaluate_model and the hybridnets-eval CLI on a tiny hand-made BDD100K-layout dataset."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from hybridnets_ros.inference.box_coder import encode_boxes
from hybridnets_ros.model.anchors import generate_anchors
from hybridnets_ros.model.checkpoint import save_checkpoint
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNets, HybridNetsOutput
from hybridnets_ros.training.dataset import BddDataset, collate
from hybridnets_ros.training.evaluate import format_table, main
from hybridnets_ros.training.evaluation import evaluate_model, seg_prediction, seg_stats, seg_truth
from hybridnets_ros.training.metrics import box_iou
from hybridnets_ros.training.project import ProjectConfig

TINY = ModelConfig(name="tiny_eval", compound_coef=0, input_size=(128, 256), obj_list=("car",),
                   seg_list=("road", "lane"))
# 16:9 and 4:3 images: letterboxing pads columns for one and rows for the other.
IMAGES = {
    "a": ((90, 160), [(20, 40, 60, 70), (100, 45, 150, 80)]),
    "b": ((120, 160), [(30, 50, 80, 100)]),
    "c": ((90, 160), []),
}


def _write_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, ((h, w), boxes) in IMAGES.items():
        for sub in ("images", "det_annotations", "da", "ll"):
            (root / sub / "val").mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / "val" / f"{name}.jpg"), image)
        road = np.zeros((h, w), np.uint8)
        road[h // 2 :, :] = 255
        lane = np.zeros((h, w), np.uint8)
        lane[h // 2 :, w // 2 - 3 : w // 2 + 3] = 255
        cv2.imwrite(str(root / "da" / "val" / f"{name}.png"), road)
        cv2.imwrite(str(root / "ll" / "val" / f"{name}.png"), lane)
        objects = [
            {"category": "car", "id": i, "box2d": {"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}}
            for i, b in enumerate(boxes)
        ]
        objects.append({"category": "lane", "id": 99, "poly2d": []})  # no box2d: ignored
        label = {"name": name, "frames": [{"objects": objects}]}
        (root / "det_annotations" / "val" / f"{name}.json").write_text(json.dumps(label))
    project = root / "project.yaml"
    project.write_text(
        "dataroot: images\nlabelroot: det_annotations\nsegroot: [da, ll]\nobj_list: [car]\nseg_list: [road, lane]\n"
    )
    return project


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    return _write_dataset(tmp_path / "data")


class _Oracle(nn.Module):
    """Replays precomputed outputs, one batch per forward call, ignoring the images."""

    def __init__(self, outputs: list[HybridNetsOutput]) -> None:
        super().__init__()
        self.outputs = list(outputs)

    def forward(self, x: torch.Tensor) -> HybridNetsOutput:
        return self.outputs.pop(0)


def _perfect_outputs(batch, anchors: torch.Tensor, config: ModelConfig) -> HybridNetsOutput:
    """Outputs whose decoded best anchors are exactly the labels and whose seg logits are the targets."""
    b, n = batch.images.shape[0], anchors.shape[0]
    regression = torch.zeros(b, n, 4)
    classification = torch.zeros(b, n, config.num_classes)
    anchors_xyxy = anchors[:, [1, 0, 3, 2]]
    for i, ann in enumerate(batch.annotations):
        gt = ann[ann[:, 4] >= 0]
        if len(gt):
            best = box_iou(gt[:, :4], anchors_xyxy).argmax(dim=1)
            regression[i, best] = encode_boxes(anchors[best], gt[:, :4]).float()
            classification[i, best, gt[:, 4].long()] = 0.9
    segmentation = nn.functional.one_hot(batch.seg.long(), config.seg_out_channels).permute(0, 3, 1, 2).float() * 10
    return HybridNetsOutput(regression, classification, segmentation)


def test_perfect_outputs_score_one(tiny_project: Path):
    dataset = BddDataset(ProjectConfig.from_yaml(tiny_project), "val", TINY)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    batches = list(loader)
    anchors = generate_anchors(TINY, TINY.input_size)
    oracle = _Oracle([_perfect_outputs(batch, anchors, TINY) for batch in batches])
    oracle.train()
    metrics = evaluate_model(oracle, TINY, loader, "cpu", original_resolution=True)
    assert oracle.training  # mode restored
    assert metrics["num_images"] == 3 and metrics["det/num_gt"] == 3
    for key in ("det/map50", "det/map50_95", "det/recall", "det/precision", "det/recall_op", "det/ap50/car"):
        assert metrics[key] == pytest.approx(1.0), key
    for name in ("background", "road", "lane"):
        for key in ("iou", "miou", "acc", "iou_dataset"):
            assert metrics[f"seg/{name}/{key}"] == pytest.approx(1.0), (name, key)
    # The original-resolution target is re-read from the PNGs; the network-size one went through the letterbox's
    # nearest resize, so mapping back can shift a boundary by a pixel: close to, not exactly, 1.
    assert metrics["seg/road/iou_dataset_orig"] > 0.95
    assert metrics["fitness"] == pytest.approx(1.0)
    rows = dict(line.split() for line in format_table(metrics).splitlines()[2:])
    assert rows["det/map50"] == "1.0000" and rows["num_images"] == "3" and rows["det/num_gt"] == "3"


def test_empty_outputs_score_zero_detection(tiny_project: Path):
    dataset = BddDataset(ProjectConfig.from_yaml(tiny_project), "val", TINY)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate)
    n = generate_anchors(TINY, TINY.input_size).shape[0]
    seg = torch.zeros(3, TINY.seg_out_channels, *TINY.input_size)
    seg[:, 0] = 1.0  # everything background
    oracle = _Oracle([HybridNetsOutput(torch.zeros(3, n, 4), torch.zeros(3, n, 1), seg)])
    metrics = evaluate_model(oracle, TINY, loader, "cpu")
    assert metrics["det/map50"] == 0.0 and metrics["det/recall"] == 0.0 and metrics["det/num_pred"] == 0
    assert metrics["seg/road/iou"] == 0.0 and metrics["seg/lane/iou_dataset"] == 0.0
    assert metrics["seg/road/acc"] == pytest.approx(0.5)  # sensitivity 0, specificity 1
    assert "seg/road/iou_dataset_orig" not in metrics


def test_cli_end_to_end_with_random_checkpoint(tiny_project: Path, tmp_path: Path, capsys):
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "random_d0.pt", HybridNets(TINY), TINY)
    output = tmp_path / "out" / "metrics.json"
    argv = ["--weights", str(weights), "--project", str(tiny_project), "--split", "val", "--device", "cpu",
            "--backend", "torch", "--batch-size", "2", "--workers", "0", "--output", str(output)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "det/map50" in printed and "seg/lane/iou" in printed
    document = json.loads(output.read_text())
    metrics = document["metrics"]
    assert document["split"] == "val" and document["settings"]["score_threshold"] == 0.001
    expected = ["det/precision", "det/recall", "det/precision_op", "det/recall_op", "det/map50", "det/map50_95",
                "fitness"] + [f"seg/{c}/{k}" for c in ("background", "road", "lane")
                              for k in ("iou", "miou", "acc", "iou_dataset", "iou_dataset_orig")]
    for key in expected:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["num_images"] == 3 and metrics["det/num_gt"] == 3


def test_cli_reports_bad_inputs_cleanly(tiny_project: Path, tmp_path: Path, capsys):
    output = tmp_path / "m.json"
    missing_project = ["--weights", str(tmp_path / "w.pt"), "--project", str(tmp_path / "nope.yaml")]
    assert main([*missing_project, "--output", str(output)]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    missing_weights = ["--weights", str(tmp_path / "w.pt"), "--project", str(tiny_project)]
    assert main([*missing_weights, "--output", str(output)]) == 2
    assert "w.pt" in capsys.readouterr().err
    assert not output.exists()


def test_binary_and_multilabel_seg_layouts():
    logits = torch.tensor([[[[2.0, -1.0], [-1.0, 0.5]]]])  # (1,1,2,2): on at (0,0) and (1,1)
    target = torch.tensor([[[[1, 1], [0, 1]]]], dtype=torch.uint8)  # dataset layout (B,1,H,W)
    stats = seg_stats(seg_prediction(logits, "binary"), seg_truth(target, "binary"), 2)
    assert stats[0, 1].tolist() == [2, 0, 1, 1] and stats[0, 0].tolist() == [1, 1, 0, 2]

    # multilabel: channels judged independently (sigmoid >= 0.5, i.e. logit >= 0); overlaps allowed
    logits = torch.tensor([[[[1.0, -1.0]], [[1.0, 1.0]], [[-1.0, 1.0]]]])  # (1,3,1,2)
    target = torch.tensor([[[[1, 0]], [[1, 0]], [[0, 1]]]], dtype=torch.uint8)
    stats = seg_stats(seg_prediction(logits, "multilabel"), seg_truth(target, "multilabel"), 3)
    assert stats[0].tolist() == [[1, 0, 0, 1], [1, 1, 0, 0], [1, 0, 0, 1]]
