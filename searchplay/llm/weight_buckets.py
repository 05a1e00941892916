"""Weights in buckets for the rollout engine: many tensors in one flat buffer, sent as one message.

The learner's parameters reach vLLM's worker process one bucket at a time (`VLLMEngine.load_named`):
each bucket is a flat tensor of the engine's dtype holding the named tensors one after another, with
a layout (name, shape, offset) to cut it back into them. Where the buffer lives decides how it
travels:
- on the CPU it goes as raw bytes through vLLM's RPC (one bytes object per bucket, not per tensor);
- on a CUDA device (a learner colocated with vLLM on the same GPU) it stays on the GPU and only a
  CUDA IPC handle travels: the worker maps the sender's memory, so nothing is copied through host
  memory (what verl and OpenRLHF do for colocated engines). The handle names the device by its
  UUID, because the two processes may number the GPUs differently.

A bucket ends only between decoder layers: vLLM's in-place reload processes a fused module
(q/k/v, gate/up) once per call from what that call brought, so a layer split across two buckets
would be loaded from half its weights.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.multiprocessing.reductions import reduce_tensor

# (name, shape, offset in elements) of each tensor in a bucket's flat buffer
Layout = list[tuple[str, list[int], int]]
_LAYER = re.compile(r".*?\.layers\.\d+\.")
_DEVICE_ARG = 6  # position of the storage's device index in torch's rebuild_cuda_tensor arguments


def block(name: str) -> str:
    """The decoder layer a parameter belongs to ("model.layers.3."), or the name itself outside the layers."""
    match = _LAYER.match(name)
    return match.group(0) if match else name


def buckets(
    named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype, device: torch.device, bucket_bytes: int
) -> Iterator[tuple[torch.Tensor, Layout]]:
    """(flat buffer of `dtype` on `device`, layout) per bucket of at least `bucket_bytes` (the last may be smaller),
    each ending between decoder layers. One layer larger than `bucket_bytes` makes a bucket of its own."""
    group: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named:
        if group and size >= bucket_bytes and block(name) != block(group[-1][0]):
            yield _pack(group, dtype, device)
            group, size = [], 0
        group.append((name, tensor))
        size += tensor.numel() * dtype.itemsize
    if group:
        yield _pack(group, dtype, device)


def _pack(group: list[tuple[str, torch.Tensor]], dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, Layout]:
    flat = torch.empty(sum(t.numel() for _, t in group), dtype=dtype, device=device)
    layout: Layout = []
    offset = 0
    for name, tensor in group:
        n = tensor.numel()
        flat[offset : offset + n].copy_(tensor.detach().reshape(-1))  # casts and moves in one copy
        layout.append((name, list(tensor.shape), offset))
        offset += n
    return flat, layout


def unpack(flat: torch.Tensor, layout: Layout) -> list[tuple[str, torch.Tensor]]:
    """The named tensors of a bucket, as views of its flat buffer."""
    return [(name, flat[offset : offset + math.prod(shape)].view(shape)) for name, shape, offset in layout]


def to_bytes(flat: torch.Tensor) -> bytes:
    """A CPU buffer's memory as bytes: vLLM's RPC carries bytes as they are, but an untyped tensor as a list."""
    return flat.view(torch.uint8).numpy().tobytes()


def from_bytes(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=dtype)


def share_cuda(flat: torch.Tensor) -> tuple[str, Any, tuple[Any, ...]]:
    """A CUDA IPC handle to a GPU buffer: (device UUID, rebuild function, its arguments). The sender keeps `flat`
    alive until the receiver has copied out of it; the copy into it is finished before the handle is used."""
    torch.cuda.current_stream(flat.device).synchronize()
    rebuild, args = reduce_tensor(flat)
    return str(torch.cuda.get_device_properties(flat.device).uuid), rebuild, args


def open_cuda(handle: tuple[str, Any, tuple[Any, ...]]) -> torch.Tensor:
    """The sender's GPU buffer, mapped into this process on the device with the sender's UUID."""
    uuid, rebuild, sent = handle
    local = [i for i in range(torch.cuda.device_count()) if str(torch.cuda.get_device_properties(i).uuid) == uuid]
    if not local:
        raise RuntimeError(f"weight sync: the learner's GPU (UUID {uuid}) is not visible to this process")
    args = list(sent)
    args[_DEVICE_ARG] = local[0]
    return rebuild(*args)
