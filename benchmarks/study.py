"""The study behind `make study`: does search self-play help the bundled 135M model, at our scale?

Phases, each skipped when its output exists, so an interrupted study resumes where it stopped:

  eval base          the bundled model on the first --limit questions of each test set
  train selfplay     self-play (no QA labels) for --minutes of training time (configs/cpu-smollm2.toml)
  eval selfplay      its last checkpoint, same questions and settings
  train supervised   the control: the solver alone on the labelled dev splits, same config and time
  eval supervised
  report             `searchplay compare` tables against the base, a Table-1 style summary, plots

Evaluation: greedy, BM25 top-3, guided scaffold, 3 turns: the settings of docs/baselines. Each
(model, dataset) pair is its own evaluation directory under docs/study/evals/. Training runs live
under runs/study/ (checkpoints are large; never committed); their metrics.jsonl is copied into
docs/study/runs/. Training resumes from its last checkpoint; the time budget counts rounds and
updates across resumes (trainer.max_minutes), not the periodic evaluation on nq-dev-answerable.
Settings were not chosen on the test sets; the periodic evaluation uses a dev split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from searchplay.config import load_config
from searchplay.eval.data import load_dataset
from searchplay.eval.report import compare
from searchplay.eval.stats import paired_bootstrap
from searchplay.jsonl import write_jsonl
from searchplay.train.plot import plot_runs

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("nq-answerable", "triviaqa-answerable")
SUPERVISED_SETS = ("nq-dev-answerable", "triviaqa-dev-answerable")


def searchplay(*args: str) -> None:
    cmd = [sys.executable, "-m", "searchplay", *args]
    print("$ searchplay " + " ".join(args), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def evaluate(name: str, model: str, out: Path, limit: int, config: Path) -> None:
    for dataset in DATASETS:
        target = out / "evals" / f"{name}-{dataset}"
        if (target / "summary.json").is_file():
            print(f"eval {name} on {dataset}: done", flush=True)
            continue
        partial = target.with_name(target.name + ".partial")
        resume = ["--resume"] if partial.is_dir() else []  # an evaluation that was interrupted continues
        searchplay(
            "eval",
            "--model",
            model,
            "--data",
            dataset,
            "--limit",
            str(limit),
            "--retriever",
            "bm25",
            "--config",
            str(config),
            "--out",
            str(partial),
            *resume,
        )
        partial.rename(target)


def supervised_data(work: Path) -> Path:
    """The labelled dev questions of both datasets, interleaved, for the supervised control."""
    path = work / "supervised-train.jsonl"
    if not path.is_file():
        sets = [load_dataset(name) for name in SUPERVISED_SETS]
        mixed = [r for pair in zip(*sets) for r in pair]
        work.mkdir(parents=True, exist_ok=True)
        write_jsonl(mixed, path)
    return path


def train(name: str, work: Path, minutes: float, config: Path, extra: list[str]) -> Path:
    run = work / name
    done = run / "STUDY_DONE"
    if done.is_file():
        print(f"train {name}: done", flush=True)
        return run
    settings = [
        "--set",
        "trainer.steps=100000",
        "--set",
        f"trainer.max_minutes={minutes}",
        "--set",
        "trainer.save_every=5",
        "--set",
        "trainer.keep_checkpoints=1",
        "--set",
        "trainer.eval_every=10",
        "--set",
        "trainer.eval_limit=32",
        "--set",
        "trainer.eval_data=nq-dev-answerable",
        *extra,
    ]
    if (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step-*")):
        searchplay("train", "--resume", str(run), "--steps", "100000")
    else:
        shutil.rmtree(run, ignore_errors=True)  # ours: a run killed before its first checkpoint
        searchplay("train", "--config", str(config), "--run-dir", str(run), *settings)
    done.write_text("finished\n")
    return run


def table(out: Path, names: list[str]) -> str:
    """Table-1 style: base, then each trained model as score and paired difference to the base."""
    head = "| dataset | metric | base | " + " | ".join(f"+{n} (diff [95% CI])" for n in names) + " |"
    lines = [head, "|" + " --- |" * (3 + len(names))]
    for dataset in DATASETS:
        base = _scores(out / "evals" / f"base-{dataset}" / f"predictions-{dataset}.jsonl")
        for metric in ("em", "cover_em", "f1"):
            ids = list(base)
            cells = [f"{100 * sum(base[i][metric] for i in ids) / len(ids):.1f}"]
            for n in names:
                other = _scores(out / "evals" / f"{n}-{dataset}" / f"predictions-{dataset}.jsonl")
                a, b = [base[i][metric] for i in ids], [other[i][metric] for i in ids]
                r = paired_bootstrap(a, b)
                cells.append(f"{100 * sum(b) / len(b):.1f} ({100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}])")
            lines.append(f"| {dataset} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _scores(path: Path) -> dict[str, dict[str, float]]:
    return {r["id"]: r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}


def report(out: Path, runs: dict[str, Path]) -> None:
    for name, run in runs.items():
        target = out / "runs" / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "metrics.jsonl", target / "metrics.jsonl")
        shutil.copy(run / "config.toml", target / "config.toml")
        plot_runs([target], out / f"curves-{name}.png", window=5)
    plot_runs([out / "runs" / n for n in runs], out / "curves.png", window=5, labels=list(runs))
    comparisons = [compare(out / "evals" / f"base-{d}", out / "evals" / f"{n}-{d}") for n in runs for d in DATASETS]
    (out / "compare.md").write_text("\n".join(comparisons))
    summary = table(out, list(runs))
    (out / "table.md").write_text(summary)
    print(summary)
    print("\n".join(comparisons))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="training time of each run (rounds + updates)")
    parser.add_argument("--limit", type=int, default=300, help="first N questions of each test set")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "study", help="results (committed)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "study", help="run directories with checkpoints")
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "configs" / "cpu-smollm2.toml",
        help="training and evaluation config; its model.path is the base model",
    )
    args = parser.parse_args()
    if args.minutes <= 0 or args.limit < 1:
        parser.error("--minutes must be > 0 and --limit >= 1")
    config = args.config.resolve()
    base = load_config(config).model.path
    evaluate("base", base, args.out, args.limit, config)
    selfplay = train("selfplay", args.work, args.minutes, config, [])
    evaluate("selfplay", str(selfplay), args.out, args.limit, config)
    data = supervised_data(args.work)
    supervised = train(
        "supervised", args.work, args.minutes, config, ["--set", "game.mode=supervised", "--set", f"game.train_data={data}"]
    )
    evaluate("supervised", str(supervised), args.out, args.limit, config)
    report(args.out, {"selfplay": selfplay, "supervised": supervised})


if __name__ == "__main__":
    main()
