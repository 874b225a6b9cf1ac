"""`--ray`: capture through Ray actors on a local two-CPU cluster, as one process would.

One Ray instance (two CPUs: two workers) serves the whole module; each test closes its
engine so the next one's workers can start. What is checked is the store: the same
request hashes and answers as a one-process capture, each request stored once, through a
worker SIGKILLed mid-run and a driver SIGKILLed mid-capture.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from still.capture import CaptureStats
from still.capture_ray import RayEngine
from still.cli import main
from still.pipeline import Run, capture_role, open_run
from test_helpers import write_task
from test_helpers.endpoint import requests_in


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray instance with two CPUs, for the module; yields its address."""
    ray = pytest.importorskip("ray", reason="--ray needs `pip install 'still[ray]'`")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        _node_ip_address="127.0.0.1",  # loopback only
    )
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _capture(run: Run, engine: RayEngine | None) -> CaptureStats:
    run.engine = engine
    return capture_role(run, "teacher", "train")


def _stored(run: Run) -> dict[str, tuple[str | None, Any, dict[str, str]]]:
    """Each stored request's answer (text, label scores, tags), asserting it is stored once."""
    rows = run.store.list()
    counts = Counter(c.request_hash for c in rows)
    assert max(counts.values()) == 1, f"stored twice: {counts.most_common(3)}"
    assert not [c for c in rows if c.error], "no request may fail"
    return {c.request_hash: (c.text, c.label_logprobs, c.metadata) for c in rows}


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_ray_stores_what_one_process_stores(cluster: str, tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", n=60)
    # the same run name: the tags (run, task, role, split) must be equal too
    one = open_run(task, tmp_path / "one" / "r")
    _capture(one, None)
    with RayEngine(cluster) as engine:
        run = open_run(task, tmp_path / "ray" / "r")
        stats = _capture(run, engine)
        assert len(engine.worker_pids) == 2 and engine.lost == 0
    assert stats.called == stats.total == len(run.examples("train")) and not stats.from_store
    assert _stored(run) == _stored(one)


def test_ray_with_a_local_model_answers_as_one_process(
    cluster: str, tmp_path: Path, tiny_model: Path
) -> None:
    task = write_task(
        tmp_path,
        student="scripted:first-label",
        teacher=f"local:{tiny_model}",
        n=20,
        heldout=4,
        generation={"batch_size": 4, "max_tokens": 6, "mode": "generate"},
    )
    one = open_run(task, tmp_path / "one" / "r")
    _capture(one, None)
    with RayEngine(cluster) as engine:
        run = open_run(task, tmp_path / "ray" / "r")
        _capture(run, engine)
    ray_answers, answers = _stored(run), _stored(one)
    assert len(answers) == len(one.examples("train"))
    assert any(text for text, _, _ in answers.values())  # generated, not all empty
    assert ray_answers == answers


def test_a_worker_killed_mid_run_loses_nothing(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))  # workers get STILL_* variables
    task = write_task(tmp_path, student="scripted:first-label", teacher="scripted:echo?delay=0.1")
    run = open_run(task, tmp_path / "r")
    with RayEngine(cluster) as engine:
        result: list[CaptureStats] = []
        capturing = threading.Thread(target=lambda: result.append(_capture(run, engine)))
        capturing.start()
        deadline = time.monotonic() + 120
        while len(_calls(calls)) < 6:  # both workers busy, a block in each
            assert time.monotonic() < deadline and capturing.is_alive(), "no worker started"
            time.sleep(0.02)
        os.kill(engine.worker_pids[0], signal.SIGKILL)
        capturing.join(timeout=120)
        assert result, "the capture did not finish"
        assert engine.lost == 1
    total = len(run.examples("train"))
    assert result[0].called == result[0].total == total and result[0].failed == 0
    stored = _stored(run)  # every request answered, each stored once
    assert len(stored) == total and set(stored) <= set(_calls(calls))


def test_a_block_lost_too_often_is_stored_failed_and_retried_by_a_rerun(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))
    monkeypatch.setattr("still.capture_ray.MAX_ATTEMPTS", 1)  # one loss fails the block
    task = write_task(tmp_path, student="scripted:first-label", teacher="scripted:echo?delay=0.1")
    run = open_run(task, tmp_path / "r")
    with RayEngine(cluster, workers=1) as engine:
        result: list[CaptureStats] = []
        capturing = threading.Thread(target=lambda: result.append(_capture(run, engine)))
        capturing.start()
        deadline = time.monotonic() + 120
        while not _calls(calls):  # the first block is being answered
            assert time.monotonic() < deadline and capturing.is_alive(), "no worker started"
            time.sleep(0.02)
        os.kill(engine.worker_pids[0], signal.SIGKILL)
        capturing.join(timeout=120)
        assert result and engine.lost == 1
        failed = run.store.list(errors=True)
        assert result[0].failed == len(failed) == 4  # the block: generation.batch_size
        assert all(c.error and c.error.startswith("RayWorkerLost") for c in failed)
        again = _capture(run, engine)  # a rerun sends only the failed block again
    assert (again.from_store, again.called, again.failed) == (again.total - 4, 4, 0)


def _stored_hashes(db: Path) -> set[str]:
    try:
        con = sqlite3.connect(db)
        rows = con.execute("SELECT request_hash FROM completions").fetchall()
        con.close()
    except sqlite3.OperationalError:  # no store or no table yet
        return set()
    return {r[0] for r in rows}


def test_a_killed_driver_resumes_without_repeating_stored_answers(
    cluster: str, tmp_path: Path
) -> None:
    task = write_task(
        tmp_path, student="scripted:first-label", teacher="scripted:echo?delay=0.05", n=110
    )
    calls = tmp_path / "calls.log"
    env = {**os.environ, "STILL_SCRIPTED_LOG": str(calls)}
    args = ["capture", "--ray-address", cluster, str(task), "--run-dir", str(tmp_path / "r")]
    db = tmp_path / "r" / "still.db"
    driver = subprocess.Popen(
        [sys.executable, "-m", "still", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    while len(_stored_hashes(db)) < 8:  # two blocks stored
        assert driver.poll() is None, driver.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no block stored"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before, calls_before = _stored_hashes(db), len(_calls(calls))

    os.environ["STILL_SCRIPTED_LOG"] = str(calls)  # for the workers of this process
    try:
        done = CliRunner().invoke(main, args)
    finally:
        del os.environ["STILL_SCRIPTED_LOG"]
    assert done.exit_code == 0, done.output
    total = requests_in(done.output)
    assert 8 <= len(before) < total, "the kill should land mid-capture"
    assert f"{total} requests: {len(before)} from the store" in done.output
    assert not before & set(_calls(calls)[calls_before:]), "a stored request was sent again"
    assert len(_stored(open_run(task, tmp_path / "r"))) == total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ray_unreachable_or_missing_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    address = f"127.0.0.1:{_free_port()}"
    res = CliRunner().invoke(main, ["capture", str(task), "--run-dir", str(tmp_path / "r"),
                                    "--ray-address", address])  # fmt: skip
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [
        f"Error: no Ray cluster reachable at {address}: start one with `ray start --head` "
        "and pass the address it prints to --ray-address, or use --ray alone to start one on "
        "this machine"
    ]
    assert not (tmp_path / "r").exists(), "nothing may be written"

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    res = CliRunner().invoke(main, ["run", "--ray", str(task)])  # the flag before TASK_FILE
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: --ray needs Ray, which is not installed")
    assert res.output.strip().endswith("pip install 'still[ray]'")
