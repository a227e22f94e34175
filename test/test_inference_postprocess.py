"""Post-processing on the golden raw outputs of variant C, plus the seg modes and the caps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.inference.nms import box_iou
from hybridnets_ros.inference.postprocess import (
    PostprocessConfig,
    detect,
    seg_class_map,
    segment,
    select_detections,
)

DEMO_LB = Letterbox.fit((720, 1280), (384, 640))


@pytest.fixture(scope="module")
def raw(golden_dir):
    return torch.load(golden_dir / "raw_seed0_variantC_demo1.pt")


@pytest.fixture(scope="module")
def post(golden_dir):
    return dict(np.load(golden_dir / "post_seed0_variantC_img1.npz"))


def _few_config(post) -> PostprocessConfig:
    return PostprocessConfig(
        score_threshold=float(post["few_conf_thresh"]), nms_iou_threshold=float(post["iou_thresh"])
    )


def assert_boxes_match(boxes: np.ndarray, expected: np.ndarray) -> None:
    """Same count, same order, IoU >= 0.99 pairwise (the golden README's criterion)."""
    assert boxes.shape == expected.shape
    iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(expected)).diagonal()
    assert (iou >= 0.99).all(), iou.min()


def test_golden_detections(raw, post):
    det = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], _few_config(post))[0]
    assert len(det) == len(post["few_scores"]) > 20
    assert_boxes_match(det.boxes, post["few_rois_orig"])
    np.testing.assert_allclose(det.scores, post["few_scores"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(det.class_ids, post["few_class_ids"])
    assert det.boxes.dtype == np.float32 and det.class_ids.dtype == np.int64


def test_golden_detections_in_network_pixels(raw, post):
    boxes, scores, _ = select_detections(
        raw["regression"], raw["classification"], raw["anchors"], (384, 640), _few_config(post)
    )[0]
    assert_boxes_match(boxes.numpy(), post["few_rois_input"])
    assert (scores[:-1] >= scores[1:]).all()


def test_golden_segmentation(raw, post):
    net = seg_class_map(raw["segmentation"], "multiclass")[0].numpy()
    assert (net == post["few_seg_argmax_input"]).mean() >= 0.999
    mask = segment(raw["segmentation"], "multiclass", [DEMO_LB])[0]
    assert mask.shape == (720, 1280) and mask.dtype == np.uint8
    assert (mask == post["few_seg_mask_orig"]).mean() >= 0.999
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
    cfg.max_detections = 5
    det = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], cfg)[0]
    np.testing.assert_array_equal(det.boxes, post["few_rois_orig"][:5])
    cfg = PostprocessConfig(score_threshold=0.999)
    assert len(detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], cfg)[0]) == 0
    # Only the 3 best candidates enter NMS: at most 3 boxes, all among the golden candidates' best.
    cfg = PostprocessConfig(score_threshold=0.25, pre_nms_top_k=3)
    det = detect(raw["regression"], raw["classification"], raw["anchors"], [DEMO_LB], cfg)[0]
    assert 1 <= len(det) <= 3 and det.scores[0] == post["few_scores"][0]


def test_invalid_config_is_rejected(raw):
    with pytest.raises(ValueError, match="score_threshold"):
        config = PostprocessConfig(score_threshold=2)
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
