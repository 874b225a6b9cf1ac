"""JSON-schema constrained decoding on the tiny random model.

A random-weight model never writes JSON on its own (checked below), so every parseable,
schema-valid answer here comes from the processor's masks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llguidance")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from still.models._constrained import (  # noqa: E402
    _compiled,
    json_schema_available,
    json_schema_processor,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"enum": ["human", "location", "number"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "reason": {"type": "string", "maxLength": 12},
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 6},
            "minItems": 1,
            "maxItems": 3,
        },
        "sure": {"type": "boolean"},
    },
    "required": ["label", "confidence", "reason", "tags", "sure"],
    "additionalProperties": False,
}
QUESTIONS = ["Who wrote the play?", "Where is the long river of the north?", "How many?"]


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> tuple[Any, Any]:
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model)
    tok.padding_side = "left"
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    return tok, model.eval()


def _generate(
    tiny: tuple[Any, Any], questions: list[str], proc: Any, max_new: int = 200, **kw: Any
) -> list[tuple[str, bool]]:
    """Each row's text up to EOS, and whether it reached EOS; prompts are left-padded."""
    tok, model = tiny
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1, "rows must need padding"
    extra = {} if proc is None else {"logits_processor": transformers.LogitsProcessorList([proc])}
    torch.manual_seed(0)
    with torch.inference_mode():
        out = model.generate(
            **batch, max_new_tokens=max_new, pad_token_id=tok.pad_token_id, **extra, **kw
        )
    rows = []
    for ids in out[:, batch["input_ids"].shape[1] :].tolist():
        end = ids.index(tok.eos_token_id) if tok.eos_token_id in ids else None
        rows.append((tok.decode(ids[:end], skip_special_tokens=True), end is not None))
    return rows


def _check(answer: Any) -> None:
    """SCHEMA, checked by hand."""
    assert isinstance(answer, dict)
    assert set(answer) == {"label", "confidence", "reason", "tags", "sure"}
    assert answer["label"] in ("human", "location", "number")
    assert isinstance(answer["confidence"], int) and 0 <= answer["confidence"] <= 100
    assert isinstance(answer["reason"], str) and len(answer["reason"]) <= 12
    assert isinstance(answer["tags"], list) and 1 <= len(answer["tags"]) <= 3
    assert all(isinstance(t, str) and len(t) <= 6 for t in answer["tags"])
    assert isinstance(answer["sure"], bool)


def test_available() -> None:
    assert json_schema_available()


def test_random_model_is_not_json_without_constraint(tiny: tuple[Any, Any]) -> None:
    for text, _ in _generate(tiny, QUESTIONS, None, max_new=40, do_sample=False):
        with pytest.raises(ValueError):
            json.loads(text)


@pytest.mark.parametrize("sampling", [{"do_sample": False}, {"do_sample": True, "top_k": 5}])
def test_batch_of_three_is_valid_json(tiny: tuple[Any, Any], sampling: dict[str, Any]) -> None:
    proc = json_schema_processor(tiny[0], SCHEMA, batch_size=3)
    rows = _generate(tiny, QUESTIONS, proc, **sampling)
    for text, ended in rows:
        assert ended, f"the JSON is bounded, so EOS must come before max_new_tokens: {text!r}"
        _check(json.loads(text))
    for text, _ in rows:  # in the schema's property order, with json.dumps' separators
        assert text.startswith('{"label": "') and '", "tags": [' in text, text


def test_enum_only_schema_yields_an_enum_value(tiny: tuple[Any, Any]) -> None:
    schema = {"enum": ["spam", "ham", "unsure"]}
    proc = json_schema_processor(tiny[0], schema, batch_size=3)
    for text, ended in _generate(tiny, QUESTIONS, proc, do_sample=False):
        assert ended
        assert json.loads(text) in ("spam", "ham", "unsure")


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "intger"}, "intger"),
        ({"type": "object", "properties": 5}, "properties"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
        ({"$ref": "#/$defs/missing"}, "missing"),
        ({"type": "string", "pattern": "[a-"}, "unclosed"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_invalid_schema_raises_value_error(
    tiny: tuple[Any, Any], schema: Any, problem: str
) -> None:
    with pytest.raises(ValueError, match="invalid JSON schema") as err:
        json_schema_processor(tiny[0], schema, batch_size=1)
    assert problem in str(err.value)


def test_same_schema_is_compiled_once(tiny: tuple[Any, Any]) -> None:
    tok = tiny[0]
    _, first = _compiled(tok, SCHEMA)
    start = time.perf_counter()
    _, again = _compiled(tok, json.loads(json.dumps(SCHEMA)))  # equal, not the same object
    assert again is first
    assert time.perf_counter() - start < 0.05
    # another property order decodes differently, so it is another grammar
    reordered = {**SCHEMA, "properties": dict(reversed(list(SCHEMA["properties"].items())))}
    assert _compiled(tok, reordered)[1] is not first
    a = json_schema_processor(tok, SCHEMA, batch_size=2)
    b = json_schema_processor(tok, SCHEMA, batch_size=2)
    assert a.matchers[0] is not b.matchers[0], "each row needs its own matcher state"


def test_processor_checks_its_batch_and_single_use(tiny: tuple[Any, Any]) -> None:
    proc = json_schema_processor(tiny[0], {"enum": ["spam", "ham"]}, batch_size=2)
    with pytest.raises(ValueError, match="constrains 2 rows"):
        _generate(tiny, QUESTIONS, proc, do_sample=False)
    proc = json_schema_processor(tiny[0], {"enum": ["spam", "ham"]}, batch_size=3)
    _generate(tiny, QUESTIONS, proc, do_sample=False)
    with pytest.raises(RuntimeError, match="make a new one"):
        _generate(tiny, QUESTIONS, proc, do_sample=False)
