"""Rewards, filters, seeds and the pool: the rules of the game on hand-made inputs."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from searchplay.agent.trajectory import Trajectory, Turn
from searchplay.assets.names import BUNDLED, seeds_path
from searchplay.config import GameConfig
from searchplay.game import extract as x
from searchplay.game.pool import PoolError, PoolQuestion, QuestionPool
from searchplay.game.prompts import proposer_messages, seed_examples
from searchplay.game.rewards import proposer_reward, solver_reward, success_rate
from searchplay.game.seeds import Seed, SeedError, SeedSampler, load_seeds
from searchplay.game.verify import build_evidence, verify_questions

# --- rewards ----------------------------------------------------------------------


@pytest.mark.parametrize(("s", "one_minus", "inter"), [(0.0, 1.0, 0.0), (0.2, 0.8, 0.64), (0.5, 0.5, 1.0), (1.0, 0.0, 0.0)])
def test_proposer_reward_kinds(s: float, one_minus: float, inter: float) -> None:
    assert proposer_reward(s, "1-acc") == pytest.approx(one_minus)
    assert proposer_reward(s, "intermediate") == pytest.approx(inter)
    assert proposer_reward(s, "format_only") == 1.0


def test_intermediate_reward_with_bounds_and_unknown_kind() -> None:
    assert proposer_reward(0.2, "intermediate", left=0.1, right=0.9) == pytest.approx(4 * 0.3 * 0.7)
    with pytest.raises(ValueError, match="unknown proposer reward kind"):
        proposer_reward(0.5, "bogus")  # type: ignore[arg-type]


def test_solver_reward_cases() -> None:
    assert solver_reward(None, ["Paris"]) == 0.0
    assert solver_reward("the Paris.", ["Paris"]) == 1.0
    assert solver_reward("Lyon", ["Paris"]) == 0.0
    assert solver_reward("City of Light", ["Paris"], "judge", judge_verdict=True) == 1.0
    assert solver_reward("City of Light", ["Paris"], "judge", judge_verdict=None) == 0.0  # unknown verdict fails closed
    assert solver_reward("City of Light", ["Paris"], "em", judge_verdict=True) == 0.0  # em never asks the judge
    assert solver_reward("Paris", ["Paris"], answer_tags=11) == 0.25
    assert solver_reward("Paris", ["Paris"], answer_tags=10) == 1.0
    assert success_rate([1.0, 0.0, 0.25, 0.0, 0.0]) == pytest.approx(0.25) and success_rate([]) == 0.0


@pytest.mark.parametrize(
    ("prediction", "em", "f1", "cover"),
    [
        ("Paris", 1.0, 1.0, 1.0),
        ("It is Paris, France", 0.0, 0.4, 1.0),  # tokens: it is paris france vs paris
        ("Lyon", 0.0, 0.0, 0.0),
        ("the city of Paris", 0.0, 0.5, 1.0),  # city of paris vs paris: P 1/3, R 1 -> 0.5
    ],
)
def test_solver_reward_kinds(prediction: str, em: float, f1: float, cover: float) -> None:
    assert solver_reward(prediction, ["Paris"], "em") == em
    assert solver_reward(prediction, ["Paris"], "f1") == pytest.approx(f1)
    assert solver_reward(prediction, ["Paris"], "cover_em") == cover
    with pytest.raises(ValueError, match="unknown solver reward"):
        solver_reward(prediction, ["Paris"], "bleu")  # type: ignore[arg-type]


# --- filters ----------------------------------------------------------------------

GOOD_Q = "Which city on the river Seine hosts the museum that holds the Mona Lisa painting?"


def proposer_traj(question: str | None, queries: list[str], hits: bool = True) -> Trajectory:
    turns = [
        Turn(text="", action="search", content=q, hits=[{"id": f"d{i}", "title": "T", "text": "x"}] if hits else [])
        for i, q in enumerate(queries)
    ]
    if question is not None:
        turns.append(Turn(text="", action="question", content=question))
    return Trajectory([1], turns=turns, final=question, stop_reason="question" if question else "max_turns")


SEED = Seed("Paris", 2, aliases=("City of Light",))


@pytest.mark.parametrize(
    ("traj", "reason"),
    [
        (proposer_traj(GOOD_Q, ["Mona Lisa museum", "Louvre city"]), None),
        (proposer_traj(None, ["a", "b"]), x.NO_QUESTION),
        (proposer_traj("Which city is it?", ["a", "b"]), x.TOO_SHORT),
        (proposer_traj("word " * 300 + "?", ["a", "b"]), x.TOO_LONG),
        (
            proposer_traj("Is the answer to this long question perhaps the city called Paris in France?", ["a", "b"]),
            x.ANSWER_IN_QUESTION,
        ),
        (
            proposer_traj("Which place is known as the City of Light among the capitals of Europe today?", ["a", "b"]),
            x.ANSWER_IN_QUESTION,
        ),
        (proposer_traj(GOOD_Q, ["Mona Lisa museum"]), x.TOO_FEW_SEARCHES),
        (proposer_traj(GOOD_Q, ["Mona Lisa museum", "the Mona Lisa museum!"]), x.REPEATED_SEARCHES),
        (proposer_traj(GOOD_Q, ["Mona Lisa museum", "Louvre city"], hits=False), x.NO_RETRIEVAL),
    ],
)
def test_each_filter(traj: Trajectory, reason: str | None) -> None:
    result = x.extract_question(traj, SEED, GameConfig())
    assert result.rejection == reason
    if reason is None:
        assert result.question == GOOD_Q


def test_answer_in_query_filter_is_optional() -> None:
    traj = proposer_traj(GOOD_Q, ["Paris museums", "Mona Lisa"])
    assert x.extract_question(traj, SEED, GameConfig()).rejection is None
    assert x.extract_question(traj, SEED, GameConfig(reject_answer_in_query=True)).rejection == x.ANSWER_IN_QUERY


def test_evidence_mixes_whole_blocks_of_other_trajectories() -> None:
    own = [{"id": "a"}, {"id": "b"}]
    others = [[{"id": "a"}, {"id": "c"}], [{"id": "d"}, {"id": "e"}, {"id": "f"}], [], [{"id": "g"}]]
    for seed in range(20):
        evidence, noisy = build_evidence(own, others, 2, random.Random(seed))
        ids = [d["id"] for d in evidence]
        assert len(ids) == len(set(ids)) and {"a", "b"} <= set(ids)  # own documents once each
        blocks = [{"c"}, {"d", "e", "f"}, {"g"}]  # a's block contributes only c; the empty block never counts
        picked = [b for b in blocks if b & set(noisy)]
        assert len(picked) == 2 and set(noisy) == set().union(*picked)  # two whole blocks, never a part of one
        for b in picked:  # each block stays contiguous in the evidence
            positions = sorted(ids.index(i) for i in b)
            assert positions == list(range(positions[0], positions[0] + len(b)))
    again = build_evidence(own, others, 2, random.Random(3))
    assert again == build_evidence(own, others, 2, random.Random(3))  # seeded
    assert build_evidence(own, others, 10, random.Random(0))[1] and len(build_evidence(own, others, 10, random.Random(0))[1]) == 5


def test_evidence_verifier_needs_the_answer_in_a_retrieved_document() -> None:
    traj = proposer_traj(GOOD_Q, ["Mona Lisa museum", "Louvre city"])
    traj.turns[1].hits = [{"id": "louvre", "title": "Louvre", "text": "The Louvre is a museum in Paris, France."}]
    passed = verify_questions([(GOOD_Q, SEED, traj)], [traj], "evidence", 4, random.Random(0))[0]
    assert passed.passed and passed.verdict == "answer_in_evidence" and passed.evidence_ids == ["louvre"]
    alias = Seed("Lutetia", 2, aliases=("City of Light",))
    traj.turns[1].hits[0]["text"] = "Paris is called the city of light."
    assert verify_questions([(GOOD_Q, alias, traj)], [traj], "evidence", 4, random.Random(0))[0].passed  # aliases count
    other = verify_questions([(GOOD_Q, Seed("Lyon", 2), traj)], [traj], "evidence", 4, random.Random(0))[0]
    assert not other.passed and other.verdict == "answer_not_in_evidence" and not other.infra
    traj.turns[1].hits[0]["text"] = "Parisian museums"  # word boundaries: no partial-word match
    assert not verify_questions([(GOOD_Q, SEED, traj)], [traj], "evidence", 4, random.Random(0))[0].passed
    traj.turns[1].hits[0]["text"] = "The Louvre is a museum in Paris, France."
    unrelated = verify_questions(
        [("Where does pizza come from, and who ate it first?", SEED, traj)], [traj], "evidence", 4, random.Random(0)
    )[0]
    assert not unrelated.passed and unrelated.verdict == "question_not_grounded"  # shares no content word with the doc


def test_answer_word_filter_catches_partial_leaks() -> None:
    seed = Seed("Signal modulation", 1)
    cfg = GameConfig(min_question_words=1, min_searches=1, reject_answer_words=True)
    leak = proposer_traj("Which kind of signal processing is this about?", ["signal"])
    assert x.extract_question(leak, seed, cfg).rejection == x.ANSWER_WORD_IN_QUESTION
    assert x.extract_question(leak, seed, GameConfig(min_question_words=1, min_searches=1)).rejection is None
    queen = proposer_traj("Which ruler of the kingdom abdicated in 1654?", ["Christina"])
    assert x.extract_question(queen, Seed("Christina, Queen of Sweden", 1), cfg).rejection is None  # 'of' is no leak


# --- seeds ------------------------------------------------------------------------


def test_seed_formats(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"answer": "Paris", "hops": 2},
                {"ground_truth": ["Lyon", "Lugdunum"], "search_turns": 3, "question": "example?"},
                {"ground_truth": {"target": ["Nice"]}, "hops": 1, "aliases": ["Nizza"]},
            ]
        )
        + "\n"
    )
    seeds = load_seeds(str(f))
    assert seeds[0] == Seed("Paris", 2)
    assert seeds[1].golden == ["Lyon", "Lugdunum"] and seeds[1].extra == {"question": "example?"}
    assert seeds[2].golden == ["Nice", "Nizza"]


def test_seed_example_questions_reach_the_proposer_prompt(tmp_path: Path) -> None:
    f = tmp_path / "ssp.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"ground_truth": "Lyon", "search_turns": 2, "sys_question_example": "Q1: Which river...?\nQ2: Who founded...?"},
                {"answer": "Nice", "hops": 1, "example_questions": ["Which city hosts the carnival?", " "]},
                {"answer": "Paris", "hops": 1},
            ]
        )
        + "\n"
    )
    ssp, listed, plain = load_seeds(str(f))
    assert "Q1: Which river...?\nQ2: Who founded...?" in proposer_messages(ssp.answer, ssp.hops, seed_examples(ssp.extra))[0]
    assert proposer_messages(listed.answer, 1, seed_examples(listed.extra))[0].endswith("- Which city hosts the carnival?")
    assert seed_examples(plain.extra) == "" and proposer_messages("Paris", 1)[0] == proposer_messages("Paris", 1, "")[0]
    assert "Questions of the kind wanted" not in proposer_messages("Paris", 1)[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"hops": 2}, "missing field 'answer'"),
        ({"answer": "x"}, "missing field 'hops'"),
        ({"answer": "x", "hops": 0}, "'hops' must be a positive integer"),
        ({"answer": "", "hops": 1}, "field 'answer' must be a non-empty string"),
    ],
)
def test_seed_errors_name_file_line_and_field(tmp_path: Path, line: dict, message: str) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps({"answer": "ok", "hops": 1}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(SeedError, match=rf"s\.jsonl:2: .*{message}"):
        load_seeds(str(f))


def test_bundled_seeds_and_reproducible_sampling(cfg) -> None:
    seeds = load_seeds(seeds_path(BUNDLED))
    a, b = SeedSampler(seeds, 3), SeedSampler(seeds, 3)
    assert a.sample(5) == b.sample(5)
    state = a.state()
    nxt = a.sample(4)
    c = SeedSampler(seeds, 99)
    c.restore(json.loads(json.dumps(state)))
    assert c.sample(4) == nxt


# --- pool -------------------------------------------------------------------------


def pool_question(i: int, rate: float) -> PoolQuestion:
    return PoolQuestion(
        id=f"q{i}",
        question=f"question {i}?",
        answer="Paris",
        aliases=[],
        hops=2,
        step=1,
        proposer_trajectory=f"p{i}",
        evidence_ids=["d1"],
        noisy_ids=["d9"],
        verifier_answer="Paris",
        verdict="exact_match",
        solver_rewards=[1.0, 0.0],
        success_rate=rate,
    )


def test_pool_reload_reuse_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "pool.jsonl"
    pool = QuestionPool(path)
    for i, rate in enumerate([0.0, 0.5, 1.0, 0.2]):
        pool.add(pool_question(i, rate))
    pool.record_attempt("q2", 2, [0.0, 0.0], 0.0)
    again = QuestionPool(path)
    assert [q.id for q in again.questions.values()] == ["q0", "q1", "q2", "q3"]
    assert again.questions["q2"].success_rate == 0.0 and again.questions["q2"].attempts == 2
    assert {q.id for q in again.reusable(0.3)} == {"q0", "q2", "q3"}
    assert len(again.sample_reusable(10, 0.3, random.Random(0))) == 3
    drawn = again.sample_reusable(10, 0.3, random.Random(0), with_replacement=True)  # SSP: every slot filled
    assert len(drawn) == 10 and {q.id for q in drawn} <= {"q0", "q2", "q3"} and len({q.id for q in drawn}) < 10
    fallback = again.sample_reusable(5, -1.0, random.Random(0), with_replacement=True)  # none under the threshold
    assert len(fallback) == 5 and {q.id for q in fallback} <= {"q0", "q1", "q2", "q3"}
    assert QuestionPool().sample_reusable(3, 1.0, random.Random(0), with_replacement=True) == []  # empty pool
    assert again.clear(0.5, step=3) == 2
    assert list(QuestionPool(path).questions) == ["q2", "q3"]  # the newest half
    again.clear(0.0, step=4)
    assert len(QuestionPool(path)) == 0


def test_pool_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "pool.jsonl"
    pool = QuestionPool(path)
    for i in range(3):
        pool.add(pool_question(i, 0.5))
    data = path.read_bytes()
    path.write_bytes(data + data.splitlines(keepends=True)[0][:40])  # crash in the middle of a 4th write
    reloaded = QuestionPool(path)
    assert reloaded.torn_lines == 1 and list(reloaded.questions) == ["q0", "q1", "q2"]
    assert path.read_bytes() == data  # truncated back to the last complete record
    reloaded.add(pool_question(3, 0.1))
    assert list(QuestionPool(path).questions) == ["q0", "q1", "q2", "q3"]
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # complete record, newline lost
    assert list(QuestionPool(path).questions) == ["q0", "q1", "q2", "q3"] and path.read_bytes().endswith(b"\n")
    path.write_bytes(b"{broken\n" + path.read_bytes())
    with pytest.raises(PoolError, match=re.escape("pool.jsonl:1: damaged record")):
        QuestionPool(path)
