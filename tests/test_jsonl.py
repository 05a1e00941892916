"""JSON-lines records, plain or gzipped, read back exactly (committed study records are gzipped)."""

from __future__ import annotations

from pathlib import Path

from searchplay.jsonl import gzip_record, read_jsonl, stored, write_jsonl

RECORDS = [{"q": "line\u2028separator, paragraph\u2029and next\x85line", "n": 1}, {"q": "plain", "n": 2}]


def test_records_holding_unicode_line_separators_read_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    write_jsonl(RECORDS, path)  # ensure_ascii=False: the separators are written as they are
    assert read_jsonl(path) == RECORDS  # str.splitlines cut them into broken JSON (TriviaQA holds such characters)
    packed = gzip_record(path)
    assert not path.exists() and stored(path) == packed and read_jsonl(path) == RECORDS
    first = packed.read_bytes()
    write_jsonl(RECORDS, path)
    gzip_record(path)
    assert packed.read_bytes() == first  # no timestamp inside: the same records give the same bytes
