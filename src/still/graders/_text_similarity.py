"""The `text_similarity` grader, as OpenAI defines it: a similarity metric and a threshold.

OpenAI names the metrics and (for some) the library; it does not publish every parameter,
so each choice made here is written down next to the metric, and the libraries are called
with their defaults wherever OpenAI says nothing:

- `fuzzy_match`: OpenAI says "fuzzy string match ... using rapidfuzz" without naming the
  scorer. Here it is `rapidfuzz.fuzz.ratio(input, reference) / 100`: the normalized Indel
  (Levenshtein without substitutions) similarity, case-sensitive, no preprocessing. It is
  symmetric and predictable; `fuzz.WRatio` would score a short answer contained in a long
  one near 1.0, which is not what a threshold on "close to the reference" should mean.
- `bleu`: sacrebleu's `sentence_bleu(input, [reference]).score / 100` (13a tokenizer,
  exponential smoothing, effective order: a one-word exact answer scores 1.0).
- `gleu`: NLTK's `sentence_gleu([reference_words], input_words)` (1- to 4-grams).
- `meteor`: NLTK's `single_meteor_score` with exact and Porter-stem matching but *without*
  the WordNet synonym stage, because WordNet is a data download (forbidden at run time here)
  and no PyPI package ships it for NLTK. Scores are therefore a lower bound of full METEOR:
  "car" and "automobile" do not match. Identical texts do not score exactly 1.0 under
  METEOR (one chunk still carries a fragmentation penalty of 0.5 / matches^3): a one-word
  answer scores 0.5, five identical words 0.996.
- `rouge_1` .. `rouge_5`, `rouge_l`: the F-measure of Google's `rouge-score` (its default
  tokenizer: lowercased, ASCII letters and digits only, no stemming). Text shorter than n
  words has no n-grams and scores 0.0 on rouge_n even when identical; non-ASCII scripts
  tokenize to nothing and score 0.0.
- `cosine`: OpenAI embeds both texts with text-embedding-3-large. Nothing is downloaded
  here: pass `embed`, a function from a list of texts to their vectors. Without it the
  grade fails with an error saying so. Negative similarities are clipped to 0.0.

METEOR and GLEU need words: the text is split into sentences by NLTK's untrained Punkt
tokenizer and each sentence into words by NLTK's Treebank-style word tokenizer, which is
what `nltk.word_tokenize` does minus the downloaded Punkt model (it only knows fewer
abbreviations).

Every score is clipped to [0, 1]; passed = score >= pass_threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from still.errors import GraderError, StillError
from still.graders._embed import embedder
from still.graders._registry import register_grader
from still.graders._string_check import fill
from still.tasks import TextSimilaritySpec
from still.types import Grade

Embed = Callable[[list[str]], Sequence[Sequence[float]]]
"""Texts in, one vector per text out (any embedding model the caller has)."""

ROUGE_METRICS = ("rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
METRICS: tuple[str, ...] = ("fuzzy_match", "bleu", "gleu", "meteor", *ROUGE_METRICS, "cosine")
"""The evaluation metrics OpenAI's text_similarity grader accepts, all supported here."""


class _NoWordNet:
    """Stands in for NLTK's WordNet reader: no synonyms, so METEOR skips that stage."""

    def synsets(self, word: str) -> list[Any]:
        return []


@cache
def _tokenizers() -> tuple[Any, Any]:
    """NLTK's sentence and word tokenizers, built once, without any downloaded model."""
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def words(text: str) -> list[str]:
    """`nltk.word_tokenize` without its downloaded Punkt model.

    >>> words("Paris is big. It isn't small!")
    ['Paris', 'is', 'big', '.', 'It', 'is', "n't", 'small', '!']
    """
    sentences, word_tokenizer = _tokenizers()
    return [w for s in sentences.tokenize(text) for w in word_tokenizer.tokenize(s)]


@cache
def _rouge_scorer(metric: str) -> Any:
    from rouge_score import rouge_scorer

    key = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
    return rouge_scorer.RougeScorer([key], use_stemmer=False)


def _fuzzy(value: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return float(fuzz.ratio(value, reference)) / 100.0


def _bleu(value: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(value, [reference]).score) / 100.0


def _gleu(value: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([words(reference)], words(value)))


def _meteor(value: str, reference: str) -> float:
    from nltk.translate.meteor_score import single_meteor_score

    return float(single_meteor_score(words(reference), words(value), wordnet=_NoWordNet()))


def _rouge(metric: str, value: str, reference: str) -> float:
    scorer = _rouge_scorer(metric)
    (score,) = scorer.score(reference, value).values()
    return float(score.fmeasure)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors; a zero or mismatched vector is a ValueError."""
    if len(a) != len(b) or not a:
        raise ValueError(f"embedding vectors differ in length ({len(a)} vs {len(b)}) or are empty")
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    if norm == 0.0:
        raise ValueError("an embedding vector is all zeros: cosine similarity is undefined")
    return dot / norm


def similarity(metric: str, value: str, reference: str, embed: Embed | None = None) -> float:
    """The raw score of one metric (before clipping); errors raise.

    >>> similarity("fuzzy_match", "kitten", "sitting") == 1 - 5 / 13
    True
    """
    if metric == "fuzzy_match":
        return _fuzzy(value, reference)
    if metric == "bleu":
        return _bleu(value, reference)
    if metric == "gleu":
        return _gleu(value, reference)
    if metric == "meteor":
        return _meteor(value, reference)
    if metric in ROUGE_METRICS:
        return _rouge(metric, value, reference)
    if metric == "cosine":
        if embed is None:
            raise GraderError(
                "the cosine metric needs an embedding function: construct the grader with "
                "embed=... (nothing is downloaded to embed texts)"
            )
        vectors = list(embed([value, reference]))
        if len(vectors) != 2:
            raise ValueError(f"embed returned {len(vectors)} vectors for 2 texts")
        return cosine([float(x) for x in vectors[0]], [float(x) for x in vectors[1]])
    raise GraderError(f"unknown evaluation_metric {metric!r}: use one of {', '.join(METRICS)}")


def describe(exc: BaseException) -> str:
    """An exception as a grade's error: our own messages as they are, others with their type."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])  # str(KeyError) would wrap the message in quotes
    if isinstance(exc, ValueError | StillError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class TextSimilarity:
    """A configured text_similarity grader.

    Args:
        name: the grade's name in reports and filters.
        input: template of the graded text, usually `{{sample.output_text}}`.
        reference: template of the expected text, usually `{{item.answer}}`.
        evaluation_metric: one of `METRICS`.
        pass_threshold: a score at or above it passes.
        embed: texts to vectors, needed by (and only by) the cosine metric.
    """

    name: str
    input: str
    reference: str
    evaluation_metric: str
    pass_threshold: float
    embed: Embed | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # A misspelt metric is a configuration error: say so when the grader is built,
        # not as thousands of identical failed grades.
        if self.evaluation_metric not in METRICS:
            raise GraderError(
                f"unknown evaluation_metric {self.evaluation_metric!r}: "
                f"use one of {', '.join(METRICS)}"
            )
        if not math.isfinite(self.pass_threshold):
            raise GraderError(f"pass_threshold must be a finite number, not {self.pass_threshold}")

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade:
        """Score the filled input against the filled reference; any error is a failed grade."""
        context = {"sample": sample, "item": item}
        try:
            raw = similarity(
                self.evaluation_metric,
                fill(self.input, context),
                fill(self.reference, context),
                self.embed,
            )
            if math.isnan(raw):
                raise ValueError(f"{self.evaluation_metric} returned NaN")
        except Exception as exc:  # noqa: BLE001 - a grader error is a failed grade, not a crash
            return Grade(
                grader=self.name,
                example_id=example_id,
                completion_id=completion_id,
                score=0.0,
                passed=False,
                error=describe(exc),
            )
        score = min(1.0, max(0.0, raw))
        return Grade(
            grader=self.name,
            example_id=example_id,
            completion_id=completion_id,
            score=score,
            passed=score >= self.pass_threshold,
        )


@register_grader(TextSimilaritySpec)
def text_similarity(spec: TextSimilaritySpec, name: str) -> TextSimilarity:
    """`text_similarity`: a metric against a threshold; cosine embeds with the spec's model."""
    return TextSimilarity(
        name=name,
        input=spec.input,
        reference=spec.reference,
        evaluation_metric=spec.evaluation_metric,
        pass_threshold=spec.pass_threshold,
        embed=embedder(spec.embedding_model) if spec.embedding_model else None,
    )
