"""Per-pixel segmentation confidence (C/segmentation/confidence): the probability of the class the mask shows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.inference.postprocess import seg_class_probability, seg_confidences, segment
from hybridnets_ros.inference.predictor import seg_class_map


def _logits(seed: int, channels: int) -> torch.Tensor:
    return torch.randn(2, channels, 24, 40, generator=torch.Generator().manual_seed(seed)) * 3


def test_multiclass_confidence_is_the_softmax_of_the_winner() -> None:
    logits = _logits(0, 3)
    expected = torch.softmax(logits, dim=1).gather(1, seg_class_map(logits, "multiclass").long()[:, None])[:, 0]
    assert torch.allclose(seg_class_probability(logits, "multiclass"), expected, atol=1e-6)


def test_binary_confidence_is_the_probability_of_the_shown_side() -> None:
    logits = _logits(1, 1)
    on = seg_class_map(logits, "binary").bool()
    p = torch.sigmoid(logits[:, 0])
    assert torch.allclose(seg_class_probability(logits, "binary"), torch.where(on, p, 1 - p), atol=1e-6)


def test_multilabel_confidence_follows_the_winning_class() -> None:
    logits = _logits(2, 3)
    ids = seg_class_map(logits, "multilabel").long()
    p = torch.sigmoid(logits[:, 1:])
    got = seg_class_probability(logits, "multilabel")
    for b, y, x in [(0, 3, 4), (1, 10, 20), (0, 20, 39)]:
        k = int(ids[b, y, x])
        want = p[b, k - 1, y, x] if k else 1 - p[b, :, y, x].max()
        assert float(got[b, y, x]) == pytest.approx(float(want), abs=1e-6)


def test_confidence_image_lines_up_with_the_mask() -> None:
    letterbox = Letterbox.fit((90, 200), (24, 40))
    logits = torch.zeros(1, 3, 24, 40)
    logits[:, 1, :, :20] = 20.0  # left half: surely class 1
    confidence = seg_confidences(logits, "multiclass", [letterbox])[0].image()
    mask = segment(logits, "multiclass", [letterbox])[0]
    assert confidence.shape == mask.shape == (90, 200) and confidence.dtype == np.uint8
    assert np.all(confidence[mask == 1] == 255)
    assert np.all(confidence[mask == 0] == 85)  # three equal logits: 1/3


def test_confidence_at_pixels_equals_the_image_there() -> None:
    letterbox = Letterbox.fit((90, 200), (24, 40))
    source = seg_confidences(_logits(3, 3)[:1], "multiclass", [letterbox])[0]
    image = source.image()
    index = np.random.default_rng(0).choice(90 * 200, 500, replace=False)
    np.testing.assert_allclose(source.at(index) * 255, image.ravel()[index], atol=0.5 + 1e-4)
