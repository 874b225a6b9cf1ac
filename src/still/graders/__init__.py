"""Graders: score a completion against an example.

A grader error (a missing template field, a failed request, an unparseable answer) is a
failed grade with `error` set, never a pass. Each grader module registers a factory for
its spec type (`register_grader`), as plugins do; `build_grader` looks the spec up. The
code lives in the private modules; this file only names what other packages may use.
"""

from still.graders._filter import Filter, parse_filter
from still.graders._formula import FormulaError, Multi, evaluate_formula
from still.graders._grade import (
    ParsedAnswer,
    answer_of,
    grade,
    judges,
    output_json,
    prepare_graders,
    sample_item,
    walk,
)
from still.graders._model import Capture, ModelGrader, parse_score
from still.graders._parse import parse_label
from still.graders._python import PythonGrader
from still.graders._registry import (
    Grader,
    GraderFactory,
    build_grader,
    grader_specs,
    register_grader,
)
from still.graders._string_check import StringCheck, check, fill
from still.graders._text_similarity import METRICS, TextSimilarity

__all__ = [
    "METRICS",
    "Capture",
    "Filter",
    "FormulaError",
    "Grader",
    "GraderFactory",
    "ModelGrader",
    "Multi",
    "ParsedAnswer",
    "PythonGrader",
    "StringCheck",
    "TextSimilarity",
    "answer_of",
    "build_grader",
    "check",
    "evaluate_formula",
    "fill",
    "grade",
    "grader_specs",
    "judges",
    "output_json",
    "parse_filter",
    "parse_label",
    "parse_score",
    "prepare_graders",
    "register_grader",
    "sample_item",
    "walk",
]
