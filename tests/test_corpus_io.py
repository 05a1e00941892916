import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from searchplay.search.corpus import CorpusError, CorpusStats, Passage, read_passages, split_contents


def test_three_formats_give_the_same_passages(tmp_path: Path) -> None:
    rows = [Passage("1", "Paris", "Paris is the capital of France."), Passage("2", 'A "quoted" title', "Text\nwith lines.")]
    wiki18 = tmp_path / "c.jsonl"
    wiki18.write_text("".join(json.dumps(p.to_search_r1()) + "\n" for p in rows))
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n" for p in rows) + "\n")
    table = tmp_path / "c.parquet"
    pq.write_table(
        pa.table({"id": [p.id for p in rows], "title": [p.title for p in rows], "text": [p.text for p in rows]}), table
    )
    for path in (wiki18, plain, table):
        assert list(read_passages(path)) == rows


def test_contents_round_trip() -> None:
    p = Passage("x", "Title", "first line\nsecond")
    assert p.contents == '"Title"\nfirst line\nsecond'
    assert split_contents(p.contents) == ("Title", "first line\nsecond")
    assert split_contents("no quotes\nbody") == ("no quotes", "body")


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "1", "contents": "\\"T\\"\\nok"}\n{"id": "2"}\n{not json\n{"id": "4", "text": "fine"}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: needs either 'contents' or 'text'"):
        list(read_passages(f))
    stats = CorpusStats()
    passages = list(read_passages(f, skip_bad_lines=True, stats=stats))
    assert [p.id for p in passages] == ["1", "4"]
    assert stats.skipped == 2 and "bad.jsonl:3" in stats.skipped_examples[1]


def test_missing_file() -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        read_passages("/no/such/corpus.jsonl")
