"""Compressed gradient exchange for DistributedDataParallel: TernGrad (ours) and PowerSGD (torch's), with byte counts.

``ternary`` (TernGrad, Wen et al. 2017) replaces DDP's fp32 all-reduce of each gradient bucket by an all-gather of
2-bit codes. Per parameter tensor g inside the bucket (a bucket flattens several parameters; each keeps its own
scale):

1. clip: g <- clamp(g, -c sigma, c sigma), sigma = sqrt(mean(g^2)) (the method's zero-mean model of a gradient; a
   tensor of equal values is never clipped, and with c = 2.5 no tensor of 6 values or fewer is),
2. scale s = max |g| after clipping,
3. stochastic rounding: t = sign(g) * Bernoulli(|g| / s), so E[s t] = g (unbiased for the clipped gradient),
4. t + 1 in {0, 1, 2} packed four to a byte; the scales travel in float32 after the codes in the same byte buffer,
5. one all-gather of that buffer; every rank decodes all ranks' codes with their scales in the same order and takes
   the mean, so every rank applies bit-identical gradients.

Bytes per step for a bucket of n values in k tensors: n/4 + 4k instead of 4n (16x less when n >> k).

``powersgd`` registers ``torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook`` unchanged (low-rank P/Q
all-reduces with error feedback); its own compression statistics give the bytes it sends.
"""
# No `from __future__ import annotations`: DDP checks the hooks' annotations as objects (dist.GradBucket).
import functools
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd
from torch.nn.parallel import DistributedDataParallel

COMPRESSIONS = ("none", "ternary", "powersgd")
CODES_PER_BYTE = 4
SCALE_BYTES = 4  # float32
DEFAULT_CLIP_SIGMAS = 2.5


@dataclass
class CommStats:
    """Bytes this rank contributes to gradient collectives, summed until :meth:`take`."""

    bytes_sent: int = 0

    def add(self, num_bytes: int) -> None:
        self.bytes_sent += int(num_bytes)

    def take(self) -> int:
        """The count since the last call, and a reset."""
        value, self.bytes_sent = self.bytes_sent, 0
        return value


# ------------------------------------------------------------------------------------------------ ternarisation
def segment_ids(sizes: list[int], device: torch.device) -> torch.Tensor:
    """(sum(sizes),) int64: the index of the tensor each value of a flattened bucket belongs to (do not modify)."""
    return _segment_ids(tuple(sizes), torch.device(device))


@functools.lru_cache(maxsize=256)  # a DDP run has a few dozen bucket layouts, each seen every step
def _segment_ids(sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))


def ternarize(flat: torch.Tensor, sizes: list[int], clip_sigmas: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """TernGrad-quantise a flattened bucket of ``len(sizes)`` tensors.

    flat (n,) float -> (codes (n,) int8 in {-1, 0, +1}, scales (k,) float32), with codes * scales[segment] an unbiased
    estimate of the clipped gradient. ``clip_sigmas`` <= 0 or inf: no clipping.
    """
    seg = segment_ids(sizes, flat.device)
    counts = torch.tensor(sizes, device=flat.device, dtype=torch.float32)
    g = flat.float()
    if 0 < clip_sigmas < float("inf"):
        sigma = torch.zeros(len(sizes), device=flat.device).index_add_(0, seg, g * g).div_(counts).sqrt_()
        limit = (clip_sigmas * sigma)[seg]
        g = torch.clamp(g, -limit, limit)
    magnitude = g.abs()
    scales = torch.zeros(len(sizes), device=flat.device).scatter_reduce_(0, seg, magnitude, "amax")
    seg_scale = scales[seg]
    probability = torch.where(seg_scale > 0, magnitude / seg_scale.clamp(min=torch.finfo(torch.float32).tiny), 0.0)
    draw = torch.rand(g.shape, device=g.device, generator=generator)
    codes = (torch.sign(g) * (draw < probability)).to(torch.int8)
    return codes, scales


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """(n,) int8 in {-1, 0, +1} -> (ceil(n/4),) uint8, value i in bits 2(i%4)..2(i%4)+1 of byte i//4."""
    shifted = (codes + 1).to(torch.uint8)
    padding = (-shifted.numel()) % CODES_PER_BYTE
    if padding:
        shifted = torch.cat([shifted, shifted.new_ones(padding)])  # code 1 = value 0
    quads = shifted.view(-1, CODES_PER_BYTE)
    return quads[:, 0] | (quads[:, 1] << 2) | (quads[:, 2] << 4) | (quads[:, 3] << 6)


def unpack_codes(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes` on the last dim: (..., ceil(n/4)) uint8 -> (..., n) int8 in {-1, 0, +1}."""
    shifts = torch.arange(0, 8, 2, device=packed.device, dtype=torch.uint8)
    values = (packed.unsqueeze(-1) >> shifts) & 3
    return values.flatten(-2)[..., :n].to(torch.int8) - 1


def packed_size(n: int, k: int) -> int:
    """Bytes of one rank's message for a bucket of n values in k tensors."""
    return -(-n // CODES_PER_BYTE) + SCALE_BYTES * k


def encode(flat: torch.Tensor, sizes: list[int], clip_sigmas: float,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """A bucket -> one rank's message: (packed_size,) uint8 = packed codes, then the k float32 scales' bytes."""
    codes, scales = ternarize(flat, sizes, clip_sigmas, generator)
    return torch.cat([pack_codes(codes), scales.contiguous().view(torch.uint8)])


def decode_mean(messages: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """(world, packed_size) uint8 messages of every rank -> (n,) float32 mean of their decoded gradients."""
    n, k = sum(sizes), len(sizes)
    code_bytes = messages.shape[1] - SCALE_BYTES * k
    codes = unpack_codes(messages[:, :code_bytes], n).float()  # (world, n)
    scales = messages[:, code_bytes:].contiguous().view(torch.float32)  # (world, k)
    seg = segment_ids(sizes, messages.device)
    return (codes * scales[:, seg]).mean(dim=0)


# ------------------------------------------------------------------------------------------------ DDP hooks
@dataclass
class TernaryState:
    """What the ternary hook keeps between buckets: process group, clipping, this rank's random stream, counts."""

    process_group: dist.ProcessGroup | None
    clip_sigmas: float
    generator: torch.Generator
    stats: CommStats = field(default_factory=CommStats)


def ternary_hook(state: TernaryState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: TernGrad-encode the bucket, all-gather, decode every rank's codes and average."""
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    buffer = bucket.buffer()
    sizes = [g.numel() for g in bucket.gradients()]
    if sum(sizes) != buffer.numel():
        raise RuntimeError(f"DDP bucket {bucket.index()}: gradients hold {sum(sizes)} values, the buffer "
                           f"{buffer.numel()}; the ternary hook needs one dense bucket per parameter list")
    message = encode(buffer, sizes, state.clip_sigmas, state.generator)
    gathered = torch.empty(world * message.numel(), dtype=torch.uint8, device=buffer.device)  # rank-major
    state.stats.add(message.numel())
    work = dist.all_gather_single(gathered, message, group=group, async_op=True)

    def average(fut: torch.futures.Future) -> torch.Tensor:
        fut.wait()
        return buffer.copy_(decode_mean(gathered.view(world, -1), sizes))

    return work.get_future().then(average)


@dataclass
class PowerSGDCounting:
    """torch's PowerSGD state plus our byte count."""

    powersgd: powersgd.PowerSGDState
    stats: CommStats = field(default_factory=CommStats)


def powersgd_counting_hook(state: PowerSGDCounting, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """torch's ``powerSGD_hook`` as is; bytes from its own statistics (its whole buffer during the fp32 warm-up).

    On gloo the bucket's exchange completes before the hook returns: PowerSGD issues its P and Q all-reduces from
    completion callbacks, which can interleave with the next bucket's all-reduce in a different order on each rank,
    and gloo pairs collectives by issue order (seen here as "Received data size doesn't match expected size").
    """
    inner = state.powersgd
    vanilla = inner.iter < inner.start_powerSGD_iter
    before = inner.total_numel_after_compression
    future = powersgd.powerSGD_hook(inner, bucket)
    numel = bucket.buffer().numel() if vanilla else inner.total_numel_after_compression - before
    state.stats.add(numel * bucket.buffer().element_size())
    if dist.get_backend(inner.process_group) != dist.Backend.GLOO:
        return future
    done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    done.set_result(future.wait())
    return done


def register_compression(net: DistributedDataParallel, method: str, *, rank: int, seed: int,
                         clip_sigmas: float = DEFAULT_CLIP_SIGMAS, powersgd_rank: int = 2,
                         powersgd_start: int = 10) -> CommStats | None:
    """Register the hook for ``method`` (one of COMPRESSIONS) on ``net``; its byte counter, or None for ``none``.

    ``seed`` and ``rank`` seed the rank's stochastic rounding (independent across ranks, reproducible across runs).
    """
    if method == "none":
        return None
    if method == "ternary":
        device = next(net.parameters()).device
        generator = torch.Generator(device=device)
        generator.manual_seed(seed * 100_003 + rank)
        state = TernaryState(None, clip_sigmas, generator)
        net.register_comm_hook(state, ternary_hook)
        return state.stats
    if method == "powersgd":
        inner = powersgd.PowerSGDState(process_group=None, matrix_approximation_rank=powersgd_rank,
                                       start_powerSGD_iter=powersgd_start, random_seed=seed)
        counting = PowerSGDCounting(inner)
        net.register_comm_hook(counting, powersgd_counting_hook)
        return counting.stats
    raise ValueError(f"--grad-compression must be one of {', '.join(COMPRESSIONS)}, got {method!r}")


def dense_bytes_per_step(parameters: list[torch.nn.Parameter]) -> int:
    """Bytes one rank all-reduces per step without compression: every trainable gradient, in its dtype."""
    return sum(p.numel() * p.element_size() for p in parameters)
