"""Ray learner workers: a data-parallel group of Learners joined by torch.distributed.

Each rank is an actor holding the policy (fp32), the reference if KL is on, and a Learner (with
`learner.sharding`, by default in a group of 2+, each holds 1/N of them: rl/sharding.py); the
group is one torch.distributed process group (gloo on CPU, NCCL on GPU) whose rank 0 publishes
its address. Every rank receives the whole round and runs the same `update_roles` as the local
trainer; the Learner takes each rank's share of the work and sums gradients over the group
(rl/data_parallel.py), so all ranks step identically and rank 0 speaks for them: it returns the
metrics and advantages, publishes the weights for the rollout workers and writes checkpoints.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist

from searchplay.config import Config
from searchplay.game.selfplay import RoundResult
from searchplay.llm.device import bind_cuda, resolve_device
from searchplay.llm.weight_broadcast import SENDER, join, send
from searchplay.llm.weight_buckets import BUCKET_BYTES, buckets, share_cuda, to_bytes
from searchplay.rl.data_parallel import group_backend
from searchplay.rl.learner import resolve_sharding
from searchplay.train.backend import build_learner, load_policy
from searchplay.train.checkpoint import OPTIMIZER_SHARDS, begin_checkpoint, save_checkpoint
from searchplay.train.logging import rss_mib, trim_heap
from searchplay.train.update import update_roles

GROUP_TIMEOUT = timedelta(minutes=30)  # a rank waiting this long for a peer in a collective gives up


def group_address() -> tuple[str, int]:
    """This node's address and a free TCP port for the process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


class LearnerWorker:
    """One rank of the learner group."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def address(self) -> tuple[str, int]:
        return group_address()

    def setup(
        self, cfg: Config, weights: str, base: str, checkpoint: str | None, master: tuple[str, int], pad_id: int, threads: int
    ) -> int:
        """Join the group, load the policy (and optimizer state when resuming); returns the learner version."""
        torch.set_num_threads(threads)
        device = self.device = bind_cuda(resolve_device(cfg.model.device))
        dist.init_process_group(
            group_backend(device.type),
            init_method=f"tcp://{master[0]}:{master[1]}",
            rank=self.rank,
            world_size=self.world,
            timeout=GROUP_TIMEOUT,
        )
        torch.manual_seed(cfg.learner.seed)
        self.cfg = cfg
        # sharded: rank 0 reads the whole models into host memory, the others build them empty, and every rank's
        # shards are made on its device from rank 0's (rl/sharding.py): no GPU holds a whole fp32 model at start-up
        sharded = resolve_sharding(cfg.learner.sharding, self.world)
        empty, host = self.rank > 0 and sharded, "cpu" if sharded else ""
        self.model, self.tokenizer, reference = load_policy(cfg, weights, base, empty, host)
        resume = Path(checkpoint) if checkpoint else None
        self.learner = build_learner(cfg, self.model, reference, pad_id, resume, device)
        return self.learner.version

    def update(self, result: RoundResult, step: int, version: int) -> tuple[dict[str, float], list[float | None], int]:
        """Both roles' updates; (metrics, each trajectory's advantage for the log, the new version)."""
        metrics = update_roles(self.learner, result, self.cfg, step, version)
        trim_heap()
        metrics["memory/learner_rss_mib"] = rss_mib()
        return metrics, [t.meta.get("advantage") for t in result.proposer + result.solver], self.learner.version

    def weights(self) -> dict[str, np.ndarray]:
        """The state dict as fp32 arrays, for the rollout workers through the object store (rank 0's; the others
        return nothing)."""
        return {name: t.detach().cpu().numpy() for name, t in self._full_weights().items()}

    def join_weight_group(self, host: str, port: int, world: int) -> None:
        """Rank 0 opens a weight group for `world - 1` rollout engines (llm/weight_broadcast.py) on host:port,
        an address this rank's `address` gave; a new group replaces the one before."""
        self.weight_group = join(host, port, SENDER, world, self.device)

    def broadcast_weights(self, dtype: str) -> int:
        """Rank 0 broadcasts the weights in `dtype` to its weight group, bucket by bucket; sharded, every rank
        gathers each bucket's tensors with it. Returns the bytes sent (0 on other ranks)."""
        named = self.model.state_dict().items()
        if self.rank == SENDER:
            return send(self.weight_group, named, getattr(torch, dtype), BUCKET_BYTES)
        if self.learner.sharded:
            for _ in buckets(named, getattr(torch, dtype), self.device, BUCKET_BYTES):
                pass  # the gathers rank 0's buckets need
        return 0

    def push_weights(self, worker: Any, dtype: str) -> int:
        """The weights in `dtype` buckets on this rank's device, each handed to `worker` (the rollout worker on this
        rank's GPU; None: this rank only takes part in gathering): a CUDA IPC handle, bytes on the CPU. Returns
        the bytes pushed."""
        if worker is None and not self.learner.sharded:
            return 0  # nothing to gather with the others
        t0 = time.perf_counter()
        total = 0
        for flat, layout in buckets(self.model.state_dict().items(), getattr(torch, dtype), self.device, BUCKET_BYTES):
            if worker is not None:
                ray.get(worker.load_bucket.remote(layout, dtype, share_cuda(flat) if flat.is_cuda else to_bytes(flat)))
                total += flat.numel() * flat.element_size()
            del flat  # the worker has copied out of it
        if worker is not None:
            ray.get(worker.end_sync.remote(time.perf_counter() - t0, total))
        return total

    def _full_weights(self) -> dict[str, torch.Tensor]:
        """Every name of the state dict, a tied output projection too, since vLLM may hold it apart: rank 0's whole
        weights (sharded, every rank takes part in gathering them and the others get nothing)."""
        full = self.learner.full_weights()
        if full is None:
            return dict(self.model.state_dict())
        return full if self.rank == 0 else {}

    def weight_mib(self) -> float:
        return sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20  # a shard's numel is the whole's

    def save(self, root: str, step: int, state: dict[str, Any]) -> str:
        """Rank 0 writes the checkpoint; sharded, every rank first writes its optimizer shards into it and takes part
        in gathering the weights (the model directory is whole, for every later command)."""
        cfg = self.cfg
        tmp = begin_checkpoint(Path(root), step) if self.rank == 0 else Path(root) / f"step-{step}.tmp"
        if self.learner.sharded:
            dist.barrier()  # the folder exists before any rank writes into it
        learner_state = self.learner.state_dict(tmp / OPTIMIZER_SHARDS)
        weights = self.learner.full_weights()
        if self.rank != 0:
            return ""
        keep = cfg.trainer.keep_checkpoints
        path = save_checkpoint(Path(root), step, self.model, self.tokenizer, learner_state, state, cfg, keep, weights, begun=True)
        return str(path)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
