"""The extractive game (game.extractive): span seeds with their passage, the proposer reading it, and a
solver reward paid only for answers copied from what the solver retrieved (issue: learning v3)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from searchplay.assets import asset_file
from searchplay.assets.names import resolve_config
from searchplay.assets.spans import MAX_SPAN_WORDS, capitalised_runs, span_candidates
from searchplay.config import Config, ConfigError, validate
from searchplay.game.pool import QuestionPool
from searchplay.game.rewards import solver_reward
from searchplay.game.seeds import SeedError, SeedSampler, load_seeds
from searchplay.game.selfplay import play_round
from searchplay.judge.match import normalize_answer
from searchplay.search.corpus import read_passages
from searchplay.train.components import build_components
from tests.test_game_play import PromptLog, tiny_config

PASSAGE = "Paris is the capital of France. The Eiffel Tower in Paris was completed in 1889."


def test_extractive_reward_pays_only_spans_of_retrieved_passages() -> None:
    def reward(answer: str | None, retrieved: list[str]) -> float:
        return solver_reward(answer, ["Paris"], "extractive", retrieved=retrieved)

    assert reward("Paris", [PASSAGE]) == 1.0  # exact, and copied from a retrieved passage
    assert reward("Paris", []) == 0.0  # exact but never searched: a guess from memory earns nothing
    assert reward("Paris", ["Lyon is a city in France."]) == 0.0  # nor does an answer no retrieved passage holds
    assert reward("the Eiffel Tower in Paris", [PASSAGE]) == pytest.approx(0.5 / 4)  # a short span holding it: partial
    assert reward("the Eiffel Tower", [PASSAGE]) == 0.0  # a span, but not the answer
    assert reward(None, [PASSAGE]) == 0.0
    assert solver_reward("Paris", ["Paris"], "em_partial") == 1.0  # the other kinds do not look at retrieval


def test_span_candidates_are_names_and_years_once_in_the_passage_apart_from_the_title() -> None:
    text = (
        "The Battle of Hastings was fought in 1066. In England, William of Normandy won. However, he later met "
        "Pope Gregory VII and Gideon J. Pillow's men in Normandy."
    )
    assert capitalised_runs(text) == ["Battle of Hastings", "England", "William of Normandy", "Pope Gregory VII",
                                      "Gideon J. Pillow", "Normandy"]  # fmt: skip
    spans = span_candidates("Battle of Hastings", text)
    assert "Battle of Hastings" not in spans and "1066" in spans and "Pope Gregory VII" in spans
    assert "However" not in spans and "In England" not in spans  # a sentence's first word alone is no name
    assert "Normandy" not in spans  # twice in the passage ("William of Normandy", "in Normandy"): ambiguous


def test_bundled_span_seeds_are_short_spans_of_their_own_passage(cfg: Config) -> None:
    passages = {p.id: p for p in read_passages(asset_file("wiki", cfg))}
    seeds = [json.loads(line) for line in asset_file("wiki-span-seeds", cfg).read_text().splitlines()]
    assert len(seeds) == cfg.assets.seed_count and len({s["doc_id"] for s in seeds}) == len(seeds)
    for s in seeds:
        p = passages[s["doc_id"]]
        assert s["passage"] == p.text and s["title"] == p.title
        assert 1 <= len(s["answer"].split()) <= MAX_SPAN_WORDS
        assert f" {normalize_answer(p.text)} ".count(f" {normalize_answer(s['answer'])} ") == 1


def test_extractive_game_needs_its_reward_and_a_reading_verifier() -> None:
    cfg = Config()
    cfg.game.extractive = True
    with pytest.raises(ConfigError, match="solver_reward = 'extractive'"):
        validate(cfg)
    cfg.game.solver_reward, cfg.game.verifier = "extractive", "reading"
    validate(cfg)
    assert resolve_config(cfg).game.seeds == str(asset_file("wiki-span-seeds"))  # 'bundled' -> the span seeds


def test_extractive_round_shows_the_proposer_its_passage(tiny_engine, bundled_bm25, tmp_path: Path) -> None:
    cfg = tiny_config(verifier="retrievable", solver_reward="extractive", extractive=True, min_searches=0)
    validate(cfg)
    seeds = load_seeds(str(asset_file("wiki-span-seeds")))
    asked: list[str] = []
    result = play_round(
        PromptLog(tiny_engine, asked), bundled_bm25, SeedSampler(seeds, 0), QuestionPool(), cfg, 1, random.Random(0)
    )
    proposer_prompts = asked[: len(result.proposer)]
    for traj, text in zip(result.proposer, proposer_prompts):
        seed = next(s for s in seeds if s.answer == traj.meta["answer"])
        assert f"Passage ({seed.extra['title']}): {seed.extra['passage']}" in text and f"Answer: {seed.answer}" in text
    for traj in result.solver:  # every solver reward is 0 unless its answer was copied from what it retrieved
        if traj.meta["reward"] > 0:
            assert any(normalize_answer(traj.final or "") in normalize_answer(h["text"]) for h in traj.retrieved)
    bare = tmp_path / "seeds.jsonl"
    bare.write_text(json.dumps({"answer": "Paris", "hops": 1}) + "\n")
    cfg.game.seeds = str(bare)
    with pytest.raises(SeedError, match="'Paris' has no 'passage'"):
        build_components(cfg, None, tiny_engine, bundled_bm25)  # refused before any round
