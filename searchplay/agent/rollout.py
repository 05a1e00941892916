"""Run many agent episodes together: one batched generate per turn, one batched search per turn.

Each turn, for every active episode:
1. (guided scaffold) append the opening tag of the next action — `<search>` before the last
   turn, the final tag (`<answer>` or `<question>`) at the last — as masked tokens;
2. generate (all active episodes in one call), append the sampled tokens as trainable;
3. parse the action: a final tag ends the episode; a search is collected;
4. run all collected searches in one retriever call and append `<information>` as masked
   tokens. A failed search either ends only the episodes whose query failed, with stop reason
   `error` (`rollout.on_search_error = "end"`), or shows the error text inside `<information>`
   and goes on (`"show"`, the paper's code); either way the trajectory counts it in
   `search_errors`, and the game keeps such episodes out of the loss.

An engine that plays whole episodes itself (`EpisodeRunner`: the Ray backend's rollout workers,
each with its own engine and retriever) is handed the batch instead, and the `retriever`
argument is unused: the workers search with their own. Callers (the game, evaluation) are the same.

The turns run inside `engine.keep_kv()`, so each turn encodes only the tokens added since the
episode's previous turn (its keys/values for the rest are kept), not the whole episode again.

An end-of-turn token that ends a turn before the last one is dropped from the episode (neither
trained nor shown again): in a guided turn it ends the tag's content like a closing tag would, and
the loop closes the tag; in a free turn the hint follows. Keeping it would train the model on a
sequence that goes on after its end-of-turn marker (`...<|im_end|></search>`). On the last turn
it is the real end of the episode and stays, trained like any sampled token.

A turn with no action (free: no complete tag; guided: empty content) either gets a short masked
hint and the episode goes on (`rollout.on_no_action = "hint"`), or ends the episode with stop
reason `no_action` (`"end"`, the paper's code). Budgets:
`max_turns`, `max_new_tokens` per turn and `max_total_tokens` (prompt + response); tokens
sampled past the total budget are dropped and the episode stops with `length`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from searchplay.agent.protocol import parse_action
from searchplay.agent.trajectory import Trajectory, Turn, tag_content
from searchplay.config import RolloutConfig
from searchplay.llm.base import Engine, Generation, SamplingParams
from searchplay.llm.chat import chat_ids
from searchplay.search.base import Hit, Retriever, SearchError, render_hits

FinalTag = Literal["answer", "question"]
NO_ACTION_HINT = (
    "\n<information>No action found. Search with <search>your query</search> or finish with "
    "<{final}>...</{final}>.</information>\n"
)


def chat_prompt_ids(tokenizer: Any, system: str, user: str) -> list[int]:
    """Render system + user with the model's chat template, ready for the assistant's turn."""
    return chat_ids(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": user}])


def information_text(hits: list[Hit]) -> str:
    return f"\n<information>{render_hits(hits) if hits else 'No results.'}</information>\n"


@runtime_checkable
class EpisodeRunner(Protocol):
    """An engine that runs `run_episodes` itself, on workers that hold their own engines and retrievers."""

    def run_episodes(
        self, prompts: list[list[int]], cfg: RolloutConfig, final_tag: FinalTag, topk: int, metas: list[dict[str, Any]] | None
    ) -> list[Trajectory]: ...


@dataclass
class _Episode:
    traj: Trajectory
    done: bool = False


class _Tokens:
    """Token ids of loop-inserted text, cached per string."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = list(self.tokenizer.encode(text, add_special_tokens=False))
        return self._cache[text]


def run_episodes(
    engine: Engine,
    retriever: Retriever,
    prompts: list[list[int]],
    cfg: RolloutConfig,
    final_tag: FinalTag = "answer",
    topk: int = 3,
    metas: list[dict[str, Any]] | None = None,
) -> list[Trajectory]:
    """Play one episode per prompt; returns trajectories in prompt order."""
    if isinstance(engine, EpisodeRunner):
        return engine.run_episodes(prompts, cfg, final_tag, topk, metas)
    tokens = _Tokens(engine.tokenizer)
    episodes = [_Episode(Trajectory(list(p), meta=dict(metas[i]) if metas else {})) for i, p in enumerate(prompts)]
    with engine.keep_kv():  # each turn then encodes only its new tokens, not the whole episode again
        _play_turns(engine, retriever, episodes, cfg, final_tag, topk, tokens)
    for e in episodes:
        if not e.done:
            e.traj.stop_reason = "max_turns"
    return [e.traj for e in episodes]


def _play_turns(
    engine: Engine,
    retriever: Retriever,
    episodes: list[_Episode],
    cfg: RolloutConfig,
    final_tag: FinalTag,
    topk: int,
    tokens: _Tokens,
) -> None:
    guided = cfg.scaffold == "guided"
    for turn in range(cfg.max_turns):
        active = [e for e in episodes if not e.done]
        if not active:
            break
        last_turn = turn == cfg.max_turns - 1
        tag = final_tag if (guided and last_turn) else "search"
        opening = f"<{tag}>" if guided else ""
        for e in active:
            if opening:
                e.traj.append(tokens(opening), trainable=False)
            if e.traj.total_tokens >= cfg.max_total_tokens:
                e.traj.stop_reason, e.done = "length", True
        active = [e for e in active if not e.done]
        stops = [f"</{tag}>"] if guided else ["</search>", f"</{final_tag}>"]
        params = SamplingParams(cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, stops, cfg.seed + turn)
        generations = engine.generate([e.traj.prompt_ids + e.traj.response_ids for e in active], params)
        searches: list[tuple[_Episode, str]] = []
        for e, g in zip(active, generations):
            action = _record_turn(e, g, cfg, tokens, opening, tag, final_tag, last_turn)
            if action is not None:
                searches.append((e, action))
        _run_searches(searches, retriever, topk, cfg, tokens)


def _record_turn(
    e: _Episode, g: Generation, cfg: RolloutConfig, tokens: _Tokens, opening: str, tag: str, final_tag: FinalTag, last_turn: bool
) -> str | None:
    """Append one generation to its episode; returns the search query if the turn searches."""
    traj = e.traj
    budget = cfg.max_total_tokens - traj.total_tokens
    ids, lps, over = g.token_ids[:budget], g.logprobs[:budget], len(g.token_ids) > budget
    if g.finish_reason == "eos" and not over and not last_turn:
        ids, lps = ids[:-1], lps[:-1]  # the episode goes on: an end-of-turn token inside it is dropped (module doc)
    traj.append(ids, trainable=True, logprobs=lps)
    text = engine_text(tokens.tokenizer, ids)
    turn = Turn(text=opening + text, action="none", generated_tokens=len(ids), finish_reason=g.finish_reason)
    traj.turns.append(turn)
    if over:
        traj.stop_reason, e.done = "length", True
        return None
    if opening:  # guided: the content is the first line the model wrote, up to the first closing tag
        content = tag_content(text)[0]
        if f"</{tag}>" not in text and not (last_turn and g.finish_reason == "eos"):  # nothing follows a kept end of turn
            traj.append(tokens(f"</{tag}>"), trainable=False)
        action_kind = tag if content else "none"
    else:
        action = parse_action(text, final_tag)
        action_kind, content = action.kind, action.content
    turn.action, turn.content = action_kind, content
    if action_kind == final_tag:
        traj.final, traj.stop_reason, e.done = content, final_tag, True
        return None
    if action_kind == "search":
        return content
    if not last_turn and cfg.on_no_action == "end":
        traj.stop_reason, e.done = "no_action", True
    elif not opening and not last_turn:
        traj.append(tokens(NO_ACTION_HINT.format(final=final_tag)), trainable=False)
    elif opening and not last_turn:  # guided turn with an empty query: tell the model, go on
        traj.append(tokens(information_text([])), trainable=False)
    return None


def engine_text(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def _run_searches(
    searches: list[tuple[_Episode, str]], retriever: Retriever, topk: int, cfg: RolloutConfig, tokens: _Tokens
) -> None:
    if not searches:
        return
    queries = [q for _, q in searches]
    try:
        results: list[list[Hit] | SearchError] = list(retriever.search(queries, topk))
    except SearchError:
        results = []  # find out which queries fail, one by one, so that only those episodes end
        for q in queries:
            try:
                results.append(retriever.search([q], topk)[0])
            except SearchError as err:
                results.append(err)
    for (e, _), hits in zip(searches, results):
        turn = e.traj.turns[-1]
        if isinstance(hits, SearchError):
            turn.error = str(hits)
            e.traj.search_errors += 1
            if cfg.on_search_error == "end":
                e.traj.stop_reason, e.done = "error", True
                continue
            text = f"\n<information>Search failed: {hits}</information>\n"
        else:
            turn.hits = [{"id": h.id, "title": h.title, "text": h.text, "score": round(h.score, 4)} for h in hits]
            text = information_text(hits)
        info = list(tokens.tokenizer.encode(text, add_special_tokens=False))
        if e.traj.total_tokens + len(info) > cfg.max_total_tokens:
            e.traj.stop_reason, e.done = "length", True
            continue
        e.traj.append(info, trainable=False)


def rollout_metrics(trajectories: list[Trajectory], prefix: str = "rollout") -> dict[str, float]:
    """Counts and means that every caller logs: stop reasons, searches, tokens, errors."""
    n = max(len(trajectories), 1)
    reasons = Counter(t.stop_reason for t in trajectories)
    out = {
        f"{prefix}/episodes": float(len(trajectories)),
        f"{prefix}/searches_mean": sum(len(t.search_queries) for t in trajectories) / n,
        f"{prefix}/generated_tokens_mean": sum(t.generated_tokens for t in trajectories) / n,
        f"{prefix}/total_tokens_mean": sum(t.total_tokens for t in trajectories) / n,
        f"{prefix}/retriever_errors": float(sum(t.search_errors for t in trajectories)),
    }
    for r in ("answer", "question", "max_turns", "length", "error", "no_action"):
        out[f"{prefix}/stop_{r}"] = reasons.get(r, 0) / n
    queries = [q for t in trajectories for q in t.search_queries]
    if queries:  # no searches is not a collapse: the series has no point then
        out[f"{prefix}/query_diversity"] = query_diversity(queries)
    out[f"{prefix}/queries"] = float(len(queries))
    return out


def query_diversity(queries: list[str], words: int = 3) -> float:
    """Distinct first-`words`-word prefixes per query (1.0: all differ; 0 without queries). A policy dragged
    by the other role's updates collapses here first: 590 of 600 queries once began "is a" / "is used"."""
    if not queries:
        return 0.0
    return len({" ".join(q.lower().split()[:words]) for q in queries}) / len(queries)
