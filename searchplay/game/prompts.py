"""Proposer and solver prompts (our own wording of the instructions in docs/method.md).

Each prompt is a (system, user) pair rendered with the model's chat template; the assistant
side is the raw tag protocol. `scaffold="guided"` prompts are the same instructions: the loop
inserts the tags, so the model only needs to follow the content.
"""

from __future__ import annotations

SOLVER_SYSTEM = (
    "You answer questions by searching an encyclopedia. Work step by step. You may reason inside "
    "<think> and </think>. To look something up, write a query inside <search> and </search>; the "
    "results will be shown to you inside <information> and </information>, one per line, as Doc number "
    "(Title: title) text. The number and the title only say where a text comes from: the answer is in the "
    "text. Search as often as you need. When you know the answer, write only the answer inside <answer> and "
    "</answer>: a name, a number, a date or a few words taken from the text, never a sentence and never a "
    "document number such as Doc 1. Example: for the question which dormant volcano in Tanzania is the "
    "highest mountain in Africa, after reading about it, the answer is <answer>Mount Kilimanjaro</answer>."
)
# Saying how results look and that a document number is no answer (study v3, docs/study/v3-plan.md, phase 3):
# the 0.5B model answered "Doc 1" to 28-38 of 100 reading questions before, 0-8 after; EM rose on both dev sets.

SOLVER_USER = "Question: {question}"

PROPOSER_SYSTEM = (
    "You write a quiz question whose answer is a given entity, using an encyclopedia search. You get "
    "the answer and a number of searches n. Search with <search>query</search>; the results come back "
    "inside <information> and </information>. Start by searching for the answer itself, then search "
    "for something you read in the results, one search at a time, up to n searches. You may reason "
    "inside <think> and </think>. Then write one question inside <question> and </question>. Rules "
    "for the question: use only facts you found in the search results; never write the answer or any "
    "of its names; it must be impossible to answer without searching; solving it should take n "
    "searches; it must have exactly one correct answer, the given one. Example: for the answer Mount Kilimanjaro, "
    "after reading that it is a dormant volcano in Tanzania and the highest mountain in Africa, a good question "
    "is <question>Which dormant volcano in Tanzania is the highest mountain in Africa?</question>"
)

PROPOSER_USER = "Answer: {answer}\nNumber of searches: {hops}\nBegin with <search>{answer}</search>"

# The extractive game (game.extractive): the answer is a short phrase of a passage the proposer is shown.
PROPOSER_EXTRACTIVE_SYSTEM = (
    "You write a quiz question whose answer is a short phrase copied from an encyclopedia passage. You get the "
    "passage, the answer (a phrase in it) and a number of searches n. Search with <search>query</search>; the results "
    "come back inside <information> and </information>. Search for what the passage says about the answer, one search "
    "at a time, up to n searches, so that you know a reader can find it. You may reason inside <think> and </think>. "
    "Then write one question inside <question> and </question>. Rules for the question: its answer is exactly the "
    "given phrase; use only facts from the passage or the search results; never write the answer; it must make sense "
    "to someone who has not seen the passage (never 'the passage' or 'the text'); it must have exactly one correct "
    "answer. Example: for the answer 1889, from a passage saying that the Eiffel Tower was completed in 1889 for the "
    "World's Fair in Paris, a good question is <question>In which year was the Eiffel Tower completed?</question>"
)

PROPOSER_EXTRACTIVE_USER = (
    "Passage ({title}): {passage}\nAnswer: {answer}\nNumber of searches: {hops}\nBegin with <search>{title} {answer}</search>"
)

# The extractive game with game.proposer_span = "own": the proposer also chooses the answer, a short phrase of the
# passage, and writes it before its question on the same line (study v3, phase 3.4: half the given spans were phrases
# no question singles out, such as "II" or "President"; asked for the answer after its question, the 1.5B model
# closed the tag without it in 4 of 8 proposals).
PROPOSER_OWN_SPAN_SYSTEM = (
    "You write a quiz question about an encyclopedia passage and choose its answer yourself: a short phrase copied "
    "from the passage, at most {words} words (a name, a number, a date or a few words), that one question can single "
    "out. You get the passage and a number of searches n. Search with <search>query</search>; the results come back "
    "inside <information> and </information>. Search for what the passage says, one search at a time, up to n "
    "searches, so that you know a reader can find it. You may reason inside <think> and </think>. Then write the "
    "answer and the question on one line inside <question> and </question>, the answer first, as: Answer: phrase. "
    "Question: question? Rules: the "
    "answer is copied exactly from the passage; the question never contains it; use only facts from the passage or "
    "the search results; the question must make sense to someone who has not seen the passage (never 'the passage' or "
    "'the text'); it must have exactly one correct answer. Example: from a passage saying that the Eiffel Tower was "
    "completed in 1889 for the World's Fair in Paris, a good result is <question>Answer: 1889. Question: In which "
    "year was the Eiffel Tower completed?</question>"
)

PROPOSER_OWN_SPAN_USER = "Passage ({title}): {passage}\nNumber of searches: {hops}\nBegin with <search>{title}</search>"


def solver_messages(question: str, system: str = SOLVER_SYSTEM) -> tuple[str, str]:
    """`system` replaces the instructions only where a study compares wordings (benchmarks/chain.py)."""
    return system, SOLVER_USER.format(question=question)


EXAMPLES = "\nQuestions of the kind wanted (other answers, same style):\n{examples}"


def seed_examples(extra: dict) -> str:
    """Example questions a seed carries: SSP's `sys_question_example` (text) or `example_questions` (a list)."""
    text = extra.get("sys_question_example")
    if isinstance(text, str) and text.strip():
        return text.strip()
    items = extra.get("example_questions")
    if isinstance(items, list):
        return "\n".join(f"- {q.strip()}" for q in items if isinstance(q, str) and q.strip())
    return ""


def proposer_messages(
    answer: str, hops: int, examples: str = "", passage: str = "", title: str = "", own_span_words: int = 0
) -> tuple[str, str]:
    """The proposer's prompt; a seed's example questions, when it has any, are shown in the system part (SSP).
    With a `passage` (the extractive game) the proposer reads it and asks for a phrase of it: the given `answer`,
    or with `own_span_words` > 0 a phrase of at most that many words it chooses (`answer` is then not shown)."""
    extra = EXAMPLES.format(examples=examples) if examples else ""
    if passage and own_span_words:
        user = PROPOSER_OWN_SPAN_USER.format(passage=passage, title=title, hops=hops)
        return PROPOSER_OWN_SPAN_SYSTEM.format(words=own_span_words) + extra, user
    if passage:
        user = PROPOSER_EXTRACTIVE_USER.format(passage=passage, title=title, answer=answer, hops=hops)
        return PROPOSER_EXTRACTIVE_SYSTEM + extra, user
    return PROPOSER_SYSTEM + extra, PROPOSER_USER.format(answer=answer, hops=hops)
