"""Verification, the judge over a real serve-model server, and whole rounds on the tiny model."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from searchplay.assets.names import BUNDLED, seeds_path
from searchplay.config import Config, ConfigError, GameConfig, JudgeConfig, RolloutConfig, ServerConfig, load_config, validate
from searchplay.game.extract import REJECTION_REASONS, VERIFY_ERROR, VERIFY_FAILED
from searchplay.game.pool import QuestionPool
from searchplay.game.seeds import Seed, SeedSampler, load_seeds
from searchplay.game.selfplay import play_round
from searchplay.game.verify import verify_questions
from searchplay.judge.llm_judge import LLMJudge
from searchplay.llm.openai_server import create_app
from searchplay.train.components import build_components
from tests.servers import free_port, running_server
from tests.test_game_rules import GOOD_Q, pool_question, proposer_traj

VERIFY_PROMPT = "You answer questions from documents."  # the verifier's system prompt (game/verify.py)


@pytest.fixture(scope="module")
def judge_url(tiny_engine):
    with running_server(
        create_app(
            tiny_engine,
            "tiny-judge",
            ServerConfig(max_new_tokens=64, max_prompt_tokens=2048, max_body_bytes=65536, max_waiting=2),
        )
    ) as url:
        yield url + "/v1"


def judge_cfg(url: str, tmp_path: Path, **kw) -> JudgeConfig:
    return JudgeConfig(base_url=url, model="tiny-judge", cache=str(tmp_path / "cache.sqlite"), max_tokens=16, **kw)


def test_serve_model_speaks_openai_and_rejects_bad_requests(judge_url: str) -> None:
    ok = httpx.post(
        f"{judge_url}/chat/completions",
        json={"model": "tiny-judge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0},
    )
    body = ok.json()
    assert ok.status_code == 200 and body["object"] == "chat.completion"
    assert isinstance(body["choices"][0]["message"]["content"], str) and body["usage"]["completion_tokens"] <= 5
    assert httpx.get(f"{judge_url}/models").json()["data"][0]["id"] == "tiny-judge"
    for payload, param in [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "x", "content": "hi"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ]:
        r = httpx.post(f"{judge_url}/chat/completions", json=payload)
        assert 400 <= r.status_code < 500 and r.json()["error"]["param"] == param
    r = httpx.post(f"{judge_url}/chat/completions", content=b"{oops")
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "status", "param", "says"),
    [
        ({"stream": True}, 400, "stream", "streaming is not supported"),
        ({"n": 2}, 400, "n", "only n=1"),
        ({"logprobs": True}, 400, "logprobs", "only logprobs=False"),
        ({"tools": []}, 400, "tools", "unsupported field"),
        ({"messages": [{"role": "user", "content": "word " * 3000}]}, 413, "messages", "the limit is 2048"),
        ({"stream": False, "n": 1, "user": "me", "presence_penalty": 0}, 200, None, ""),
    ],
)
def test_serve_model_refuses_what_it_does_not_implement_and_bounds_the_work(
    judge_url: str, payload: dict, status: int, param: str | None, says: str
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **payload}
    r = httpx.post(f"{judge_url}/chat/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["error"]["param"] == param and says in r.json()["error"]["message"]


def test_hostile_bodies_get_4xx_json_and_the_server_lives_on(judge_url: str) -> None:
    big = httpx.post(f"{judge_url}/chat/completions", content=b"x" * 200_000, headers={"content-type": "application/json"})
    assert big.status_code == 413 and "the limit is 65536" in big.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(100):
            yield b"[" * 1000

    streamed = httpx.post(f"{judge_url}/chat/completions", content=chunks())
    assert streamed.status_code == 413
    deep = httpx.post(f"{judge_url}/chat/completions", content=b"[" * 60_000 + b"]" * 60_000)
    assert deep.status_code in (400, 413)
    nested = httpx.post(f"{judge_url}/chat/completions", content=b"[" * 20_000 + b"]" * 20_000)
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]["message"]
    huge_number = httpx.post(f"{judge_url}/chat/completions", content=b'{"seed": ' + b"9" * 10_000 + b"}")
    assert huge_number.status_code == 400 and "malformed JSON" in huge_number.json()["error"]["message"]
    assert httpx.get(f"{judge_url}/models").status_code == 200  # still serving


def verification_inputs() -> tuple[list, list]:
    trajs = [proposer_traj(GOOD_Q, ["Mona Lisa museum", "Louvre city"]), proposer_traj(GOOD_Q, ["Seine cities", "museums"])]
    for i, t in enumerate(trajs):
        for turn in t.turns:
            for h in turn.hits:
                h["id"] = f"{h['id']}-{i}"
    return [(GOOD_Q, Seed("Paris", 2), trajs[0]), (GOOD_Q, Seed("Lyon", 2), trajs[1])], trajs


def test_policy_verifier_on_the_tiny_model(tiny_engine) -> None:
    questions, batch = verification_inputs()
    results = verify_questions(questions, batch, "policy", 1, random.Random(0), engine=tiny_engine, guided=True)
    assert len(results) == 2
    for r in results:
        assert r.verdict in ("exact_match", "mismatch", "verifier_error")
        assert r.passed == (r.verdict == "exact_match")
        assert len(r.noisy_ids) == 2 and not set(r.noisy_ids) & set(r.evidence_ids)  # the other trajectory's whole block


def test_judge_verifier_counts_calls_and_uses_the_cache(judge_url: str, tmp_path: Path) -> None:
    judge = LLMJudge(judge_cfg(judge_url, tmp_path))
    questions, batch = verification_inputs()
    first = verify_questions(questions, batch, "judge", 0, random.Random(0), judge=judge)
    calls = judge.calls
    assert calls >= 2 and judge.errors <= calls
    for r in first:
        assert r.verdict in ("exact_match", "judge_yes", "judge_no", "judge_unknown", "verifier_error")
        assert not r.passed or r.verdict in ("exact_match", "judge_yes")
    readable = sum(r.answer is not None for r in first)  # the random judge rarely writes an <answer> tag
    again = verify_questions(questions, batch, "judge", 0, random.Random(0), judge=judge)
    assert judge.cache_hits == readable  # readable replies come from the sqlite cache; unreadable ones are asked again
    assert [r.passed for r in again] == [r.passed for r in first]
    fresh = LLMJudge(judge_cfg(judge_url, tmp_path))  # a new process would reuse the same cache file
    fresh.complete("hello")
    assert fresh.cache_hits + fresh.calls == 1


def test_judge_protocol_strict_verdicts_retries_and_misconfiguration(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from searchplay.judge.llm_judge import JudgeConfigError

    script: list[tuple[int, str]] = []
    seen: list[str] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> JSONResponse:  # a judge endpoint that answers from a script, one reply per request
        seen.append(body["messages"][0]["content"])
        status, text = script.pop(0)
        content = {"choices": [{"message": {"role": "assistant", "content": text}}]} if status == 200 else {"error": text}
        return JSONResponse(content, status_code=status)

    with running_server(app, health_path="/docs") as url:
        judge = LLMJudge(judge_cfg(url + "/v1", tmp_path, retries=2, timeout_s=5))
        for reply, verdict in [("Yes", True), (" no. ", False), ("no idea, yes", None), ("yes, because", None)]:
            script.append((200, reply))
            assert judge.equivalent(f"q {reply}", ["Paris"], "x").value is verdict, reply
        assert judge.errors == 2  # the two replies that are not a bare verdict
        script.append((200, "yes"))
        assert judge.equivalent("q yes, because", ["Paris"], "x").value is True  # an unreadable reply was not cached
        assert judge.equivalent("q Yes", ["Paris"], "x").value is True and judge.cache_hits == 1  # a readable one was
        script[:] = [(503, "busy"), (200, "no")]
        assert judge.equivalent("retried", ["Paris"], "x").value is False and len(script) == 0  # 5xx is retried
        calls = judge.calls
        script[:] = [(400, "prompt too long"), (200, "yes")]
        assert judge.equivalent("too long", ["Paris"], "x").value is None and judge.calls == calls + 1  # 4xx: not retried
        script[:] = [(401, "invalid API key sk-...")]
        with pytest.raises(JudgeConfigError, match=r"HTTP 401.*invalid API key"):
            judge.equivalent("any", ["Paris"], "x")


def test_stopped_judge_rejects_and_counts_errors(tmp_path: Path) -> None:
    judge = LLMJudge(judge_cfg(f"http://127.0.0.1:{free_port()}/v1", tmp_path, retries=1, timeout_s=1))
    questions, batch = verification_inputs()
    results = verify_questions(questions, batch, "judge", 0, random.Random(0), judge=judge)
    assert all(not r.passed and r.verdict == "verifier_error" for r in results)
    assert judge.errors == 2 and judge.calls == 4  # two questions, two attempts each
    assert judge.equivalent("q", ["Paris"], "Lutetia").value is None


def tiny_config(**game) -> Config:
    cfg = load_config(None, ["model.path=tiny-random", "model.dtype=float32"])
    cfg.rollout = RolloutConfig(scaffold="guided", max_new_tokens=8, max_total_tokens=1536, seed=0)
    cfg.game = GameConfig(
        **{
            "batch_size": 3,
            "proposer_n": 2,
            "solver_n": 2,
            "proposer_max_turns": 3,
            "solver_max_turns": 2,
            "min_question_words": 1,
            "reject_cut_off": False,  # the random model never closes a tag within 8 tokens
            "reject_non_questions": False,  # nor ends a question with "?"
            **game,
        }
    )
    return cfg


def test_play_round_shapes_and_metrics(tiny_engine, bundled_bm25, tmp_path: Path) -> None:
    cfg = tiny_config(verifier="off")  # the random model never passes verification; keep the questions
    pool = QuestionPool(tmp_path / "pool.jsonl")
    sampler = SeedSampler(load_seeds(seeds_path(BUNDLED)), 0)
    result = play_round(tiny_engine, bundled_bm25, sampler, pool, cfg, 1, random.Random(0))
    g = cfg.game
    assert len(result.proposer) == len(result.proposer_rewards) == len(result.proposer_groups) == g.batch_size * g.proposer_n
    assert result.proposer_groups == [0, 0, 1, 1, 2, 2]
    kept = [t for t in result.tasks if t.source == "new"]
    assert len(result.solver) == len(result.solver_rewards) == len(result.tasks) * g.solver_n
    assert result.solver_groups == [k for k in range(len(result.tasks)) for _ in range(g.solver_n)]
    assert len(pool) == len(kept) == result.metrics["solver/questions"] - result.metrics["pool/reused"]
    m = result.metrics
    assert "verify/pass_rate" not in result.metrics  # verifier off: no made-up pass rate
    for key in (
        "proposer/valid_rate",
        "proposer/reward_mean",
        "proposer/reward_std",
        "solver/acc",
        "solver/success_rate_0",
        "solver/success_rate_mid",
        "solver/success_rate_1",
        "proposer/searches_mean",
        "solver/generated_tokens_mean",
        "timing/proposer_s",
        "timing/verify_s",
        "timing/solver_s",
        "proposer/reject_no_question_tag",
        "pool/reused",
    ):
        assert key in m
    assert m["proposer/valid_rate"] == len(kept) / 6
    rejected = sum(v for k, v in m.items() if k.startswith("proposer/reject_"))
    assert rejected + len(kept) == 6
    assert all(
        r == cfg.game.format_penalty
        for r, t in zip(result.proposer_rewards, result.proposer)
        if t.meta["id"] not in {k.pool_id for k in kept}
    )
    assert result.proposer_excluded == [False] * 6 and result.solver_excluded == [False] * len(result.solver)


def test_play_round_with_policy_verification_rejects_and_reuses(tiny_engine, bundled_bm25, tmp_path: Path) -> None:
    cfg = tiny_config(verifier="policy", failure_handling="reuse", min_searches=0)
    pool = QuestionPool(tmp_path / "pool.jsonl")
    for k in range(3):  # questions from an earlier round, solved by nobody yet
        pool.add(replace(pool_question(k, 0.0), id=f"old-{k}", question=f"Which city is the capital of country {k}?"))
    result = play_round(
        tiny_engine, bundled_bm25, SeedSampler(load_seeds(seeds_path(BUNDLED)), 1), pool, cfg, 1, random.Random(0)
    )
    m = result.metrics
    verdicts = [t.meta["verification"]["verdict"] for t in result.proposer if "verification" in t.meta]
    assert len(verdicts) == m["verify/candidates"] > 0  # questions reached the policy verifier ...
    assert m["proposer/reject_verification_failed"] + m["proposer/reject_verifier_error"] > 0  # ... which rejected some
    for t in result.proposer:  # each trajectory says what it asked, why it was dropped, what the verifier read
        assert t.meta["rejection"] is None or t.meta["rejection"] in REJECTION_REASONS
        if "verification" in t.meta:
            v, own = t.meta["verification"], {d["id"] for d in t.retrieved}
            failed = VERIFY_ERROR if v["verdict"] in ("verifier_error", "judge_unknown") else VERIFY_FAILED
            assert t.meta["rejection"] == (None if v["passed"] else failed)  # passed the rules; verification decides
            assert t.meta["question"] and v["evidence_ids"] and len(v["noisy_titles"]) == len(v["noisy_ids"])
            assert set(v["evidence_ids"]) <= own and not set(v["noisy_ids"]) & set(v["evidence_ids"])
    rejected = 6 - sum(t.source == "new" for t in result.tasks)
    reused = [t for t in result.tasks if t.source == "reuse"]
    assert m["pool/reused"] == len(reused) == min(rejected, 3) > 0  # their slots went to pool questions
    assert {t.pool_id for t in reused} <= {"old-0", "old-1", "old-2"}
    assert all(pool.questions[t.pool_id].attempts == 2 for t in reused)  # and the attempts were recorded
    assert len(result.solver) == len(result.tasks) * cfg.game.solver_n


class PromptLog:
    """A real engine whose prompts are written down as text (which model was asked what)."""

    def __init__(self, engine: Any, texts: list[str]):
        self.engine, self.texts = engine, texts

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, prompts: list[list[int]], params: Any) -> Any:
        self.texts.extend(self.engine.tokenizer.decode(p) for p in prompts)
        return self.engine.generate(prompts, params)


def test_a_frozen_referee_verifies_instead_of_the_policy(tiny_engine, bundled_bm25) -> None:
    cfg = tiny_config(verifier="policy", min_searches=0, verifier_model="tiny-random")
    validate(cfg)
    asked_policy: list[str] = []
    asked_referee: list[str] = []
    parts = build_components(cfg, None, PromptLog(tiny_engine, asked_policy), bundled_bm25)
    assert parts.referee is not None and parts.referee is not tiny_engine  # its own frozen model
    parts.referee = PromptLog(parts.referee, asked_referee)
    result = parts.play(cfg, 1, random.Random(0))
    assert result.metrics["verify/candidates"] == len(asked_referee) > 0
    assert all(VERIFY_PROMPT in t for t in asked_referee)
    assert asked_policy and not any(VERIFY_PROMPT in t for t in asked_policy)  # the policy only proposed and solved
    cfg.game.verifier = "retrievable"  # which reads nothing
    with pytest.raises(ConfigError, match="read only by the policy and reading verifiers"):
        validate(cfg)


@pytest.mark.slow
def test_searchplay_play_with_the_bundled_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "searchplay",
        "play",
        "--rounds",
        "1",
        "--run-dir",
        str(run),
        "--set",
        "game.batch_size=2",
        "--set",
        "game.solver_n=2",
        "--set",
        "rollout.max_new_tokens=24",
        "--set",
        "game.proposer_max_turns=3",
        "--set",
        "game.solver_max_turns=3",
        "--set",
        "model.threads=2",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 1 and "proposer/valid_rate" in metrics[0]
    trajs = [json.loads(line) for line in (run / "trajectories" / "step-000001.jsonl").read_text().splitlines()]
    proposers = [t for t in trajs if t["meta"]["role"] == "proposer"]
    assert len(proposers) == 2 and all(t["turns"] and t["response_segments"] for t in proposers)
    assert (run / "config.toml").is_file()


def test_judge_predictions_calls_the_judge_only_for_inexact_answers(judge_url: str, tmp_path: Path) -> None:
    from searchplay.agent.trajectory import Trajectory
    from searchplay.eval.evaluate import Prediction, judge_accuracy, judge_predictions

    judge = LLMJudge(judge_cfg(judge_url, tmp_path))
    preds = [
        Prediction("a", "Capital of France?", ["Paris"], "Paris", 1.0, 1.0, 1.0, Trajectory([1])),
        Prediction("b", "Capital of France?", ["Paris"], None, 0.0, 0.0, 0.0, Trajectory([1])),
        Prediction("c", "Capital of France?", ["Paris"], "the city of light", 0.0, 0.0, 0.0, Trajectory([1])),
    ]
    verdicts = judge_predictions(judge, [p.to_dict() for p in preds])
    assert verdicts[:2] == [True, False] and 1 <= judge.calls <= 1 + judge.cfg.retries  # one answer needed the judge
    assert verdicts[2] in (True, False, None)  # the tiny random judge: whatever it says, or unknown if unreadable
    assert judge_accuracy(verdicts) == sum(v is True for v in verdicts) / 3
