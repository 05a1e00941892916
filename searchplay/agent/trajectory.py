"""A Trajectory: one agent episode as the learner will see it, plus what happened on each turn.

`prompt_ids` is the rendered prompt; `response_ids` is everything after it, in order: the
model's sampled tokens, tags the loop inserted (guided scaffold) and `<information>` blocks.
`loss_mask[i]` is 1 exactly where `response_ids[i]` was sampled by the model, and
`logprobs[i]` is the engine's log-probability for those tokens (0.0 elsewhere).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

StopReason = Literal["answer", "question", "max_turns", "length", "error", "no_action"]


def tag_content(written: str) -> tuple[str, bool]:
    """(content, ended) of what a model wrote after an opening tag: the first line that says something, up to
    the first closing tag of any kind ("Paris</answer>", and "Paris</information>" alike: a 135M model often
    closes with the wrong tag). A line without a letter or digit (":") or one that leads in to the next ("The
    answer is:") is passed over, since the 135M model opens many searches with ":" and a line break and many
    answers with "The answer is:" (docs/study/v2-plan.md, phase 2d); when every line is such, the first one is
    the content. `ended` says whether the model ended the content (a closing tag or a line break follows it)
    rather than being cut off mid-line."""
    text = written.strip()
    close = text.find("</")
    lines = (text if close < 0 else text[:close]).split("\n")
    says = [i for i, line in enumerate(lines) if _LETTER_OR_DIGIT.search(line)]
    content = [i for i in says if not lines[i].rstrip().endswith(":")]
    i = content[0] if content else says[0] if says else 0
    return lines[i].strip(), close >= 0 or i < len(lines) - 1


_LETTER_OR_DIGIT = re.compile(r"\w")


@dataclass
class Turn:
    text: str  # model-written text of the turn (inserted tags included, for reading)
    action: str  # search | answer | question | none
    content: str = ""  # the query, answer or question
    generated_tokens: int = 0
    finish_reason: str = ""  # engine finish reason: stop | length | eos
    hits: list[dict[str, Any]] = field(default_factory=list)  # id, title, text, score of retrieved documents
    error: str = ""


@dataclass
class Trajectory:
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    final: str | None = None  # content of the final <answer>/<question>
    stop_reason: StopReason | None = None
    search_errors: int = 0  # searches that failed (infrastructure): the episode is kept out of the loss
    meta: dict[str, Any] = field(default_factory=dict)  # caller's data: question id, seed, role, ...

    def append(self, ids: list[int], trainable: bool, logprobs: list[float] | None = None) -> None:
        self.response_ids += ids
        self.loss_mask += [int(trainable)] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)

    @property
    def search_queries(self) -> list[str]:
        return [t.content for t in self.turns if t.action == "search"]

    @property
    def retrieved(self) -> list[dict[str, Any]]:
        """Every retrieved document once, in retrieval order."""
        seen: dict[str, dict[str, Any]] = {}
        for t in self.turns:
            for h in t.hits:
                seen.setdefault(h["id"], h)
        return list(seen.values())

    @property
    def final_cut_off(self) -> bool:
        """The final answer/question was cut by the per-turn token cap before the model ended it (no closing
        tag, no line break: the guided scaffold then inserts the closing tag itself): a fragment, not the
        model's answer."""
        if self.final is None or not self.turns:
            return False
        last = self.turns[-1]
        written = last.text.split(f"<{self.stop_reason}>", 1)[-1]  # after the opening tag
        return last.finish_reason == "length" and not tag_content(written)[1]

    @property
    def total_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    @property
    def generated_tokens(self) -> int:
        return sum(self.loss_mask)

    def summary(self) -> dict[str, Any]:
        return {
            "stop_reason": self.stop_reason,
            "final": self.final,
            "turns": len(self.turns),
            "searches": len(self.search_queries),
            "queries": self.search_queries,
            "search_errors": self.search_errors,
            "generated_tokens": self.generated_tokens,
            "total_tokens": self.total_tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        turns = [Turn(**t) for t in data.get("turns", [])]
        return cls(**{**data, "turns": turns})
