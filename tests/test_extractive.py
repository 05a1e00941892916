"""The extractive game (game.extractive): span seeds with their passage, the proposer reading it, and a
solver reward paid only for answers copied from what the solver retrieved (issue: learning v3)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from searchplay.agent.trajectory import Trajectory, Turn
from searchplay.assets import asset_file
from searchplay.assets.names import resolve_config
from searchplay.assets.spans import MAX_SPAN_WORDS, capitalised_runs, span_candidates
from searchplay.config import Config, ConfigError, GameConfig, validate
from searchplay.game import extract as x
from searchplay.game.pool import QuestionPool
from searchplay.game.prompts import proposer_messages
from searchplay.game.rewards import solver_reward
from searchplay.game.seeds import Seed, SeedError, SeedSampler, load_seeds
from searchplay.game.selfplay import play_round
from searchplay.judge.match import normalize_answer
from searchplay.llm.base import Generation, SamplingParams
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


# --- the proposer chooses its own span (game.proposer_span = "own") ---------------------------------------------

OWN = GameConfig(proposer_span="own", min_question_words=3, min_searches=1)
SPAN_SEED = Seed("Paris", 1, ("City of Light",), {"passage": PASSAGE, "title": "Paris"})


def own_traj(written: str, final: str) -> Trajectory:
    """A proposer's trajectory after one search: `written` is its last turn as written, `final` the question content
    the rollout loop took from it."""
    search = Turn(text="", action="search", content="Eiffel Tower", hits=[{"id": "d1", "title": "Paris", "text": PASSAGE}])
    return Trajectory([1], turns=[search, Turn(text=written, action="question", content=final)], final=final,
                      stop_reason="question")  # fmt: skip


@pytest.mark.parametrize(
    ("written", "question", "answer", "rejection"),
    [
        ("<question>When was the Eiffel Tower completed? Answer: 1889</question>",
         "When was the Eiffel Tower completed?", "1889", None),
        ("<question>Answer: 1889. Question: When was the Eiffel Tower completed?</question>",
         "When was the Eiffel Tower completed?", "1889", None),  # the answer first, as the prompt asks
        ("<question>Answer: 1889\nQuestion: When was the Eiffel Tower completed?", "When was the Eiffel Tower completed?",
         "1889", None),
        ("<question>When was the Eiffel Tower completed?\nAnswer: \"1889\".", "When was the Eiffel Tower completed?",
         "1889", None),  # guided: the answer on the next line, cut off after it
        ("<question>When was the Eiffel Tower completed?</question>", "When was the Eiffel Tower completed?", None,
         x.NO_ANSWER_SPAN),
        ("<question>When was the Eiffel Tower completed? Answer: the</question>", "When was the Eiffel Tower completed?",
         None, x.NO_ANSWER_SPAN),  # nothing left once normalised
        ("<question>Which tower is in Paris? Answer: The Eiffel Tower in Paris was completed</question>",
         "Which tower is in Paris?", "The Eiffel Tower in Paris was completed", x.SPAN_TOO_LONG),
        ("<question>When was the Eiffel Tower completed? Answer: 1887</question>", "When was the Eiffel Tower completed?",
         "1887", x.SPAN_NOT_IN_PASSAGE),
        ("<question>Which Paris tower was completed in 1889? Answer: Eiffel Tower</question>",
         "Which Paris tower was completed in 1889?", "Eiffel Tower", None),  # the seed's own answer may be asked
        ("<question>Which is the Eiffel Tower's year of 1889? Answer: 1889</question>",
         "Which is the Eiffel Tower's year of 1889?", "1889", x.ANSWER_IN_QUESTION),  # checked against the chosen span
    ],
)  # fmt: skip
def test_a_proposer_chooses_a_short_span_of_its_passage(written: str, question: str, answer: str | None,
                                                        rejection: str | None) -> None:  # fmt: skip
    final = written.removeprefix("<question>").split("\n")[0].split("</")[0]  # what a guided turn's content is
    e = x.extract_question(own_traj(written, final), SPAN_SEED, OWN)
    assert (e.question, e.answer, e.rejection) == (question, answer, rejection)
    asked = x.answered_seed(SPAN_SEED, e)
    assert asked.golden == ([answer] if answer else ["Paris", "City of Light"])  # the seed's aliases are not its span's
    given = x.extract_question(own_traj(written, final), SPAN_SEED, GameConfig(min_question_words=3, min_searches=1))
    assert given.answer is None  # the given-span game never reads a chosen answer


def test_own_span_needs_the_extractive_game() -> None:
    cfg = Config()
    cfg.game.proposer_span = "own"
    with pytest.raises(ConfigError, match=r"proposer_span = 'own'.*needs game.extractive = true"):
        validate(cfg)
    cfg.game.extractive, cfg.game.solver_reward, cfg.game.verifier = True, "extractive", "reading"
    validate(cfg)
    system, user = proposer_messages("1889", 1, "", PASSAGE, "Paris", own_span_words=5)
    assert "at most 5 words" in system and f"Passage (Paris): {PASSAGE}" in user and "Answer:" not in user


class WritesProposals:
    """The real tiny engine, except that a proposer's turns are the text `write` makes from the prompt and the closing
    tag: a random model never searches for its passage nor writes a question with its answer, and this test is about
    what the game does with one."""

    def __init__(self, engine: Any, write: Callable[[str, str], str]):
        self.engine, self.write = engine, write

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        tok, closing = self.engine.tokenizer, params.stop[0] if params.stop else ""
        texts = [tok.decode(p) for p in prompts]
        if not all("Passage (" in t for t in texts):  # not the proposer: the solver, the verifier
            return self.engine.generate(prompts, params)
        written = [tok.encode(self.write(t, closing) + closing, add_special_tokens=False) for t in texts]
        return [Generation(ids, tok.decode(ids), [0.0] * len(ids), "stop", closing) for ids in written]


def test_a_round_keeps_the_proposers_own_span_as_the_answer(tiny_engine, bundled_bm25) -> None:
    cfg = tiny_config(verifier="retrievable", solver_reward="extractive", extractive=True, proposer_span="own",
                      min_searches=0, proposer_max_turns=2)  # fmt: skip
    validate(cfg)
    seeds = load_seeds(str(asset_file("wiki-span-seeds")))

    def write(prompt: str, closing: str) -> str:  # search the passage's first words; ask for its last capitalised name
        passage = prompt.rsplit("Passage (", 1)[1].split("): ", 1)[1].split("\nNumber of searches")[0]
        span = capitalised_runs(passage)[-1]
        words = [w for w in passage.split()[:12] if normalize_answer(w) not in normalize_answer(span).split()]
        if closing == "</search>":
            return " ".join(words)
        return f"Which is named after {' '.join(words)}? Answer: {span}"

    pool = QuestionPool()
    result = play_round(WritesProposals(tiny_engine, write), bundled_bm25, SeedSampler(seeds, 0), pool, cfg, 1,
                        random.Random(0))  # fmt: skip
    chosen = {t.meta["id"]: t.meta["answer"] for t in result.proposer}
    assert all(chosen.values())  # every proposer chose a span, logged as its answer
    for t in result.proposer:  # the prompt showed the passage, not the seed's span; the chosen span is the passage's
        prompt = tiny_engine.tokenizer.decode(t.prompt_ids)
        seed = next(s for s in seeds if f"Passage ({s.extra['title']}): {s.extra['passage']}" in prompt)
        assert "Answer:" not in prompt.split("Passage (")[1]
        assert chosen[t.meta["id"]] == capitalised_runs(seed.extra["passage"])[-1]
    new = [task for task in result.tasks if task.source == "new"]
    assert new, [(t.meta["question"], t.meta["answer"], t.meta["rejection"]) for t in result.proposer]
    for task in new:  # the solver is asked for the proposer's span, and the pool stores it
        assert task.golden == [chosen[task.pool_id]] and pool.questions[task.pool_id].answer == chosen[task.pool_id]
        assert pool.questions[task.pool_id].aliases == []
