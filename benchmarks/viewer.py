"""Run viewer page load on a large run: 10,000 logged trajectories, in headless Chromium.

Builds a synthetic run directory shaped like the trainer's (100 steps x 100 trajectories written
with RunDir.write_trajectories, each with 3 turns of 3 retrieved documents, ~600 tokens; 100
metric lines of 80 series; a pool log of 5,000 questions with attempts and clears), serves it
with `searchplay view`'s app on 127.0.0.1 and measures, in Debian's Chromium driven by
Playwright, the time from navigation to the first complete render (curves, trajectory and pool
tables, body[data-ready]), then opening a trajectory, changing step (a step file not parsed
yet) and sorting the pool. Each page load is a new browser page; the server stays up, so loads
after the first find the latest step already parsed (the "warm" rows).

    .venv/bin/python benchmarks/viewer.py [--steps 100] [--per-step 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table

from searchplay.agent.trajectory import Trajectory, Turn
from searchplay.game.pool import PoolQuestion, QuestionPool
from searchplay.jsonl import write_jsonl
from searchplay.train.run_dir import RunDir
from searchplay.view.app import create_app
from searchplay.web import running_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WORDS = ("the", "of", "river", "city", "king", "war", "film", "album", "born", "capital", "team", "league", "song")  # fmt: skip


class WordTokenizer:
    """Ids are word indices: enough to write segments of the right size without loading a model."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return " ".join(WORDS[i % len(WORDS)] for i in ids)


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _trajectory(rng: random.Random, step: int, k: int) -> Trajectory:
    role = "proposer" if k % 2 == 0 else "solver"
    t = Trajectory(prompt_ids=[rng.randrange(50) for _ in range(200)])
    for turn in range(3):
        ids = [rng.randrange(50) for _ in range(20)]
        t.append(ids, True, [-rng.random() for _ in ids])
        hits = [
            {"id": f"doc{rng.randrange(10**6)}", "title": _text(rng, 2), "text": _text(rng, 50), "score": 10.0} for _ in range(3)
        ]
        t.append([rng.randrange(50) for _ in range(150)], False)
        t.turns.append(Turn(text=_text(rng, 20), action="search" if turn < 2 else "answer", content=_text(rng, 5), hits=hits))
    t.final, t.stop_reason = _text(rng, 4), "answer" if role == "solver" else "question"
    t.meta = {"role": role, "id": f"step{step}-{role[0]}{k}", "question": _text(rng, 12), "reward": rng.choice([0.0, 1.0])}
    t.meta["advantage"] = t.meta["reward"] - 0.5
    if role == "proposer":
        t.meta |= {"answer": _text(rng, 2), "hops": 2, "rejection": rng.choice([None, "too_short", "verification_failed"])}
        ids = [h["id"] for h in t.retrieved]
        t.meta["verification"] = {"passed": False, "answer": "x", "verdict": "mismatch", "evidence_ids": ids, "noisy_ids": []}
    return t


def build_run(root: Path, steps: int, per_step: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    run = RunDir(root)
    run.trajectories.mkdir(parents=True)
    run.config.write_text(f'[model]\npath = "synthetic"\n[game]\nmode = "selfplay"\n[trainer]\nsteps = {steps}\n')
    names = [f"{g}/m{i}" for g in ("solver", "proposer", "verify", "pool", "solver_update", "proposer_update", "timing", "eval")
             for i in range(10)]  # fmt: skip
    write_jsonl(({"step": s, "time": 0.0, **{n: rng.random() for n in names}} for s in range(1, steps + 1)), run.metrics)
    tokenizer = WordTokenizer()
    for s in range(1, steps + 1):
        run.write_trajectories(s, [_trajectory(rng, s, k) for k in range(per_step)], tokenizer)
    pool = QuestionPool(run.pool)
    for s in range(1, steps + 1):
        for k in range(50):
            q = PoolQuestion(f"step{s}-p{2 * k}", _text(rng, 12), _text(rng, 2), [], 2, s, f"step{s}-p{2 * k}", [], [], None,
                             "answer_in_evidence", [0.0, 1.0], rng.random())  # fmt: skip
            pool.add(q)
            if k % 5 == 0:
                pool.record_attempt(q.id, s, [1.0, 1.0], 1.0)
        if s % 10 == 0:
            pool.clear(0.5, s)
    return root


def measure(url: str, repeats: int, steps: int) -> list[dict[str, object]]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"first render": [], "open a trajectory": [], "change step": [], "sort the pool": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for r in range(repeats):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            times["first render"].append(time.perf_counter() - t0)
            page.click("#tabs button[data-tab=trajectories]")
            t0 = time.perf_counter()
            page.click("#trajectories-table tbody tr >> nth=0")
            page.wait_for_selector("#trajectories-detail pre.response")
            times["open a trajectory"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            page.select_option(".step-select[data-table=trajectories]", str(steps - 1 - r))  # not parsed before
            page.wait_for_function(
                f"document.querySelector('#trajectories-table tbody tr').dataset.id.startsWith('step{steps - 1 - r}-')"
            )
            times["change step"].append(time.perf_counter() - t0)
            page.click("#tabs button[data-tab=pool]")
            first = page.locator("#pool-table tbody tr >> nth=0").get_attribute("data-id")
            t0 = time.perf_counter()
            page.select_option(".sort-select[data-table=pool]", "success_rate")
            page.wait_for_function(f"document.querySelector('#pool-table tbody tr').dataset.id !== '{first}'")
            times["sort the pool"].append(time.perf_counter() - t0)
            page.close()
        browser.close()
    return [
        {"action": k, "first load (s)": f"{v[0]:.2f}", "later loads, median (s)": f"{statistics.median(v[1:] or v):.2f}"}
        for k, v in times.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--per-step", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = build_run(Path(tmp) / "run", args.steps, args.per_step)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"built {args.steps * args.per_step:,} trajectories in {time.perf_counter() - t0:.1f} s ({size / 2**20:.0f} MiB)")
        with running_server(create_app([root])) as url:
            rows = measure(url, args.repeats, args.steps)
    print_table(f"run viewer, {args.steps * args.per_step:,} trajectories, Chromium headless", rows)


if __name__ == "__main__":
    main()
