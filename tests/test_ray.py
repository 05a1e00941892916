"""trainer.backend = "ray" on a real local Ray instance on this 2-core machine (6 scheduling slots):
the tiny random Llama, the bundled BM25 index, gloo for the learner group.

- 2 rollout + 2 learner workers train and write the layout one process writes;
- N data-parallel ranks give the single-process gradients and weights (tolerance 1e-5);
- a rollout worker killed mid-round is replaced and its episodes played again, identically;
- a rollout worker killed during training leaves the run going; a learner worker killed stops
  the step cleanly, and the run resumes from its checkpoint in ray mode;
- weights broadcast over a weight group (gloo here, NCCL on GPUs) or pushed by each rank to its rollout worker
  (bytes here, CUDA IPC on GPUs) reach every worker and a replacement;
- on (Ray's bookkeeping) GPUs, learner rank i and rollout worker i share a GPU and no two ranks do.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
import torch.distributed as dist
from ray.util.placement_group import remove_placement_group
from safetensors.torch import load_file
from transformers import AutoTokenizer

from searchplay.agent.rollout import chat_prompt_ids
from searchplay.assets.names import TINY, model_path, resolve_config
from searchplay.config import Config, ConfigError, LearnerConfig, ServerConfig, load_config
from searchplay.game.prompts import solver_messages
from searchplay.llm.transformers_engine import load_model
from searchplay.rl.learner import Learner, Sample
from searchplay.search.server import create_app
from searchplay.train.ray_backend import placement
from searchplay.train.ray_learner import group_address
from searchplay.train.ray_retrieval import start_node_retrievers
from searchplay.train.ray_rollout import RolloutWorkers
from searchplay.train.trainer import TrainError, train
from tests.servers import running_server
from tests.test_learner import gradients_at_each_step

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))  # the venv's ray command


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module; the trainer joins it instead of starting its own."""
    env = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}
    ray.init(address="local", num_cpus=6, num_gpus=4, include_dashboard=False, runtime_env=env)  # GPUs: Ray's bookkeeping only
    yield
    ray.shutdown()


def tiny(*overrides: str) -> Config:
    return load_config(ROOT / "configs/tiny-test.toml", ["trainer.eval_every=0", *overrides])


def ray_tiny(*overrides: str) -> Config:
    return tiny("trainer.backend=ray", "trainer.rollout_workers=2", "trainer.learner_workers=2", *overrides)


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def layout(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def test_two_rollout_and_two_learner_workers_train_and_write_the_local_layout(local_ray, tmp_path: Path) -> None:
    train(tiny("trainer.eval_every=2"), tmp_path / "local")
    summary = train(ray_tiny("trainer.eval_every=2"), tmp_path / "ray")  # evaluation runs on the workers too
    assert summary.steps == 2
    files = layout(tmp_path / "ray")
    shards = [f for f in files if f.startswith("checkpoints/step-2/optimizer")]  # the sharded learners' optimizer
    assert sum(f.endswith(".distcp") for f in shards) == 2  # one part per rank
    assert [f for f in files if f not in shards] == layout(tmp_path / "local")
    local, remote = metrics(tmp_path / "local"), metrics(tmp_path / "ray")
    assert [m["step"] for m in remote] == [1, 2]
    assert set(local[-1]) <= set(remote[-1]), set(local[-1]) - set(remote[-1])
    last = remote[-1]
    assert "eval/em" in last and last["eval/n"] == 4
    assert last["sync/weight_mib"] > 1 and last["timing/weight_sync_s"] > 0
    assert last["ray/rollout_restarts"] == 0
    # lr 1e-3 moves the tiny model far between steps: a gap this small at step 2 means the rollout
    # workers generated with the weights the learners had just made
    assert last["solver_update/logprob_gap_max"] < 1e-4
    logged = [json.loads(line) for line in (tmp_path / "ray/trajectories/step-000002.jsonl").read_text().splitlines()]
    assert all("advantage" in t["meta"] for t in logged)
    before = load_model(model_path(TINY), "float32")[0].state_dict()
    after = load_file(str(tmp_path / "ray/checkpoints/step-2/model/model.safetensors"))
    assert max(float((after[k] - before[k]).abs().max()) for k in after) > 1e-4  # the checkpoint holds trained weights


class GradRank:
    """A test actor: one rank of a gloo group running a real Learner update on shared samples."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def address(self) -> tuple[str, int]:
        return group_address()

    def run(self, samples: list[Sample], cfg: LearnerConfig, master: tuple[str, int]) -> tuple[dict, dict, dict]:
        dist.init_process_group("gloo", init_method=f"tcp://{master[0]}:{master[1]}", rank=self.rank, world_size=self.world)
        out = update_once(samples, cfg)
        dist.destroy_process_group()
        return out


def update_once(samples: list[Sample], cfg: LearnerConfig) -> tuple[dict, dict, dict]:
    """(last mini-batch's gradients, weights, metrics) after one Learner.update from the tiny model."""
    torch.manual_seed(0)
    model, _ = load_model(model_path(TINY), "float32")
    reference, _ = load_model(model_path(TINY), "float32")
    learner = Learner(model, cfg, reference, total_steps=10)
    seen = gradients_at_each_step(learner, model)
    stats = learner.update(samples)
    grads = seen[-1]
    return grads, {n: p.detach().clone() for n, p in model.named_parameters()}, stats


def random_samples(n: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, 200) for _ in range(rng.randint(4, 20))]
        response = [rng.randrange(3, 200) for _ in range(rng.randint(2, 14))]
        mask = [int(rng.random() > 0.2) for _ in response]
        mask[0] = 1
        out.append(Sample(prompt, response, mask, rng.uniform(-1, 1)))
    return out


class CountingRetriever:
    """The bundled BM25 behind a real retrieval server, counting the queries it answers."""

    def __init__(self, inner: Any):
        self.inner, self.queries = inner, 0

    def search(self, queries: list[str], k: int) -> list:
        self.queries += len(queries)
        return self.inner.search(queries, k)


def test_with_search_url_the_workers_search_the_shared_server(local_ray, bundled_bm25, tmp_path: Path) -> None:
    counting = CountingRetriever(bundled_bm25)
    with running_server(create_app(counting, ServerConfig())) as url:
        summary = train(ray_tiny("trainer.steps=1", f"search.url={url}", "search.cache_size=0"), tmp_path / "run")
    assert summary.steps == 1
    searches = metrics(tmp_path / "run")[0]["proposer/searches_mean"]
    assert searches > 0 and counting.queries > 0  # every search went through the server, none to a retriever actor


def test_data_parallel_ranks_give_the_single_process_gradients(local_ray) -> None:
    # 9 samples in mini-batches of 4 (the last has 1: one rank gets nothing), 2 epochs, micro-batches
    # by a small token budget, KL to a reference, old log-probs scored on shares: 6 optimizer steps
    cfg = LearnerConfig(
        lr=1e-3, ppo_epochs=2, mini_batch_size=4, micro_batch_tokens=48, kl_coef=0.05, bf16=False, sharding="none"
    )
    samples = random_samples(9)
    grads, weights, stats = update_once(random_samples(9), cfg)
    ranks = [ray.remote(GradRank).options(num_cpus=1).remote(r, 2) for r in range(2)]
    master = ray.get(ranks[0].address.remote())
    results = ray.get([r.run.remote(samples, cfg, master) for r in ranks])
    assert stats["learner/optimizer_steps"] == 6
    for dp_grads, dp_weights, dp_stats in results:
        assert dp_grads.keys() == grads.keys()
        assert max(float((dp_grads[n] - grads[n]).abs().max()) for n in grads) < 1e-5
        assert max(float((dp_weights[n] - weights[n]).abs().max()) for n in weights) < 1e-5
        for key in ("learner/loss", "learner/kl", "learner/entropy", "learner/grad_norm", "learner/trained_tokens"):
            assert dp_stats[key] == pytest.approx(stats[key], rel=1e-4, abs=1e-7), key
    assert max(float((results[0][1][n] - results[1][1][n]).abs().max()) for n in weights) == 0.0  # ranks stay identical


def test_a_rollout_worker_killed_mid_round_is_replaced_and_its_episodes_played_again(local_ray) -> None:
    cfg = resolve_config(tiny("rollout.max_new_tokens=48", "trainer.rollout_workers=2", "model.threads=1"))
    tokenizer = AutoTokenizer.from_pretrained(model_path(TINY))
    retrievers = start_node_retrievers(cfg.search)
    workers = RolloutWorkers(cfg, model_path(TINY), retrievers, tokenizer, [{"num_cpus": 1}] * 2, "test")
    questions = [f"who wrote the novel number {i}?" for i in range(12)]
    prompts = [chat_prompt_ids(tokenizer, *solver_messages(q)) for q in questions]
    rollout = cfg.rollout
    try:
        t0 = time.perf_counter()
        first = workers.run_episodes(prompts, rollout, "answer", 3, None)
        seconds = time.perf_counter() - t0
        victim = workers.workers[1]
        killed_at: list[float] = []

        def kill() -> None:
            killed_at.append(time.perf_counter() - t1)
            ray.kill(victim)

        t1 = time.perf_counter()
        threading.Timer(seconds / 4, kill).start()
        again = workers.run_episodes(prompts, rollout, "answer", 3, None)
        took = time.perf_counter() - t1
    finally:
        workers.close()
        for actor in retrievers.values():
            ray.kill(actor)
    assert killed_at and killed_at[0] < took  # it died while the round was being played
    assert workers.restarts == 1 and workers.episodes_rerun == 6  # the second half was played again
    assert [t.response_ids for t in again] == [t.response_ids for t in first]  # same seeds, same episodes
    assert [t.retrieved for t in again] == [t.retrieved for t in first]


def kill_when_logged(run: Path, step: int, prefix: str) -> threading.Thread:
    """Kill the named actor (searchplay-<prefix>...) once `step`'s metrics line is written."""

    def watch() -> None:
        while not (run / "metrics.jsonl").exists() or len(metrics(run)) < step:
            time.sleep(0.05)
        found = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
        ray.kill(ray.get_actor(found[0]["name"], namespace=found[0]["namespace"]))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_training_goes_on_when_a_rollout_worker_dies(local_ray, tmp_path: Path) -> None:
    run = tmp_path / "run"
    killer = kill_when_logged(run, 1, "searchplay-rollout-0-")
    summary = train(ray_tiny("trainer.steps=3", "game.verifier=policy"), run)  # the verifier's generate calls too
    killer.join(timeout=5)
    assert summary.steps == 3
    rows = metrics(run)
    assert [m["step"] for m in rows] == [1, 2, 3]
    assert rows[-1]["ray/rollout_restarts"] == 1 and rows[-1]["ray/episodes_rerun"] > 0
    assert rows[0]["ray/rollout_restarts"] == 0
    assert all("verify/pass_rate" in m for m in rows)


@pytest.mark.parametrize(("route", "sharding"), [("broadcast", "auto"), ("ipc", "auto"), ("ipc", "none")])
def test_weights_reach_every_worker_and_a_replacement_by_each_route(local_ray, tmp_path: Path, route: str, sharding: str) -> None:
    """trainer.weight_sync = broadcast over gloo (the route NCCL takes on GPUs), and ipc with bytes (CUDA IPC handles on
    GPUs), from a sharded learner group (ipc also from full copies: each rank pushes its own). A worker killed after
    step 2's sync is replaced during step 3 and must get step 2's weights (broadcast: in a group of its own; the
    next sync forms the group of all workers again)."""
    run = tmp_path / "run"
    killer = kill_when_logged(run, 2, "searchplay-rollout-1-")
    summary = train(ray_tiny("trainer.steps=4", f"trainer.weight_sync={route}", f"learner.sharding={sharding}"), run)
    killer.join(timeout=5)
    assert summary.steps == 4
    rows = metrics(run)
    assert rows[-1]["ray/rollout_restarts"] == 1 and rows[-1]["ray/episodes_rerun"] > 0
    assert all(m["sync/weight_mib"] > 1 and m["timing/weight_sync_s"] > 0 for m in rows)
    # lr 1e-3 moves the tiny model far between steps: every gap this small means every worker, the replacement
    # too, generated with the weights the learners had just made
    assert all(m["solver_update/logprob_gap_max"] < 1e-4 for m in rows[1:])


class GpuProbe:
    """A test actor that reports the GPU Ray gave it (Ray's GPUs here are bookkeeping: this machine has none)."""

    def gpu(self) -> list[str]:
        return [str(g) for g in ray.get_gpu_ids()]


def test_on_gpus_rank_i_and_rollout_worker_i_share_a_gpu_and_ranks_never_do(local_ray) -> None:
    cfg = tiny("trainer.learner_workers=3", "trainer.rollout_workers=3", "trainer.gpus_per_worker=0.5")
    rollout, learner, group = placement(cfg, on_gpu=True)
    probe = ray.remote(GpuProbe)
    try:
        rollout_gpus = ray.get([probe.options(**o).remote().gpu.remote() for o in rollout])
        learner_gpus = ray.get([probe.options(**o).remote().gpu.remote() for o in learner])
    finally:
        remove_placement_group(group)
    assert rollout_gpus == learner_gpus  # rank i beside worker i (actors packed in creation order would differ)
    assert len({tuple(g) for g in learner_gpus}) == 3 and all(len(g) == 1 for g in learner_gpus)
    with pytest.raises(ConfigError, match=r"need 5 GPUs; the Ray cluster has 4"):
        placement(tiny("trainer.learner_workers=5", "trainer.rollout_workers=5", "trainer.gpus_per_worker=0.5"), on_gpu=True)


@pytest.mark.heavy
def test_a_dead_learner_worker_stops_the_step_cleanly_and_the_run_resumes_in_ray_mode(local_ray, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = ray_tiny("trainer.steps=3", "trainer.save_every=1")  # 2 learner ranks: sharded, as by default
    killer = kill_when_logged(run, 2, "searchplay-learner-1-")  # during step 2's save (the ranks save together) or step 3
    with pytest.raises(TrainError, match="--resume"):
        train(cfg, run)
    killer.join(timeout=5)
    assert [m["step"] for m in metrics(run)] == [1, 2]  # what was logged before the failure is intact
    assert (run / "checkpoints/step-1/model/model.safetensors").is_file()
    first_line = (run / "metrics.jsonl").read_text().splitlines()[0]
    summary = train(cfg, run, resume=True)
    assert summary.steps == 3
    rows = metrics(run)
    assert [m["step"] for m in rows] == [1, 2, 3]  # a step without a checkpoint is played again
    assert (run / "metrics.jsonl").read_text().splitlines()[0] == first_line
    assert rows[-1]["solver_update/logprob_gap_max"] < 1e-4  # resumed workers sample from the resumed weights
    assert (run / "checkpoints/step-3/model/model.safetensors").is_file()


def test_train_joins_an_existing_cluster_with_ray_address(tmp_path: Path) -> None:
    """`ray start --head` as a user would run it, then `searchplay train --ray-address HOST:PORT`."""
    port = group_address()[1]
    # token authentication, as a cluster of several machines should run it (README): the head makes the token
    # (~/.ray/auth_token) and every process that joins reads it; Ray 2.60 asks for it only when told to
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=5", "--include-dashboard=false", "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        run = tmp_path / "run"
        cmd = [sys.executable, "-m", "searchplay", "train", "-c", "configs/tiny-test.toml", "--run-dir", str(run),
               "--ray-address", f"127.0.0.1:{port}", "--set", "trainer.eval_every=0", "--steps", "1"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Started a local Ray instance" not in out.stderr  # it joined the head started above
        assert re.search(rf"Connecting to existing Ray cluster at address: [0-9.]+:{port}", out.stderr)
        assert [m["step"] for m in metrics(run)] == [1] and (run / "checkpoints/step-1").is_dir()
        assert tomllib.loads((run / "config.toml").read_text())["trainer"]["backend"] == "ray"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head stops the processes it started
        head.wait(timeout=60)
    time.sleep(2)
    left = subprocess.run(["pgrep", "-f", f"gcs-address=[0-9.]+:{port}"], capture_output=True, text=True).stdout
    assert not left, f"the head left processes behind: {left}"


def test_ray_address_must_name_a_cluster(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", "configs/tiny-test.toml", "--run-dir", str(tmp_path / "r"),
           "--ray-address", " "]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "--ray-address: give 'auto' or HOST:PORT" in out.stderr
    assert not (tmp_path / "r").exists()
