"""trainer.backend = "ray": rollout workers and a data-parallel learner group on a Ray cluster.

    driver (this process)      the game: seeds, pool, verification, rewards, logging, run folder
    retriever actor per node   the index and cache, shared by the node's rollout workers
    rollout workers (N)        engine + retriever; a round's episodes split across them
    learner workers (M)        torch.distributed group; every update summed over the ranks
    weight sync                rank 0's weights to every worker: fp32 through the object store, or
                               broadcast in the engine's dtype over a weight group (trainer.weight_sync)

With `trainer.ray_address` empty a local Ray instance is started (and stopped at the end); else
the driver joins that cluster ('auto': the one `ray start` made on this machine). The run
directory is written by the driver and the checkpoints by learner rank 0, so on several machines
it must be on storage they share. Each worker asks Ray for one CPU, or `trainer.gpus_per_worker`
GPUs when model.device is CUDA (the GPU path has not run on a GPU yet). docs/scaling.md has the
layout and the measured costs.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from transformers import AutoTokenizer

from searchplay.assets.names import resolve_config
from searchplay.config import Config, ConfigError
from searchplay.game.selfplay import RoundResult
from searchplay.llm.device import resolve_device
from searchplay.search.base import Retriever
from searchplay.train.backend import WorkerFailure
from searchplay.train.ray_learner import LearnerWorker
from searchplay.train.ray_retrieval import NodeRetriever, start_node_retrievers
from searchplay.train.ray_rollout import WORKER_DEATHS, RolloutWorkers, phase_threads

DEATH_REPORT_S = 15.0  # after a rank's error, how long to wait for its peers' results before judging


def weight_route(setting: str, on_gpu: bool, gpus_per_worker: float) -> str:
    """trainer.weight_sync resolved: "object_store" or "broadcast". Broadcast is the GPU route (NCCL, GPU to GPU,
    in bf16), but NCCL refuses two members on one GPU, so it needs rollout workers on GPUs of their own."""
    shared_gpu = on_gpu and gpus_per_worker < 1
    if setting == "auto":
        return "broadcast" if on_gpu and not shared_gpu else "object_store"
    if setting == "broadcast" and shared_gpu:
        raise ConfigError(
            f"trainer.weight_sync = 'broadcast' with trainer.gpus_per_worker = {gpus_per_worker:g}: a rollout worker may "
            "share learner rank 0's GPU, and NCCL refuses two members of a group on one GPU; use weight_sync = "
            "'object_store' (or 'auto'), or gpus_per_worker >= 1"
        )
    return setting


def connect(address: str, cpus_needed: int) -> bool:
    """Join the cluster at `address`, or start a local instance; True when this call started Ray."""
    if ray.is_initialized():
        return False
    env = {"env_vars": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        try:
            ray.init(address=address, runtime_env=env, log_to_driver=True)
        except ConnectionError as e:
            raise ConnectionError(
                f"could not join the Ray cluster at {address!r} ({e}); is `ray start --head` running there, and "
                "with token authentication, is RAY_AUTH_MODE=token set here too (README, 'Several machines')?"
            ) from None
        return False
    # "local": a new instance even when another cluster is (or was: Ray remembers its address in
    # /tmp/ray) running on this machine. Ray's CPU count is a scheduling budget, not a thread limit:
    # every actor gets a slot even on a 2-core machine, and each sets its own torch thread count.
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, cpus_needed),
        include_dashboard=False,
        runtime_env=env,
        log_to_driver=True,
    )
    return True


class RayBackend:
    engine: RolloutWorkers

    def __init__(self, cfg: Config, weights: str, base: str, checkpoint: Path | None):
        t = cfg.trainer
        cfg = resolve_config(cfg)  # the actors get plain paths
        gpu = resolve_device(cfg.model.device).type == "cuda"
        self.route = weight_route(t.weight_sync, gpu, t.gpus_per_worker)  # refused before anything starts
        self.group: list[Any] = []  # the rollout workers in learner rank 0's weight group (broadcast route)
        self.started = connect(t.ray_address, t.rollout_workers + t.learner_workers)
        self.learners: list[Any] = []
        self.retrievers: dict[str, Any] = {}
        try:
            resources: dict[str, float] = {"num_cpus": 0, "num_gpus": t.gpus_per_worker} if gpu else {"num_cpus": 1}
            self.retrievers = {} if cfg.search.url else start_node_retrievers(cfg.search)
            self.retriever: Retriever | None = NodeRetriever(self.retrievers) if self.retrievers else None
            tokenizer = AutoTokenizer.from_pretrained(weights)
            run_id = uuid.uuid4().hex[:8]  # actor names (searchplay-rollout-K-ID, searchplay-learner-R-ID) for `ray list actors`
            self.engine = RolloutWorkers(cfg, weights, self.retrievers, tokenizer, resources, run_id)
            learner_cls: Any = ray.remote(LearnerWorker)
            self.learners = [
                learner_cls.options(name=f"searchplay-learner-{rank}-{run_id}", **resources).remote(rank, t.learner_workers)
                for rank in range(t.learner_workers)
            ]
            master = ray.get(self.learners[0].address.remote())
            threads = phase_threads(cfg, t.learner_workers)
            ckpt = str(checkpoint) if checkpoint else None
            versions = ray.get(
                [w.setup.remote(cfg, weights, base, ckpt, master, self.engine.pad_id, threads) for w in self.learners]
            )
            self._version = versions[0]
            self.weight_mib = ray.get(self.learners[0].weight_mib.remote())
        except BaseException:
            self.close()
            raise

    @property
    def version(self) -> int:
        return self._version

    def update(self, result: RoundResult, cfg: Config, step: int, version: int) -> dict[str, float]:
        shared = ray.put(result)  # one copy in the object store for every rank
        calls = [w.update.remote(shared, step, version) for w in self.learners]
        metrics, advantages, self._version = self._gather(calls, step)[0]
        for traj, adv in zip(result.proposer + result.solver, advantages):
            if adv is not None:
                traj.meta["advantage"] = adv  # logged with the trajectory, as in one process
        return metrics

    def _gather(self, calls: list[Any], step: int) -> list[Any]:
        """Results of one call per rank, taken as they finish. A rank that died fails the step
        (WorkerFailure); its peers, blocked in a collective with it or failing on the closed
        connection, are stopped by close()."""
        pending = list(calls)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except WORKER_DEATHS as death:
                raise WorkerFailure(f"learner rank {calls.index(done[0])} died during step {step}: {death}") from death
            except ray.exceptions.RayError:  # a rank's own error: a peer's death may be its cause
                ray.wait(pending, num_returns=len(pending), timeout=DEATH_REPORT_S)
                for call in pending:
                    try:
                        ray.get(call, timeout=0)
                    except WORKER_DEATHS as death:
                        raise WorkerFailure(f"learner rank {calls.index(call)} died during step {step}: {death}") from death
                    except ray.exceptions.RayError:
                        pass
                raise
        return ray.get(calls)

    def sync_weights(self) -> dict[str, float]:
        """Rank 0's new weights to every rollout worker by the configured route. Every rank is asked: sharded
        ranks gather the weights together."""
        try:
            if self.route == "broadcast":
                metrics = self.broadcast(self.engine.workers)
                self.engine.resend = self.broadcast  # a replacement worker gets them the same way
                return metrics
            calls = [w.weights.remote() for w in self.learners]
            metrics = self.engine.sync_weights(calls[0])  # includes publishing them: the workers wait on the ref
            ray.get(calls[1:])
        except WORKER_DEATHS as e:
            raise WorkerFailure(f"a worker died while the weights were sent: {e}") from e
        return {**metrics, "sync/weight_mib": self.weight_mib}

    def broadcast(self, workers: list[Any]) -> dict[str, float]:
        """Rank 0 broadcasts its weights to `workers`, in a weight group formed again whenever they are not the
        members of the last one (the first sync, a replaced worker, a replacement's catch-up)."""
        t0 = time.perf_counter()
        if workers != self.group:
            host, port = ray.get(self.learners[0].address.remote())
            world = len(workers) + 1
            joins = [w.join_weight_group.remote(host, port, rank, world) for rank, w in enumerate(workers, start=1)]
            ray.get([self.learners[0].join_weight_group.remote(host, port, world), *joins])
            self.group = list(workers)
        dtype = ray.get(workers[0].weight_dtype.remote())
        sent = [w.broadcast_weights.remote(dtype) for w in self.learners]
        received = [w.receive_weights.remote() for w in workers]
        try:
            nbytes = ray.get([*sent, *received])[0]
        except ray.exceptions.RayError as e:  # a member died, or a collective failed because one did
            self.group = []
            raise WorkerFailure(f"the weight broadcast failed: {e}") from e
        return {"timing/weight_sync_s": time.perf_counter() - t0, "sync/weight_mib": nbytes / 2**20}

    def save(self, root: Path, step: int, state: dict[str, Any], cfg: Config) -> Path:
        """Rank 0 writes the checkpoint; every rank is asked, since sharded ranks gather the state together."""
        try:
            return Path(ray.get([w.save.remote(str(root), step, state) for w in self.learners])[0])
        except WORKER_DEATHS as e:
            raise WorkerFailure(f"a learner rank died while saving the checkpoint of step {step}: {e}") from e

    def metrics(self) -> dict[str, float]:
        return self.engine.metrics()

    def close(self) -> None:
        """Stop every actor (a rank blocked in a collective with a dead peer too), and Ray if we started it."""
        if hasattr(self, "engine"):  # not when start-up failed before the workers existed
            self.engine.close()
        for actor in [*self.learners, *self.retrievers.values()]:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if self.started:
            ray.shutdown()
