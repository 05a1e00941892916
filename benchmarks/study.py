"""The learning study behind `make study` (docs/study/v2-plan.md): does search self-play help the bundled 135M
model once the game pays for answerable questions and short answers?

  python benchmarks/study.py sweep [--only a,b] [--steps 11] [--limit 200]
      short runs of the settings in SWEEP, judged on the first --limit questions of the dev splits
      (nq-dev-answerable, triviaqa-dev-answerable) and on the probe questions; writes docs/study/sweep.md
  python benchmarks/study.py arms --setting NAME [--steps 101] [--limit 500]
      the arms of ARMS with the sweep's chosen setting, on the first --limit questions of the test sets
  python benchmarks/study.py report
      Table 1's layout with paired intervals against the base (and supervised-then-selfplay against supervised),
      the form of the answers, the probe curve, where the chain breaks, curves, comparisons

Paths are options (--config, --out, --work, --probes); the defaults are the committed study's.
Every phase is skipped when its output exists, so an interrupted study resumes where it stopped:
a run continues from its last checkpoint (`train --resume --restart`: one without a checkpoint starts
again), an evaluation from its last prediction (`eval --resume`). The arms are matched on steps (ARM_STEPS):
this project's machine changes between sessions (an Intel VM with AMX, an AMD EPYC without it where an
update takes twice as long), and a time budget would give arms on different machines different amounts of
training. Every evaluation runs the config's engine, dtype and
retriever with the settings in EVAL_SETTINGS. Run folders with checkpoints live under --work
(runs/study-v2/, never committed); each run's config.toml, metrics.jsonl and every 10th step's
trajectories are copied under --out (docs/study/v2/runs/), evaluations are written under
docs/study/v2/evals/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchplay.assets.names import resolve_search
from searchplay.config import load_config
from searchplay.eval.data import load_dataset
from searchplay.eval.report import compare
from searchplay.eval.stats import paired_bootstrap
from searchplay.game.extract import mentions
from searchplay.jsonl import gzip_record, read_jsonl, write_jsonl
from searchplay.search.base import Hit, Retriever
from searchplay.search.resolve import open_retriever
from searchplay.train.plot import plot_runs

ROOT = Path(__file__).resolve().parents[1]
DEV_SETS = ("nq-dev-answerable", "triviaqa-dev-answerable")
TEST_SETS = ("nq-answerable", "triviaqa-answerable")
SUPERVISED_SETS = DEV_SETS  # the supervised control's labelled questions: never the test sets

# What every run shares: questions are not cut at 24 tokens (the phase-1 finding); 16 seeds a step, since the
# base proposer gets about 3% of its questions past the retrievable check (docs/study/v2-plan.md, phase 2)
# and 4 would leave most steps without a new question; trajectories of every 10th step are kept,
# checkpoints every 5 steps, no periodic evaluation (the study evaluates at the end). Micro-batches of 2,048
# tokens: at the config's 8,192 (no gradient checkpointing) an update peaked at 13.6 GiB of the trainer's
# memory and was killed for memory beside other jobs on this 24 GiB machine; the sum is the same.
COMMON = [
    "rollout.max_new_tokens=48",
    "game.batch_size=16",
    "learner.micro_batch_tokens=2048",
    "trainer.save_every=5",
    "trainer.keep_checkpoints=1",
    "trainer.eval_every=0",
]
EVAL_SETTINGS = ["rollout.max_new_tokens=48"]
V2 = [
    "game.verifier=reading",
    "game.proposer_reward=frontier",
    "game.solver_reward=em_partial",
    "game.max_answer_words=8",
    "solver.norm_std=false",
]
# Settings of the sweep, most informative first (a partial sweep still answers the main question):
# the whole v2 game against the v1 game, then changes away from v2 (8 in all). The v2 verifier reads: on the
# hand-audited questions `retrievable` kept 8% right ones, `reading` 67% (docs/study/audit.md).
# The first four ran with the solver prompt before commit 35f6616 (its example answer, "Marie Curie", was
# copied; docs/study/v2-plan.md, phase 2c) and the first-line content rule (phase 2d), and are judged against
# the base model under those. Under `reading` the solver was never updated (3 of 176 and 3 of 704 proposals
# accepted), so the last four vary the one v2 game in which it was, the one with `retrievable`, under the
# present prompt.
RETRIEVABLE = [*V2, "game.verifier=retrievable"]
SWEEP: dict[str, list[str]] = {
    "v2": V2,
    "v1-game": [],
    "v2-retrievable": RETRIEVABLE,
    "v2-seeds64": [*V2, "game.batch_size=64"],  # v2 accepted 3 of 176 proposals in 11 steps: 4x the proposals a step
    "retrievable": RETRIEVABLE,  # the same game as v2-retrievable, under the present solver prompt
    "retrievable-reward-1-acc": [*RETRIEVABLE, "game.proposer_reward=1-acc"],
    "retrievable-solver-f1": [*RETRIEVABLE, "game.solver_reward=f1"],
    "retrievable-norm-std": [*RETRIEVABLE, "solver.norm_std=true"],
}
SWEEP_STEPS = 11  # what v2 did in 12 minutes (docs/study/v2-plan.md, phase 3)
# Steps per arm: run folders do not survive this project's sessions (3 hours, often a fresh machine), so an arm
# is trained and evaluated within one, and the supervised arm and the run continuing from its weights within
# the same one: 40 steps of each plus both evaluations take about 2.5 hours on the slowest machine measured
# (AMD EPYC without AMX: about 100 s a self-play step, 8 minutes per 500-question evaluation).
ARM_STEPS = 40
KEPT = ["frozen-proposer-101"]  # earlier runs kept beside the arms in the report: the fifth session's 101-step frozen proposer
CHOSEN = "retrievable"  # the sweep's choice on the dev splits (docs/study/sweep.md, "Chosen setting")
EARLIER_PROMPT = {"v2", "v1-game", "v2-retrievable", "v2-seeds64"}  # judged against "base-prompt-a"


def baseline(name: str) -> str:
    """The base model's evaluations a sweep setting is compared with: under the solver prompt it ran with."""
    return "base-prompt-a" if name in EARLIER_PROMPT else "base"


@dataclass(frozen=True)
class Study:
    config: Path  # training and evaluation config; its model.path is the base model
    out: Path  # results (committed)
    work: Path  # run folders with checkpoints (not committed)
    probes: Path  # the probe questions (searchplay probe build)


def searchplay(*args: str) -> None:
    """One command in its own process group: when it dies (killed for memory, say), what it started dies with
    it; vLLM's engine processes outlived a killed trainer by half an hour, holding 4 GiB each."""
    print("$ searchplay " + " ".join(args), flush=True)
    with subprocess.Popen([sys.executable, "-m", "searchplay", *args], cwd=ROOT, start_new_session=True) as proc:
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # its own session does not see the terminal's Ctrl-C: pass it on, let it stop
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
            raise
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # only this command's own group: nothing else is touched
    if code:
        raise subprocess.CalledProcessError(code, ["searchplay", *args])


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def train(s: Study, name: str, overrides: list[str], steps: int) -> Path:
    """A run of `steps` steps under work/name, continued if it was interrupted. A resumed run drops any time
    budget it was started with (trainer.max_minutes), so that it ends at the step count too."""
    run = s.work / name
    if (run / "STUDY_DONE").is_file():
        print(f"train {name}: done", flush=True)
        return run
    if (run / "config.toml").is_file():
        searchplay("train", "--resume", str(run), "--restart", "--steps", str(steps), *sets("trainer.max_minutes=0"))
    else:
        settings = sets(*COMMON, f"trainer.steps={steps}", *overrides)
        searchplay("train", "--config", str(s.config), "--run-dir", str(run), *settings)
    (run / "STUDY_DONE").write_text("finished\n")
    return run


def evaluate(s: Study, name: str, model: str, datasets: list[str], limit: int) -> None:
    """One evaluation folder per (model, dataset) under out/evals, continued if it was interrupted."""
    for dataset in datasets:
        label = Path(dataset).stem if dataset.endswith(".jsonl") else dataset
        target = s.out / "evals" / f"{name}-{label}"
        if (target / "summary.json").is_file():
            print(f"eval {name} on {label}: done", flush=True)
            continue
        resume = ["--resume"] if target.is_dir() else []
        args = ["--model", model, "--data", dataset, "--limit", str(limit), "--batch-size", "64"]
        searchplay("eval", *args, "--config", str(s.config), *sets(*EVAL_SETTINGS), "--out", str(target), *resume)
        for predictions in target.glob("predictions-*.jsonl"):  # committed: kept small (report reads either)
            gzip_record(predictions)


def keep_run(s: Study, name: str, run: Path) -> None:
    """The run's record under out/runs: config, metrics and every 10th step's trajectories (gzipped)."""
    target = s.out / "runs" / name
    (target / "trajectories").mkdir(parents=True, exist_ok=True)
    for file in ("config.toml", "metrics.jsonl"):
        shutil.copy(run / file, target / file)
    for path in sorted((run / "trajectories").glob("step-*.jsonl")):
        if int(path.stem.split("-")[1]) % 10 == 0:
            gzip_record(Path(shutil.copy(path, target / "trajectories" / path.name)))


def scores(s: Study, name: str, dataset: str) -> dict[str, dict[str, Any]]:
    label = Path(dataset).stem if dataset.endswith(".jsonl") else dataset
    path = s.out / "evals" / f"{name}-{label}" / f"predictions-{label}.jsonl"
    return {r["id"]: r for r in read_jsonl(path)}


def last(metrics: Path, key: str, window: int = 5) -> float | None:
    """Mean of `key` over the run's last `window` steps that logged it."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))][-window:]
    return sum(values) / len(values) if values else None


def fmt(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{scale * value:.1f}" if scale != 1.0 else f"{value:.2f}"


def sweep_table(s: Study, names: list[str]) -> str:
    """Dev EM / F1 (and the probe questions) per setting with the paired difference to its base (`baseline`), and
    the game's health over each run's last 5 steps."""
    judged = [*DEV_SETS, str(s.probes)]
    head = ["setting", "steps"]
    head += [f"{Path(d).stem} EM (diff [95% CI])" for d in judged] + ["learnable", "answer words", "solver EM (train)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    bases = sorted({baseline(n) for n in names}, key=lambda b: b != "base-prompt-a")
    for name in [*bases, *names]:
        is_base = name in bases
        cells = [name]
        metrics = s.out / "runs" / name / "metrics.jsonl"
        steps = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        cells.append("0" if is_base else str(steps))
        for dataset in judged:
            base, other = scores(s, name if is_base else baseline(name), dataset), scores(s, name, dataset)
            ids = list(base)
            a, b = [base[i]["em"] for i in ids], [other[i]["em"] for i in ids]
            if is_base:
                cells.append(f"{100 * sum(a) / len(a):.1f}")
                continue
            r = paired_bootstrap(a, b)
            cells.append(f"{100 * sum(b) / len(b):.1f} ({100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}])")
        for key, scale in (("proposer/learnable_fraction", 1.0), ("solver/answer_words", 1.0), ("solver/em", 100.0)):
            cells.append(fmt(last(metrics, key), scale) if metrics.is_file() else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_sweep(s: Study, only: list[str], steps: int, limit: int) -> None:
    if not s.probes.is_file():
        raise SystemExit(f"{s.probes} is missing: build it first (docs/study/v2-plan.md, phase 2)")
    names = only or list(SWEEP)
    unknown = sorted(set(names) - set(SWEEP))
    if unknown:
        raise SystemExit(f"unknown sweep settings {unknown}; choose from {list(SWEEP)}")
    judged = [*DEV_SETS, str(s.probes)]
    for name in names:
        if name in EARLIER_PROMPT and not is_judged(s, name):
            raise SystemExit(f"{name} ran under the solver prompt before commit 35f6616: check that commit out to run it")
    evaluate(s, "base", base_model(s), judged, limit)
    for name in names:
        if name in EARLIER_PROMPT:
            continue
        run = train(s, f"sweep-{name}", SWEEP[name], steps=steps)
        keep_run(s, name, run)
        evaluate(s, name, str(run), judged, limit)
    done = [n for n in SWEEP if is_judged(s, n)]
    table = sweep_table(s, done)
    (s.out / "sweep-table.md").write_text(table)
    plot_runs([s.out / "runs" / n for n in done], s.out / "sweep-curves.png", window=3, labels=done)
    print(table)


def is_judged(s: Study, name: str) -> bool:
    """Whether a sweep setting's last evaluation (the probes) is written."""
    return (s.out / "evals" / f"{name}-{s.probes.stem}" / "summary.json").is_file()


def base_model(s: Study) -> str:
    return load_config(s.config).model.path


def supervised_data(s: Study) -> Path:
    """The labelled dev questions of both datasets, interleaved, for the supervised arms."""
    path = s.work / "supervised-train.jsonl"
    if not path.is_file():
        mixed = [r for pair in zip(*(load_dataset(name) for name in SUPERVISED_SETS)) for r in pair]
        s.work.mkdir(parents=True, exist_ok=True)
        write_jsonl(mixed, path)
    return path


def arms(s: Study, setting: list[str]) -> dict[str, list[str]]:
    """The arms (docs/study/v2-plan.md, phase 4): overrides of each, on top of the chosen setting."""
    supervised = ["game.mode=supervised", f"game.train_data={supervised_data(s)}"]
    setting = [*setting, f"trainer.probe_data={s.probes}", "trainer.probe_every=10"]  # the probe curve
    return {
        "selfplay": setting,
        "frozen-proposer": [*setting, "proposer.train=false"],
        "selfplay-seed1": [*setting, "game.seed=1", "learner.seed=1", "rollout.seed=1"],
        "supervised": [*setting, *supervised],
        "supervised-then-selfplay": setting,  # continues from the supervised run's weights (run_arms)
    }


def run_arms(s: Study, setting_name: str, steps: int, limit: int) -> None:
    setting = SWEEP[setting_name]
    evaluate(s, "base", base_model(s), list(TEST_SETS), limit)
    for name, overrides in arms(s, setting).items():
        if is_evaluated(s, name) and not orphaned(s, name):
            print(f"arm {name}: record and test evaluations committed", flush=True)
            continue
        if orphaned(s, name):
            print(f"arm {name}: evaluated, but supervised-then-selfplay starts from its weights and its run folder is not"
                  " on this machine: it is trained and evaluated again", flush=True)  # fmt: skip
            for dataset in TEST_SETS:
                shutil.rmtree(s.out / "evals" / f"{name}-{dataset}", ignore_errors=True)  # this script's, in git
        if name == "supervised-then-selfplay":
            supervised = s.work / "arm-supervised"
            overrides = [*overrides, f"model.path={supervised / 'checkpoints' / latest_step(supervised)}/model"]
        run = train(s, f"arm-{name}", overrides, steps=steps)
        keep_run(s, name, run)
        evaluate(s, name, str(run), list(TEST_SETS), limit)
    report(s, list(arms(s, setting)))


def is_evaluated(s: Study, name: str) -> bool:
    """Whether an arm's record and every test evaluation are under --out: it needs no training again, even on a
    machine without its run folder (run folders are not committed)."""
    evals = [s.out / "evals" / f"{name}-{d}" / "summary.json" for d in TEST_SETS]
    return (s.out / "runs" / name / "metrics.jsonl").is_file() and all(p.is_file() for p in evals)


def orphaned(s: Study, name: str) -> bool:
    """The supervised arm evaluated on another machine while supervised-then-selfplay, which continues from its
    weights (they live only in the run folder), is not: both must then be trained on this one."""
    checkpoints = (s.work / "arm-supervised" / "checkpoints").glob("step-*")
    return name == "supervised" and not is_evaluated(s, "supervised-then-selfplay") and not any(checkpoints)


def latest_step(run: Path) -> str:
    steps = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    if not steps:
        raise SystemExit(
            f"{run} has no checkpoint: supervised-then-selfplay starts from the supervised arm's weights, which live only"
            " in its run folder; `arms` trains both on one machine"
        )
    return steps[-1].name


def report(s: Study, arm_names: list[str]) -> None:
    """Table-1 style on the test sets: base, then each evaluated arm (and KEPT run) as score and paired difference
    to the base (and supervised-then-selfplay against supervised alone), each one's steps and training minutes,
    the form of its answers, its probe curve and where its chain breaks; arms not yet evaluated are named below the
    tables."""
    names = [n for n in [*arm_names, *KEPT] if is_evaluated(s, n)]
    missing = [n for n in arm_names if n not in names]
    lines = paired_table(s, "base", names)
    if {"supervised", "supervised-then-selfplay"} <= set(names):  # the continual row's target: beat supervised alone
        lines += ["", *paired_table(s, "supervised", ["supervised-then-selfplay"])]
    lines += ["", "| arm | steps | training minutes | proposer episodes whose first search is their answer |"]
    lines += ["| --- | --- | --- | --- |"]
    for n in names:
        rows = [json.loads(line) for line in (s.out / "runs" / n / "metrics.jsonl").read_text().splitlines() if line.strip()]
        searched, named = answer_searches(s.out / "runs" / n / "trajectories")
        share = f"{named} of {searched}" if searched else "-"
        lines.append(f"| {n} | {rows[-1]['step']} | {rows[-1].get('timing/train_s', 0.0) / 60:.1f} | {share} |")
    lines += ["", *answer_habits(s, ["base", *names])]
    lines += ["", *probe_table(s, names)]
    lines += ["", *chain_table(s, ["base", *names])]
    if missing:
        lines += ["", f"Not evaluated yet: {', '.join(missing)}."]
    table = "\n".join(lines) + "\n"
    (s.out / "table.md").write_text(table)
    comparisons = [compare(s.out / "evals" / f"base-{d}", s.out / "evals" / f"{n}-{d}") for n in names for d in TEST_SETS]
    (s.out / "compare.md").write_text("\n".join(comparisons))
    plot_runs([s.out / "runs" / n for n in names], s.out / "curves.png", window=5, labels=names)
    print(table)


def paired_table(s: Study, reference: str, names: list[str]) -> list[str]:
    """Table 1's layout: a row per model, test-set EM, cover EM and F1 in the columns; `reference` as plain scores,
    each of `names` with its paired difference to it and the 95% bootstrap interval."""
    metrics = ("em", "cover_em", "f1")
    head = ["model", *(f"{d} {m}" for d in TEST_SETS for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    refs = {d: scores(s, reference, d) for d in TEST_SETS}
    for name in [reference, *names]:
        cells = [name]
        for dataset in TEST_SETS:
            ids = list(refs[dataset])
            other = scores(s, name, dataset)
            for metric in metrics:
                a, b = [refs[dataset][i][metric] for i in ids], [other[i][metric] for i in ids]
                if name == reference:
                    cells.append(f"{100 * sum(a) / len(a):.1f}")
                    continue
                r = paired_bootstrap(a, b)
                cells.append(f"{100 * sum(b) / len(b):.1f} ({100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}])")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def probe_table(s: Study, names: list[str]) -> list[str]:
    """The probe curve: at each step that answered the probe questions, each run's mean reward and its exact answers
    (the probe set is greedy and fixed, so the rows of one column are comparable)."""
    count = len([line for line in s.probes.read_text().splitlines() if line.strip()])
    curves = {}
    for name in names:
        rows = [json.loads(line) for line in (s.out / "runs" / name / "metrics.jsonl").read_text().splitlines() if line.strip()]
        curves[name] = {r["step"]: r for r in rows if "probe/reward" in r}
    steps = sorted({step for curve in curves.values() for step in curve})
    lines = [f"| step | {' | '.join(f'{n} probe reward (exact of {count})' for n in names)} |", "|" + " --- |" * (1 + len(names))]
    for step in steps:
        points = [curves[n].get(step) for n in names]
        cells = [f"{p['probe/reward']:.3f} ({round(p['probe/em'] * count)})" if p else "-" for p in points]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    base = s.out / "evals" / f"base-{s.probes.stem}" / "summary.json"
    if base.is_file():
        em = json.loads(base.read_text())["datasets"][s.probes.stem]["em"]
        lines += ["", f"The base model on the same questions (`searchplay eval`, greedy): {round(em * count)} of {count} exact."]
    return lines


def chain_table(s: Study, names: list[str]) -> list[str]:
    """Where the chain from question to exact answer breaks, per model and test set: whether the question itself,
    used as the query with the config's retriever and top-k, finds a passage holding a golden answer (retrieval at
    its easiest); whether the model's own searches did; of those questions, how many answers hold a golden answer
    (reading); of those, how many are exact (answer form)."""
    cfg = load_config(s.config)
    retriever, k = open_retriever(resolve_search(cfg.search, cfg)), cfg.search.topk
    lines = [
        f"| model | dataset | the question as the query finds it (top {k}) | its own searches find it "
        "| its answer holds it, when found | exact, when held |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for dataset in TEST_SETS:
        questions = list(scores(s, "base", dataset).values())
        cache = s.work / "found"  # what an evaluation's searches find does not change: searched once per report machine
        easiest = found(retriever, k, [[q["question"]] for q in questions], questions, cache / f"question-{dataset}-top{k}.json")
        for name in names:
            rows = list(scores(s, name, dataset).values())
            hit = found(retriever, k, [r["trajectory"]["queries"] for r in rows], rows, cache / f"{name}-{dataset}-top{k}.json")
            held = [r["cover_em"] > 0 for r, h in zip(rows, hit) if h]
            exact = [r["em"] > 0 for r, h in zip(rows, hit) if h and r["cover_em"] > 0]
            cells = [name, dataset, f"{100 * sum(easiest) / len(easiest):.1f}%", f"{100 * sum(hit) / len(hit):.1f}%"]
            lines.append("| " + " | ".join([*cells, f"{sum(held)} of {len(held)}", f"{sum(exact)} of {len(exact)}"]) + " |")
    return lines


def found(retriever: Retriever, k: int, queries: list[list[str]], rows: list[dict[str, Any]], cache: Path) -> list[bool]:
    """Per question (row): whether any of its queries' top-k passages (title and text, as the agent reads them) holds
    one of its golden answers; kept in `cache` with the questions and queries it holds for (an evaluation run again
    searches anew)."""
    key = [[r["id"], qs] for r, qs in zip(rows, queries)]
    if cache.is_file() and (kept := json.loads(cache.read_text()))["key"] == key:
        return kept["found"]
    unique = sorted({q for qs in queries for q in qs if q.strip()})
    hits: dict[str, list[Hit]] = {}
    for i in range(0, len(unique), 64):
        batch = unique[i : i + 64]
        hits.update(zip(batch, retriever.search(batch, k)))
    result = [any(mentions(h.contents, r["golden_answers"]) for q in qs for h in hits.get(q, [])) for qs, r in zip(queries, rows)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "found": result}))
    return result


def answer_searches(trajectories: Path) -> tuple[int, int]:
    """(proposer episodes that searched, those whose first search query is their own answer) in a run's kept
    trajectories: how the proposer looks for the facts of its question."""
    searched = named = 0
    for path in sorted(trajectories.glob("step-*.jsonl*")):
        for record in read_jsonl(path.with_name(path.name.removesuffix(".gz"))):
            answer = record["meta"].get("answer")
            queries = [turn["content"] for turn in record["turns"] if turn.get("action") == "search"]
            if answer and queries:
                searched += 1
                named += queries[0].strip().lower() == str(answer).strip().lower()
    return searched, named


def answer_habits(s: Study, names: list[str]) -> list[str]:
    """What the answers look like per model and test set: median words, answers found inside the question, and
    answers equal to the model's own first search query (a proposer's habit, searching its answer, showing in the
    solver)."""
    lines = [
        "| model | dataset | median answer words | answer inside the question | answer = first search query |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names:
        for dataset in TEST_SETS:
            rows = list(scores(s, name, dataset).values())
            answers = [(r["prediction"] or "").strip().lower() for r in rows]
            inside = sum(bool(a) and a.rstrip(".") in r["question"].lower() for a, r in zip(answers, rows))
            first = [(r["trajectory"]["queries"] or [""])[0].strip().lower() for r in rows]
            echoed = sum(bool(a) and a == q for a, q in zip(answers, first))
            words = statistics.median(len(a.split()) for a in answers)
            lines.append(f"| {name} | {dataset} | {words:g} | {inside} of {len(rows)} | {echoed} of {len(rows)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("sweep", "arms", "report"))
    parser.add_argument("--only", default="", help="sweep: comma-separated settings (default: all, in order)")
    parser.add_argument("--setting", default=CHOSEN, help="arms: the sweep setting the arms use (default: the sweep's choice)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"steps per run (sweep {SWEEP_STEPS}, arms {ARM_STEPS}): a fixed count, so that neither load on the machine"
        " nor the machine itself favours a setting",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N questions per set (sweep 200, arms 500)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-smollm2.toml", help="base config")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "study" / "v2", help="results (committed)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "study-v2", help="run folders with checkpoints")
    parser.add_argument("--probes", type=Path, default=ROOT / "docs" / "study" / "probes-read.jsonl", help="probe questions")
    args = parser.parse_args()
    s = Study(args.config.resolve(), args.out.resolve(), args.work.resolve(), args.probes.resolve())
    if (args.steps is not None and args.steps < 1) or (args.limit is not None and args.limit < 1):
        parser.error("--steps and --limit must be >= 1")
    if args.setting not in SWEEP:
        parser.error(f"--setting {args.setting!r}: choose from {list(SWEEP)}")
    if args.phase == "sweep":
        run_sweep(s, [n for n in args.only.split(",") if n], args.steps or SWEEP_STEPS, args.limit or 200)
    elif args.phase == "arms":
        run_arms(s, args.setting, args.steps or ARM_STEPS, args.limit or 500)
    else:
        report(s, list(arms(s, SWEEP[args.setting])))


if __name__ == "__main__":
    main()
