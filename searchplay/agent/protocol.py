"""The tag protocol the agents speak, and a parser that never raises.

Tags: `<think>` (reasoning), `<search>` (a query), `<information>` (retrieved documents, written
by the loop, never by the model), `<answer>` (the solver's final answer) and `<question>` (the
proposer's final question).

Parsing rule, for any text:
- a tag's *content* is the text between a closing tag `</t>` and the nearest `<t>` before it
  (so for nested `<t>a <t>b</t>` the content is `b`), stripped of surrounding white space;
- an opening tag with no closing tag after it yields nothing (an unclosed tag is no action);
- a turn's *action* is the complete search/final tag whose closing tag comes first in the text
  (generation stops at the first closing tag, so normally there is only one);
- the final answer of a whole response is the content of its *last* complete final tag, and the
  number of final tags is reported (the reward divides when a model spams them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

ActionKind = Literal["search", "answer", "question", "none"]
TAGS = ("think", "search", "information", "answer", "question")


@cache
def _pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"<{tag}>((?:(?!<{tag}>).)*?)</{tag}>", re.DOTALL)


def find_tags(text: str, tag: str) -> list[tuple[int, str]]:
    """(end position of the closing tag, stripped content) of every complete `tag` pair, in order."""
    return [(m.end(), m.group(1).strip()) for m in _pattern(tag).finditer(text)]


def last_tag(text: str, tag: str) -> str | None:
    found = find_tags(text, tag)
    return found[-1][1] if found else None


def count_tags(text: str, tag: str) -> int:
    return len(find_tags(text, tag))


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    content: str = ""


def parse_action(text: str, final_tag: Literal["answer", "question"]) -> Action:
    """The first completed search or final action in a turn's text (see the module docstring)."""
    best: tuple[int, ActionKind, str] | None = None
    for kind in ("search", final_tag):
        found = find_tags(text, kind)
        if found and (best is None or found[0][0] < best[0]):
            best = (found[0][0], kind, found[0][1])
    if best is None or not best[2]:
        return Action("none")
    return Action(best[1], best[2])
