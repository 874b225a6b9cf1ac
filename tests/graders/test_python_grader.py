"""The python grader: scores from a child process that cannot reach the network, hang or
eat the machine's memory."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import still.graders._python as py
from still.graders._python import KILL_GRACE_S, STARTUP_GRACE_S, PythonGrader, sandbox
from still.types import Grade

EXACT = """
def grade(sample, item):
    return 1.0 if sample["output_text"] == item["answer"] else 0.0
"""


def _grade(source: str, **kw: object) -> Grade:
    g = PythonGrader(name="py", source=source, pass_threshold=0.5, **kw)  # type: ignore[arg-type]
    return g.grade({"output_text": "Paris"}, {"answer": "Paris"}, "e1", "c1")


@pytest.fixture(params=["namespace", "socket-patch"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test under both network guards: the namespace (where it works) and the patch."""
    if request.param == "namespace":
        if sandbox() != "namespace":
            pytest.skip("unshare cannot create user and network namespaces here")
    else:
        monkeypatch.setattr(py, "_unshare_works", lambda: False)
    assert sandbox() == request.param
    return str(request.param)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real listening socket on loopback, for graders to (fail to) reach."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        yield srv
    finally:
        srv.close()


def _assert_no_accept(srv: socket.socket) -> None:
    srv.settimeout(0.5)
    with pytest.raises(TimeoutError):
        srv.accept()


def test_correct_grader_returns_the_score(mode: str) -> None:
    g = _grade(EXACT)
    assert g.error is None and g.score == 1.0 and g.passed
    assert (g.grader, g.example_id, g.completion_id) == ("py", "e1", "c1")


def test_below_threshold_fails_without_error() -> None:
    g = _grade("def grade(sample, item):\n    return 0.25\n")
    assert g.error is None and g.score == 0.25 and not g.passed


def test_network_connection_is_refused(mode: str, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
        "    return 1.0\n"
    )
    g = _grade(source)
    assert not g.passed and g.score == 0.0
    assert g.error is not None and "PermissionError" in g.error
    _assert_no_accept(listener)


def test_namespace_blocks_even_a_bypassed_socket_patch(listener: socket.socket) -> None:
    if sandbox() != "namespace":
        pytest.skip("unshare cannot create user and network namespaces here")
    port = listener.getsockname()[1]
    # The patched class subclasses the real one: a determined grader can reach it. The
    # network namespace still has no route to the host's loopback.
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        "    real = socket.socket.__mro__[1]\n"
        "    s = real(socket.AF_INET, socket.SOCK_STREAM)\n"
        "    s.settimeout(2)\n"
        f"    s.connect(('127.0.0.1', {port}))\n"
        "    return 1.0\n"
    )
    g = _grade(source)
    assert not g.passed and g.error is not None
    assert "OSError" in g.error or "Error" in g.error
    _assert_no_accept(listener)
    interfaces = _grade(
        "def grade(sample, item):\n"
        "    lines = open('/proc/self/net/dev').read().splitlines()[2:]\n"
        "    return float(len(lines)) if lines[0].split(':')[0].strip() == 'lo' else -1.0\n"
    )
    assert interfaces.score == 1.0  # only the (down) loopback


def test_infinite_loop_is_stopped_after_the_timeout(mode: str) -> None:
    start = time.monotonic()
    g = _grade("def grade(sample, item):\n    while True:\n        pass\n", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert not g.passed and g.score == 0.0
    assert g.error == "timed out after 1s"
    assert elapsed < 1.0 + 3.0


def test_grader_that_ignores_the_timer_is_killed(mode: str) -> None:
    source = (
        "import signal\n"
        "signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "def grade(sample, item):\n"
        "    while True:\n"
        "        pass\n"
    )
    start = time.monotonic()
    g = _grade(source, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert not g.passed
    assert g.error is not None and g.error.startswith("timed out after 1s")
    assert "killed" in g.error
    assert elapsed < 1.0 + KILL_GRACE_S + STARTUP_GRACE_S + 2.0


def test_top_level_code_is_timed_too() -> None:
    g = _grade("while True:\n    pass\ndef grade(s, i):\n    return 1.0\n", timeout_s=1.0)
    assert not g.passed and g.error is not None and "timed out after 1s" in g.error


def test_memory_limit(mode: str) -> None:
    source = "def grade(sample, item):\n    block = bytearray(2 * 1024**3)\n    return 1.0\n"
    g = _grade(source, memory_mb=256)
    assert not g.passed and g.score == 0.0
    assert g.error == "memory limit of 256 MB exceeded (MemoryError)"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("return 'yes'", "grade() returned str, not a finite number: 'yes'"),
        ("return None", "grade() returned NoneType, not a finite number: None"),
        ("return float('nan')", "grade() returned float, not a finite number: nan"),
        ("return [1.0]", "grade() returned list, not a finite number: [1.0]"),
        ("return 1 / 0", "ZeroDivisionError: division by zero"),
        ("raise ValueError('bad answer\\nsecond line')", "ValueError: bad answer"),
        ("import os; os._exit(3)", "the grader process exited with code 3 before answering"),
    ],
)
def test_bad_graders_fail(body: str, error: str) -> None:
    g = _grade(f"def grade(sample, item):\n    {body}\n")
    assert not g.passed and g.score == 0.0
    assert g.error is not None and g.error.startswith(error), g.error


def test_numbers_that_are_not_floats_count() -> None:
    assert _grade("def grade(s, i):\n    return s['output_text'] == i['answer']\n").score == 1.0
    assert _grade("def grade(s, i):\n    return 1\n").score == 1.0


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("def grade(sample, item)\n    return 1\n", "SyntaxError"),
        ("x = 1\n", "the source defines no grade(sample, item) function"),
        ("import no_such_module_here\n", "ModuleNotFoundError"),
    ],
)
def test_broken_source_fails_every_item(source: str, error: str) -> None:
    grader = PythonGrader(name="py", source=source, pass_threshold=0.0)
    grades = grader.grade_many([({}, {}, f"e{i}", None) for i in range(3)])
    assert [g.passed for g in grades] == [False] * 3
    assert all(g.error is not None and g.error.startswith(error) for g in grades)


def test_prints_do_not_corrupt_results() -> None:
    g = _grade("def grade(s, i):\n    print('noise' * 100000)\n    return 0.75\n")
    assert g.error is None and g.score == 0.75


def test_secrets_do_not_reach_the_grader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    g = _grade(
        "import os\ndef grade(s, i):\n    return float('OPENAI_API_KEY' not in os.environ)\n"
    )
    assert g.score == 1.0


def test_values_json_cannot_carry_arrive_as_text() -> None:
    grader = PythonGrader(
        name="py", source="def grade(s, i):\n    return float(i['when'] == '2024-01-02')\n",
        pass_threshold=0.5,
    )  # fmt: skip
    import datetime

    g = grader.grade({}, {"when": datetime.date(2024, 1, 2)}, "e1", None)
    assert g.score == 1.0


COUNTER = """
calls = []
def grade(sample, item):
    calls.append(1)
    if item["n"] == "boom":
        raise KeyError("boom")
    return float(len(calls))
"""


def test_grade_many_uses_one_process_per_batch() -> None:
    jobs = [({}, {"n": n}, f"e{n}", f"c{n}") for n in range(5)]
    grades = PythonGrader(name="py", source=COUNTER, pass_threshold=0.0).grade_many(jobs)
    assert [g.score for g in grades] == [1.0, 2.0, 3.0, 4.0, 5.0]  # one shared process
    assert [g.example_id for g in grades] == ["e0", "e1", "e2", "e3", "e4"]
    batched = PythonGrader(name="py", source=COUNTER, pass_threshold=0.0, batch_size=2)
    assert [g.score for g in batched.grade_many(jobs)] == [1.0, 2.0, 1.0, 2.0, 1.0]
    assert PythonGrader(name="py", source=COUNTER, pass_threshold=0.0).grade_many([]) == []


def test_grade_many_isolates_item_failures() -> None:
    jobs = [({}, {"n": n}, f"e{n}", None) for n in (0, "boom", 2)]
    grades = PythonGrader(name="py", source=COUNTER, pass_threshold=0.0).grade_many(jobs)
    assert [g.error for g in grades] == [None, "KeyError: 'boom'", None]
    assert [g.score for g in grades] == [1.0, 0.0, 3.0]


def test_grade_many_soft_timeout_fails_only_that_item() -> None:
    source = "def grade(s, i):\n    while i['n'] == 1:\n        pass\n    return 1.0\n"
    grader = PythonGrader(name="py", source=source, pass_threshold=0.5, timeout_s=1.0)
    grades = grader.grade_many([({}, {"n": n}, f"e{n}", None) for n in range(3)])
    assert [g.error for g in grades] == [None, "timed out after 1s", None]


def test_grade_many_hard_kill_fails_the_rest_of_the_batch() -> None:
    source = (
        "import signal\n"
        "def grade(s, i):\n"
        "    if i['n'] == 1:\n"
        "        signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "        while True:\n"
        "            pass\n"
        "    return 1.0\n"
    )
    grader = PythonGrader(name="py", source=source, pass_threshold=0.5, timeout_s=1.0)
    grades = grader.grade_many([({}, {"n": n}, f"e{n}", None) for n in range(3)])
    assert grades[0].passed and grades[0].error is None
    assert grades[1].error is not None and grades[1].error.startswith("timed out after 1s")
    assert grades[2].error == "not graded: the batch's process was killed after item 1 timed out"
    assert not grades[1].passed and not grades[2].passed


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        PythonGrader(name="py", source=EXACT, pass_threshold=0.5, timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        PythonGrader(name="py", source=EXACT, pass_threshold=0.5, memory_mb=16)


def test_prepare_grades_a_stage_in_one_process_per_batch(tmp_path: Path) -> None:
    """A pipeline stage prepares python graders: per-example grade() then starts nothing."""
    marker = tmp_path / "starts"
    source = (
        "import os\n"
        f"open({str(marker)!r}, 'a').write(str(os.getpid()) + '\\n')\n"
        "def grade(sample, item):\n"
        "    return float(sample['output_text'] == item['answer'])\n"
    )
    g = PythonGrader(name="py", source=source, pass_threshold=1.0, batch_size=64)
    jobs = [({"output_text": str(i % 2)}, {"answer": "0"}) for i in range(10)]
    g.prepare(jobs)
    grades = [g.grade(s, it, f"e{i}", None) for i, (s, it) in enumerate(jobs)]
    assert [gr.passed for gr in grades] == [i % 2 == 0 for i in range(10)]
    assert [gr.example_id for gr in grades] == [f"e{i}" for i in range(10)]
    assert len(marker.read_text().splitlines()) == 1  # one child for all ten
