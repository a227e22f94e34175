"""Overfitting a handful of images through Trainer.fit reaches high detection and segmentation metrics on them."""
from __future__ import annotations

from pathlib import Path

import pytest

from hybridnets_ros.training.trainer import Trainer, TrainOptions
from train_support import make_toy_dataset, small_config

STEPS = 60


@pytest.mark.slow
def test_overfit_four_images_reaches_high_metrics(tmp_path: Path) -> None:
    # precise_bn: with BN momentum 0.01 the running statistics of a 60-step run are still mostly the initial ones.
    project = make_toy_dataset(tmp_path / "data", num_train=4, num_val=0, val_is_train=True)
    options = TrainOptions(
        project=str(project), model_config=str(small_config(tmp_path)), output=str(tmp_path / "run"),
        epochs=STEPS, batch_size=4, lr=2e-3, scheduler="cosine", warmup_steps=5, grad_clip=10.0, no_augment=True,
        workers=0, device="cpu", val_every=STEPS, save_every=STEPS, precise_bn=1, log_images=1, seed=0,
    )
    summary = Trainer(options).fit()
    metrics = summary["metrics"]
    shown = {k: round(v, 3) for k, v in metrics.items() if k.startswith(("det/map", "det/recall", "seg/road/iou",
                                                                         "seg/lane/iou"))}
    assert summary["global_step"] == STEPS and metrics["num_images"] == 4, shown
    assert metrics["det/map50"] >= 0.8, shown
    assert metrics["det/recall"] == 1.0, shown
    assert metrics["seg/road/iou_dataset"] >= 0.9, shown
    assert metrics["seg/lane/iou_dataset"] >= 0.7, shown
    assert Path(summary["best"]).is_file()
