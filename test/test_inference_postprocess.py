"""Post-processing on the golden raw outputs of variant C, plus the seg modes and the caps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from golden_support import (
    MIN_MASK_AGREEMENT,
    assert_matches_golden,
    assert_same_boxes,
    golden_detections,
    load_post,
    mask_agreement,
    run_threshold,
)
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.inference.postprocess import Detections, detections_to_orig, segment
from hybridnets_ros.inference.predictor import HybridNetsPredictor, seg_class_map
from hybridnets_ros.model.config import load_model_config

DEMO_LB = Letterbox.fit((720, 1280), (384, 640))
# The scores here are the golden raw heads' own values (no arithmetic on them), so they match exactly on any CPU.
FILE_SCORE_ATOL = 1e-6
D3_CONFIG = load_model_config("hybridnets_d3_bdd100k")


def select_detections(regression, classification, anchors, input_hw, thresholds):
    """Per image (boxes, scores, class_ids) in network pixels from the predictor, whose anchors are the file's."""
    predictor = HybridNetsPredictor(D3_CONFIG)
    assert torch.equal(predictor.anchors, anchors.reshape(-1, 4)) and predictor.input_hw == tuple(input_hw)
    selected = predictor.detect(regression, classification, thresholds)
    return [selected.image(b) for b in range(regression.shape[0])]


def detect(regression, classification, anchors, letterboxes, thresholds):
    """The pipeline's detection path: the predictor, then each letterbox's inverse."""
    predictor = HybridNetsPredictor(D3_CONFIG)
    assert torch.equal(predictor.anchors, anchors.reshape(-1, 4))
    return detections_to_orig(predictor.detect(regression, classification, thresholds), letterboxes)


@pytest.fixture(scope="module")
def raw(golden_dir):
    return torch.load(golden_dir / "raw_seed0_variantC_demo1.pt")


@pytest.fixture(scope="module")
def post(golden_dir):
    return load_post(golden_dir, 1)


def _few_config(post) -> DetectionThresholds:
    """The golden ``few_`` setting, run just below its threshold (golden_support)."""
    return DetectionThresholds(score_threshold=run_threshold(post), nms_iou_threshold=float(post["iou_thresh"]))


def test_golden_detections(raw, post):
    det = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], _few_config(post))[0]
    assert assert_matches_golden(det, post, "golden raw heads", score_atol=FILE_SCORE_ATOL) > 20
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32 and det.class_ids.dtype == np.int64


def test_threshold_is_strict(raw, post):
    """At exactly the golden threshold the anchor scoring it is no candidate (``>``, as upstream): the golden count.
    Holds on any CPU: the candidates follow from the file's scores alone, and no pair of them has an IoU within 4e-4
    of the NMS threshold, far above the rounding of the decoded boxes."""
    threshold = float(post["few_conf_thresh"])
    assert int((raw["classification"] == threshold).sum()) == 1
    config = DetectionThresholds(score_threshold=threshold, nms_iou_threshold=float(post["iou_thresh"]))
    det = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], config)[0]
    assert (det.scores > threshold).all() and len(det) == len(post["few_scores"])


def test_golden_detections_in_network_pixels(raw, post):
    boxes, scores, class_ids = select_detections(
        raw["regression"], raw["classification"], raw["anchors"], (384, 640), _few_config(post)
    )[0]
    got = Detections(boxes.numpy(), scores.numpy(), class_ids.numpy())
    assert assert_matches_golden(got, post, "network pixels", "few_rois_input", FILE_SCORE_ATOL) > 20
    assert (scores[:-1] >= scores[1:]).all()


def test_rows_are_fixed_in_number_and_padded_with_zeros(raw, post):
    """The predictor's output has the exported shape also eagerly: max_detections rows, zeros past the count."""
    selected = HybridNetsPredictor(D3_CONFIG, _few_config(post)).detect(raw["regression"], raw["classification"])
    count = int(selected.counts[0])
    assert selected.rows().shape == (1, 100, 6) and 20 < count < 100
    assert not selected.rows()[0, count:].any() and bool((selected.scores[0, :count] > 0).all())


def test_golden_segmentation(raw, post):
    net = seg_class_map(raw["segmentation"], "multiclass")[0].numpy()
    assert mask_agreement(net, post["few_seg_argmax_input"]) >= MIN_MASK_AGREEMENT
    mask = segment(raw["segmentation"], "multiclass", [DEMO_LB])[0]
    assert mask.shape == (720, 1280) and mask.dtype == np.uint8
    assert mask_agreement(mask, post["few_seg_mask_orig"]) >= MIN_MASK_AGREEMENT
    assert set(np.unique(mask)) == {0, 1, 2}


def test_batch_of_two_gives_the_same_per_image(raw, post):
    reg = torch.cat([raw["regression"], raw["regression"].flip(1)])
    cls = torch.cat([raw["classification"], raw["classification"].flip(1)])
    dets = detect(reg, cls, raw["anchors"], [DEMO_LB, DEMO_LB], _few_config(post))
    single = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], _few_config(post))[0]
    np.testing.assert_array_equal(dets[0].boxes, single.boxes)
    assert len(dets[1]) > 0 and not np.array_equal(dets[1].boxes, single.boxes)


def test_caps_and_threshold(raw, post):
    cfg = _few_config(post)
    full = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], cfg)[0]
    cfg.max_detections = 5
    det = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], cfg)[0]
    np.testing.assert_array_equal(det.boxes, full.boxes[:5])  # same arithmetic, only the cap differs
    # The golden five best (file scores, no ties): every box above the midpoint to the sixth pairs with one of them.
    top_five_cut = float(post["few_scores"][4] + post["few_scores"][5]) / 2
    assert assert_same_boxes(golden_detections(post), det, top_five_cut, "capped", FILE_SCORE_ATOL) == 5
    cfg = DetectionThresholds(score_threshold=0.999)
    assert len(detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], cfg)[0]) == 0
    # Only the 3 best candidates enter NMS: at most 3 boxes, all among the golden candidates' best.
    cfg = DetectionThresholds(score_threshold=0.25, pre_nms_top_k=3)
    det = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], cfg)[0]
    assert 1 <= len(det) <= 3 and det.scores[0] == post["few_scores"][0]


def test_invalid_config_is_rejected(raw):
    with pytest.raises(ValueError, match="score_threshold"):
        config = DetectionThresholds(score_threshold=2)
        detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], config)


def test_binary_and_multilabel_seg_modes():
    logits = torch.tensor([[[[-1.0, 0.0], [2.0, -3.0]]]])  # (1,1,2,2)
    assert seg_class_map(logits, "binary")[0].tolist() == [[0, 1], [1, 0]]
    bg = torch.zeros(1, 1, 2, 2)
    road = torch.tensor([[[[1.0, 1.0], [-1.0, -1.0]]]])
    lane = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]]]])
    multi = torch.cat([bg, road, lane], dim=1)
    assert seg_class_map(multi, "multilabel")[0].tolist() == [[2, 1], [2, 0]]  # lane wins overlaps
    assert seg_class_map(multi, "multiclass")[0].tolist() == [[1, 1], [2, 0]]  # first maximum wins ties
    with pytest.raises(ValueError, match="seg_mode"):
        seg_class_map(multi, "panoptic")


def test_segment_restores_each_frame_size():
    boxes = [Letterbox.fit(hw, (384, 640)) for hw in [(720, 1280), (480, 640), (720, 1280)]]
    logits = torch.randn(3, 3, 384, 640)
    masks = segment(logits, "multiclass", boxes)
    assert [m.shape for m in masks] == [(720, 1280), (480, 640), (720, 1280)]
    np.testing.assert_array_equal(masks[2], segment(logits[2:], "multiclass", boxes[2:])[0])


@pytest.mark.parametrize("orig_hw", [(720, 1280), (1080, 1920), (97, 331), (600, 400), (1, 7), (2000, 33)])
def test_segment_equals_the_device_side_nearest_resize(orig_hw):
    """The host-side cv2 resize gives exactly the masks of Letterbox.mask_to_orig (the torch INTER_NEAREST rule)."""
    lb = Letterbox.fit(orig_hw, (384, 640))
    logits = torch.randn(2, 3, 384, 640, generator=torch.Generator().manual_seed(sum(orig_hw)))
    masks = segment(logits, "multiclass", [lb, lb])
    expected = lb.mask_to_orig(seg_class_map(logits, "multiclass")).numpy()
    for got, want in zip(masks, expected):
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
