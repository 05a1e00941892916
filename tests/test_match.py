from hypothesis import given
from hypothesis import strategies as st

from searchplay.judge.match import exact_match, f1, normalize_answer, substring_match


def test_normalisation_squad_conventions() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a pear") == "apple pear"
    assert normalize_answer("Theory") == "theory"  # 'the' only as a whole word
    assert normalize_answer("“Röntgen”") == "röntgen"


def test_exact_substring_and_f1_hand_computed() -> None:
    assert exact_match("the Paris", ["Paris", "Lutetia"])
    assert not exact_match("Paris, France", ["Paris"])
    assert substring_match("Paris, France", ["Paris"])
    assert not substring_match("Parisian", ["Paris"])  # on word boundaries
    assert f1("Paris France", ["Paris"]) == 2 * 0.5 * 1 / 1.5
    assert f1("barack obama", ["Obama", "Barack Hussein Obama"]) == max(2 * 0.5 / 1.5, 2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert f1("nothing", ["Paris"]) == 0.0
    assert f1("", ["Paris"]) == 0.0


words = st.lists(st.sampled_from(["the", "a", "Paris", "France", "capital", "of", ",", "!", "Lyon"]), max_size=8)


@given(words)
def test_normalisation_is_idempotent(parts: list[str]) -> None:
    text = " ".join(parts)
    assert normalize_answer(normalize_answer(text)) == normalize_answer(text)


@given(words, words)
def test_metric_relations(a: list[str], b: list[str]) -> None:
    pred, gold = " ".join(a), " ".join(b)
    assert exact_match(pred, [pred])
    if exact_match(pred, [gold]):
        assert f1(pred, [gold]) == 1.0 or not normalize_answer(gold)
        assert substring_match(pred, [gold]) or not normalize_answer(gold)
    assert 0.0 <= f1(pred, [gold]) <= 1.0
    assert f1(pred, [gold]) == f1(gold, [pred])  # token F1 is symmetric
