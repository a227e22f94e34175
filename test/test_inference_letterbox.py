"""Letterbox: bit-exact reference pre-processing, cv2 semantics, and the inverse mapping for any image size."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from hybridnets_ros.inference.letterbox import (
    Letterbox,
    letterbox_images,
    resize_area,
    resize_bilinear,
    resize_nearest,
)

NET_HW = (384, 640)
# (w, h) as cameras name them.
ROUND_TRIP_SIZES = [(1920, 1080), (640, 480), (1242, 375), (720, 1280), (333, 517), (101, 77), (2000, 97), (641, 383)]


@pytest.fixture(scope="module")
def golden_input(golden_dir):
    return torch.load(golden_dir / "input_demo1.pt")


def test_fit_demo_geometry_matches_reference():
    lb = Letterbox.fit((720, 1280), NET_HW)
    assert lb.resized_hw == (360, 640)
    assert (lb.pad_top, lb.pad_left) == (12, 0)
    assert lb.scale_xy == (0.5, 0.5)


@pytest.mark.parametrize("w,h", ROUND_TRIP_SIZES)
def test_fit_always_fills_the_network_input(w, h):
    lb = Letterbox.fit((h, w), NET_HW)
    rh, rw = lb.resized_hw
    assert rh == NET_HW[0] or rw == NET_HW[1]
    assert 0 <= lb.pad_top and lb.pad_top + rh <= NET_HW[0]
    assert 0 <= lb.pad_left and lb.pad_left + rw <= NET_HW[1]
    # Centred like the reference: bottom/right padding equals top/left or exceeds it by one.
    assert NET_HW[0] - rh - lb.pad_top - lb.pad_top in (0, 1)
    assert NET_HW[1] - rw - lb.pad_left - lb.pad_left in (0, 1)


def test_demo_image_letterbox_is_bit_exact(golden_input, demo_images_dir):
    bgr = cv2.imread(str(demo_images_dir / "1.jpg"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)
    batch, boxes = letterbox_images([rgb], NET_HW)
    assert boxes == [Letterbox.fit((720, 1280), NET_HW)]
    assert torch.equal(batch[0].permute(1, 2, 0), golden_input["letterboxed_rgb_uint8"])
    assert torch.equal(boxes[0].image(rgb), batch[0])


@pytest.mark.parametrize(
    "src_hw,dst_hw",
    [((720, 1280), (360, 640)), ((517, 333), (384, 247)), ((375, 1242), (193, 640)), ((1080, 1920), (360, 640)),
     ((100, 100), (100, 37))],
)
def test_resize_area_equals_cv2_inter_area(src_hw, dst_hw):
    img = np.random.default_rng(sum(src_hw)).integers(0, 256, (*src_hw, 3), dtype=np.uint8)
    expected = cv2.resize(img, dst_hw[::-1], interpolation=cv2.INTER_AREA)
    got = resize_area(torch.from_numpy(img).permute(2, 0, 1), dst_hw).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected)


def test_resize_bilinear_close_to_cv2_linear():
    img = np.random.default_rng(3).integers(0, 256, (77, 101, 3), dtype=np.uint8)
    expected = cv2.resize(img, (640, 488), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    got = resize_bilinear(torch.from_numpy(img).permute(2, 0, 1), (488, 640)).permute(1, 2, 0).numpy()
    # cv2 uses 11-bit fixed point for uint8, we use float32: off by at most one grey level.
    assert np.abs(got.astype(np.int16) - expected).max() <= 1


@pytest.mark.parametrize("src_hw,dst_hw", [((360, 640), (720, 1280)), ((193, 640), (375, 1242)), ((50, 70), (13, 200))])
def test_resize_nearest_equals_cv2_nearest(src_hw, dst_hw):
    mask = np.random.default_rng(5).integers(0, 3, src_hw, dtype=np.uint8)
    expected = cv2.resize(mask, dst_hw[::-1], interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(resize_nearest(torch.from_numpy(mask), dst_hw).numpy(), expected)


def test_letterbox_images_batches_mixed_sizes_like_single_calls():
    rng = np.random.default_rng(7)
    frames = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in
              [(720, 1280), (480, 640), (720, 1280), (77, 101)]]
    batch, boxes = letterbox_images(frames, NET_HW)
    assert batch.shape == (4, 3, *NET_HW) and batch.dtype == torch.uint8
    for frame, lb, out in zip(frames, boxes, batch):
        assert torch.equal(out, lb.image(frame))
    # The 640x480 frame is pillarboxed: the left columns are padding.
    assert (batch[1, :, :, : boxes[1].pad_left] == 114).all()


def _rectangle(w: int, h: int) -> tuple[torch.Tensor, np.ndarray]:
    x1, y1 = int(0.3 * w), int(0.25 * h)
    x2, y2 = max(x1 + 3, int(0.7 * w)), max(y1 + 3, int(0.6 * h))
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    return torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32), mask


@pytest.mark.parametrize("w,h", ROUND_TRIP_SIZES)
def test_boxes_round_trip(w, h):
    lb = Letterbox.fit((h, w), NET_HW)
    box, _ = _rectangle(w, h)
    net = lb.boxes_to_net(box)
    assert (net[:, 0::2] >= lb.pad_left).all() and (net[:, 0::2] <= lb.pad_left + lb.resized_hw[1]).all()
    assert (net[:, 1::2] >= lb.pad_top).all() and (net[:, 1::2] <= lb.pad_top + lb.resized_hw[0]).all()
    assert torch.allclose(lb.boxes_to_orig(net), box, atol=1.0)


def test_boxes_to_orig_clips_to_the_image():
    lb = Letterbox.fit((720, 1280), NET_HW)
    out = lb.boxes_to_orig(torch.tensor([[-5.0, 0.0, 700.0, 383.0]]))
    assert out.tolist() == [[0.0, 0.0, 1280.0, 720.0]]


@pytest.mark.parametrize("w,h", ROUND_TRIP_SIZES)
def test_mask_round_trip_differs_only_on_the_rectangle_border(w, h):
    lb = Letterbox.fit((h, w), NET_HW)
    _, mask = _rectangle(w, h)
    net = lb.mask(torch.from_numpy(mask))
    assert net.shape == NET_HW
    assert net[: lb.pad_top].sum() == 0 and net[:, : lb.pad_left].sum() == 0
    back = lb.mask_to_orig(net).numpy()
    assert back.shape == (h, w)
    # A network pixel covers up to ceil(orig/resized) original pixels: errors are confined to a band that wide.
    band = max(1, math.ceil(max(h / lb.resized_hw[0], w / lb.resized_hw[1])))
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    border = cv2.dilate(mask, kernel) - cv2.erode(mask, kernel)
    wrong = back != mask
    assert not (wrong & (border == 0)).any()
    if band == 1:
        assert wrong.sum() <= 2 * (mask.shape[0] + mask.shape[1])


def test_mask_to_orig_demo_matches_reference_crop():
    lb = Letterbox.fit((720, 1280), NET_HW)
    net = torch.from_numpy(np.random.default_rng(1).integers(0, 3, NET_HW, dtype=np.uint8))
    expected = cv2.resize(net.numpy()[12:372], (1280, 720), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(lb.mask_to_orig(net).numpy(), expected)


def test_wrong_sizes_are_rejected():
    lb = Letterbox.fit((720, 1280), NET_HW)
    with pytest.raises(ValueError, match="expected"):
        lb.image(torch.zeros(3, 10, 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        Letterbox.fit((0, 5), NET_HW)


def test_area_taps_of_absurdly_wide_images_are_cached_within_a_byte_budget() -> None:
    """A 1-pixel-high image a million pixels wide needs ~12 MB of taps; six distinct widths used to stay cached
    (an entry-count cache), growing the process by 50-75 MB per width. The cache now holds at most its budget."""
    from hybridnets_ros.inference import letterbox

    for width in range(1_000_000, 1_000_006):
        resized = letterbox.resize_area(torch.full((1, 1, 1, width), 7, dtype=torch.uint8), (1, 640))
        assert resized.shape == (1, 1, 1, 640) and (resized == 7).all()
    cache = letterbox._AREA_TAPS_CACHE
    assert 0 < cache.bytes <= letterbox.AREA_TAPS_CACHE_BYTES
    assert cache.get((1_000_005, 640)) is not None  # the newest is kept; the oldest went
    assert cache.get((1_000_000, 640)) is None
