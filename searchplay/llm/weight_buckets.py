"""Weights in buckets for the rollout engine: many tensors in one flat buffer, sent as one message.

The learner's parameters reach vLLM's worker process one bucket at a time (`VLLMEngine.load_named`):
each bucket is a flat tensor of the engine's dtype holding the named tensors one after another, with
a layout (name, shape, offset) to cut it back into them. Where the buffer lives decides how it
travels:
- on the CPU it goes as raw bytes through vLLM's RPC (one bytes object per bucket, not per tensor);
- on a CUDA device (a learner colocated with vLLM on the same GPU) it stays on the GPU and only a
  CUDA IPC handle travels: the worker maps the sender's memory, so nothing is copied through host
  memory (what verl and OpenRLHF do for colocated engines). The handle names the device by its
  UUID, because the two processes may number the GPUs differently. It travels as plain data
  (strings, numbers, bytes): vLLM encodes RPC arguments with msgpack, which refuses the rebuild
  function that torch's own reduction returns unless VLLM_ALLOW_INSECURE_SERIALIZATION turns on
  pickle for every message.

A bucket ends only between decoder layers: vLLM's in-place reload processes a fused module
(q/k/v, gate/up) once per call from what that call brought, so a layer split across two buckets
would be loaded from half its weights.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from torch.multiprocessing.reductions import rebuild_cuda_tensor, reduce_tensor

# (name, shape, offset in elements) of each tensor in a bucket's flat buffer
Layout = list[tuple[str, list[int], int]]
BUCKET_BYTES = 256 * 2**20  # a bucket's size: a few of them for a 7B model's layers, little memory beside it
_LAYER = re.compile(r".*?\.layers\.\d+\.")


def block(name: str) -> str:
    """The decoder layer a parameter belongs to ("model.layers.3."), or the name itself outside the layers."""
    match = _LAYER.match(name)
    return match.group(0) if match else name


def layouts(shapes: Iterable[tuple[str, Sequence[int]]], itemsize: int, bucket_bytes: float) -> list[Layout]:
    """How (name, shape) pairs fill buckets of at least `bucket_bytes` (the last may be smaller), each ending
    between decoder layers. One layer larger than `bucket_bytes` makes a bucket of its own."""
    plan: list[Layout] = []
    layout: Layout = []
    size = 0
    for name, shape in shapes:
        if layout and size * itemsize >= bucket_bytes and block(name) != block(layout[-1][0]):
            plan.append(layout)
            layout, size = [], 0
        layout.append((name, list(shape), size))
        size += math.prod(shape)
    return [*plan, layout] if layout else plan


def buckets(
    named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype, device: torch.device, bucket_bytes: int
) -> Iterator[tuple[torch.Tensor, Layout]]:
    """(flat buffer of `dtype` on `device`, layout) per bucket, cut as `layouts` cuts them and filled one bucket at a
    time: `named` is read as the buckets fill (a LoRA policy's merged weights are made as they are read), and a sharded
    tensor (DTensor) is gathered whole only when its bucket is packed (a collective: every rank iterates alike)."""
    pending: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in named:
        if pending and size * dtype.itemsize >= bucket_bytes and block(name) != block(next(reversed(pending))):
            yield _flush(pending, dtype, device)
            pending, size = {}, 0
        pending[name] = tensor
        size += tensor.numel()
    if pending:
        yield _flush(pending, dtype, device)


def _flush(tensors: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, Layout]:
    """One bucket of all of `tensors`: its buffer and layout."""
    (layout,) = layouts(((name, t.shape) for name, t in tensors.items()), dtype.itemsize, math.inf)
    return pack(tensors, layout, dtype, device), layout


def pack(tensors: dict[str, torch.Tensor], layout: Layout, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A bucket's flat buffer: the layout's tensors (sharded ones gathered) cast and moved into it, one after another."""
    flat = torch.empty(bucket_numel(layout), dtype=dtype, device=device)
    for name, shape, offset in layout:
        tensor = tensors[name]
        whole = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        flat[offset : offset + math.prod(shape)].copy_(whole.detach().reshape(-1))  # casts and moves in one copy
    return flat


def dtype_name(dtype: torch.dtype) -> str:
    """ "bfloat16" for torch.bfloat16: how a dtype travels in a message (`getattr(torch, name)` turns it back)."""
    return str(dtype).removeprefix("torch.")


def bucket_numel(layout: Layout) -> int:
    _, shape, offset = layout[-1]
    return offset + math.prod(shape)


def unpack(flat: torch.Tensor, layout: Layout) -> list[tuple[str, torch.Tensor]]:
    """The named tensors of a bucket, as views of its flat buffer."""
    return [(name, flat[offset : offset + math.prod(shape)].view(shape)) for name, shape, offset in layout]


def to_bytes(flat: torch.Tensor) -> bytes:
    """A CPU buffer's memory as bytes: vLLM's RPC carries bytes as they are, but an untyped tensor as a list."""
    return flat.view(torch.uint8).numpy().tobytes()


def from_bytes(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=dtype)


# torch's rebuild_cuda_tensor parameters, in order (torch/multiprocessing/reductions.py); a test checks them
REBUILD_FIELDS = (
    "tensor_cls", "tensor_size", "tensor_stride", "tensor_offset", "storage_cls", "dtype", "storage_device",
    "storage_handle", "storage_size_bytes", "storage_offset_bytes", "requires_grad", "ref_counter_handle",
    "ref_counter_offset", "event_handle", "event_sync_required",
)  # fmt: skip
_STORAGE_CLASSES = {cls.__name__: cls for cls in (torch.storage.TypedStorage, torch.storage.UntypedStorage)}


def share_cuda(flat: torch.Tensor) -> dict[str, Any]:
    """A CUDA IPC handle to a GPU buffer as plain data (ipc_payload). The sender keeps `flat` alive until the
    receiver has copied out of it; the copy into it is finished before the handle is used."""
    torch.cuda.current_stream(flat.device).synchronize()
    _, args = reduce_tensor(flat)
    return ipc_payload(args, str(torch.cuda.get_device_properties(flat.device).uuid))


def ipc_payload(args: Sequence[Any], uuid: str) -> dict[str, Any]:
    """torch's rebuild arguments of a shared CUDA tensor as msgpack-safe data, the device named by `uuid`."""
    a = dict(zip(REBUILD_FIELDS, args, strict=True))
    if a["tensor_cls"] is not torch.Tensor or a["storage_cls"] not in _STORAGE_CLASSES.values():
        raise TypeError(f"weight sync shares plain tensors only, not {a['tensor_cls']} over {a['storage_cls']}")
    return {
        **{k: a[k] for k in ("storage_handle", "ref_counter_handle", "event_handle")},  # bytes
        **{k: int(a[k]) for k in ("tensor_offset", "storage_size_bytes", "storage_offset_bytes", "ref_counter_offset")},
        "tensor_size": list(a["tensor_size"]),
        "tensor_stride": list(a["tensor_stride"]),
        "storage_cls": a["storage_cls"].__name__,
        "dtype": dtype_name(a["dtype"]),
        "requires_grad": bool(a["requires_grad"]),
        "event_sync_required": bool(a["event_sync_required"]),
        "uuid": uuid,
    }


def ipc_args(payload: dict[str, Any], device_index: int) -> tuple[Any, ...]:
    """The rebuild arguments back from `ipc_payload`, on this process's index of the sender's device."""
    values = {
        **payload,
        "tensor_cls": torch.Tensor,
        "tensor_size": torch.Size(payload["tensor_size"]),
        "tensor_stride": tuple(payload["tensor_stride"]),
        "storage_cls": _STORAGE_CLASSES[payload["storage_cls"]],
        "dtype": getattr(torch, payload["dtype"]),
        "storage_device": device_index,
    }
    return tuple(values[k] for k in REBUILD_FIELDS)


def open_cuda(payload: dict[str, Any]) -> torch.Tensor:
    """The sender's GPU buffer, mapped into this process on the device with the sender's UUID."""
    uuid = payload["uuid"]
    local = [i for i in range(torch.cuda.device_count()) if str(torch.cuda.get_device_properties(i).uuid) == uuid]
    if not local:
        raise RuntimeError(f"weight sync: the learner's GPU (UUID {uuid}) is not visible to this process")
    return rebuild_cuda_tensor(*ipc_args(payload, local[0]))
