"""text_similarity: every OpenAI metric, checked against the libraries called directly."""

from __future__ import annotations

import math

import pytest

from still.errors import GraderError
from still.graders._text_similarity import METRICS, TextSimilarity, cosine, words

SENTENCE = "the quick brown fox jumps over the lazy dog near the river bank"
HYPOTHESIS = "the quick brown fox jumped over a lazy dog by the river"


def _grader(metric: str, threshold: float = 0.5, **kw: object) -> TextSimilarity:
    return TextSimilarity(
        name="sim",
        input="{{sample.output_text}}",
        reference="{{item.answer}}",
        evaluation_metric=metric,
        pass_threshold=threshold,
        **kw,  # type: ignore[arg-type]
    )


def _score(metric: str, output: str, answer: str, **kw: object) -> float:
    g = _grader(metric, **kw).grade({"output_text": output}, {"answer": answer}, "e1", "c1")
    assert g.error is None, g.error
    return g.score


def _embed(texts: list[str]) -> list[list[float]]:
    """A toy embedding: letter counts (a..z). Deterministic, no model."""
    return [[float(t.lower().count(chr(c))) for c in range(ord("a"), ord("z") + 1)] for t in texts]


def test_metrics_are_openais() -> None:
    assert set(METRICS) == {
        "fuzzy_match", "bleu", "gleu", "meteor", "cosine",
        "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l",
    }  # fmt: skip


@pytest.mark.parametrize("metric", [m for m in METRICS if m != "meteor"])
def test_identical_text_scores_one(metric: str) -> None:
    assert _score(metric, SENTENCE, SENTENCE, embed=_embed) == pytest.approx(1.0)


def test_identical_text_under_meteor_keeps_the_fragmentation_penalty() -> None:
    # METEOR's penalty is 0.5 * (chunks / matches)^3: one chunk of 13 matches.
    assert _score("meteor", SENTENCE, SENTENCE) == pytest.approx(1 - 0.5 / 13**3)
    assert _score("meteor", "Paris", "Paris") == pytest.approx(0.5)


def test_bleu_matches_sacrebleu() -> None:
    import sacrebleu

    expected = sacrebleu.sentence_bleu(HYPOTHESIS, [SENTENCE]).score / 100
    assert 0 < expected < 1
    assert _score("bleu", HYPOTHESIS, SENTENCE) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("metric", "key"),
    [("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_5", "rouge5"), ("rouge_l", "rougeL")],
)
def test_rouge_matches_rouge_score_fmeasure(metric: str, key: str) -> None:
    from rouge_score import rouge_scorer

    expected = rouge_scorer.RougeScorer([key]).score(SENTENCE, HYPOTHESIS)[key].fmeasure
    assert _score(metric, HYPOTHESIS, SENTENCE) == pytest.approx(expected)


def test_rouge_1_worked_example() -> None:
    # reference "the cat sat" vs "the cat ran": 2 of 3 unigrams either way -> F = 2/3.
    assert _score("rouge_1", "the cat ran", "the cat sat") == pytest.approx(2 / 3)


def test_rouge_n_of_text_shorter_than_n_is_zero() -> None:
    assert _score("rouge_5", "Paris", "Paris") == 0.0


def test_gleu_matches_nltk() -> None:
    from nltk.translate.gleu_score import sentence_gleu

    expected = sentence_gleu([SENTENCE.split()], HYPOTHESIS.split())
    assert _score("gleu", HYPOTHESIS, SENTENCE) == pytest.approx(expected)


def test_meteor_uses_stems_but_no_synonyms() -> None:
    from nltk.translate.meteor_score import single_meteor_score

    class NoWordNet:
        def synsets(self, word: str) -> list[object]:
            return []

    expected = single_meteor_score(SENTENCE.split(), HYPOTHESIS.split(), wordnet=NoWordNet())
    assert _score("meteor", HYPOTHESIS, SENTENCE) == pytest.approx(expected)
    # "cats run" ~ "cat running" through the Porter stemmer; "car" is no "automobile".
    assert _score("meteor", "cats run", "cat running") > 0.9
    assert _score("meteor", "car", "automobile") == 0.0


def test_fuzzy_match_is_rapidfuzz_ratio() -> None:
    # Indel distance kitten -> sitting is 5 over 13 characters.
    assert _score("fuzzy_match", "kitten", "sitting") == pytest.approx(8 / 13)
    assert _score("fuzzy_match", "Paris", "paris") == pytest.approx(0.8)  # case counts


@pytest.mark.parametrize(("output", "passed"), [("Pariss", True), ("London", False)])
def test_fuzzy_threshold(output: str, passed: bool) -> None:
    g = _grader("fuzzy_match", threshold=0.8).grade(
        {"output_text": output}, {"answer": "Paris"}, "e1", None
    )
    assert g.error is None
    assert g.passed is passed
    assert g.passed == (g.score >= 0.8)


def test_threshold_is_inclusive() -> None:
    g = _grader("fuzzy_match", threshold=0.8).grade(
        {"output_text": "Paris"}, {"answer": "paris"}, "e1", None
    )
    assert g.score == pytest.approx(0.8) and g.passed


def test_cosine_with_embedding_function() -> None:
    a, b = _embed(["abc", "abd"])
    expected = 2 / 3  # two shared letters of three, unit counts
    assert cosine(a, b) == pytest.approx(expected)
    assert _score("cosine", "abc", "abd", embed=_embed) == pytest.approx(expected)


def test_cosine_without_embedding_function_fails_clearly() -> None:
    g = _grader("cosine").grade({"output_text": "a"}, {"answer": "a"}, "e1", None)
    assert not g.passed and g.score == 0.0
    assert g.error is not None and "embed" in g.error


def test_cosine_embedding_errors_are_failed_grades() -> None:
    def broken(texts: list[str]) -> list[list[float]]:
        raise RuntimeError("service down")

    g = _grader("cosine", embed=broken).grade({"output_text": "a"}, {"answer": "a"}, "e1", None)
    assert not g.passed and g.error == "RuntimeError: service down"
    zero = _grader("cosine", embed=lambda ts: [[0.0, 0.0] for _ in ts])
    g = zero.grade({"output_text": "a"}, {"answer": "a"}, "e1", None)
    assert not g.passed and g.error is not None and "zeros" in g.error


def test_scores_stay_in_unit_interval() -> None:
    opposite = _grader("cosine", threshold=0.0, embed=lambda ts: [[1.0, 0.0], [-1.0, 0.0]])
    g = opposite.grade({"output_text": "a"}, {"answer": "b"}, "e1", None)
    assert g.score == 0.0 and g.passed  # clipped at 0, and 0 >= 0.0
    for metric in METRICS:
        s = _score(metric, HYPOTHESIS, SENTENCE, embed=_embed)
        assert 0.0 <= s <= 1.0 and math.isfinite(s)


def test_missing_template_field_is_a_failed_grade() -> None:
    g = _grader("bleu").grade({"output_text": "x"}, {}, "e1", None)
    assert not g.passed and g.score == 0.0
    assert g.error == "grader template variable 'item.answer' is not defined"


def test_unknown_metric_is_refused_when_built() -> None:
    with pytest.raises(GraderError, match="unknown evaluation_metric 'rouge_9'"):
        _grader("rouge_9")


def test_words_splits_like_word_tokenize_without_downloads() -> None:
    assert words("It's 3.5 km. Go!") == ["It", "'s", "3.5", "km", ".", "Go", "!"]
