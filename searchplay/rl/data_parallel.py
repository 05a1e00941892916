"""Data parallelism for the Learner over a torch.distributed group (gloo on CPU, NCCL on GPU).

Every rank holds the same samples and the same weights. Each mini-batch is split between the
ranks (sorted by length, then dealt out in turn, so that the ranks' token counts stay close); a
rank's loss is normalised by the counts of the *whole* mini-batch (tokens, sequences), so the
sum of the ranks' gradients is exactly the gradient one process computes on the whole
mini-batch, up to the order of floating-point additions. One summed all-reduce of the gradients
per optimizer step, then every rank clips and steps identically and the weights stay equal.

Why not torch's DistributedDataParallel wrapper: ranks pack their shares into different numbers
of micro-batches (by a token budget) and DDP reduces once per backward, expecting every rank to
run the same number of them; one reduction per optimizer step is what DDP does under `no_sync()`
plus a final synced backward, without that constraint, and the learner's forward goes through
`model.base_model` rather than the wrapper's `forward`.

Without an initialised process group every helper is the identity (rank 0 of 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist

BUCKET_ELEMENTS = 1 << 25  # 128 MiB of fp32 gradient per all-reduce call


def group_backend(device_type: str) -> str:
    """The learner group's backends: on GPUs NCCL for tensors on the GPU and gloo for the CPU ones (the metric
    sums of rl/data_parallel.py reduce CPU tensors; a plain "nccl" group fails on them with "No backend type
    associated with device type cpu"), on CPUs gloo."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def my_share(indices: Sequence[int], lengths: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's part of `indices`: sorted by length, every world-th from position `rank`."""
    return sorted(indices, key=lambda i: lengths[i])[rank::world]


def all_reduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks, in flat buckets.

    A rank whose share of a mini-batch was empty contributes zeros; a parameter that no rank gave
    a gradient (unused by the model) keeps none, as it would in one process (AdamW skips it).
    """
    _, world = rank_and_world()
    if world == 1:
        return
    params = [p for p in params if p.requires_grad]
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    grads = []
    for p, has in zip(params, present.tolist()):
        if not has:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    bucket: list[torch.Tensor] = []
    for g in [*grads, None]:
        if bucket and (g is None or sum(b.numel() for b in bucket) + g.numel() > BUCKET_ELEMENTS):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            offset = 0
            for b in bucket:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()
            bucket = []
        if g is not None:
            bucket.append(g)


def all_reduce_floats(values: dict[str, float], op: str = "sum") -> dict[str, float]:
    """Sum (or max) a dict of numbers over the ranks; every rank must pass the same keys."""
    _, world = rank_and_world()
    if world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def gather_rows(rows: dict[int, torch.Tensor], device: torch.device) -> dict[int, torch.Tensor]:
    """Every rank's {sample index: tensor} merged, on `device` (scores computed on shares)."""
    _, world = rank_and_world()
    if world == 1:
        return rows
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, {i: r.cpu() for i, r in rows.items()})
    return {i: r.to(device) for part in parts for i, r in part.items()}
