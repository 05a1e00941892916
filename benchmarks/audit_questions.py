"""The hand audit of accepted questions (learning v2): a worksheet to judge, then the precision figures.

  python benchmarks/audit_questions.py sheet QUESTIONS.jsonl [--count 50] > sheet.md
      each question with its answer and what the solver's retriever (the config's, top-k) returns for
      it, the answer marked where a passage holds it: what a judge needs to decide
  python benchmarks/audit_questions.py figures JUDGED.jsonl [JUDGED.jsonl ...]
      per file: answerable / unique answer / well-formed rates with 95% Wilson intervals (markdown)
  python benchmarks/audit_questions.py verifiers JUDGED.jsonl [JUDGED.jsonl ...] [--model DIR]
      the reading check against the hand judgements: the model reads what the solver's retriever finds
      for each question (top-k) and answers; a question passes when that answer equals / contains its
      own (`game.verifier = "reading"` uses "contains"). Precision and recall of "passes" for "answerable"
  python benchmarks/audit_questions.py keep QUESTIONS.jsonl OUT.jsonl [--model DIR]
      the questions of a probe file that pass the same reading check (docs/study/probes-read.jsonl)

A judged file holds one line per question: {"id", "question", "answer", "answerable", "unique",
"well_formed", "note"}. The criteria (docs/study/audit.md): answerable, the corpus holds the
answer and searching the question finds it; unique, the question has one correct answer, the given
one; well-formed, a grammatical question that stands alone (no "the passage", no statement).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from searchplay.assets.names import model_path, resolve_search
from searchplay.config import load_config
from searchplay.game.verify import policy_answers
from searchplay.judge.match import exact_match, substring_match
from searchplay.llm.device import resolve_numerics
from searchplay.llm.engines import open_engine
from searchplay.search.base import render_hits
from searchplay.search.resolve import open_retriever

ROOT = Path(__file__).resolve().parents[1]
CRITERIA = ("answerable", "unique", "well_formed")


def sheet(path: Path, count: int, config: Path) -> str:
    cfg = load_config(config)
    retriever = open_retriever(resolve_search(cfg.search, cfg))
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:count]
    hits = retriever.search([r["question"] for r in rows], cfg.search.topk)
    out = [f"# Audit sheet: {path.name} ({len(rows)} questions, {cfg.search.kind} top {cfg.search.topk})\n"]
    for r, found in zip(rows, hits):
        answers = r["golden_answers"]
        out.append(f"## {r['id']}\n\n**Q:** {r['question']}  \n**A:** {' | '.join(answers)}\n")
        for h in found:
            holds = any(re.search(rf"\b{re.escape(a)}\b", h.text, re.IGNORECASE) for a in answers)
            out.append(f"- {'**[answer]** ' if holds else ''}{h.title}: {h.text[:300]}")
        out.append("")
    return "\n".join(out)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def figures(paths: list[Path]) -> str:
    lines = ["| questions | n | " + " | ".join(c.replace("_", "-") for c in CRITERIA) + " | all three |"]
    lines.append("|" + " --- |" * (len(CRITERIA) + 3))
    for path in paths:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        n = len(rows)
        cells = []
        for test in [*(lambda r, c=c: bool(r[c]) for c in CRITERIA), lambda r: all(r[c] for c in CRITERIA)]:
            k = sum(1 for r in rows if test(r))
            lo, hi = wilson(k, n)
            cells.append(f"{100 * k / n:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]")
        lines.append(f"| {path.stem} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_judged(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]


def read_answers(questions: list[str], config: Path, model: str) -> list[str | None]:
    """What the reader answers to each question from the config's retriever's top-k for it."""
    cfg, _ = resolve_numerics(load_config(config))
    # our engine: a few hundred short answers do not need vLLM, whose CPU workers fail to start under this script's imports
    cfg.model.engine = "transformers"
    engine = open_engine(model_path(model, cfg), cfg.model)
    retriever = open_retriever(resolve_search(cfg.search, cfg))
    hits = retriever.search(questions, cfg.search.topk)
    return policy_answers(engine, [(q, render_hits(h)) for q, h in zip(questions, hits)], guided=True)


def keep(path: Path, out: Path, config: Path, model: str) -> str:
    rows = read_judged([path])
    answers = read_answers([r["question"] for r in rows], config, model)
    kept = [r for r, a in zip(rows, answers) if a is not None and substring_match(a, r["golden_answers"])]
    out.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return f"{len(kept)} of {len(rows)} questions of {path.name} pass the reading check -> {out}"


def verifiers(paths: list[Path], config: Path, model: str) -> str:
    cfg = load_config(config)
    rows = read_judged(paths)
    answers = read_answers([r["question"] for r in rows], config, model)
    right = [bool(r["answerable"]) for r in rows]
    lines = [f"reader {model}, {cfg.search.kind} top {cfg.search.topk}, {len(rows)} judged questions", ""]
    lines.append("| the reader's answer | passes | answerable | both | precision | recall |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for rule, match in (("equals the question's answer", exact_match), ("contains it", substring_match)):
        passed = [a is not None and match(a, [r["answer"]]) for r, a in zip(rows, answers)]
        tp = sum(p and g for p, g in zip(passed, right))
        precision = f"{100 * tp / sum(passed):.0f}%" if any(passed) else "-"
        recall = f"{100 * tp / sum(right):.0f}%" if any(right) else "-"
        lines.append(f"| {rule} | {sum(passed)} | {sum(right)} | {tp} | {precision} | {recall} |")
    lines.append("")
    for r, a in zip(rows, answers):
        contains = a is not None and substring_match(a, [r["answer"]])
        mark = ("contains" if contains else "-") + (", right" if r["answerable"] else "")
        lines.append(f"- {mark}: {r['question']} -> {a!r} (answer {r['answer']!r})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sheet")
    s.add_argument("questions", type=Path)
    s.add_argument("--count", type=int, default=50)
    s.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-smollm2.toml")
    f = sub.add_parser("figures")
    f.add_argument("judged", type=Path, nargs="+")
    v = sub.add_parser("verifiers")
    v.add_argument("judged", type=Path, nargs="+")
    v.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-smollm2.toml")
    v.add_argument("--model", default="bundled", help="the reader: a model directory or 'bundled'")
    k = sub.add_parser("keep")
    k.add_argument("questions", type=Path)
    k.add_argument("out", type=Path)
    k.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-smollm2.toml")
    k.add_argument("--model", default="bundled", help="the reader: a model directory or 'bundled'")
    args = parser.parse_args()
    if args.command == "keep":
        print(keep(args.questions, args.out, args.config, args.model))
    elif args.command == "sheet":
        print(sheet(args.questions, args.count, args.config))
    elif args.command == "verifiers":
        print(verifiers(args.judged, args.config, args.model))
    else:
        print(figures(args.judged))


if __name__ == "__main__":
    main()
