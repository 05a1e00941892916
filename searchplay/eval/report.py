"""Evaluation reports: per-dataset metrics with 95% bootstrap intervals, and side-by-side comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from searchplay.eval.evaluate import summarize
from searchplay.eval.stats import bootstrap_ci, paired_bootstrap
from searchplay.jsonl import read_jsonl

ACCURACY_METRICS = ("em", "cover_em", "f1", "judge_acc")


def dataset_report(records: list[dict[str, Any]], judged: list[bool | None] | None, judge_model: str = "") -> dict[str, Any]:
    """Summary of prediction records with a 95% bootstrap interval per accuracy metric."""
    report: dict[str, Any] = summarize(records)
    columns = {m: [float(r[m]) for r in records] for m in ("em", "cover_em", "f1")}
    if judged is not None:
        columns["judge_acc"] = [1.0 if v else 0.0 for v in judged]
        report["judge_acc"] = sum(columns["judge_acc"]) / max(len(judged), 1)
        report["judge_unknown"] = sum(v is None for v in judged)
        report["judge_model"] = judge_model
    for name, values in columns.items():
        report[f"{name}_ci"] = list(bootstrap_ci(values))
    return report


def summary_markdown(summary: dict[str, Any], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "| dataset | n | EM | cover EM | F1 | judge acc | answered | searches | searches found it | question finds it "
        "| retriever errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in summary["datasets"].items():

        def cell(metric: str, r: dict[str, Any] = r) -> str:
            if metric not in r:
                return "-"
            lo, hi = r[f"{metric}_ci"]
            return f"{100 * r[metric]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

        def share(metric: str, r: dict[str, Any] = r) -> str:
            return f"{100 * r[metric]:.0f}%" if metric in r else "-"

        lines.append(
            f"| {name} | {r['n']:.0f} | {cell('em')} | {cell('cover_em')} | {cell('f1')} | {cell('judge_acc')} | "
            f"{100 * r['answer_rate']:.0f}% | {r['searches_mean']:.2f} | {share('search_recall')} | "
            f"{share('question_recall')} | {r.get('retriever_errors', 0):.0f} |"
        )
    judge = next((r["judge_model"] for r in summary["datasets"].values() if r.get("judge_model")), "")
    lines += [
        "",
        f"Model: `{summary['model']}`; retriever: {summary['retriever']}; decoding: temperature "
        f"{summary['temperature']}; scaffold: {summary['scaffold']}, {summary['max_turns']} turns. "
        f"Brackets: 95% bootstrap intervals." + (f" Judge: `{judge}`." if judge else " No LLM judge."),
    ]
    return "\n".join(lines) + "\n"


class CompareError(ValueError):
    """Two evaluations that cannot be compared; the message says why."""


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Predictions by question id, from `path` or its gzipped copy (a committed study record)."""
    return {r["id"]: r for r in read_jsonl(path)}


def compare(dir_a: Path, dir_b: Path) -> str:
    """Markdown table: per dataset and metric, B - A with a paired bootstrap interval and won/lost counts."""
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (dir_a, dir_b))
    lines = [
        f"# {dir_b} vs {dir_a}",
        "",
        "| dataset | metric | A | B | B - A [95% CI] | won | lost | n |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    warnings: list[str] = []
    shared_sets = [n for n in sa["datasets"] if n in sb["datasets"]]
    if not shared_sets:
        raise CompareError(f"no dataset in both evaluations (A: {', '.join(sa['datasets'])}; B: {', '.join(sb['datasets'])})")
    for name in sa["datasets"]:
        if name not in sb["datasets"]:
            continue
        pa = read_predictions(dir_a / f"predictions-{name}.jsonl")
        pb = read_predictions(dir_b / f"predictions-{name}.jsonl")
        ids = [i for i in pa if i in pb]
        if not ids:
            raise CompareError(
                f"{name}: the two evaluations share no question ids ({len(pa)} in A, {len(pb)} in B); "
                "evaluate both on the same questions (same --data and --limit)"
            )
        if len(ids) < 0.9 * max(len(pa), len(pb)):
            warnings.append(
                f"> warning: {name}: only {len(ids)} shared questions ({len(pa)} in A, {len(pb)} in B); "
                "the comparison covers the shared ones only"
            )
        for metric in ACCURACY_METRICS:
            if metric == "judge_acc":
                if not all("judge" in pa[i] and "judge" in pb[i] for i in ids):
                    continue
                a = [1.0 if pa[i]["judge"] else 0.0 for i in ids]
                b = [1.0 if pb[i]["judge"] else 0.0 for i in ids]
            else:
                a, b = [float(pa[i][metric]) for i in ids], [float(pb[i][metric]) for i in ids]
            r = paired_bootstrap(a, b)
            mean_a, mean_b = sum(a) / max(len(a), 1), sum(b) / max(len(b), 1)
            lines.append(
                f"| {name} | {metric} | {100 * mean_a:.1f} | {100 * mean_b:.1f} | {100 * r['diff']:+.1f} "
                f"[{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}] | {r['won']} | {r['lost']} | {r['n']} |"
            )
    return "\n".join(lines + (["", *warnings] if warnings else [])) + "\n"
