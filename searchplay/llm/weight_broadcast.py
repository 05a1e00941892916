"""Weights broadcast from the learner to rollout engines in other processes, over a group of their own.

The Ray backend's rollout workers may sit on other GPUs and other machines than the learner. Instead of
the learner's fp32 state dict going through host memory and Ray's object store, learner rank 0 and the
workers' engines join a torch.distributed group (rank 0 the sender) and rank 0 broadcasts the weights in
the engines' dtype, in the buckets of llm/weight_buckets.py: NCCL between GPUs (GPU to GPU, what verl and
OpenRLHF do for engines on other GPUs), gloo between CPU processes. The group is separate from the
learner group (its own TCP store), so forming it again after a worker was replaced leaves the learner
group alone.

One sync, in the same order on every member: the header's length (one int64), the header (JSON: dtype
and the buckets' layouts) and each bucket's flat buffer. The header travels every time (a few KiB), so
a receiver needs nothing but the group, and a receiver loads each bucket before the next arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from searchplay.llm.weight_buckets import Layout, bucket_numel, dtype_name, layouts, pack, unpack

SENDER = 0  # learner rank 0 is rank 0 of the weight group; the engines follow
GROUP_TIMEOUT = timedelta(minutes=10)  # joining, and each broadcast: a member gone this long fails the sync


@dataclass
class WeightGroup:
    """A member's end of the weight group: torch's process group (gloo or NCCL) and the store it met on."""

    store: Any  # the rank 0 TCP store must outlive the group
    group: Any
    rank: int
    device: torch.device


def join(host: str, port: int, rank: int, world: int, device: torch.device) -> WeightGroup:
    """Join the group whose rank 0 (the sender) listens on host:port; blocks until all `world` members have.
    NCCL for a CUDA device (two members may not share a GPU), else gloo."""
    store = dist.TCPStore(host, port, world, is_master=rank == SENDER, timeout=GROUP_TIMEOUT)
    prefixed = dist.PrefixStore("searchplay-weights", store)
    if device.type == "cuda":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = GROUP_TIMEOUT
        group: Any = dist.ProcessGroupNCCL(prefixed, rank, world, options)
    else:
        group = dist.ProcessGroupGloo(prefixed, rank, world, GROUP_TIMEOUT)
    return WeightGroup(store, group, rank, device)


def send(member: WeightGroup, named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype, bucket_bytes: int) -> int:
    """Broadcast (name, tensor) pairs in `dtype` buckets from the sender; returns the bytes sent."""
    tensors = dict(named)
    plan = layouts(((name, t.shape) for name, t in tensors.items()), dtype.itemsize, bucket_bytes)
    header = json.dumps({"dtype": dtype_name(dtype), "layouts": plan}).encode()
    _broadcast(member, torch.tensor([len(header)], dtype=torch.int64))
    _broadcast(member, torch.frombuffer(bytearray(header), dtype=torch.uint8))
    sent = 0
    for layout in plan:
        flat = pack(tensors, layout, dtype, member.device)
        _broadcast(member, flat)
        sent += flat.numel() * flat.element_size()
    return sent


def receive(member: WeightGroup | None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """The sender's weights, one bucket at a time as (name, tensor) views of a buffer on this member's device;
    load each before asking for the next (the generator receives the next bucket only then)."""
    if member is None:
        raise RuntimeError("weights received before this process joined a weight group")
    length = _broadcast(member, torch.zeros(1, dtype=torch.int64))
    raw = _broadcast(member, torch.zeros(int(length.item()), dtype=torch.uint8))
    header = json.loads(raw.cpu().numpy().tobytes())
    dtype = getattr(torch, header["dtype"])
    plan: list[Layout] = [[(name, shape, offset) for name, shape, offset in layout] for layout in header["layouts"]]
    for layout in plan:
        yield unpack(_broadcast(member, torch.empty(bucket_numel(layout), dtype=dtype)), layout)


def _broadcast(member: WeightGroup, tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's `tensor` on every member (in place on this member's device, which NCCL needs)."""
    on_device = tensor.to(member.device)
    options = dist.BroadcastOptions()
    options.rootRank = SENDER
    member.group.broadcast([on_device], options).wait()
    return on_device
