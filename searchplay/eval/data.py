"""QA dataset loaders: bundled sets, Search-R1/FlashRAG jsonl and parquet, any jsonl with a field map.

Golden answers are read from, in order: `golden_answers`, `answers`, `answer`, or the nested
`reward_model.ground_truth.target` of the paper's released test file (a string or a list).
A `field_map` such as {"question": "query", "golden_answers": "labels"} renames fields first.
Every problem names the file, the line (or row) and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from searchplay.assets import asset_file
from searchplay.jsonl import parse_jsonl

BUNDLED = (
    "nq-test",
    "triviaqa-test",
    "nq-answerable",
    "triviaqa-answerable",
    "nq-dev",
    "triviaqa-dev",
    "nq-dev-answerable",
    "triviaqa-dev-answerable",
)


class DatasetError(ValueError):
    """A QA file that cannot be read; names file, line and problem."""


def _answers(record: dict[str, Any]) -> list[str]:
    for key in ("golden_answers", "answers", "answer"):
        if key in record:
            value = record[key]
            break
    else:
        try:
            value = record["reward_model"]["ground_truth"]["target"]
        except (KeyError, TypeError):
            raise ValueError("no answers: expected golden_answers, answers, answer or reward_model.ground_truth.target") from None
    if hasattr(value, "tolist"):
        value = value.tolist()  # numpy arrays from parquet
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"answers must be a string or a non-empty list of strings, got {value!r:.80}")
    return value


def normalize_record(record: Any, index: int, field_map: dict[str, str] | None = None) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    if field_map:
        record = {**record, **{ours: record[theirs] for ours, theirs in field_map.items() if theirs in record}}
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing or empty field 'question'")
    return {"id": str(record.get("id", index)), "question": question.strip(), "golden_answers": _answers(record)}


def dataset_label(name_or_path: str) -> str:
    """The name a dataset goes by in reports and file names: a bundled name, or a file's stem."""
    return name_or_path if name_or_path in BUNDLED else Path(name_or_path).stem


def dataset_path(name_or_path: str) -> Path:
    """A dataset's file: a bundled set's built asset or the file given; DatasetError naming both kinds when neither
    (cheap: callers check every dataset a command will read before it makes anything)."""
    if name_or_path in BUNDLED:
        return asset_file(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise DatasetError(f"dataset {name_or_path!r} is neither a bundled set ({', '.join(BUNDLED)}) nor a file")
    return path


def load_dataset(name_or_path: str, field_map: dict[str, str] | None = None) -> list[dict[str, Any]]:
    path = dataset_path(name_or_path)
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
        out = []
        for i, row in enumerate(rows):
            try:
                out.append(normalize_record(row, i, field_map))
            except ValueError as e:
                raise DatasetError(f"{path}: row {i + 1}: {e}") from None
        return out
    out = parse_jsonl(path, lambda record, i: normalize_record(record, i, field_map), DatasetError)
    if not out:
        raise DatasetError(f"{path} holds no questions")
    return out
