"""BddDataset: label parsing, loud failures, skip-and-count, real-size box normalisation, targets, collate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.training.dataset import BddDataset, LabelError, collate, seg_target
from hybridnets_ros.training.project import ProjectConfig, ProjectConfigError
from train_support import box_object, simple_scene, write_project, write_scene

D0 = load_model_config("hybridnets_d0_synth")  # 384x640 input


def _dataset(root: Path, **kwargs) -> BddDataset:
    return BddDataset(ProjectConfig.from_yaml(root / "project.yaml"), "train", D0, **kwargs)


def _scene(root: Path, name: str, hw: tuple[int, int], boxes, objects=None, split: str = "train") -> None:
    image, road, lane = simple_scene(*hw, boxes)
    write_scene(root, split, name, image, objects if objects is not None else [box_object("car", b) for b in boxes],
                road, lane)


@pytest.mark.parametrize(
    "hw, box",
    [((540, 960), (100, 300, 260, 400)), ((720, 1280), (640, 360, 900, 600)), ((480, 640), (10, 250, 200, 470))],
)
def test_boxes_use_each_image_real_size(tmp_path: Path, hw, box) -> None:
    write_project(tmp_path)
    _scene(tmp_path, "a", hw, [box])
    sample = _dataset(tmp_path)[0]
    h0, w0 = hw
    net_h, net_w = D0.input_size
    scale = min(net_h / h0, net_w / w0)
    new_w, new_h = round(w0 * scale), round(h0 * scale)
    left, top = round((net_w - new_w) / 2 - 0.1), round((net_h - new_h) / 2 - 0.1)
    sx, sy = new_w / w0, new_h / h0
    expected = [box[0] * sx + left, box[1] * sy + top, box[2] * sx + left, box[3] * sy + top, 0.0]
    np.testing.assert_allclose(sample.annotations.numpy(), [expected], atol=1e-3)
    # The red vehicle pixels of the letterboxed image fill the box.
    red = (sample.image[0] > 150) & (sample.image[1] < 60)
    ys, xs = torch.nonzero(red, as_tuple=True)
    assert abs(xs.min().item() - expected[0]) <= 1.5 and abs(xs.max().item() + 1 - expected[2]) <= 1.5
    assert abs(ys.min().item() - expected[1]) <= 1.5 and abs(ys.max().item() + 1 - expected[3]) <= 1.5


def test_multiclass_target_lane_wins_and_padding_is_background(tmp_path: Path) -> None:
    write_project(tmp_path)
    image, road, lane = simple_scene(540, 960, [])
    road[:] = True  # road everywhere, so every lane pixel overlaps road
    write_scene(tmp_path, "train", "a", image, [], road, lane)
    sample = _dataset(tmp_path)[0]
    seg = sample.seg
    assert seg.shape == D0.input_size and seg.dtype == torch.uint8
    lb = sample.letterbox
    inside = torch.zeros_like(seg, dtype=torch.bool)
    inside[lb.pad_top : lb.pad_top + lb.resized_hw[0], lb.pad_left : lb.pad_left + lb.resized_hw[1]] = True
    assert not inside.all()  # 16:9 into the network's aspect ratio: there is padding
    assert set(seg[inside].unique().tolist()) == {1, 2}
    assert (seg[~inside] == 0).all()
    lane_net = lb.mask(torch.from_numpy(lane.astype(np.uint8)))
    assert torch.equal(seg == 2, lane_net.bool())


def test_seg_target_modes() -> None:
    labels = torch.tensor([[0, 1], [2, 3]], dtype=torch.uint8)  # bit0 road, bit1 lane
    assert torch.equal(seg_target(labels, 2, "multiclass"), torch.tensor([[0, 1], [2, 2]], dtype=torch.uint8))
    multilabel = seg_target(labels, 2, "multilabel")
    assert multilabel.shape == (3, 2, 2)
    assert torch.equal(multilabel[0], torch.tensor([[1, 0], [0, 0]], dtype=torch.uint8))
    assert torch.equal(multilabel[1], torch.tensor([[0, 1], [0, 1]], dtype=torch.uint8))
    assert torch.equal(multilabel[2], torch.tensor([[0, 0], [1, 1]], dtype=torch.uint8))
    assert torch.equal(seg_target(labels, 1, "binary"), torch.tensor([[[0, 1], [0, 1]]], dtype=torch.uint8))


def test_categories_combine_and_non_box_objects_are_ignored(tmp_path: Path) -> None:
    write_project(tmp_path)
    objects = [
        box_object("bus", (10, 300, 100, 380)),
        box_object("truck", (200, 300, 300, 390)),
        box_object("pedestrian", (400, 300, 420, 350)),
        {"category": "lane/single white", "id": 9, "poly2d": [[0, 0, "L"], [5, 5, "L"]]},
    ]
    _scene(tmp_path, "a", (720, 1280), [], objects=objects)
    sample = _dataset(tmp_path)[0]
    assert sample.annotations.shape == (2, 5) and (sample.annotations[:, 4] == 0).all()


@pytest.mark.parametrize(
    "corrupt, expected_file",
    [
        (lambda root: (root / "det_annotations/train/b.json").write_text('{"frames": [{"objects": ['), "b.json"),
        (lambda root: (root / "det_annotations/train/b.json").write_text('{"name": "b"}'), "b.json"),
        (lambda root: (root / "det_annotations/train/b.json").write_text(
            json.dumps({"frames": [{"objects": [{"category": "car", "box2d": {"x1": 5, "y1": 5, "x2": "?"}}]}]})),
         "b.json"),
        (lambda root: (root / "ll_seg_annotations/train/b.png").unlink(), "ll_seg_annotations/train/b.png"),
        (lambda root: (root / "det_annotations/train/b.json").unlink(), "det_annotations/train/b.json"),
    ],
    ids=["truncated-json", "no-frames", "non-numeric-box", "missing-mask", "missing-json"],
)
def test_bad_labels_fail_loudly_or_are_skipped_and_counted(tmp_path: Path, corrupt, expected_file: str) -> None:
    write_project(tmp_path)
    for name in ("a", "b", "c"):
        _scene(tmp_path, name, (360, 640), [(100, 200, 180, 260)])
    corrupt(tmp_path)
    with pytest.raises(LabelError, match=expected_file.replace(".", r"\.")):
        _dataset(tmp_path)
    dataset = _dataset(tmp_path, skip_bad_labels=True)
    assert len(dataset) == 2 and len(dataset.skipped) == 1
    assert dataset.skipped[0][0].name == "b.png" and expected_file in dataset.skipped[0][1]
    assert [Path(dataset[i].path).stem for i in range(2)] == ["a", "c"]


def test_box_labelled_for_another_resolution_is_rejected(tmp_path: Path) -> None:
    """The reference normalised every label by a fixed 1280x720; here a 1280x720 box on a 640x360 image is an error."""
    write_project(tmp_path)
    _scene(tmp_path, "a", (360, 640), [], objects=[box_object("car", (900, 500, 1100, 650))])
    with pytest.raises(LabelError, match=r"a\.json.*outside the 640x360 image"):
        _dataset(tmp_path)


def test_mask_of_wrong_size_names_the_mask(tmp_path: Path) -> None:
    write_project(tmp_path)
    _scene(tmp_path, "a", (360, 640), [])
    import cv2

    cv2.imwrite(str(tmp_path / "da_seg_annotations/train/a.png"), np.zeros((100, 100), np.uint8))
    dataset = _dataset(tmp_path)
    with pytest.raises(LabelError, match=r"da_seg_annotations/train/a\.png.*100x100"):
        dataset[0]


def test_project_and_model_class_lists_must_agree(tmp_path: Path) -> None:
    write_project(tmp_path, "dataroot: images\nlabelroot: det_annotations\nsegroot: [da_seg_annotations]\n"
                            "obj_list: [car]\nseg_list: [road]\n")
    _scene(tmp_path, "a", (360, 640), [])
    with pytest.raises(ValueError, match="seg_list"):
        _dataset(tmp_path)
    with pytest.raises(ProjectConfigError, match="segroot has 1 folders but seg_list has 2"):
        ProjectConfig.from_dict({"dataroot": "i", "labelroot": "l", "segroot": ["a"], "obj_list": ["car"],
                                 "seg_list": ["road", "lane"]})


def test_collate_pads_annotations_with_minus_one(tmp_path: Path) -> None:
    write_project(tmp_path)
    _scene(tmp_path, "a", (360, 640), [(10, 200, 100, 260), (300, 200, 400, 300)])
    _scene(tmp_path, "b", (360, 640), [])
    dataset = _dataset(tmp_path)
    batch = collate([dataset[0], dataset[1]])
    assert batch.images.shape == (2, 3, *D0.input_size) and batch.images.dtype == torch.uint8
    assert batch.annotations.shape == (2, 2, 5)
    assert (batch.annotations[1] == -1).all() and (batch.annotations[0, :, 4] == 0).all()
    assert batch.seg.shape == (2, *D0.input_size)


def test_augmented_samples_are_seeded_per_epoch(tmp_path: Path) -> None:
    write_project(tmp_path)
    _scene(tmp_path, "a", (360, 640), [(100, 200, 300, 300)])
    dataset = _dataset(tmp_path, augment=True, seed=3)
    first, again = dataset[0], dataset[0]
    assert torch.equal(first.image, again.image) and torch.equal(first.annotations, again.annotations)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0].image, first.image)
