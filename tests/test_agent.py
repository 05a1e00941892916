"""Agent episodes on the tiny random Llama over the real bundled BM25 index."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from searchplay.agent.protocol import Action, count_tags, find_tags, last_tag, parse_action
from searchplay.agent.rollout import chat_prompt_ids, rollout_metrics, run_episodes
from searchplay.agent.trajectory import Trajectory
from searchplay.config import RolloutConfig
from searchplay.game.prompts import solver_messages
from searchplay.search.base import Hit, SearchError

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "Which planet is the largest?"]


# --- the tag parser -----------------------------------------------------------------


def test_parser_rules() -> None:
    assert parse_action("<think>hm</think><search> Paris </search>", "answer") == Action("search", "Paris")
    assert parse_action("<answer>Paris</answer><search>x</search>", "answer") == Action("answer", "Paris")
    assert parse_action("<search>a <search>b</search>", "answer") == Action("search", "b")  # nearest opening
    assert parse_action("<search>unclosed", "answer") == Action("none")
    assert parse_action("<search>  </search>", "answer") == Action("none")  # empty content is no action
    assert parse_action("<question>Who?</question>", "answer") == Action("none")  # not this role's final tag
    assert parse_action("<question>Who?</question>", "question") == Action("question", "Who?")
    assert last_tag("<answer>a</answer> then <answer>b</answer>", "answer") == "b"
    assert count_tags("<answer>a</answer><answer>b</answer><answer>c", "answer") == 2
    assert last_tag("no tags", "answer") is None


tag_soup = st.lists(
    st.sampled_from(
        [
            "<search>",
            "</search>",
            "<answer>",
            "</answer>",
            "<think>",
            "</think>",
            "<question>",
            "</question>",
            "x",
            " ",
            "\n",
            "<",
            ">",
            "/",
            "Paris",
        ]
    ),
    max_size=40,
)


@given(tag_soup)
@settings(max_examples=300, deadline=None)
def test_parser_never_crashes_and_contents_hold_no_own_opening_tag(parts: list[str]) -> None:
    text = "".join(parts)
    for final in ("answer", "question"):
        action = parse_action(text, final)  # type: ignore[arg-type]
        assert action.kind in ("search", final, "none")
        if action.kind != "none":
            assert action.content and f"<{action.kind}>" not in action.content
            assert f"<{action.kind}>" in text and f"</{action.kind}>" in text
    for end, content in find_tags(text, "search"):
        assert text[:end].endswith("</search>") and "<search>" not in content


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_parser_total_on_arbitrary_text(text: str) -> None:
    parse_action(text, "answer")
    last_tag(text, "answer")


# --- episodes ---------------------------------------------------------------------


def solver_prompts(engine) -> list[list[int]]:
    return [chat_prompt_ids(engine.tokenizer, *solver_messages(q)) for q in QUESTIONS]


def check_masks(traj: Trajectory, engine) -> None:
    assert len(traj.response_ids) == len(traj.loss_mask) == len(traj.logprobs)
    masked_text = engine.tokenizer.decode([t for t, m in zip(traj.response_ids, traj.loss_mask) if m == 0])
    trained_text = engine.tokenizer.decode([t for t, m in zip(traj.response_ids, traj.loss_mask) if m == 1])
    assert "<information>" not in trained_text
    for turn in traj.turns:
        if turn.hits:
            assert turn.hits[0]["title"] in masked_text  # retrieved text is in the masked part
    assert all(lp == 0.0 for lp, m in zip(traj.logprobs, traj.loss_mask) if m == 0)


def test_guided_episodes_search_then_answer_within_budgets(tiny_engine, bundled_bm25) -> None:
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=8, max_total_tokens=4096, seed=1)
    trajs = run_episodes(tiny_engine, bundled_bm25, solver_prompts(tiny_engine), cfg, "answer", topk=2)
    for traj in trajs:
        assert len(traj.turns) <= 3 and all(t.generated_tokens <= 8 for t in traj.turns)
        assert traj.stop_reason in ("answer", "max_turns")
        check_masks(traj, tiny_engine)
        text = tiny_engine.tokenizer.decode(traj.response_ids)
        assert text.startswith("<search>")  # inserted by the loop, masked
        first = tiny_engine.tokenizer.encode("<search>", add_special_tokens=False)
        assert traj.response_ids[: len(first)] == first and traj.loss_mask[: len(first)] == [0] * len(first)
    searched = [t for t in trajs if t.search_queries]
    assert searched and all(len(t.turns[0].hits) == 2 for t in searched if t.turns[0].action == "search")
    assert any(t.stop_reason == "answer" and t.final for t in trajs)


def test_every_stop_reason_is_reachable(tiny_engine, bundled_bm25) -> None:
    ps = solver_prompts(tiny_engine)
    guided = RolloutConfig(scaffold="guided", max_turns=1, max_new_tokens=6, seed=2)
    assert {t.stop_reason for t in run_episodes(tiny_engine, bundled_bm25, ps, guided, "answer")} <= {"answer", "max_turns"}
    assert "answer" in {t.stop_reason for t in run_episodes(tiny_engine, bundled_bm25, ps, guided, "answer")}
    assert "question" in {t.stop_reason for t in run_episodes(tiny_engine, bundled_bm25, ps, guided, "question")}
    free = RolloutConfig(scaffold="free", max_turns=2, max_new_tokens=6, seed=2)
    assert {t.stop_reason for t in run_episodes(tiny_engine, bundled_bm25, ps, free, "answer")} == {"max_turns"}
    short = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=8, max_total_tokens=len(ps[0]) + 10, seed=2)
    trajs = run_episodes(tiny_engine, bundled_bm25, ps[:1], short, "answer")
    assert trajs[0].stop_reason == "length" and trajs[0].total_tokens <= len(ps[0]) + 10


class FlakyRetriever:
    """The real index behind a failure switch (what a retrieval server going down looks like).

    From call `fail_from` on, every search fails; with `only_first`, only the first query of
    that call (and any later batch containing it) fails.
    """

    def __init__(self, inner, fail_from: int, only_first: bool = False) -> None:
        self.inner, self.fail_from, self.only_first = inner, fail_from, only_first
        self.calls, self.poisoned = 0, None

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        self.calls += 1
        if self.calls == self.fail_from:
            self.poisoned = queries[0]
        failing = self.calls >= self.fail_from and (not self.only_first or self.poisoned in queries)
        if failing:
            raise SearchError("retrieval server unavailable")
        return self.inner.search(queries, k)


def test_retriever_failure_ends_only_affected_episodes(tiny_engine, bundled_bm25) -> None:
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=6, seed=4)
    ps = solver_prompts(tiny_engine)
    trajs = run_episodes(tiny_engine, FlakyRetriever(bundled_bm25, fail_from=2), ps, cfg, "answer")
    assert {t.stop_reason for t in trajs} == {"error"}  # second turn: every search fails
    assert all(t.turns[-1].error and len(t.turns) == 2 for t in trajs)
    assert rollout_metrics(trajs)["rollout/retriever_errors"] == 3
    partial = run_episodes(tiny_engine, FlakyRetriever(bundled_bm25, fail_from=2, only_first=True), ps, cfg, "answer")
    reasons = [t.stop_reason for t in partial]
    assert reasons[0] == "error" and "error" not in reasons[1:]


def test_search_errors_can_be_shown_to_the_model_and_are_still_counted(tiny_engine, bundled_bm25) -> None:
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=6, seed=4, on_search_error="show")
    trajs = run_episodes(tiny_engine, FlakyRetriever(bundled_bm25, fail_from=2), solver_prompts(tiny_engine), cfg, "answer")
    failed = [t for t in trajs if t.search_errors]
    assert failed and all(t.stop_reason != "error" and len(t.turns) == 3 for t in failed)  # the episode went on
    for t in failed:
        masked = tiny_engine.tokenizer.decode([i for i, m in zip(t.response_ids, t.loss_mask) if m == 0])
        assert "<information>Search failed: retrieval server unavailable</information>" in masked
    assert rollout_metrics(trajs)["rollout/retriever_errors"] == sum(t.search_errors for t in trajs) > 0


def test_a_turn_without_action_can_end_the_episode(tiny_engine, bundled_bm25) -> None:
    free = RolloutConfig(scaffold="free", max_turns=3, max_new_tokens=6, seed=2, on_no_action="end")
    trajs = run_episodes(tiny_engine, bundled_bm25, solver_prompts(tiny_engine), free, "answer")
    assert {t.stop_reason for t in trajs} == {"no_action"} and all(len(t.turns) == 1 for t in trajs)  # random text: no tags
    hinted = run_episodes(tiny_engine, bundled_bm25, solver_prompts(tiny_engine), replace(free, on_no_action="hint"), "answer")
    assert all(len(t.turns) == 3 and t.stop_reason == "max_turns" for t in hinted)
    assert rollout_metrics(trajs)["rollout/stop_no_action"] == 1.0


def test_training_tensors_rebuilt_from_a_trajectory_match_the_engine(tiny_engine, bundled_bm25) -> None:
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=8, temperature=1.0, seed=5)
    for traj in run_episodes(tiny_engine, bundled_bm25, solver_prompts(tiny_engine), cfg, "answer"):
        restored = Trajectory.from_dict(json.loads(json.dumps(traj.to_dict())))
        assert restored.response_ids == traj.response_ids and restored.loss_mask == traj.loss_mask
        ids = torch.tensor([restored.prompt_ids + restored.response_ids])
        mask = torch.tensor(restored.loss_mask, dtype=torch.bool)
        with torch.no_grad():
            logits = tiny_engine.model(ids).logits[0, len(restored.prompt_ids) - 1 : -1].float()
        recomputed = torch.log_softmax(logits, -1).gather(-1, ids[0, len(restored.prompt_ids) :, None]).squeeze(-1)
        assert mask.sum() == traj.generated_tokens > 0
        assert torch.allclose(recomputed[mask], torch.tensor(restored.logprobs)[mask], atol=1e-4)


def test_seeded_episodes_are_reproducible(tiny_engine, bundled_bm25) -> None:
    cfg = RolloutConfig(scaffold="guided", max_turns=2, max_new_tokens=6, seed=9)
    a = run_episodes(tiny_engine, bundled_bm25, solver_prompts(tiny_engine), cfg)
    b = run_episodes(tiny_engine, bundled_bm25, solver_prompts(tiny_engine), cfg)
    assert [t.response_ids for t in a] == [t.response_ids for t in b]


@pytest.mark.slow
def test_searchplay_ask_with_the_bundled_model() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "searchplay",
            "ask",
            "What is the capital of France?",
            "--json",
            "--set",
            "rollout.max_new_tokens=16",
            "--set",
            "game.solver_max_turns=3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    traj = json.loads(out.stdout.strip().splitlines()[-1])
    assert traj["stop_reason"] in ("answer", "max_turns", "length")
    assert traj["turns"] and traj["turns"][0]["hits"] and traj["seconds"] > 0
    assert "paris" in json.dumps(traj["turns"]).lower()  # the bundled index finds Paris for this question
