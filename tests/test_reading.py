"""Reading accuracy given the answer passage (eval/reading.py), on the real BM25 index and real models."""

from __future__ import annotations

from searchplay.assets.names import BUNDLED, model_path
from searchplay.config import Config
from searchplay.eval.data import load_dataset
from searchplay.eval.reading import (
    ReadingItem,
    answer_passages,
    is_document_label,
    read_answers,
    reading_prompt,
    reading_summary,
)
from searchplay.judge.match import substring_match
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.search.base import Hit


def test_answer_passage_is_the_best_ranked_hit_holding_an_answer(cfg: Config, bundled_bm25, tiny_engine) -> None:
    records = load_dataset("nq-dev-answerable")[:40]
    items, missing = answer_passages(records, bundled_bm25, depth=10)
    assert len(items) + missing == 40 and 0 < len(items) < 40  # BM25's top 10 holds the answer for some, not all
    first, before = answer_passages(records, bundled_bm25, depth=10, want=5)
    assert [i.record["id"] for i in first] == [i.record["id"] for i in items[:5]]
    assert before == records.index(items[4].record) + 1 - 5  # the questions without a passage before the fifth with one
    for item in items:
        hits = bundled_bm25.search([item.record["question"]], 10)[0]
        assert hits[item.rank - 1].id == item.passage.id
        assert substring_match(item.passage.text, item.record["golden_answers"])
        assert not any(substring_match(h.text, item.record["golden_answers"]) for h in hits[: item.rank - 1])
    answers = read_answers(tiny_engine, items[:6], max_new_tokens=6, batch_size=4)
    assert [a["id"] for a in answers] == [i.record["id"] for i in items[:6]]
    assert all(0.0 <= a["cover_em"] <= 1.0 and a["em"] <= a["cover_em"] for a in answers)
    summary = reading_summary(answers, missing)
    assert summary["questions"] == 6 and summary["without_answer_passage"] == missing
    free = read_answers(tiny_engine, items[:2], max_new_tokens=6, guided=False)
    assert all(a["prediction"] is None and a["cover_em"] == 0.0 for a in free)  # a random model closes no <answer> tag


def test_reading_prompt_is_the_guided_solver_after_one_search(tiny_engine) -> None:
    passage = Hit("p1", "Eiffel Tower", "The Eiffel Tower is a wrought-iron tower in Paris.", 1.0)
    text = tiny_engine.tokenizer.decode(reading_prompt(tiny_engine.tokenizer, "Where is the Eiffel Tower?", passage))
    assert text.endswith(
        "<search>Where is the Eiffel Tower?</search>\n<information>Doc 1 (Title: Eiffel Tower) "
        "The Eiffel Tower is a wrought-iron tower in Paris.</information>\n<answer>"
    )
    assert text.index("Question: Where is the Eiffel Tower?") < text.rindex("<search>")
    free = tiny_engine.tokenizer.decode(
        reading_prompt(tiny_engine.tokenizer, "Where is the Eiffel Tower?", passage, guided=False)
    )
    assert free == text.removesuffix("<answer>")  # free: the model opens (and must close) its own answer tag
    other = tiny_engine.tokenizer.decode(
        reading_prompt(tiny_engine.tokenizer, "Where is the Eiffel Tower?", passage, system="Answer from the results.")
    )
    assert "Answer from the results." in other and "encyclopedia" in text and "encyclopedia" not in other


def test_answers_naming_a_result_are_counted_as_labels() -> None:
    for label in ("Doc 1", "doc 2", "Document 3", " Doc1 (Title: Paul)"):
        assert is_document_label(label), label
    for answer in ("Doctor Who", "Paul", "Docklands 2012", "", None, "the Doc 1 passage"):
        assert not is_document_label(answer), answer
    records = [{"prediction": p, "em": 0.0, "cover_em": 0.0, "f1": 0.0} for p in ("Doc 1", "Paul", None, "Document 2")]
    assert reading_summary(records, 0)["document_labels"] == 0.5


def test_bundled_model_reads_an_easy_passage(cfg: Config) -> None:
    engine = TransformersEngine.load(model_path(BUNDLED, cfg), "float32", threads=2)
    record = {"id": "q", "question": "What is the capital of France?", "golden_answers": ["Paris"]}
    passage = Hit("p", "France", "France is a country in Western Europe. Its capital and largest city is Paris.", 1.0)
    [answer] = read_answers(engine, [ReadingItem(record, passage, 1)])
    assert answer["cover_em"] == 1.0, answer


def test_evaluation_says_whether_the_searches_and_the_raw_question_found_the_answer(
    cfg: Config, bundled_bm25, tiny_engine
) -> None:
    from searchplay.config import RolloutConfig
    from searchplay.eval.evaluate import evaluate, summarize

    records = load_dataset("nq-dev-answerable")[:12]
    rollout = RolloutConfig(scaffold="guided", max_turns=2, max_new_tokens=6, temperature=0.0)
    preds = evaluate(tiny_engine, bundled_bm25, records, rollout, topk=3)
    for p in preds:
        assert p.found == any(substring_match(h["text"], p.golden_answers) for h in p.trajectory.retrieved)
        top = bundled_bm25.search([p.question], 3)[0]
        assert p.question_found == any(substring_match(h.text, p.golden_answers) for h in top)
    summary = summarize([p.to_dict() for p in preds])
    assert summary["question_recall"] == sum(bool(p.question_found) for p in preds) / 12 > 0
    assert summary["search_recall"] == sum(p.found for p in preds) / 12
    old = [{k: v for k, v in p.to_dict().items() if k not in ("found", "question_found")} for p in preds]
    assert "search_recall" not in summarize(old)  # predictions files written before these fields existed
