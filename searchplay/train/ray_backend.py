"""trainer.backend = "ray": rollout workers and a data-parallel learner group on a Ray cluster.

    driver (this process)      the game: seeds, pool, verification, rewards, logging, run folder
    retriever actor per node   the index and cache, shared by the node's rollout workers
    rollout workers (N)        engine + retriever; a round's episodes split across them
    learner workers (M)        torch.distributed group; every update summed over the ranks
    weight sync                the learner's weights to every worker (trainer.weight_sync): rank 0's fp32
                               through the object store, rank 0's broadcast over a weight group, or each
                               rank's to the rollout worker on its GPU (ipc)

With `trainer.ray_address` empty a local Ray instance is started (and stopped at the end); else
the driver joins that cluster ('auto': the one `ray start` made on this machine). The run
directory is written by the driver and the checkpoints by learner rank 0, so on several machines
it must be on storage they share. Each worker asks Ray for one CPU, or `trainer.gpus_per_worker`
GPUs when model.device is CUDA, in a placement group that keeps learner rank i beside rollout worker i
(train/gpu_layout.py; the GPU path has not run on a GPU yet). docs/scaling.md has the layout and the
measured costs.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from transformers import AutoTokenizer

from searchplay.assets.names import resolve_config
from searchplay.config import Config, ConfigError
from searchplay.game.selfplay import RoundResult
from searchplay.llm.device import resolve_device
from searchplay.search.base import Retriever
from searchplay.train.backend import WorkerFailure
from searchplay.train.gpu_layout import Worker, gpu_layout, weight_route
from searchplay.train.ray_learner import LearnerWorker
from searchplay.train.ray_retrieval import NodeRetriever, start_node_retrievers
from searchplay.train.ray_rollout import WORKER_DEATHS, RolloutWorkers, phase_threads

DEATH_REPORT_S = 15.0  # after a rank's error, how long to wait for its peers' results before judging


def placement(cfg: Config, on_gpu: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """Ray actor options of each rollout worker and each learner rank, and the placement group that holds them
    (None on CPUs, where each asks for one CPU). On GPUs one bundle per GPU of the layout (train/gpu_layout.py),
    so that learner rank i and rollout worker i share a GPU and no two learner ranks do."""
    t = cfg.trainer
    if not on_gpu:
        return [{"num_cpus": 1}] * t.rollout_workers, [{"num_cpus": 1}] * t.learner_workers, None
    layout = gpu_layout(t.learner_workers, t.rollout_workers, t.gpus_per_worker)
    bundles = [{"GPU": t.gpus_per_worker * len(workers)} for workers in layout]
    available = ray.cluster_resources().get("GPU", 0)
    if sum(b["GPU"] for b in bundles) > available:
        raise ConfigError(
            f"{t.learner_workers} learner and {t.rollout_workers} rollout workers at trainer.gpus_per_worker = "
            f"{t.gpus_per_worker:g} need {len(bundles)} GPUs; the Ray cluster has {available:g}"
        )
    group = placement_group(bundles, strategy="PACK")
    ray.get(group.ready())
    options: dict[Worker, dict[str, Any]] = {}
    for index, workers in enumerate(layout):
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)
        for worker in workers:
            options[worker] = {"num_cpus": 0, "num_gpus": t.gpus_per_worker, "scheduling_strategy": strategy}
    rollout = [options["rollout", k] for k in range(t.rollout_workers)]
    return rollout, [options["learner", i] for i in range(t.learner_workers)], group


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
        self.route = weight_route(t.weight_sync, gpu, t.learner_workers, t.rollout_workers, t.gpus_per_worker)
        self.group: list[Any] = []  # the rollout workers in learner rank 0's weight group (broadcast route)
        self.started = connect(t.ray_address, t.rollout_workers + t.learner_workers)
        self.learners: list[Any] = []
        self.retrievers: dict[str, Any] = {}
        self.placement: Any = None
        try:
            rollout_options, learner_options, self.placement = placement(cfg, gpu)
            self.retrievers = {} if cfg.search.url else start_node_retrievers(cfg.search)
            self.retriever: Retriever | None = NodeRetriever(self.retrievers) if self.retrievers else None
            tokenizer = AutoTokenizer.from_pretrained(weights)
            run_id = uuid.uuid4().hex[:8]  # actor names (searchplay-rollout-K-ID, searchplay-learner-R-ID) for `ray list actors`
            self.engine = RolloutWorkers(cfg, weights, self.retrievers, tokenizer, rollout_options, run_id)
            learner_cls: Any = ray.remote(LearnerWorker)
            self.learners = [
                learner_cls.options(name=f"searchplay-learner-{rank}-{run_id}", **learner_options[rank]).remote(
                    rank, t.learner_workers
                )
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
        """Rank 0's new weights to every rollout worker by the configured route (a replacement worker later gets
        them the same way). Every rank is asked: sharded ranks gather the weights together."""
        everyone = list(range(len(self.engine.workers)))
        try:
            if self.route == "object_store":
                calls = [w.weights.remote() for w in self.learners]
                metrics = self.engine.sync_weights(calls[0])  # includes publishing them: the workers wait on the ref
                ray.get(calls[1:])
                return {**metrics, "sync/weight_mib": self.weight_mib}
            send = self.broadcast if self.route == "broadcast" else self.push
            metrics = send(everyone)
            self.engine.resend = send
            return metrics
        except WORKER_DEATHS as e:
            raise WorkerFailure(f"a worker died while the weights were sent: {e}") from e

    def broadcast(self, ks: list[int]) -> dict[str, float]:
        """Rank 0 broadcasts its weights to rollout workers `ks`, in a weight group formed again whenever they are not
        the members of the last one (the first sync, a replaced worker, a replacement's catch-up)."""
        t0 = time.perf_counter()
        workers = [self.engine.workers[k] for k in ks]
        if workers != self.group:
            host, port = ray.get(self.learners[0].address.remote())
            world = len(workers) + 1
            joins = [w.join_weight_group.remote(host, port, rank, world) for rank, w in enumerate(workers, start=1)]
            ray.get([self.learners[0].join_weight_group.remote(host, port, world), *joins])
            self.group = workers
        dtype = ray.get(workers[0].weight_dtype.remote())
        sent = [w.broadcast_weights.remote(dtype) for w in self.learners]
        received = [w.receive_weights.remote() for w in workers]
        try:
            nbytes = ray.get([*sent, *received])[0]
        except ray.exceptions.RayError as e:  # a member died, or a collective failed because one did
            self.group = []
            raise WorkerFailure(f"the weight broadcast failed: {e}") from e
        return {"timing/weight_sync_s": time.perf_counter() - t0, "sync/weight_mib": nbytes / 2**20}

    def push(self, ks: list[int]) -> dict[str, float]:
        """Each learner rank i hands its weights to rollout worker i on its GPU, if i is in `ks` (every rank gathers)."""
        t0 = time.perf_counter()
        dtype = ray.get(self.engine.workers[ks[0]].weight_dtype.remote())
        targets = [self.engine.workers[i] if i in ks else None for i in range(len(self.learners))]
        try:
            nbytes = ray.get([w.push_weights.remote(target, dtype) for w, target in zip(self.learners, targets)])
        except ray.exceptions.RayError as e:
            raise WorkerFailure(f"the weight push failed: {e}") from e
        return {"timing/weight_sync_s": time.perf_counter() - t0, "sync/weight_mib": max(nbytes) / 2**20}

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
        if self.placement is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self.placement)
        if self.started:
            ray.shutdown()
