"""Proposer and solver prompts (our own wording of the instructions in DESIGN.md §1).

Each prompt is a (system, user) pair rendered with the model's chat template; the assistant
side is the raw tag protocol. `scaffold="guided"` prompts are the same instructions: the loop
inserts the tags, so the model only needs to follow the content.
"""

from __future__ import annotations

SOLVER_SYSTEM = (
    "You answer questions by searching an encyclopedia. Work step by step. You may reason inside "
    "<think> and </think>. To look something up, write a query inside <search> and </search>; the "
    "results will be shown to you inside <information> and </information>. Search as often as you "
    "need. When you know the answer, write only the answer, without explanation, inside <answer> and "
    "</answer>, for example <answer>Marie Curie</answer>."
)

SOLVER_USER = "Question: {question}"

PROPOSER_SYSTEM = (
    "You write quiz questions for a known answer by searching an encyclopedia. You are given the "
    "answer and a number of searches n. Start from the answer and work backwards: search for a fact "
    "about it, then for a fact about what you found, one search at a time, building a chain of n "
    "steps. Reason inside <think> and </think>; search with <search>query</search>; results come back "
    "inside <information> and </information>. Then write one question inside <question> and "
    "</question>. Rules for the question: use only facts you found in the search results; never "
    "mention the answer or the intermediate entities of the chain; it must be impossible to answer "
    "without searching; solving it must take exactly n searches; it must have exactly one correct "
    "answer, the given one."
)

PROPOSER_USER = "Answer: {answer}\nNumber of searches: {hops}"


def solver_messages(question: str) -> tuple[str, str]:
    return SOLVER_SYSTEM, SOLVER_USER.format(question=question)


def proposer_messages(answer: str, hops: int) -> tuple[str, str]:
    return PROPOSER_SYSTEM, PROPOSER_USER.format(answer=answer, hops=hops)
