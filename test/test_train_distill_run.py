"""Tiny end-to-end runs of the unlabeled-data methods: each lowers its objective and writes checkpoints the node loads.

Distillation from the bundled d0 (one teacher, and two teachers owning detection / segmentation) on a real rosbag2 of
compressed frames; cycle self-training through ``hybridnets-train --semi-supervised cst`` on an image folder.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from hybridnets_ros.model.checkpoint import build_model, save_checkpoint
from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.model.hybridnets import HybridNets
from hybridnets_ros.resources import resolve_model_config
from hybridnets_ros.training import distill_train, train
from hybridnets_ros.training.distiller import DistillOptions, Distiller
from hybridnets_ros.training.evaluation import normalise_images
from hybridnets_ros.training.trainer import TrainOptions, Trainer
from train_support import make_toy_dataset, simple_scene, small_config

BUNDLED = Path(resolve_model_config("hybridnets_d0_synth")).with_suffix(".pt")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
STORE = get_typestore(Stores.ROS2_KILTED)
NS = 1_000_000_000


def scenes(count: int) -> list[np.ndarray]:
    """(H,W,3) uint8 RGB road scenes with one or two vehicles at varying places."""
    rng = np.random.default_rng(5)
    out = []
    for i in range(count):
        x = int(rng.integers(20, 300))
        boxes = [(x, 150, x + 90, 220)] + ([(400, 160, 470, 210)] if i % 2 else [])
        out.append(simple_scene(288, 512, boxes, seed=i)[0])
    return out


def write_compressed_bag(path: Path, images: list[np.ndarray], topic: str = "/camera/image_raw/compressed") -> Path:
    cls = STORE.types["sensor_msgs/msg/CompressedImage"]
    header, stamp_cls = STORE.types["std_msgs/msg/Header"], STORE.types["builtin_interfaces/msg/Time"]
    with Writer(path, version=9) as writer:
        connection = writer.add_connection(topic, "sensor_msgs/msg/CompressedImage", typestore=STORE)
        for i, rgb in enumerate(images):
            stamp = NS + i * NS // 10
            data = np.frombuffer(cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes(), np.uint8)
            msg = cls(header=header(stamp=stamp_cls(sec=stamp // NS, nanosec=stamp % NS), frame_id="camera"),
                      format="jpeg", data=data)
            writer.write(connection, stamp, STORE.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    return path


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory) -> Path:
    return write_compressed_bag(tmp_path_factory.mktemp("drive") / "bag", scenes(6))


@pytest.fixture(scope="module")
def student_config(tmp_path_factory) -> Path:
    return small_config(tmp_path_factory.mktemp("cfg"), (128, 256))


def distill_objective(distiller: Distiller, images: torch.Tensor) -> dict[str, float]:
    """The distillation terms on fixed images and the student's view of step 0, without updating anything."""
    step, distiller.global_step = distiller.global_step, 0
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in distiller.loss_terms(images, None).items()}
    finally:
        distiller.global_step = step


def run_distillation(options: DistillOptions) -> tuple[dict[str, float], dict[str, float], dict]:
    distiller = Distiller(options)
    images = next(distiller.stream.batches(options.batch_size))[0]
    before = distill_objective(distiller, images)
    summary = distiller.fit()
    return before, distill_objective(distiller, images), summary


def test_distillation_from_one_teacher_lowers_its_terms_and_resumes(tmp_path, drive_bag, student_config):
    options = DistillOptions(teacher=[str(BUNDLED)], student=str(student_config), unlabeled=[str(drive_bag)],
                             output=str(tmp_path / "run"), max_steps=16, batch_size=2, lr=3e-3, workers=0,
                             device="cpu", val_every=0, save_every=8, warmup_steps=0)
    before, after, summary = run_distillation(options)
    assert set(before) == {"t1/cls", "t1/box", "t1/seg"}
    assert sum(after.values()) < 0.7 * sum(before.values()), (before, after)
    model, config = build_model(summary["last"])  # what the node does with weights:=
    assert config == load_model_config(student_config) and isinstance(model, HybridNets)
    state = torch.load(summary["last"], weights_only=True)
    assert state["global_step"] == 16 and state["unlabeled_position"] == [5, 2]  # 3 batches of 2 a pass

    # --resume continues the step count and the unlabeled stream where last.pt left them
    code = distill_train.main(["--teacher", str(BUNDLED), "--student", str(student_config), "--unlabeled",
                               str(drive_bag), "--output", str(tmp_path / "run"), "--max-steps", "17",
                               "--batch-size", "2", "--workers", "0", "--device", "cpu", "--val-every", "0",
                               "--resume"])
    assert code == 0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["global_step"] == 17 and state["unlabeled_position"] == [5, 4]


def test_two_teachers_each_supervise_only_what_they_own(tmp_path, drive_bag, student_config):
    seg_teacher = tmp_path / "seg_teacher.pt"
    torch.manual_seed(3)
    save_checkpoint(seg_teacher, HybridNets(load_model_config(student_config)), load_model_config(student_config))
    project = make_toy_dataset(tmp_path / "labeled", num_train=2, num_val=2, size=(128, 256))
    options = DistillOptions(teacher=[str(BUNDLED), str(seg_teacher)], owns=[["det"], ["seg"]],
                             student=str(student_config), unlabeled=[str(drive_bag)], labeled=str(project),
                             output=str(tmp_path / "run"), max_steps=12, batch_size=2, lr=3e-3, workers=0,
                             device="cpu", val_every=12, save_every=12, warmup_steps=0)
    before, after, summary = run_distillation(options)
    assert set(before) == {"t1/cls", "t1/box", "t2/seg"}
    assert sum(after.values()) < 0.7 * sum(before.values()), (before, after)
    assert summary["best"] is not None  # validated on the labeled val split
    build_model(summary["best"])


def test_distill_cli_refuses_ambiguous_ownership(tmp_path, drive_bag, student_config, capsys):
    code = distill_train.main(["--teacher", str(BUNDLED), "--teacher", str(BUNDLED), "--student",
                               str(student_config), "--unlabeled", str(drive_bag), "--output", str(tmp_path)])
    assert code == 2
    assert "several --teacher need one --owns each" in capsys.readouterr().err
    code = distill_train.main(["--teacher", str(BUNDLED), "--owns", "det", "seg", "--teacher", str(BUNDLED),
                               "--owns", "car", "--student", str(student_config), "--unlabeled", str(drive_bag),
                               "--output", str(tmp_path), "--device", "cpu"])
    assert code == 2
    assert "class 'car' is owned by teachers [1, 2]" in capsys.readouterr().err


def cst_objective(trainer: Trainer, batch, images: torch.Tensor) -> float:
    """Both students' labeled losses on a fixed batch plus their pseudo-label terms on fixed unlabeled images."""
    cst = trainer.cst
    with torch.no_grad():
        total = 0.0
        targets, agreement = cst.pseudo_targets(images)
        for index, student in enumerate(cst.students):
            out = student(trainer.network_input(batch))
            labeled = trainer.loss(out.regression, out.classification, out.segmentation, trainer.anchors,
                                   batch.annotations, batch.seg)
            total += float(labeled.total())
            total += sum(float(v) for v in cst.unlabeled_terms(index, student(images), targets, agreement).values())
    return total


def test_cycle_self_training_lowers_its_objective_and_resumes(tmp_path, student_config):
    project = make_toy_dataset(tmp_path / "labeled", num_train=4, num_val=2, size=(128, 256))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, rgb in enumerate(scenes(4)):
        cv2.imwrite(str(frames / f"{i:03d}.png"), rgb[..., ::-1])
    options = TrainOptions(project=str(project), model_config=str(student_config), output=str(tmp_path / "run"),
                           epochs=5, batch_size=2, lr=3e-3, workers=0, device="cpu", val_every=0, no_augment=True,
                           warmup_steps=0, semi_supervised="cst", unlabeled=[str(frames)], ema_decay=0.9,
                           log_images=0)
    trainer = Trainer(options)
    batch = next(iter(trainer.train_loader))
    images = normalise_images(next(trainer.cst.stream.batches(2))[0], trainer.config, trainer.device)
    before = cst_objective(trainer, batch, images)
    summary = trainer.fit()
    after = cst_objective(trainer, batch, images)
    assert summary["global_step"] == 10
    assert after < 0.7 * before, (before, after)
    state = torch.load(summary["last"], weights_only=True)
    assert set(state["cst"]) == {"student2", "teacher1", "teacher2", "position"}
    assert state["cst"]["position"] == [4, 4]  # 2 batches of 2 per pass of 4 frames, 10 steps
    build_model(summary["last"])

    code = train.main(["--project", str(project), "--output", str(tmp_path / "run"), "--resume", "--epochs", "6",
                       "--batch-size", "2", "--workers", "0", "--device", "cpu", "--val-every", "0",
                       "--no-augment", "--log-images", "0", "--semi-supervised", "cst", "--unlabeled", str(frames)])
    assert code == 0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["global_step"] == 12 and state["cst"]["position"] == [5, 4]
