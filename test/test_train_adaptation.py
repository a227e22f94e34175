"""Adapting to the domain of unlabeled frames: BatchNorm re-estimation (AdaBN, ``--adapt-bn``,
``hybridnets-adapt-bn``) on hand-computed statistics, and the students' photometric view (teachers grade the clean
frame, students learn from the jittered one) in distillation and cycle self-training."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from hybridnets_ros.model.checkpoint import build_model, load_checkpoint
from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.resources import resolve_model_config
from hybridnets_ros.training import adapt_bn
from hybridnets_ros.training.batchnorm import adapt_batchnorm, reestimate_batchnorm, scope_batchnorms
from hybridnets_ros.training.distiller import DistillOptions, Distiller
from hybridnets_ros.training.evaluation import normalise_images
from hybridnets_ros.training.photometric import PhotometricJitter, binomial_blur, luma, step_seed
from hybridnets_ros.training.style import frame_moments, match_moments, restyle_like
from hybridnets_ros.training.trainer import TrainOptions, Trainer
from train_support import make_toy_dataset, simple_scene, small_config

BUNDLED = Path(resolve_model_config("hybridnets_d0_synth")).with_suffix(".pt")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
IDENTITY = dict(brightness=0.0, contrast=0.0, saturation=0.0, gamma=0.0, blur=0.0, noise=0.0)


class TwoParts(nn.Module):
    """An ``encoder`` BatchNorm followed by a head BatchNorm, like HybridNets' children."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.BatchNorm2d(2, momentum=0.01))
        self.encoder.unused = nn.BatchNorm2d(2)  # like EfficientNet's head kept for upstream's keys: never run
        self.head = nn.BatchNorm2d(2, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder[0](x))


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """Six dark, low-contrast road scenes (a 'night' domain) as an image folder."""
    folder = tmp_path_factory.mktemp("night")
    for i in range(6):
        rgb = simple_scene(288, 512, [(40 + 50 * i, 150, 130 + 50 * i, 220)], seed=i)[0]
        cv2.imwrite(str(folder / f"{i:03d}.png"), (rgb * 0.35 + 10).astype(np.uint8)[..., ::-1])
    return folder


@pytest.fixture(scope="module")
def student_config(tmp_path_factory) -> Path:
    return small_config(tmp_path_factory.mktemp("cfg"), (128, 256))


# ------------------------------------------------------------------------------------------ BatchNorm statistics
def test_reestimated_statistics_are_the_plain_average_over_batches_of_the_scope_only():
    model = TwoParts().train()
    head_mean = model.head.running_mean.clone()
    with torch.no_grad():
        model.encoder.unused.running_mean.fill_(4.0)
    first = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).expand(2, 2, 2, 2).clone()  # constant per channel
    second = torch.arange(16.0).view(2, 2, 2, 2)
    used = reestimate_batchnorm(model, scope_batchnorms(model, "encoder"), iter([first, second, second]), 2)
    assert used == 2
    bn = model.encoder[0]
    # channel 0: batch means 1 and mean(0..3, 8..11) = 5.5; unbiased variances 0 and var(0..3, 8..11)
    values = torch.tensor([0.0, 1, 2, 3, 8, 9, 10, 11])
    torch.testing.assert_close(bn.running_mean[0], torch.tensor((1.0 + 5.5) / 2))
    torch.testing.assert_close(bn.running_var[0], (0.0 + values.var()) / 2)
    torch.testing.assert_close(model.head.running_mean, head_mean)  # outside the scope: untouched
    assert model.encoder.unused.running_mean.tolist() == [4.0, 4.0]  # never ran: not reset either
    assert bn.momentum == 0.01 and model.training and bn.training  # restored

    reestimate_batchnorm(model, scope_batchnorms(model, "all"), iter([first]), 1)
    assert not torch.equal(model.head.running_mean, head_mean)


def test_scope_names_the_hybridnets_encoder_and_rejects_others():
    from hybridnets_ros.model.hybridnets import HybridNets

    model = HybridNets(load_model_config("hybridnets_d0_synth"))
    encoder = scope_batchnorms(model, "encoder")
    everything = scope_batchnorms(model, "all")
    assert 0 < len(encoder) < len(everything)
    assert {id(m) for m in encoder} == {id(m) for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)}
    with pytest.raises(ValueError, match="scope must be one of encoder, all"):
        scope_batchnorms(model, "heads")


def test_adaptation_refuses_to_average_fewer_batches_than_asked():
    model = nn.Sequential()
    model.encoder = nn.BatchNorm2d(3)
    config = load_model_config("hybridnets_d0_synth")
    with pytest.raises(ValueError, match="asked for 3 batches but the frames gave only 1"):
        adapt_batchnorm(model, config, iter([torch.zeros(1, 3, 8, 8, dtype=torch.uint8)]), torch.device("cpu"), 3)


# -------------------------------------------------------------------------------------------- photometric view
def test_jitter_is_reproducible_per_seed_and_keeps_shape_and_type():
    images = torch.randint(0, 256, (3, 3, 32, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    jitter = PhotometricJitter()
    first, again, other = jitter(images, 7), jitter(images, 7), jitter(images, 8)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], first[1] - images[1] + images[0])  # each image draws its own change
    assert torch.equal(PhotometricJitter(**IDENTITY)(images, 7), images)


def test_jitter_parts_hand_values():
    delta = torch.zeros(1, 1, 3, 3)
    delta[0, 0, 1, 1] = 16.0
    expected = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]])
    torch.testing.assert_close(binomial_blur(delta)[0, 0], expected)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(luma(red), torch.full((1, 1, 1, 1), 0.299))
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    blurred = PhotometricJitter(**{**IDENTITY, "blur": 1.0})(images, 0)
    torch.testing.assert_close(blurred, (binomial_blur(images.float() / 255) * 255).round().to(torch.uint8))
    assert step_seed(1, 5) != step_seed(0, 5) and step_seed(0, 5) != step_seed(0, 6)


# ------------------------------------------------------------------------------------------ colour moments
def padded_frame(left: int, right: int, value_a: int, value_b: int) -> torch.Tensor:
    """(1,3,2,6) uint8: columns [left, 6-right) are content alternating value_a / value_b, the rest padding."""
    image = torch.full((1, 3, 2, 6), 114, dtype=torch.uint8)
    for column in range(left, 6 - right):
        image[..., column] = value_a if column % 2 == 0 else value_b
    return image


def test_moments_leave_out_the_letterbox_padding_and_matching_keeps_it():
    image = padded_frame(1, 1, 10, 30)  # content 30, 10, 30, 10 per row
    mean, std = frame_moments(image)
    assert mean.flatten().tolist() == [20.0] * 3 and std.flatten().tolist() == [10.0] * 3
    matched = match_moments(image, torch.full((1, 3, 1, 1), 100.0), torch.full((1, 3, 1, 1), 40.0))
    assert matched[0, 0, 0].tolist() == [114, 140, 60, 140, 60, 114]
    flat = match_moments(torch.full((1, 3, 2, 2), 50, dtype=torch.uint8), torch.full((1, 3, 1, 1), 80.0),
                         torch.full((1, 3, 1, 1), 40.0))
    assert (flat == 80).all()  # no spread to scale: shifted only


def test_restyling_gives_each_image_the_moments_of_its_example():
    dark, bright = padded_frame(0, 2, 10, 30), padded_frame(0, 0, 100, 200)
    images = torch.cat([padded_frame(0, 0, 40, 60)] * 3)
    styled = restyle_like(images, torch.cat([dark, bright]))
    for b, example in enumerate((dark, bright, dark)):  # image b in the colours of example b % 2
        torch.testing.assert_close(frame_moments(styled[b:b + 1]), frame_moments(example))


# ---------------------------------------------------------------------- who sees what, and --adapt-bn, in runs
def network_inputs(model: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    return seen


def distill_options(tmp_path: Path, frames: Path, student_config: Path, **changes) -> DistillOptions:
    return DistillOptions(teacher=[str(BUNDLED)], student=str(student_config), weights=str(BUNDLED),
                          unlabeled=[str(frames)], output=str(tmp_path / "run"), batch_size=2, workers=0,
                          device="cpu", val_every=0, **changes)


def test_distillation_teacher_sees_the_clean_frame_and_the_student_the_jittered_one(tmp_path, frames,
                                                                                    student_config):
    distiller = Distiller(distill_options(tmp_path, frames, student_config))
    images = next(distiller.stream.batches(2))[0]
    teacher_seen, student_seen = network_inputs(distiller.teachers[0].model), network_inputs(distiller.model)
    distiller.global_step = 3
    with torch.no_grad():
        distiller.loss_terms(images, None)
    config, cpu = distiller.config, torch.device("cpu")
    torch.testing.assert_close(teacher_seen[0], normalise_images(images, config, cpu))
    jittered = PhotometricJitter()(images, step_seed(0, 3))
    torch.testing.assert_close(student_seen[0], normalise_images(jittered, config, cpu))

    plain = Distiller(distill_options(tmp_path, frames, student_config, student_augment="none"))
    student_seen = network_inputs(plain.model)
    with torch.no_grad():
        plain.loss_terms(images, None)
    torch.testing.assert_close(student_seen[0], normalise_images(images, config, cpu))


def test_labeled_frames_are_shown_in_the_colours_of_the_unlabeled_ones(tmp_path, frames, student_config):
    project = make_toy_dataset(tmp_path / "labeled", num_train=2, num_val=1, size=(128, 256))
    distiller = Distiller(distill_options(tmp_path, frames, student_config, labeled=str(project),
                                          restyle_labeled=True, student_augment="none"))
    images = next(distiller.stream.batches(2))[0]
    labeled = next(distiller.labeled_batches())
    student_seen = network_inputs(distiller.model)
    with torch.no_grad():
        distiller.loss_terms(images, labeled)
    config, cpu = distiller.config, torch.device("cpu")
    torch.testing.assert_close(student_seen[0], normalise_images(images, config, cpu))
    torch.testing.assert_close(student_seen[1], normalise_images(restyle_like(labeled.images, images), config, cpu))
    with pytest.raises(ValueError, match="--restyle-labeled restyles the --labeled frames"):
        distill_options(tmp_path, frames, student_config, restyle_labeled=True).validate()


def encoder_means(model: nn.Module) -> torch.Tensor:
    return torch.cat([bn.running_mean for bn in scope_batchnorms(model, "encoder")])


def test_distillation_adapts_teacher_and_student_statistics_before_the_first_step(tmp_path, frames, student_config):
    config = load_model_config(student_config)
    bundled, _ = build_model(BUNDLED, config)
    distiller = Distiller(distill_options(tmp_path, frames, student_config, adapt_bn=2))
    expected, _ = build_model(BUNDLED, config)
    adapt_batchnorm(expected, config, (b for b, _, _ in distiller.stream.batches(2)), torch.device("cpu"), 2)
    for model in (distiller.teachers[0].model, distiller.model):
        torch.testing.assert_close(encoder_means(model), encoder_means(expected))
        assert not torch.allclose(encoder_means(model), encoder_means(bundled))
        torch.testing.assert_close(model.classifier.state_dict(), bundled.classifier.state_dict())
    assert not distiller.teachers[0].model.training


def running_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items() if "running_" in name}


@pytest.mark.parametrize("adapt_bn", [1, 0])
def test_adapted_statistics_stay_fixed_while_the_students_weights_train(tmp_path, frames, student_config, adapt_bn):
    distiller = Distiller(distill_options(tmp_path, frames, student_config, adapt_bn=adapt_bn, max_steps=1,
                                          lr=1e-3, warmup_steps=0))
    statistics = running_statistics(distiller.model)
    weights = {name: p.detach().clone() for name, p in distiller.model.named_parameters()}
    distiller.fit()
    after = running_statistics(distiller.model)
    assert all(torch.equal(statistics[name], after[name]) for name in after) == bool(adapt_bn)
    assert any(not torch.equal(weights[name], p) for name, p in distiller.model.named_parameters())


def test_cst_teachers_grade_the_clean_frame_and_both_students_start_adapted(tmp_path, frames, student_config):
    project = make_toy_dataset(tmp_path / "labeled", num_train=2, num_val=1, size=(128, 256))
    trainer = Trainer(TrainOptions(project=str(project), model_config=str(student_config), weights=str(BUNDLED),
                                   output=str(tmp_path / "cst"), epochs=1, batch_size=2, workers=0, device="cpu",
                                   val_every=0, log_images=0, semi_supervised="cst", unlabeled=[str(frames)],
                                   adapt_bn=2))
    cst = trainer.cst
    trainer.train_mode()
    for student in cst.students:
        assert student.training and student.encoder.training
        assert not any(m.training for m in student.modules() if isinstance(m, nn.BatchNorm2d))
    bundled, _ = build_model(BUNDLED, trainer.config)
    for network in (*cst.students, *cst.teachers):
        assert not torch.allclose(encoder_means(network), encoder_means(bundled))
    torch.testing.assert_close(encoder_means(cst.teachers[0]), encoder_means(cst.students[0]))
    teacher_seen = network_inputs(cst.teachers[1])
    student_seen = network_inputs(cst.students[0])
    batch = next(iter(trainer.train_loader))
    images = next(cst.stream.batches(2, cst.position))[0]
    with torch.no_grad():
        terms = trainer.compute_losses(batch)
        cst.loss(trainer, batch, terms, step=4)
    cpu = torch.device("cpu")
    torch.testing.assert_close(teacher_seen[0], normalise_images(images, trainer.config, cpu))
    jittered = PhotometricJitter()(images, step_seed(0, 4))
    torch.testing.assert_close(student_seen[-1], normalise_images(jittered, trainer.config, cpu))


def test_fine_tuning_on_labels_keeps_the_statistics_of_the_unlabeled_frames(tmp_path, frames, student_config):
    project = make_toy_dataset(tmp_path / "labeled", num_train=2, num_val=1, size=(128, 256))
    trainer = Trainer(TrainOptions(project=str(project), model_config=str(student_config), weights=str(BUNDLED),
                                   output=str(tmp_path / "ft"), epochs=1, max_steps=1, batch_size=2, workers=0,
                                   device="cpu", val_every=0, log_images=0, unlabeled=[str(frames)], adapt_bn=2,
                                   lr=1e-3, warmup_steps=0))
    bundled, _ = build_model(BUNDLED, trainer.config)
    adapted = running_statistics(trainer.model)
    assert not torch.allclose(encoder_means(trainer.model), encoder_means(bundled))
    torch.testing.assert_close(trainer.model.classifier.state_dict(), bundled.classifier.state_dict())
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    after = running_statistics(trainer.model)
    assert all(torch.equal(adapted[name], after[name]) for name in after)  # trained under fixed statistics
    assert any(not torch.equal(w, p) for w, p in zip(weights, trainer.model.parameters()))


def test_hybridnets_train_options_for_unlabeled_frames_must_fit_together(tmp_path):
    with pytest.raises(ValueError, match="--adapt-bn re-estimates BatchNorm statistics on unlabeled frames"):
        TrainOptions(project="p.yaml", adapt_bn=4).validate()
    with pytest.raises(ValueError, match="--precise-bn .* undoes --adapt-bn"):
        TrainOptions(project="p.yaml", adapt_bn=4, unlabeled=["d"], precise_bn=2).validate()
    with pytest.raises(ValueError, match="--unlabeled frames are used by --adapt-bn and --semi-supervised cst"):
        TrainOptions(project="p.yaml", unlabeled=["d"]).validate()
    with pytest.raises(ValueError, match="--adapt-bn must be >= 0"):
        TrainOptions(project="p.yaml", adapt_bn=-1).validate()


# ------------------------------------------------------------------------------------------ hybridnets-adapt-bn
def test_adapt_bn_command_writes_a_checkpoint_with_only_encoder_statistics_changed(tmp_path, frames,
                                                                                   student_config, capsys):
    out = tmp_path / "night.pt"
    code = adapt_bn.main(["--weights", str(BUNDLED), "--model-config", str(student_config), "--unlabeled",
                          str(frames), "--batches", "3", "--batch-size", "2", "--device", "cpu", "--output",
                          str(out)])
    assert code == 0
    assert "encoder BatchNorm statistics from 6 frames" in capsys.readouterr().err
    adapted, config = build_model(out)  # what the node does with weights:=
    assert config == load_model_config(student_config)
    before = load_checkpoint(BUNDLED, config)[1]
    after = adapted.state_dict()
    changed = {name for name, value in after.items() if not torch.equal(value, before[name])}
    statistics = {name for name in changed if not name.endswith("num_batches_tracked")}
    assert statistics and all(name.startswith("encoder.") and name.endswith(("running_mean", "running_var"))
                              for name in statistics)
    assert not any(name.startswith("encoder._bn1.") for name in changed)  # never runs: kept


def test_adapt_bn_command_names_a_missing_checkpoint(tmp_path, frames, capsys):
    code = adapt_bn.main(["--weights", str(tmp_path / "none.pt"), "--unlabeled", str(frames), "--output",
                          str(tmp_path / "out.pt"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "none.pt" in err and not (tmp_path / "out.pt").exists()
