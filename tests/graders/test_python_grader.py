"""The python grader: scores from a child process in a bubblewrap sandbox (no network, no
view of the parent's environment or files, nothing writable outside its own /tmp) that
cannot hang or eat the machine's memory, and that refuses to run where there is no
sandbox unless the user opts out."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from still.errors import GraderError
from still.graders import _sandbox
from still.graders._python import KILL_GRACE_S, STARTUP_GRACE_S, PythonGrader, sandbox
from still.graders._sandbox import UNSAFE_ENV, SandboxUnavailable, scrub
from still.types import Grade

EXACT = """
def grade(sample, item):
    return 1.0 if sample["output_text"] == item["answer"] else 0.0
"""

Job = tuple[dict[str, Any], dict[str, Any], str, str | None]

NO_BWRAP = _sandbox.problem()
needs_bwrap = pytest.mark.skipif(
    NO_BWRAP is not None, reason=f"no bubblewrap sandbox here ({NO_BWRAP})"
)


@pytest.fixture(autouse=True)
def _default_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests of grading itself run in bwrap; where it cannot run (a developer's machine
    without bubblewrap) they run unsafe, as the user would have to opt in to."""
    if NO_BWRAP is None:
        monkeypatch.delenv(UNSAFE_ENV, raising=False)
    else:
        monkeypatch.setenv(UNSAFE_ENV, "1")


def _grade(source: str, **kw: object) -> Grade:
    g = PythonGrader(name="py", source=source, pass_threshold=0.5, **kw)  # type: ignore[arg-type]
    return g.grade({"output_text": "Paris"}, {"answer": "Paris"}, "e1", "c1")


def _no_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as on a host without bubblewrap."""
    monkeypatch.setattr(_sandbox, "_probe", lambda: ("bubblewrap (bwrap) is not installed", False))


@pytest.fixture(params=["bwrap", "unsafe"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test in the sandbox (where bwrap works) and in the opted-in unsafe mode."""
    if request.param == "bwrap":
        if NO_BWRAP is not None:
            pytest.skip(f"no bubblewrap sandbox here ({NO_BWRAP})")
    else:
        _no_bwrap(monkeypatch)
        monkeypatch.setenv(UNSAFE_ENV, "1")
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


@needs_bwrap
def test_sandbox_blocks_even_a_bypassed_socket_patch(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    # The patched class subclasses the real one: a determined grader can reach it. The
    # sandbox's network namespace still has no route to the host's loopback.
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        "    real = socket.socket.__mro__[2]\n"
        "    s = real(socket.AF_INET, socket.SOCK_STREAM)\n"
        "    s.settimeout(2)\n"
        f"    s.connect(('127.0.0.1', {port}))\n"
        "    return 1.0\n"
    )
    g = _grade(source)
    assert not g.passed and g.error is not None
    # Its own loopback, where nothing listens: refused at once, not a timeout.
    assert g.error.startswith("ConnectionRefusedError: [Errno 111]"), g.error
    _assert_no_accept(listener)
    interfaces = _grade(
        "def grade(sample, item):\n"
        "    lines = open('/proc/self/net/dev').read().splitlines()[2:]\n"
        "    return float(len(lines)) if lines[0].split(':')[0].strip() == 'lo' else -1.0\n"
    )
    assert interfaces.score == 1.0  # only the sandbox's own loopback


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


def test_the_child_gets_an_empty_environment_and_a_private_working_dir(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-in-os-environ")
    g = _grade(
        "import os\n"
        "def grade(s, i):\n"
        "    open('scratch.txt', 'w').write('x')\n"
        "    home = os.environ['HOME'] == os.getcwd()\n"
        "    raise ValueError(sorted(os.environ), os.listdir('.'), home)\n"
    )
    names = {"bwrap": "'HOME', 'LANG', 'PATH', 'PWD'", "unsafe": "'HOME', 'LANG', 'PATH'"}[mode]
    assert g.error == f"ValueError: ([{names}], ['scratch.txt'], True)"


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
    jobs: list[Job] = [({}, {"n": n}, f"e{n}", f"c{n}") for n in range(5)]
    grades = PythonGrader(name="py", source=COUNTER, pass_threshold=0.0).grade_many(jobs)
    assert [g.score for g in grades] == [1.0, 2.0, 3.0, 4.0, 5.0]  # one shared process
    assert [g.example_id for g in grades] == ["e0", "e1", "e2", "e3", "e4"]
    batched = PythonGrader(name="py", source=COUNTER, pass_threshold=0.0, batch_size=2)
    assert [g.score for g in batched.grade_many(jobs)] == [1.0, 2.0, 1.0, 2.0, 1.0]
    assert PythonGrader(name="py", source=COUNTER, pass_threshold=0.0).grade_many([]) == []


def test_grade_many_isolates_item_failures() -> None:
    jobs: list[Job] = [({}, {"n": n}, f"e{n}", None) for n in (0, "boom", 2)]
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
    with pytest.raises(GraderError, match="timeout_s"):
        PythonGrader(name="py", source=EXACT, pass_threshold=0.5, timeout_s=0)
    with pytest.raises(GraderError, match="memory_mb"):
        PythonGrader(name="py", source=EXACT, pass_threshold=0.5, memory_mb=16)


def test_prepare_grades_a_stage_in_one_process_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline stage prepares python graders: per-example grade() then starts nothing."""
    children: list[int] = []
    run = PythonGrader._run

    def counting(self: PythonGrader, pairs: Any) -> Any:
        children.append(len(pairs))
        return run(self, pairs)

    monkeypatch.setattr(PythonGrader, "_run", counting)
    source = "def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n"
    g = PythonGrader(name="py", source=source, pass_threshold=1.0, batch_size=64)
    jobs = [({"output_text": str(i % 2)}, {"answer": "0"}) for i in range(10)]
    g.prepare(jobs)
    grades = [g.grade(s, it, f"e{i}", None) for i, (s, it) in enumerate(jobs)]
    assert [gr.passed for gr in grades] == [i % 2 == 0 for i in range(10)]
    assert [gr.example_id for gr in grades] == [f"e{i}" for i in range(10)]
    assert children == [2]  # one child, each distinct answer graded once


def test_prepared_grades_are_bounded_and_the_least_recently_used_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GRPO prepares a fresh group of answers every step: the grades kept for grade() stay
    at cache_size (the latest batch always whole), reused ones survive, old ones go."""
    children: list[int] = []
    run = PythonGrader._run

    def counting(self: PythonGrader, pairs: Any) -> Any:
        children.append(len(pairs))
        return run(self, pairs)

    monkeypatch.setattr(PythonGrader, "_run", counting)
    source = "def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n"
    g = PythonGrader(name="py", source=source, pass_threshold=1.0, cache_size=4)

    def jobs(*ns: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [({"output_text": str(n)}, {"answer": "0"}) for n in ns]

    for step in range(50):  # fifty steps of two answers each
        g.prepare(jobs(2 * step, 2 * step + 1, 0))  # answer 0 recurs every step
        assert len(g._done) <= 4
    assert children == [2] * 50  # the recurring answer was graded once
    assert g.grade(*jobs(0)[0], "e0", None).passed  # kept: used at every step
    assert g.grade(*jobs(99)[0], "e99", None).score == 0.0  # kept: the latest batch
    assert len(children) == 50, "both read from the cache, no child started"
    g.grade(*jobs(2)[0], "e2", None)  # dropped long ago: graded again in a child
    assert children[50:] == [1]
    wide = jobs(*range(1000, 1010))
    g.prepare(wide)  # a batch larger than the cache is kept whole for its grade() calls
    assert [g.grade(s, it, "e", None).score for s, it in wide] == [0.0] * 10
    assert children[-1] == 10 and len(g._done) == 10


def test_a_crash_by_signal_is_reported_as_one(mode: str) -> None:
    g = _grade("import os, signal\ndef grade(s, i):\n    os.kill(os.getpid(), signal.SIGSEGV)\n")
    assert g.error == (
        "the grader process was killed by SIGSEGV; it may have exceeded the memory limit of 512 MB"
    )


# -- hostile graders, run the way a pipeline runs them ----------------------------------

# Grades with one grader in a fresh interpreter whose environment holds the keys (so they
# are in its /proc/<pid>/environ, as in a real run), stores the grade in a run folder's
# still.db and curation.jsonl, and logs its error to the run's log file and stderr.
HARNESS = """
import json, logging, sys
from pathlib import Path
from still.graders._python import PythonGrader
from still.store import Store

run, source, item = Path(sys.argv[1]), Path(sys.argv[2]).read_text(), json.loads(sys.argv[3])
logging.basicConfig(level=logging.DEBUG, filename=run / "still.log")
logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
Store(run / "still.db").close()
g = PythonGrader(name="hostile", source=source, pass_threshold=0.5).grade({}, item, "e1", None)
with Store(run / "still.db") as store:
    store.put_grades([g])
(run / "curation.jsonl").write_text(g.model_dump_json() + "\\n")
logging.getLogger("still").error("grader %s failed: %s", g.grader, g.error)
print(g.model_dump_json())
"""

SECRET_READER = """
import os, sys

def ancestors():
    pid = "self"
    while pid not in ("0", ""):
        yield pid
        status = open(f"/proc/{pid}/status").read()
        pid = status.split("PPid:")[1].split()[0]

def grade(sample, item):
    texts = []
    for path in [f"/proc/{pid}/environ" for pid in ancestors()] + item["files"]:
        try:
            texts += open(path, "rb").read().decode("latin-1").replace("\\0", "\\n").splitlines()
        except OSError:
            pass
    found = sorted({v for v in texts if v.startswith(("OPENAI_API_KEY=", "STILL_TEST_TOKEN="))})
    if not found:
        raise LookupError("no key in the environment of any ancestor or in any file")
    print(*found, file=sys.stderr)
    raise ValueError(" ".join(found))
"""

FOLDER_WRITER = """
import os, sys

def grade(sample, item):
    results = []
    for path in item["paths"]:
        try:
            with open(path, "a") as f:
                f.write(os.environ.get("OPENAI_API_KEY", "no key"))
        except OSError as exc:
            results.append(f"{type(exc).__name__} ({exc.strerror})")
        else:
            results.append("wrote " + path)
    raise PermissionError("; ".join(results))
"""

SOCKET_OPENER = """
import socket

def grade(sample, item):
    real = socket.socket.__mro__[2]  # past the patched class
    results = []
    for family, address in ((socket.AF_INET, ("127.0.0.1", item["port"])),
                            (socket.AF_UNIX, item["unix"])):
        s = real(family, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(address)
            s.sendall(b"hello")
        except OSError as exc:
            results.append(type(exc).__name__)
        else:
            results.append("connected")
        finally:
            s.close()
    raise ConnectionError(", ".join(results))
"""


def _keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": f"sk-leak-{uuid.uuid4().hex}", "STILL_TEST_TOKEN": uuid.uuid4().hex}


def _hostile(
    tmp_path: Path,
    source: str,
    item: dict[str, Any],
    *,
    keys: dict[str, str] | None = None,
    unsafe: bool = False,
) -> Grade:
    """Run `source` through HARNESS with two secrets in its environment; return its grade
    after checking that neither secret is in any file under `tmp_path` or any output."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (tmp_path / "grader.py").write_text(source)
    keys = keys or _keys()
    env = {k: v for k, v in os.environ.items() if k != UNSAFE_ENV and k not in keys}
    env.update(keys)
    if unsafe:  # a host without bubblewrap, where the user opted out
        env.update({UNSAFE_ENV: "1", "PATH": str(Path(sys.executable).parent)})
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, str(run), str(tmp_path / "grader.py"), json.dumps(item)],
        env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"still.db", "curation.jsonl", "still.log"} <= {p.name for p in files}
    for secret in keys.values():
        assert secret.encode() not in done.stdout + done.stderr
        assert [p for p in files if secret.encode() in p.read_bytes()] == []
    grade = Grade.model_validate_json(done.stdout.decode().strip().splitlines()[-1])
    assert not grade.passed and grade.score == 0.0
    return grade


def _dotenv(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, str]) -> str:
    """A project's .env file holding the keys, outside the run folder."""
    dotenv = tmp_path_factory.mktemp("project") / ".env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in keys.items()))
    return str(dotenv)


@needs_bwrap
def test_grader_cannot_read_the_parents_environment_or_files(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    keys = _keys()
    item = {"files": [_dotenv(tmp_path_factory, keys)]}
    g = _hostile(tmp_path, SECRET_READER, item, keys=keys)
    assert g.error == "LookupError: no key in the environment of any ancestor or in any file"


def test_unsafe_mode_reads_the_key_but_errors_and_logs_are_scrubbed(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    keys = _keys()
    item = {"files": [_dotenv(tmp_path_factory, keys)]}
    # The documented weakness of opting out: the key is read; it is still never stored.
    g = _hostile(tmp_path, SECRET_READER, item, keys=keys, unsafe=True)
    assert g.error == "ValueError: OPENAI_API_KEY=*** STILL_TEST_TOKEN=***"
    crash = SECRET_READER.replace("    raise ValueError(", "    os._exit(1)\n    (")
    g = _hostile(tmp_path, crash, item, keys=keys, unsafe=True)  # the keys in stderr's tail
    assert g.error == (
        "the grader process exited with code 1 before answering: "
        "OPENAI_API_KEY=*** STILL_TEST_TOKEN=***"
    )


@needs_bwrap
def test_grader_cannot_write_into_the_run_folder_or_the_venv(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    venv_file = Path(sys.prefix) / "still-grader-write-probe"
    paths = [str(run / "pwned.txt"), str(run / "still.db"), str(venv_file)]
    try:
        g = _hostile(tmp_path, FOLDER_WRITER, {"paths": paths})
        assert not venv_file.exists()
    finally:
        venv_file.unlink(missing_ok=True)
    assert g.error == (
        "PermissionError: FileNotFoundError (No such file or directory); "
        "FileNotFoundError (No such file or directory); OSError (Read-only file system)"
    )
    assert not (run / "pwned.txt").exists()
    from still.store import Store

    with Store(run / "still.db") as store:  # intact, holding the one grade
        assert [gr.error for gr in store.grades()] == [g.error]


@needs_bwrap
def test_grader_cannot_open_a_socket(tmp_path: Path, listener: socket.socket) -> None:
    unix_path = tmp_path / "s.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(unix_path))
    unix.listen(1)
    try:
        item = {"port": listener.getsockname()[1], "unix": str(unix_path)}
        g = _hostile(tmp_path, SOCKET_OPENER, item)
        assert g.error == "ConnectionError: ConnectionRefusedError, FileNotFoundError"
        _assert_no_accept(listener)
        _assert_no_accept(unix)
    finally:
        unix.close()


# -- failing closed -------------------------------------------------------------------


def test_without_bwrap_graders_refuse_unless_the_user_opts_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # bwrap is not found
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    _sandbox._probe.cache_clear()
    _sandbox._warn_unsafe.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable) as refused:
            _grade(EXACT)
        message = str(refused.value)
        assert "\n" not in message
        assert "bubblewrap (bwrap) is not installed" in message
        assert "apt-get install bubblewrap" in message
        assert f"set {UNSAFE_ENV}=1" in message
        monkeypatch.setenv(UNSAFE_ENV, "0")  # only 1 opts out
        with pytest.raises(SandboxUnavailable):
            _grade(EXACT)

        monkeypatch.setenv(UNSAFE_ENV, "1")
        with caplog.at_level(logging.WARNING, logger="still.graders._sandbox"):
            assert _grade(EXACT).score == 1.0
            assert _grade(EXACT).score == 1.0
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "WITHOUT a sandbox" in warnings[0]
    finally:
        _sandbox._probe.cache_clear()
        _sandbox._warn_unsafe.cache_clear()


def test_unusable_bwrap_is_refused_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "bwrap"  # installed, but namespaces are blocked
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    _sandbox._probe.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="bwrap cannot sandbox here: bwrap: setting"):
            _grade(EXACT)
    finally:
        _sandbox._probe.cache_clear()


def test_scrub_replaces_secret_looking_values() -> None:
    env = {
        "OPENAI_API_KEY": "sk-abcdefgh",
        "AZURE_OPENAI_API_KEY": "azure-12345678",
        "STILL_API_KEY": "still-key-1234",
        "HF_TOKEN": "hf_zyxwvutsrq",
        "DB_PASSWORD": "hunter2hunter2",
        "MY_SECRET": "s3cr3t-value",
        "SHORT_KEY": "abc",  # too short to scrub safely
        "HOME": "/home/someone",  # not a secret
    }
    text = " ".join(f"{k}={v}" for k, v in env.items())
    assert scrub(text, env) == (
        "OPENAI_API_KEY=*** AZURE_OPENAI_API_KEY=*** STILL_API_KEY=*** HF_TOKEN=*** "
        "DB_PASSWORD=*** MY_SECRET=*** SHORT_KEY=abc HOME=/home/someone"
    )
    assert scrub("key sk-abcdefgh", {"openai_api_key": "sk-abcdefgh"}) == "key ***"


def test_grade_errors_are_scrubbed(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STILL_API_KEY", "still-secret-0123")
    g = _grade("def grade(s, i):\n    raise ValueError('token still-secret-0123 here')\n")
    assert g.error == "ValueError: token *** here"
