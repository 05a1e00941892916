"""The hand audit of accepted questions (learning v2): a worksheet to judge, then the precision figures.

  python benchmarks/audit_questions.py sheet QUESTIONS.jsonl [--count 50] > sheet.md
      each question with its answer and what the solver's retriever (the config's, top-k) returns for
      it, the answer marked where a passage holds it: what a judge needs to decide
  python benchmarks/audit_questions.py figures JUDGED.jsonl [JUDGED.jsonl ...]
      per file: answerable / unique answer / well-formed rates with 95% Wilson intervals (markdown)

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

from searchplay.assets.names import resolve_search
from searchplay.config import load_config
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sheet")
    s.add_argument("questions", type=Path)
    s.add_argument("--count", type=int, default=50)
    s.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-smollm2.toml")
    f = sub.add_parser("figures")
    f.add_argument("judged", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "sheet":
        print(sheet(args.questions, args.count, args.config))
    else:
        print(figures(args.judged))


if __name__ == "__main__":
    main()
