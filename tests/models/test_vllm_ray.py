"""`--ray` with `vllm:` workers: two vLLM engines in two Ray actors store what one stores.

Real TREC questions on the bundled SmolLM2, greedy: the teacher's 12-shot label scoring and
the student's free-text answers, captured once by the session's in-process engine (the one
tests/models/test_vllm.py uses) and once through a local Ray instance with two CPUs, whose
two actors each start their own vLLM engine. Marked `vllm`: it runs under .venv-vllm,
which has Ray too (`make vllm`; `make test` runs it), and skips where vLLM or Ray is
missing. Its time is the two engines' start-up, side by side (about 40 s on a quiet 2-core
CPU, a few minutes on a loaded one).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from test_vllm import ENGINE, TOL, needs_vllm, pair, smollm2, trec  # noqa: F401 - fixtures

from still.capture import build_request, capture
from still.capture_ray import RayEngine
from still.models import Provider, use_engine_options
from still.store import Store
from still.types import Completion, Request, SamplingParams

pytestmark = [pytest.mark.vllm, needs_vllm]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A Ray instance with two CPUs (two workers) on loopback, for the module."""
    ray = pytest.importorskip("ray", reason="--ray needs Ray: `make vllm` installs it")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        _node_ip_address="127.0.0.1",
    )
    try:
        yield
    finally:
        ray.shutdown()


def _questions(data: tuple[Any, list[Any], list[Any]]) -> dict[str, Request]:
    """The teacher's label-scored requests and the student's greedy generations."""
    task, questions, fewshot = data
    out: dict[str, Request] = {}
    for e in questions:
        out[f"teacher-{e.id}"] = build_request(task, "teacher", "vllm:smollm2", e, fewshot)
        student = build_request(task, "student", "vllm:smollm2", e, fewshot)
        params = SamplingParams(max_tokens=16)
        out[f"student-{e.id}"] = student.model_copy(update={"labels": None, "params": params})
    return out


def _stored(store: Store) -> dict[str, Completion]:
    """The stored answers by request hash, asserting each request is stored once."""
    rows = store.list()
    counts = Counter(c.request_hash for c in rows)
    assert max(counts.values()) == 1, f"stored twice: {counts.most_common(3)}"
    assert not [c.error for c in rows if c.error]
    return {c.request_hash: c for c in rows}


def _engines(pid: int) -> list[Any]:
    """The vLLM engine processes a worker process started."""
    import psutil

    kids = psutil.Process(pid).children()
    return [p for p in kids if p.name().startswith("VLLM::Engine")]


def test_two_vllm_workers_store_what_one_engine_stores(
    pair: tuple[Provider, Provider],  # noqa: F811
    smollm2: Path,  # noqa: F811
    trec: Any,  # noqa: F811
    cluster: None,
    tmp_path: Path,
) -> None:
    """Each actor runs its own engine (one CPU, one unpinned OpenMP thread on this 2-CPU
    cluster); every request is stored once, with the one-process engine's answers: the
    same label choices (scores within TOL), the same greedy text and tokens."""
    requests = _questions(trec)
    with Store(tmp_path / "one.db") as store:
        capture(pair[0], requests, store, batch_size=8)
        want = _stored(store)
    setup = partial(use_engine_options, ENGINE)  # the task's vllm: block, in each worker
    with RayEngine(workers=2) as engine, Store(tmp_path / "ray.db") as store:
        stats = capture(engine.model(f"vllm:{smollm2}", 8, setup), requests, store)
        engines = {pid: _engines(pid) for pid in engine.worker_pids}
        got = _stored(store)
    assert (stats.called, stats.failed, engine.lost) == (len(requests), 0, 0)
    assert len(engines) == 2 and all(len(e) == 1 for e in engines.values()), engines
    for (proc,) in engines.values():
        env = proc.environ()
        assert (env["OMP_NUM_THREADS"], env["VLLM_CPU_OMP_THREADS_BIND"]) == ("1", "nobind")

    assert got.keys() == want.keys() and len(got) == len(requests)
    for key, w in want.items():
        g = got[key]
        assert (g.text, g.tokens, g.finish_reason, g.usage) == (
            w.text,
            w.tokens,
            w.finish_reason,
            w.usage,
        )
        if w.label_logprobs is not None:
            assert g.label_logprobs is not None
            assert g.label_logprobs == pytest.approx(w.label_logprobs, abs=TOL)
    assert sum(bool(w.label_logprobs) for w in want.values()) == len(requests) // 2
    assert all(w.text for w in want.values()), "an empty answer"

    deadline = time.monotonic() + 30  # the engines went with their actors
    while any(p.is_running() for (p,) in engines.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p.pid for (p,) in engines.values() if p.is_running()], "an engine outlived it"
