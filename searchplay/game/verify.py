"""RAG verification of proposed questions (docs/method.md, "Verification").

The evidence for a question is the block of documents its proposer retrieved plus `noisy_docs`
whole blocks drawn from *other* proposer trajectories of the batch, the blocks in a seeded
shuffled order (as the paper's reference code does).
A verifier answers from that evidence alone; the question is kept only if the answer matches
the seed's answer (exact match after normalisation, else the LLM judge when configured).

Verifiers: `policy` (the model being trained, one greedy turn) or `judge` (the external
model). A verifier that fails — no answer, an HTTP error, an unreadable verdict — rejects the
question and is counted; it never lets a question through. A judge that fails is an
infrastructure failure (`Verification.infra`): the proposer's rollout then leaves the loss.

`retrievable` adds what the solver does to `evidence`: the question itself, searched with the
solver's retriever and top-k, must return a passage whose text holds a golden answer. `reading`
then has the policy read those passages: the question stays when its answer names a golden answer.

`evidence` is the rule-based check for models too small to read evidence reliably: a question
is kept only if a golden answer (or alias) occurs in a document its proposer retrieved and that
document shares a content word with the question. It keeps the paper's point (no question
without evidence for its answer) but not its answerability test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from searchplay.agent.protocol import last_tag
from searchplay.agent.rollout import chat_prompt_ids
from searchplay.agent.trajectory import Trajectory
from searchplay.game.extract import mentions
from searchplay.game.seeds import Seed
from searchplay.judge.llm_judge import EVIDENCE_PROMPT, LLMJudge
from searchplay.judge.match import exact_match, normalize_answer, substring_match
from searchplay.llm.base import Engine, SamplingParams
from searchplay.search.base import Hit, Retriever, render_hits, search_or_none

FUNCTION_WORDS = frozenset(
    [
        "what",
        "which",
        "where",
        "when",
        "whom",
        "whose",
        "does",
        "that",
        "this",
        "these",
        "those",
        "from",
        "with",
        "have",
        "been",
        "were",
        "they",
        "their",
        "there",
        "about",
        "into",
        "than",
        "then",
        "them",
        "also",
        "only",
        "more",
        "most",
        "some",
        "such",
        "very",
        "other",
        "question",
        "answer",
        "name",
        "called",
        "known",
    ]
)


@dataclass
class Verification:
    passed: bool
    answer: str | None  # the verifier's answer (None: verifier error)
    verdict: str  # exact_match | mismatch (no judge) | judge_yes | judge_no | judge_unknown | verifier_error
    evidence_ids: list[str] = field(default_factory=list)
    noisy_ids: list[str] = field(default_factory=list)
    judge_model: str = ""
    infra: bool = False  # the judge failed (HTTP error, unreadable verdict): not the proposer's fault


def content_words(text: str) -> set[str]:
    """Normalised words of 4+ letters that are not question or function words."""
    return {w for w in normalize_answer(text).split() if len(w) >= 4 and w not in FUNCTION_WORDS}


def evidence_check(question: str, seed: Seed, traj: Trajectory) -> Verification:
    """Pass when a retrieved document holds a golden answer and shares a content word with the question.

    The evidence ids are those documents. The shared word is a cheap groundedness test: a question
    about something else ("Where does pizza come from?" for the answer "Garage") fails it.
    """
    asked = content_words(question)
    docs = [d for d in traj.retrieved if mentions(f"{d.get('title', '')} {d.get('text', '')}", seed.golden)]
    if not docs:
        return Verification(False, None, "answer_not_in_evidence")
    grounded = [d for d in docs if asked & content_words(f"{d.get('title', '')} {d.get('text', '')}")]
    if not grounded:
        return Verification(False, None, "question_not_grounded", [d["id"] for d in docs])
    return Verification(True, None, "answer_in_evidence", [d["id"] for d in grounded])


def retrievable_check(question: str, seed: Seed, traj: Trajectory, hits: list[Hit] | None) -> Verification:
    """The evidence check, then what the solver would do: the question itself, searched with the solver's
    retriever and top-k (`hits`), must return a passage whose text (not only its title) holds a golden
    answer. A question that only its proposer's path could answer ("the plant in the above list") fails.
    `hits` None: the search failed (an infrastructure failure, not the proposer's)."""
    grounded = evidence_check(question, seed, traj)
    if not grounded.passed:
        return grounded
    if hits is None:
        return Verification(False, None, "verifier_error", grounded.evidence_ids, infra=True)
    found = [h.id for h in hits if mentions(h.text, seed.golden)]
    if not found:
        return Verification(False, None, "answer_not_retrievable", grounded.evidence_ids)
    return Verification(True, None, "retrievable", found)


def reading_check(
    engine: Engine,
    questions: list[tuple[str, Seed, Trajectory]],
    hits: list[list[Hit] | None],
    checks: list[Verification],
    guided: bool,
    max_words: int = 0,
) -> None:
    """The policy (or the frozen referee) reads what the solver's search found for each question that passed
    `retrievable` and answers; the question stays only when that answer names a golden answer (the reply contains
    it, as a 135M reader answers in sentences: "The capital of Kenya is Nairobi.") in at most `max_words` words
    (game.max_answer_words, 0: any length), the limit the solver's answers are held to: a 1.5B referee that
    copies a whole sentence holding the answer has not found it. Updates `checks` in place. On the hand-audited
    questions the 135M reader kept 6 of the 7 right ones and 3 wrong ones (docs/study/audit.md)."""
    todo = [i for i, c in enumerate(checks) if c.passed]
    items = [(questions[i][0], render_hits(hits[i] or [])) for i in todo]
    answers = policy_answers(engine, items, guided) if items else []
    for i, answer in zip(todo, answers):
        c = checks[i]
        c.answer = answer
        if answer is None:
            c.passed, c.verdict = False, "verifier_error"
        elif max_words and len(answer.split()) > max_words:
            c.passed, c.verdict = False, "read_long_answer"
        elif substring_match(answer, questions[i][1].golden):
            c.verdict = "read_answer"
        else:
            c.passed, c.verdict = False, "read_other_answer"


def build_evidence(
    own: list[dict[str, Any]], others: list[list[dict[str, Any]]], noisy_blocks: int, rng: random.Random
) -> tuple[list[dict[str, Any]], list[str]]:
    """The own block plus up to `noisy_blocks` whole blocks of other trajectories, in shuffled block order.

    A block is everything one trajectory retrieved, in its order (the paper's reference code mixes
    evidence this way). Documents already in the evidence are not repeated; returns the evidence
    and the ids of the documents that came from other trajectories.
    """
    candidates = [block for block in others if block]
    chosen = rng.sample(candidates, min(noisy_blocks, len(candidates)))
    blocks = [list(own), *chosen]
    rng.shuffle(blocks)
    own_ids = {d["id"] for d in own}
    evidence: list[dict[str, Any]] = []
    seen: set[str] = set()
    for block in blocks:
        for d in block:
            if d["id"] not in seen:
                seen.add(d["id"])
                evidence.append(d)
    return evidence, [d["id"] for d in evidence if d["id"] not in own_ids]


def render_evidence(docs: list[dict[str, Any]]) -> str:
    return render_hits([Hit(d["id"], d.get("title", ""), d.get("text", ""), 0.0) for d in docs])


def policy_answers(engine: Engine, items: list[tuple[str, str]], guided: bool, max_new_tokens: int = 64) -> list[str | None]:
    """The policy answers each (question, evidence) in one batched greedy turn."""
    prompts = []
    opening = engine.tokenizer.encode("<answer>", add_special_tokens=False) if guided else []
    for question, evidence in items:
        prompts.append(
            chat_prompt_ids(
                engine.tokenizer,
                "You answer questions from documents.",
                EVIDENCE_PROMPT.format(question=question, evidence=evidence),
            )
            + list(opening)
        )
    outs = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=max_new_tokens, stop=["</answer>"]))
    answers: list[str | None] = []
    for g in outs:
        text = engine.tokenizer.decode(g.token_ids, skip_special_tokens=True)
        if guided:
            content = text.split("</answer>")[0].strip().split("\n")[0].strip()
            answers.append(content or None)
        else:
            answers.append(last_tag(text, "answer"))
    return answers


def verify_questions(
    questions: list[tuple[str, Seed, Trajectory]],
    batch: list[Trajectory],
    verifier: str,
    noisy_docs: int,
    rng: random.Random,
    engine: Engine | None = None,
    judge: LLMJudge | None = None,
    guided: bool = False,
    retriever: Retriever | None = None,
    topk: int = 3,
    max_words: int = 0,
) -> list[Verification]:
    """Verify each (question, seed, proposer trajectory); `batch` is every proposer trajectory of the round;
    `retriever` and `topk`: the solver's, for the `retrievable` verifier; `max_words`: the longest answer the
    `reading` verifier accepts (0: any)."""
    if verifier == "evidence":
        return [evidence_check(question, seed, traj) for question, seed, traj in questions]
    if verifier in ("retrievable", "reading"):
        assert retriever is not None, f"the {verifier} verifier needs the solver's retriever"
        hits = search_or_none(retriever, [q for q, _, _ in questions], topk)
        checks = [retrievable_check(q, seed, traj, h) for (q, seed, traj), h in zip(questions, hits)]
        if verifier == "reading":
            assert engine is not None, "the reading verifier needs the engine"
            reading_check(engine, questions, hits, checks, guided, max_words)
        return checks
    items, evidence_sets = [], []
    for question, _, traj in questions:
        others = [t.retrieved for t in batch if t is not traj]
        evidence, noisy_ids = build_evidence(traj.retrieved, others, noisy_docs, rng)
        evidence_sets.append(([d["id"] for d in evidence if d["id"] not in noisy_ids], noisy_ids))
        items.append((question, render_evidence(evidence)))
    if verifier == "policy":
        assert engine is not None, "the policy verifier needs the engine"
        answers = policy_answers(engine, items, guided)
    elif verifier == "judge":
        assert judge is not None, "the judge verifier needs a judge"
        answers = judge.map(judge.answer_from_evidence, items)
    else:
        raise ValueError(f"unknown verifier {verifier!r}")
    results = []
    pending: list[int] = []
    for i, ((_, seed, _), answer) in enumerate(zip(questions, answers)):
        ev, noisy = evidence_sets[i]
        if answer is None:
            results.append(Verification(False, None, "verifier_error", ev, noisy, infra=verifier == "judge"))
        elif exact_match(answer, seed.golden):
            results.append(Verification(True, answer, "exact_match", ev, noisy))
        else:
            results.append(Verification(False, answer, "mismatch", ev, noisy))
            pending.append(i)
    if judge is not None and pending:
        verdicts = judge.map(judge.equivalent, [(questions[i][0], questions[i][1].golden, results[i].answer) for i in pending])
        for i, v in zip(pending, verdicts):
            r = results[i]
            r.judge_model = v.model
            r.passed = v.value is True
            r.verdict = {True: "judge_yes", False: "judge_no", None: "judge_unknown"}[v.value]
            r.infra = v.value is None
    return results
