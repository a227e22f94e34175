"""Batched class-aware NMS against a plain greedy reference, and the box coder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridnets_ros.inference.box_coder import clip_boxes, decode_boxes, encode_boxes
from hybridnets_ros.inference.nms import batched_nms, box_iou, nms


def _greedy_reference(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, thr: float) -> list[int]:
    """Textbook greedy NMS, one box at a time; ties ranked by input position."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            if classes[i] != classes[j]:
                continue
            x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            if inter / (area(boxes[i]) + area(boxes[j]) - inter) > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def _random_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Clustered boxes give long suppression chains; rounded scores give many ties.
    centres = rng.uniform(0, 200, (4, 2))[rng.integers(0, 4, n)] + rng.normal(0, 12, (n, 2))
    wh = rng.uniform(8, 60, (n, 2))
    boxes = np.concatenate([centres - wh / 2, centres + wh / 2], axis=1).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, n), 1).astype(np.float32)
    classes = rng.integers(0, 3, n)
    return boxes, scores, classes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.3, 0.6])
def test_nms_equals_greedy_reference(seed, thr):
    rng = np.random.default_rng(seed)
    boxes, scores, classes = _random_boxes(rng, 150)
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), thr).tolist()
    assert got == _greedy_reference(boxes, scores, classes, thr)
    assert len(got) < len(scores)


def test_batched_nms_handles_padding_per_image():
    rng = np.random.default_rng(11)
    data = [_random_boxes(rng, 80) for _ in range(3)]
    counts = [80, 35, 0]
    boxes = torch.stack([torch.from_numpy(d[0]) for d in data])
    scores = torch.stack([torch.from_numpy(d[1]) for d in data])
    classes = torch.stack([torch.from_numpy(d[2]) for d in data])
    valid = torch.arange(80)[None, :] < torch.tensor(counts)[:, None]
    order, keep = batched_nms(boxes, scores, classes, 0.3, valid)
    for b, n in enumerate(counts):
        expected = _greedy_reference(data[b][0][:n], data[b][1][:n], data[b][2][:n], 0.3)
        assert order[b][keep[b]].tolist() == expected


def test_nms_is_strict_and_class_aware():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 5]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    classes = torch.tensor([0, 0, 1, 1])
    assert nms(boxes, scores, classes, 0.5).tolist() == [0, 2, 3]  # IoU(2,3) = 0.5 exactly: not > 0.5, kept
    assert nms(boxes, scores, classes, 0.49).tolist() == [0, 2]


def test_long_suppression_chain_across_blocks():
    # Each box overlaps only its neighbours (IoU 7/13): greedy keeps every other box, a chain 300 ranks long.
    x = torch.arange(300, dtype=torch.float32) * 3
    boxes = torch.stack([x, torch.zeros(300), x + 10, torch.full((300,), 10.0)], dim=1)
    kept = nms(boxes, torch.linspace(1.0, 0.5, 300), torch.zeros(300, dtype=torch.int64), 0.3)
    assert kept.tolist() == list(range(0, 300, 2))


def test_nms_empty_input():
    assert nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.3).numel() == 0


def test_box_iou_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 0.0]]))


def test_decode_matches_reference_formula_and_encode_inverts_it():
    anchors = torch.tensor([[-3.9, 0.9, 11.9, 7.1], [100.0, 200.0, 180.0, 260.0]])  # y1x1y2x2
    deltas = torch.tensor([[[0.1, -0.2, 0.3, -0.4], [0.0, 0.0, 0.0, 0.0]]])
    boxes = decode_boxes(anchors, deltas)
    assert boxes.shape == (1, 2, 4)
    assert torch.allclose(boxes[0, 1], torch.tensor([200.0, 100.0, 260.0, 180.0]))  # zero deltas give the anchor
    ha, wa = 15.8, 6.2
    yc, xc = 0.1 * ha + 4.0, -0.2 * wa + 4.0
    h, w = np.exp(0.3) * ha, np.exp(-0.4) * wa
    expected = torch.tensor([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], dtype=torch.float32)
    assert torch.allclose(boxes[0, 0], expected)
    assert torch.allclose(encode_boxes(anchors, boxes[0]), deltas[0], atol=1e-5)


def test_encode_clamps_degenerate_boxes():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = encode_boxes(anchors, torch.tensor([[5.0, 5.0, 5.0, 5.0]]))
    assert torch.isfinite(deltas).all()
    assert torch.allclose(deltas[0, 2:], torch.log(torch.tensor([0.1, 0.1])))


def test_clip_boxes_is_one_sided_like_the_reference():
    boxes = torch.tensor([[-4.0, -1.0, 700.0, 400.0], [650.0, 390.0, 20.0, 10.0]])
    assert clip_boxes(boxes, (384, 640)).tolist() == [[0.0, 0.0, 639.0, 383.0], [650.0, 390.0, 20.0, 10.0]]
