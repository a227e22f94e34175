"""Compressed DDP gradients: TernGrad quantiser, its 2-bit packing, and two gloo ranks that stay bit-identical."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from hybridnets_ros.training import grad_compression as gc
from train_support import free_port, small_config, synth_project


def _gradient(n: int, seed: int = 0) -> torch.Tensor:
    """A gradient-like vector: mostly small values, some outliers (heavy tails get clipped)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen) * torch.rand(n, generator=gen) ** 3


def test_pack_unpack_round_trip_for_every_length_and_code() -> None:
    for n in (1, 2, 3, 4, 5, 7, 8, 1001):
        codes = torch.randint(-1, 2, (n,), dtype=torch.int8, generator=torch.Generator().manual_seed(n))
        packed = gc.pack_codes(codes)
        assert packed.dtype == torch.uint8 and packed.numel() == -(-n // 4)
        assert torch.equal(gc.unpack_codes(packed, n), codes)
    # Rows of several ranks' messages unpack together.
    rows = torch.tensor([[-1, 0, 1, 1, -1], [1, 1, 0, -1, 0]], dtype=torch.int8)
    packed = torch.stack([gc.pack_codes(r) for r in rows])
    assert torch.equal(gc.unpack_codes(packed, 5), rows)


def test_ternarised_copies_average_to_the_clipped_gradient() -> None:
    sizes = [700, 3, 297]  # a bucket of three tensors, each with its own scale
    g = _gradient(sum(sizes))
    copies = 4000
    codes, scales = gc.ternarize(g.repeat(copies), sizes * copies, clip_sigmas=2.5,
                                 generator=torch.Generator().manual_seed(1))
    assert set(codes.unique().tolist()) <= {-1, 0, 1}
    decoded = (codes.float() * scales[gc.segment_ids(sizes * copies, g.device)]).view(copies, -1)
    # The expectation: each tensor clipped at 2.5 x its root mean square.
    clipped = []
    for part in g.split(sizes):
        limit = 2.5 * part.square().mean().sqrt()
        clipped.append(part.clamp(-limit, limit))
    clipped = torch.cat(clipped)
    assert not torch.equal(clipped, g)  # the heavy tail was clipped
    per_tensor_scale = scales[: len(sizes)]
    assert torch.allclose(per_tensor_scale, torch.stack([p.abs().max() for p in clipped.split(sizes)]))
    # Bernoulli draws: the mean of N copies has std <= scale / (2 sqrt(N)); allow 5 of those.
    tolerance = 5 * per_tensor_scale[gc.segment_ids(sizes, g.device)] / (2 * copies ** 0.5)
    assert ((decoded.mean(0) - clipped).abs() <= tolerance).all()
    # Without clipping the estimate is unbiased for the gradient itself.
    codes, scales = gc.ternarize(g.repeat(copies), sizes * copies, clip_sigmas=float("inf"),
                                 generator=torch.Generator().manual_seed(2))
    decoded = (codes.float() * scales[gc.segment_ids(sizes * copies, g.device)]).view(copies, -1)
    tolerance = 5 * scales[: len(sizes)][gc.segment_ids(sizes, g.device)] / (2 * copies ** 0.5)
    assert ((decoded.mean(0) - g).abs() <= tolerance).all()


def test_messages_decode_to_the_mean_of_every_rank_and_small_tensors_are_not_clipped() -> None:
    sizes = [5, 1, 200]
    grads = [_gradient(sum(sizes), seed) for seed in (3, 4)]
    grads[0][:5] = torch.tensor([1.0, 1.0, 1.0, 1.0, 50.0])  # 5 values: max <= sqrt(5) x rms < 2.5 x rms
    messages = torch.stack([gc.encode(g, sizes, 2.5, torch.Generator().manual_seed(i)) for i, g in enumerate(grads)])
    assert messages.shape == (2, gc.packed_size(sum(sizes), len(sizes)))
    expected = []
    for i, g in enumerate(grads):
        codes, scales = gc.ternarize(g, sizes, 2.5, torch.Generator().manual_seed(i))
        expected.append(codes.float() * scales[gc.segment_ids(sizes, g.device)])
        if i == 0:
            assert scales[0] == 50.0
    assert torch.equal(gc.decode_mean(messages, sizes), (expected[0] + expected[1]) / 2)


# --------------------------------------------------------------------------------------------- two gloo ranks
STEPS = 3


def _rank_main(rank: int, world: int, port: int, project: str, config: str, method: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from hybridnets_ros.training.dataset import collate
    from hybridnets_ros.training.trainer import Trainer, TrainOptions, set_train_mode

    trainer = Trainer(TrainOptions(project=project, model_config=config, output=f"{out}/run", batch_size=1,
                                   workers=0, val_every=0, device="cpu", no_augment=True, lr=1e-3,
                                   scheduler="none", grad_compression=method, powersgd_start=2))
    set_train_mode(trainer.net, trainer.frozen)
    record = {"equal": [], "bytes": [], "moved": []}
    start = torch.nn.utils.parameters_to_vector(trainer.model.parameters()).detach().clone()
    for step in range(STEPS):
        trainer.train_step(collate([trainer.train_set[2 * step + rank]]))  # different images on each rank
        params = torch.nn.utils.parameters_to_vector(trainer.model.parameters()).detach()
        gathered = [torch.empty_like(params) for _ in range(world)]
        dist.all_gather(gathered, params)
        record["equal"].append(all(torch.equal(gathered[0], g) for g in gathered))
        record["bytes"].append(trainer.last_step_stats["comm_bytes"])
        record["moved"].append(bool((params != start).any()))
    record["dense"] = trainer.dense_comm_bytes
    torch.save(record, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ternary", "powersgd"])
def test_two_gloo_ranks_end_every_step_with_identical_parameters(tmp_path_factory, tmp_path: Path,
                                                                   method: str) -> None:
    project = synth_project(tmp_path_factory)
    config = small_config(tmp_path)  # d0 at 128x256
    mp.spawn(_rank_main, args=(2, free_port(), str(project), str(config), method, str(tmp_path)), nprocs=2)
    records = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for record in records:
        assert record["equal"] == [True] * STEPS and all(record["moved"])
    dense = records[0]["dense"]
    if method == "ternary":
        # n/4 bytes of codes + 4 bytes a tensor, against 4n: at least the 12x on every step.
        assert all(dense / b >= 12 for b in records[0]["bytes"]), (dense, records[0]["bytes"])
    else:
        # Two fp32 warm-up steps (the whole gradient), then low-rank factors.
        assert records[0]["bytes"][:2] == [dense, dense] and records[0]["bytes"][2] < dense / 4
