"""Weights broadcast over a weight group (llm/weight_broadcast.py) between real processes on gloo: what arrives is
the sender's state dict cast to the engines' dtype, bucket by bucket, again and again over one group; the GPU
layout of the Ray workers; and the route the weights take (trainer.weight_sync). NCCL and CUDA IPC need CUDA
devices: not run here."""

from __future__ import annotations

import queue
import socket

import pytest
import torch
import torch.multiprocessing as mp

from searchplay.assets.names import TINY, model_path
from searchplay.config import ConfigError
from searchplay.llm.transformers_engine import load_model
from searchplay.llm.weight_broadcast import join, receive, send
from searchplay.train.gpu_layout import LayoutError, gpu_layout, weight_route, workers_per_gpu

CPU = torch.device("cpu")
SYNCS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def member(rank: int, world: int, port: int, dtype: torch.dtype, out: mp.Queue) -> None:
    """Rank 0 sends the tiny model's state dict (changed between syncs); the others report what they got."""
    state = load_model(model_path(TINY), "float32", "cpu")[0].state_dict()
    group = join("127.0.0.1", port, rank, world, CPU)
    for sync in range(SYNCS):
        named = [(name, t + sync) for name, t in state.items()]
        if rank == 0:
            out.put((rank, sync, send(group, named, dtype, 64 * 2**10)))
        else:
            buckets = [[(name, t.clone()) for name, t in bucket] for bucket in receive(group)]
            got = [pair for bucket in buckets for pair in bucket]
            wanted = [(name, t.to(dtype)) for name, t in named]
            same = [n for n, t in got] == [n for n, _ in wanted] and all(
                t.dtype == dtype and torch.equal(t, w) for (_, t), (_, w) in zip(got, wanted)
            )
            out.put((rank, sync, (same, len(buckets))))


def test_every_receiver_gets_the_senders_weights_in_the_engine_dtype_at_every_sync() -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    world, port = 3, free_port()
    procs = [ctx.Process(target=member, args=(rank, world, port, torch.bfloat16, out)) for rank in range(world)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in range(world * SYNCS):
            rank, sync, value = out.get(timeout=120)
            results[rank, sync] = value
    except queue.Empty:
        pytest.fail(f"the group did not finish: got {sorted(results)}")
    finally:
        for p in procs:
            p.join(timeout=30)
            p.kill()
    state = load_model(model_path(TINY), "float32", "cpu")[0].state_dict()
    for sync in range(SYNCS):
        assert results[0, sync] == sum(t.numel() * 2 for t in state.values())  # bf16: 2 bytes each
        for rank in (1, 2):
            same, buckets = results[rank, sync]
            assert same and buckets > 1  # equal to the bf16 cast, in several buckets


def test_auto_keeps_weights_on_the_gpus_and_uses_the_object_store_on_cpus() -> None:
    """The device is the only fake here: the route is a choice made from it and the layout."""
    assert weight_route("auto", False, 2, 2, 1) == "object_store"
    assert weight_route("auto", True, 2, 2, 1) == "broadcast"  # every worker on a GPU of its own
    assert weight_route("auto", True, 8, 8, 0.5) == "ipc"  # the paper's layout: rank i beside rollout worker i
    assert weight_route("auto", True, 1, 3, 0.5) == "object_store"  # rollout workers 1 and 2 share a GPU
    assert weight_route("broadcast", False, 2, 2, 1) == "broadcast"  # gloo: what the tests run
    assert weight_route("ipc", False, 2, 2, 1) == "ipc"  # bytes from rank i to worker i
    assert weight_route("object_store", True, 8, 8, 0.5) == "object_store"


def test_routes_that_cannot_work_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"weight_sync = 'broadcast' with trainer.gpus_per_worker = 0.5.*NCCL"):
        weight_route("broadcast", True, 8, 8, 0.5)
    with pytest.raises(ConfigError, match=r"weight_sync = 'ipc' with 1 learner and 2 rollout workers"):
        weight_route("ipc", False, 1, 2, 1)
    with pytest.raises(ConfigError, match=r"weight_sync = 'ipc' with 2 learner and 2 rollout workers at .* = 1"):
        weight_route("ipc", True, 2, 2, 1)  # each on a GPU of its own: no rank beside its worker


def test_the_layout_pairs_rank_i_with_rollout_worker_i_and_never_puts_two_ranks_on_a_gpu() -> None:
    assert gpu_layout(3, 3, 0.5) == [[("learner", i), ("rollout", i)] for i in range(3)]
    assert gpu_layout(2, 1, 1) == [[("learner", 0)], [("rollout", 0)], [("learner", 1)]]
    assert gpu_layout(1, 2, 0.5) == [[("learner", 0), ("rollout", 0)], [("rollout", 1)]]
    assert workers_per_gpu(0.6) == 1 and workers_per_gpu(1 / 3) == 3  # shares that fit in one GPU
    with pytest.raises(LayoutError, match=r"learner ranks \[2, 3\] would share GPU 2.*NCCL"):
        gpu_layout(4, 2, 0.5)
