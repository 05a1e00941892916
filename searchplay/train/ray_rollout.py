"""Ray rollout workers: actors that each hold an engine and a retriever and play whole episodes.

`RolloutWorkers` is what the game sees: an Engine whose `run_episodes` (agent/rollout.py,
`EpisodeRunner`) splits a batch of episodes into contiguous shards, one per worker, and gathers
the trajectories back in prompt order; single `generate` calls (the policy verifier) are split
the same way. Each shard samples with the rollout seed offset by its first episode's index, so
that copies of one prompt in different shards (a proposer group) do not repeat each other.

A worker that dies (its process killed, its node lost) is replaced by a new actor that loads the
base weights and then the last synced ones, and its shard is played again from the start; the
replacements and the episodes played again are counted (`ray/rollout_restarts`,
`ray/episodes_rerun`). After `MAX_TRIES` deaths of one shard the round fails (WorkerFailure).

Weights arrive by one of three routes (`trainer.weight_sync`, train/gpu_layout.py): as the
learner's fp32 parameters by name (numpy arrays in Ray's object store, shared, not copied, by the
workers of a node); broadcast by learner rank 0 over a weight group the workers' engines join
(llm/weight_broadcast.py); or bucket by bucket from the learner rank on the worker's GPU (`load_bucket`:
a CUDA IPC handle, bytes on CPUs). Our engine copies them into its model; vLLM loads them in its worker
process. A replacement worker is sent the last weights again by the same route (`resend`).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import ray
import torch

from searchplay.agent.rollout import FinalTag, run_episodes
from searchplay.agent.trajectory import Trajectory
from searchplay.config import Config, RolloutConfig
from searchplay.llm.base import Generation, SamplingParams
from searchplay.llm.engines import engine_name, training_engine
from searchplay.llm.transformers_engine import load_model
from searchplay.llm.vllm_engine import VLLMEngine
from searchplay.llm.weight_broadcast import WeightGroup, join, receive
from searchplay.llm.weight_buckets import Layout, dtype_name, from_bytes, open_cuda, unpack
from searchplay.train.backend import WorkerFailure
from searchplay.train.ray_retrieval import worker_retriever

MAX_TRIES = 3  # plays of one shard (the first and two after worker deaths) before the round fails
WORKER_DEATHS = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def phase_threads(cfg: Config, workers: int) -> int:
    """Torch threads per worker: model.threads, else the node's cores shared by the workers of one phase."""
    return cfg.model.threads or max(1, (os.cpu_count() or 1) // workers)


class RolloutWorker:
    """One rollout actor: its engine and a retriever. Our engine generates from an fp32 copy of the policy that
    the learner's weights are copied into; vLLM holds its own weights and takes the learner's directly (no
    second copy of the policy next to it)."""

    def __init__(self, cfg: Config, weights: str, retrievers: dict[str, Any], threads: int):
        torch.set_num_threads(threads)
        self.model: Any = None
        tokenizer = None
        if engine_name(cfg.model) != "vllm":
            self.model, tokenizer = load_model(weights, "float32", cfg.model.device)
        self.engine = training_engine(self.model, tokenizer, weights, cfg.model, cfg.rollout.seed, threads)
        self.retriever = worker_retriever(cfg.search, retrievers)
        self.params = {} if self.model is None else self.model.state_dict()  # tensors sharing the model's storage
        self.weight_group: WeightGroup | None = None

    def pad_id(self) -> int:
        return self.engine.pad_id

    def run_episodes(
        self, prompts: list[list[int]], cfg: RolloutConfig, final_tag: FinalTag, topk: int, metas: list[dict[str, Any]] | None
    ) -> list[Trajectory]:
        return run_episodes(self.engine, self.retriever, prompts, cfg, final_tag, topk, metas)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        return self.engine.generate(prompts, params)

    def sleep(self) -> None:
        if isinstance(self.engine, VLLMEngine):
            self.engine.sleep()

    def wake(self) -> None:
        if isinstance(self.engine, VLLMEngine):
            self.engine.wake()

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # arrays in the object store are read-only; they are only read
            tensors = ((name, torch.from_numpy(array)) for name, array in weights.items())
            if isinstance(self.engine, VLLMEngine):
                self.engine.load_named(tensors)
                return
            self._copy_in(tensors)

    def weight_dtype(self) -> str:
        """The dtype the engine holds its weights in: what a broadcast or a push sends."""
        return dtype_name(self.engine.dtype if isinstance(self.engine, VLLMEngine) else next(iter(self.params.values())).dtype)

    def load_bucket(self, layout: Layout, dtype: str, payload: bytes | dict[str, Any]) -> None:
        """One bucket pushed by the learner rank on this worker's GPU (a CUDA IPC handle; bytes on the CPU)."""
        if isinstance(self.engine, VLLMEngine):
            self.engine.load_bucket(layout, dtype, payload)
            return
        flat = from_bytes(payload, getattr(torch, dtype)) if isinstance(payload, bytes) else open_cuda(payload)
        self._copy_in(unpack(flat, layout))

    def end_sync(self, seconds: float, nbytes: int) -> None:
        """After a push's last bucket (vLLM drops its prefix cache)."""
        if isinstance(self.engine, VLLMEngine):
            self.engine.synced(seconds, nbytes)

    def join_weight_group(self, host: str, port: int, rank: int, world: int) -> None:
        """The engine joins learner rank 0's weight group (vLLM: its worker process) as `rank`."""
        if isinstance(self.engine, VLLMEngine):
            self.engine.join_weight_group(host, port, rank, world)
        else:
            self.weight_group = join(host, port, rank, world, next(iter(self.params.values())).device)

    def receive_weights(self) -> None:
        """Load the weights learner rank 0 broadcasts now."""
        if isinstance(self.engine, VLLMEngine):
            self.engine.receive_weights()
            return
        for tensors in receive(self.weight_group):
            self._copy_in(tensors)

    def _copy_in(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        with torch.no_grad():
            for name, tensor in tensors:
                self.params[name].copy_(tensor)  # our engine generates from self.model


class RolloutWorkers:
    """The Engine of the Ray backend: episodes and generations split over rollout actors."""

    def __init__(
        self, cfg: Config, weights: str, retrievers: dict[str, Any], tokenizer: Any, options: list[dict[str, Any]], run_id: str
    ):
        """`options`: each worker's Ray actor options (resources, and on GPUs its placement-group bundle), which a
        replacement keeps."""
        self.cfg, self.weights, self.retrievers, self.tokenizer, self.run_id = cfg, weights, retrievers, tokenizer, run_id
        self.actor_cls: Any = ray.remote(RolloutWorker)
        self.options = options
        self.threads = phase_threads(cfg, cfg.trainer.rollout_workers)
        self.spawned = 0
        self.workers = [self._spawn(k) for k in range(cfg.trainer.rollout_workers)]
        pad_ids = ray.get([w.pad_id.remote() for w in self.workers])  # every worker loaded
        self.pad_id: int = pad_ids[0]
        self.resend: Callable[[list[int]], Any] | None = None  # sends the last synced weights to the workers numbered
        self.restarts = 0
        self.episodes_rerun = 0

    def _spawn(self, k: int) -> Any:
        """Worker k's actor, named searchplay-rollout-K-RUN (a replacement gets a new -N suffix)."""
        self.spawned += 1
        name = f"searchplay-rollout-{k}-{self.run_id}" + (
            f"-{self.spawned}" if self.spawned > self.cfg.trainer.rollout_workers else ""
        )
        return self.actor_cls.options(name=name, **self.options[k]).remote(self.cfg, self.weights, self.retrievers, self.threads)

    def _replace(self, k: int) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self.workers[k])
        self.workers[k] = self._spawn(k)
        if self.resend is not None:
            self.resend([k])
        self.restarts += 1

    def _map(self, n: int, call: Callable[[Any, int, int], Any]) -> list[Any]:
        """`call(worker, lo, hi)` on contiguous shards of n items, results concatenated in order."""
        shards = [(n * k // len(self.workers), n * (k + 1) // len(self.workers)) for k in range(len(self.workers))]
        shards = [(lo, hi) for lo, hi in shards if hi > lo]
        pending = [call(self.workers[k], lo, hi) for k, (lo, hi) in enumerate(shards)]
        results: list[Any] = []
        for k, (lo, hi) in enumerate(shards):
            for attempt in range(1, MAX_TRIES + 1):
                try:
                    results.extend(ray.get(pending[k]))
                    break
                except WORKER_DEATHS as e:
                    if attempt == MAX_TRIES:
                        raise WorkerFailure(f"rollout worker {k} died {MAX_TRIES} times on one shard: {e}") from e
                    self._replace(k)
                    self.episodes_rerun += hi - lo
                    pending[k] = call(self.workers[k], lo, hi)
        return results

    def run_episodes(
        self, prompts: list[list[int]], cfg: RolloutConfig, final_tag: FinalTag, topk: int, metas: list[dict[str, Any]] | None
    ) -> list[Trajectory]:
        return self._map(
            len(prompts),
            lambda w, lo, hi: w.run_episodes.remote(
                prompts[lo:hi], replace(cfg, seed=cfg.seed + lo), final_tag, topk, metas[lo:hi] if metas else None
            ),
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        def call(w: Any, lo: int, hi: int) -> Any:
            return w.generate.remote(prompts[lo:hi], replace(params, seed=None if params.seed is None else params.seed + lo))

        return self._map(len(prompts), call)

    def keep_kv(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # each worker keeps keys/values inside its own episodes

    @contextlib.contextmanager
    def asleep(self) -> Iterator[None]:
        """Every worker's vLLM asleep for the block (the update and the weight sync that follows): on a GPU
        shared with a learner rank the two take turns (a no-op on the CPU and for our engine)."""
        ray.get([w.sleep.remote() for w in self.workers])
        try:
            yield
        finally:
            ray.get([w.wake.remote() for w in self.workers])

    def sync_weights(self, model: Any) -> dict[str, float]:
        """Every worker loads `model`: here the learner's published weights (an object ref of
        {name: fp32 array}), not a module; returns the time it took."""

        def load(ks: list[int]) -> None:
            ray.get([self.workers[k].load_weights.remote(model) for k in ks])

        t0 = time.perf_counter()
        load(list(range(len(self.workers))))
        self.resend = load
        return {"timing/weight_sync_s": time.perf_counter() - t0}

    def metrics(self) -> dict[str, float]:
        return {"ray/rollout_restarts": float(self.restarts), "ray/episodes_rerun": float(self.episodes_rerun)}

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                ray.kill(w)
