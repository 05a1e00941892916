"""Questions a solver can take at face value and answers a user would accept (issue: learning v2).

Each test here fails on the game as it was before: the "above list" question passed every filter,
a question or answer cut off by the token cap was taken as written, and a sentence that contained
the answer earned partial credit close to a short exact answer's.
"""

from __future__ import annotations

import random

import pytest

from searchplay.agent.trajectory import Trajectory, Turn, tag_content
from searchplay.config import GameConfig, load_config
from searchplay.game import extract as x
from searchplay.game.rewards import brevity_credit, solver_reward, usable_answer
from searchplay.game.seeds import Seed
from searchplay.game.selfplay import Solved, SolverTask, answer_form_metrics
from searchplay.search.base import SearchError

SEED = Seed("Phaseolus vulgaris", 1)


def proposer(question: str, question_turn_text: str | None = None, finish_reason: str = "stop") -> Trajectory:
    """One search with a hit, then the question turn (its text as the model wrote it)."""
    turns = [
        Turn(text="<search>beans</search>", action="search", content="beans", hits=[{"id": "d0", "title": "T", "text": "x"}]),
        Turn(
            text=question_turn_text if question_turn_text is not None else f"<question>{question}</question>",
            action="question",
            content=question,
            finish_reason=finish_reason,
        ),
    ]
    return Trajectory([1], turns=turns, final=question, stop_reason="question")


CFG = GameConfig(min_question_words=5, min_searches=1)


@pytest.mark.parametrize(
    "question",
    [
        "What is the name of the plant in the above list?",  # the study's accepted example
        "According to the passage, which bean is grown most widely?",
        "Which plant is described in this article about legumes?",
        "What did the document say about the common bean?",
        "Which species is named first in the following list of legumes?",
    ],
)
def test_questions_that_point_at_the_proposers_documents_are_rejected(question: str) -> None:
    assert x.extract_question(proposer(question), SEED, CFG).rejection == x.DOCUMENT_REFERENCE
    assert (
        x.extract_question(
            proposer(question), SEED, GameConfig(**{**CFG.__dict__, "reject_document_references": False})
        ).rejection
        is None
    )


@pytest.mark.parametrize(
    "question",
    [
        "Which legume species is commonly called the common bean?",
        "Who wrote the text of the Magna Carta in the thirteenth century?",
        "Which team won the league in the following year after the merger?",
    ],
)
def test_questions_about_the_world_pass(question: str) -> None:
    assert x.extract_question(proposer(question), SEED, CFG).rejection is None


@pytest.mark.parametrize(
    "phrase", ["Medieval influenza pandemic implications in Europe", "The bean grown most widely in Central America."]
)
def test_a_phrase_that_asks_nothing_is_rejected(phrase: str) -> None:
    assert x.extract_question(proposer(phrase), SEED, CFG).rejection == x.NOT_A_QUESTION
    allowed = GameConfig(**{**CFG.__dict__, "reject_non_questions": False})
    assert x.extract_question(proposer(phrase), SEED, allowed).rejection is None


def test_a_question_cut_off_by_the_token_cap_is_rejected() -> None:
    cut = proposer(
        "Which legume species is commonly called the", "<question>Which legume species is commonly called the", "length"
    )
    assert cut.final_cut_off
    assert x.extract_question(cut, SEED, CFG).rejection == x.QUESTION_CUT_OFF
    ended = proposer(
        "Which legume species is commonly called the common bean?",
        "<question>Which legume species is commonly called the common bean?",
        "eos",
    )
    assert not ended.final_cut_off and x.extract_question(ended, SEED, CFG).rejection is None


@pytest.mark.parametrize(
    "written, content, ended",
    [
        ("Paris</answer>", "Paris", True),
        ("What is the last Inca State?</answer> and more", "What is the last Inca State?", True),  # the wrong tag
        ("Where is the Kara Sea?\nThe Kara Sea is", "Where is the Kara Sea?", True),
        ("  Which legume species is commonly called the", "Which legume species is commonly called the", False),
        (":\n\nBill Berry drummer band</search>", "Bill Berry drummer band", True),  # a line that says nothing
        ("The answer is:\nR.E.M.</answer>", "R.E.M.", True),  # a lead-in line
        ("The answer is:\n\nThe answer is:\n", "The answer is:", True),  # only lead-ins: the first
        ("The answer is:\nParis", "Paris", False),  # the line after the lead-in was cut off
    ],
)
def test_the_content_ends_at_any_closing_tag_or_line_break(written: str, content: str, ended: bool) -> None:
    """Before: 'What is the last Inca State?</answer>' was the question (and failed the question-mark rule), a
    line that ended before the token cap was counted as cut off when the model wrote on after it, and ':' or
    'The answer is:' was the search query or the answer when the model wrote its content on the next line."""
    assert tag_content(written) == (content, ended)
    traj = proposer(content, "<question>" + written, "length")
    assert traj.final_cut_off is (not ended)


def test_a_cut_off_or_long_answer_earns_nothing() -> None:
    assert usable_answer("Paris", cut_off=True, max_words=0) is None
    assert solver_reward(usable_answer("Paris", cut_off=True, max_words=0), ["Paris"], "em") == 0.0
    assert usable_answer("Paris", cut_off=False, max_words=0) == "Paris"
    sentence = "The capital city of France is called Paris"
    assert usable_answer(sentence, cut_off=False, max_words=5) is None
    assert solver_reward(usable_answer(sentence, False, 5), ["Paris"], "f1") == 0.0
    assert usable_answer(sentence, cut_off=False, max_words=0) == sentence  # 0 = no limit


def test_em_partial_pays_a_short_exact_answer_most() -> None:
    gold = ["Paris"]
    exact = solver_reward("Paris", gold, "em_partial")
    near = solver_reward("Paris, France", gold, "em_partial")
    sentence = solver_reward("The capital of France is Paris", gold, "em_partial")
    assert (exact, near) == (1.0, 0.25)
    assert 0 < sentence < near < exact
    assert solver_reward("Lyon", gold, "em_partial") == 0.0
    assert brevity_credit("the Eiffel Tower in Paris", ["Eiffel Tower"]) == pytest.approx(0.5 * 2 / 4)
    # token F1 gives the sentence a third of an exact answer's credit; em_partial a twelfth
    assert solver_reward("The capital of France is Paris", gold, "f1") > 3 * sentence
    assert load_config(None, ["game.solver_reward=em_partial", "game.max_answer_words=8"]).game.max_answer_words == 8


def test_answer_form_is_logged_beside_the_reward() -> None:
    def solver(final: str, text: str, finish: str) -> Trajectory:
        return Trajectory(
            [1], turns=[Turn(text=text, action="answer", content=final, finish_reason=finish)], final=final, stop_reason="answer"
        )

    trajs = [
        solver("Paris", "<answer>Paris</answer>", "stop"),
        solver("It is Paris, the capital", "<answer>It is Paris, the capital", "length"),
        Trajectory([1], stop_reason="max_turns"),
    ]
    solved = Solved(trajs, [1.0, 0.0, 0.0], [0, 0, 0], [False] * 3, [[1.0, 0.0, 0.0]], [None] * 3)
    m = answer_form_metrics(solved, [SolverTask("Capital of France?", ["Paris"], "new", "q")])
    assert m["solver/answer_words"] == pytest.approx(3.0)  # median of 1 and 5 words (the cut one is still shown)
    assert m["solver/closed_rate"] == pytest.approx(1 / 3) and m["solver/em"] == pytest.approx(1 / 3)
    assert m["solver/f1"] == pytest.approx((1 + 0.4) / 3)  # "it is paris capital" vs "paris": P 1/4, R 1


def test_frontier_reward_pays_nothing_extra_for_questions_nobody_or_everybody_solves() -> None:
    from searchplay.game.rewards import proposer_reward

    v = 0.1
    assert proposer_reward(0.0, "frontier", solver_n=4, validity=v) == v  # 1-acc would pay 1.0 here
    assert proposer_reward(1.0, "frontier", solver_n=4, validity=v) == v
    assert proposer_reward(0.0, "1-acc") == 1.0
    one, two, three = (proposer_reward(k / 4, "frontier", solver_n=4, validity=v) for k in (1, 2, 3))
    assert one == pytest.approx(1.0) and two == pytest.approx(v + 0.9 * 2 / 3) and three == pytest.approx(v + 0.9 / 3)
    assert one > two > three > v
    assert load_config(None, ["game.proposer_reward=frontier", "game.validity_reward=0.2"]).game.validity_reward == 0.2


def test_query_diversity_shows_a_collapse() -> None:
    from searchplay.agent.rollout import query_diversity

    collapsed = ["is a search engine for plants"] * 9 + ["is a search engine"]
    assert query_diversity(collapsed) == pytest.approx(0.1)
    assert query_diversity(["Phaseolus vulgaris", "common bean origin", "bean species Americas"]) == 1.0
    assert query_diversity([]) == 0.0


def test_retrievable_questions_are_found_by_the_solvers_search(bundled_bm25) -> None:
    """Real BM25 over the bundled corpus: a question is kept only if searching it finds its answer in a passage's text."""
    from searchplay.game.verify import verify_questions

    paris = Seed("Paris", 1)
    louvre = {"id": "d0", "title": "Louvre", "text": "The Louvre is an art museum in Paris on the Seine."}

    def proposed(question: str) -> Trajectory:
        search = Turn(text="", action="search", content="Louvre", hits=[louvre])
        turns = [search, Turn(text="", action="question", content=question)]
        return Trajectory([1], turns=turns, final=question, stop_reason="question")

    good = "Which city on the river Seine hosts the Louvre museum?"
    vague = "What is the name of the city with the museum in the list?"
    items = [(q, paris, proposed(q)) for q in (good, vague)]
    evidence_only = verify_questions(items, [t for _, _, t in items], "evidence", 0, random.Random(0))
    assert [v.passed for v in evidence_only] == [True, True]  # the old check keeps both
    batch = [t for _, _, t in items]
    checked = verify_questions(items, batch, "retrievable", 0, random.Random(0), retriever=bundled_bm25, topk=3)
    assert [v.passed for v in checked] == [True, False]
    assert checked[1].verdict == "answer_not_retrievable" and checked[0].verdict == "retrievable"

    class Down:
        def search(self, queries: list[str], k: int) -> list:
            raise SearchError("retrieval server down")

    failed = verify_questions(items[:1], [items[0][2]], "retrievable", 0, random.Random(0), retriever=Down(), topk=3)
    assert failed[0].infra and failed[0].verdict == "verifier_error"  # not the proposer's fault


def test_reading_verifier_keeps_questions_the_policy_answers_with_their_answer(cfg, bundled_bm25) -> None:
    """The bundled SmolLM2 reads what BM25 finds for each question: "capital of Pakistan" proposed for Karachi
    passes `retrievable` (a passage holds Karachi) and fails `reading` (the reader names Islamabad)."""
    from searchplay.assets.names import BUNDLED, model_path
    from searchplay.game.verify import verify_questions
    from searchplay.llm.transformers_engine import TransformersEngine

    def proposed(question: str, answer: str, text: str) -> tuple[str, Seed, Trajectory]:
        search = Turn(text="", action="search", content=answer, hits=[{"id": answer, "title": answer, "text": text}])
        traj = Trajectory([1], turns=[search, Turn(text="", action="question", content=question)], final=question)
        return question, Seed(answer, 1), traj

    items = [
        proposed("What is the capital of Kenya?", "Nairobi", "Nairobi is the capital of Kenya."),
        proposed("What is the capital of Pakistan?", "Karachi", "Karachi is the largest city of Pakistan."),
    ]
    batch = [t for _, _, t in items]
    found = verify_questions(items, batch, "retrievable", 0, random.Random(0), retriever=bundled_bm25, topk=3)
    assert [v.passed for v in found] == [True, True]
    reader = TransformersEngine.load(model_path(BUNDLED, cfg), "float32", threads=2)
    rng = random.Random(0)
    read = verify_questions(items, batch, "reading", 0, rng, engine=reader, guided=True, retriever=bundled_bm25, topk=3)
    assert [v.passed for v in read] == [True, False]
    assert read[0].verdict == "read_answer" and "nairobi" in (read[0].answer or "").lower()
    assert read[1].verdict == "read_other_answer" and "karachi" not in (read[1].answer or "").lower()
    words = len((read[0].answer or "").split())
    short = verify_questions(items, batch, "reading", 0, rng, engine=reader, guided=True, retriever=bundled_bm25, topk=3,
                             max_words=words - 1)  # fmt: skip
    assert short[0].verdict == "read_long_answer" and not short[0].passed  # a reply longer than a solver may give


def test_seed_filter_leaves_out_common_nouns_and_keeps_names(tmp_path) -> None:
    import json

    from searchplay.assets.seeds import common_noun, entity_titles

    assert common_noun("Pier", "A pier is a raised structure over water. Piers are built for ships.")
    assert not common_noun("Vietnam", "Vietnam is a country in Southeast Asia.")
    assert not common_noun("Arctic Circle", "The Arctic Circle is one of the two polar circles of the arctic.")
    corpus = tmp_path / "c.jsonl"
    rows = [("1", "Pier", "A pier is a raised structure. Piers are old."), ("2", "Vietnam", "Vietnam is a country."),
            ("3", "Saw (tool)", "A saw is a tool; the saw cuts wood."), ("4", "Pier", "A second passage of Pier.")]  # fmt: skip
    corpus.write_text("".join(json.dumps({"id": i, "contents": f'"{t}"\n{x}'}) + "\n" for i, t, x in rows))
    assert entity_titles(corpus, drop_common_nouns=True) == ({"Vietnam": "2"}, 2)
    assert entity_titles(corpus)[0] == {"Pier": "1", "Vietnam": "2", "Saw": "3"}


def test_probe_questions_are_built_from_the_base_model_and_answered_during_training(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    from searchplay.config import ConfigError

    root = Path(__file__).resolve().parents[1]
    probes, run = tmp_path / "probes.jsonl", tmp_path / "run"
    cli = [sys.executable, "-m", "searchplay"]
    built = subprocess.run([*cli, "probe", "build", "--out", str(probes), "--count", "3", "-c", "configs/tiny-test.toml"],
                           capture_output=True, text=True, cwd=root, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    rows = [json.loads(line) for line in probes.read_text().splitlines()]
    assert len(rows) == 3 and all(r["question"] and r["golden_answers"] for r in rows)
    again = subprocess.run([*cli, "probe", "build", "--out", str(probes), "-c", "configs/tiny-test.toml"],
                           capture_output=True, text=True, cwd=root, timeout=300)  # fmt: skip
    assert again.returncode != 0 and "exists" in again.stderr and len(probes.read_text().splitlines()) == 3
    train = [*cli, "train", "-c", "configs/tiny-test.toml", "--run-dir", str(run), "--steps", "2",
             "--set", f"trainer.probe_data={probes}", "--set", "trainer.probe_every=1",
             "--set", "trainer.eval_every=0"]  # fmt: skip
    trained = subprocess.run(train, capture_output=True, text=True, cwd=root, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"probe/reward", "probe/em", "probe/answer_words"} <= set(m) for m in metrics)
    with pytest.raises(ConfigError, match="probe_data"):
        load_config(None, ["trainer.probe_every=5"])
