"""A capture killed with SIGKILL resumes without repeating any stored call."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from test_helpers import write_task
from test_helpers.endpoint import Endpoint, requests_in


def _stored_hashes(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        con = sqlite3.connect(db)
        rows = con.execute("SELECT request_hash FROM completions WHERE error IS NULL").fetchall()
        con.close()
    except sqlite3.OperationalError:  # table not created yet
        return set()
    return {r[0] for r in rows}


def test_sigkill_during_capture_then_resume(tmp_path: Path) -> None:
    task = write_task(
        tmp_path,
        student="scripted:first-label",
        teacher="scripted:echo?delay=0.02",
        n=330,
        heldout=30,
    )
    calls = tmp_path / "calls.log"
    env = {**os.environ, "STILL_SCRIPTED_LOG": str(calls)}
    cmd = [sys.executable, "-m", "still", "capture", str(task), "--run-dir", str(tmp_path / "r")]
    db = tmp_path / "r" / "still.db"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_stored_hashes(db)) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _stored_hashes(db)
    calls_before = len(calls.read_text().splitlines())

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    total = requests_in(done.stdout)  # the train split's size
    assert 60 <= len(before) < total, "the kill should land mid-capture"
    after_calls = calls.read_text().splitlines()[calls_before:]
    assert not before & set(after_calls), "a stored request was sent again"
    assert len(_stored_hashes(db)) == total  # each answered
    assert f"{total} requests: {len(before)} from the store" in done.stdout


def test_sigkill_loses_only_the_endpoint_answers_in_flight(tmp_path: Path) -> None:
    concurrency = 64
    batch = 2 * concurrency  # the endpoint's batch: requests handed over per provider call
    # one answer every 30 ms: the first batch of 128 takes ~4 s to come back in full
    with Endpoint(serial_s=0.03) as server:
        task = write_task(
            tmp_path, student="scripted:first-label", teacher=server.ref(), n=232, heldout=30
        )
        env = {**os.environ, "STILL_CONCURRENCY": str(concurrency)}
        cmd = [
            sys.executable,
            "-m",
            "still",
            "capture",
            str(task),
            "--run-dir",
            str(tmp_path / "r"),
        ]
        db = tmp_path / "r" / "still.db"
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(_stored_hashes(db)) < 5 and server.answered < 100:
            assert time.monotonic() < deadline, "no answer came back"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered = server.answered
    stored = _stored_hashes(db)
    # each answer was committed as it arrived: what the kill lost is at most what was in
    # flight, not the answers already back from a batch that had not finished
    assert answered < batch, "the kill should land before the first batch is back"
    assert 5 <= len(stored) <= answered
