"""The `python` grader: a task's own `grade(sample, item) -> float`, run out of process.

The source comes from a task file, so it is treated as untrusted code and never runs in
this process. Each batch of items runs in one child process of the same interpreter
(`sys.executable -I`: no user site-packages, no PYTHON* variables), which gets the source
and the items as JSON on stdin and streams one JSON line per item back. Its limits:

- Time: every `grade` call, and the source's top-level code, gets `timeout_s`. A timer
  inside the child interrupts Python code that overruns (`while True: pass`), failing
  only that item ("timed out after Xs"). Code the timer cannot interrupt (a long C
  call, a handler that swallows the signal) is caught by the parent, which waits at most
  `timeout_s + KILL_GRACE_S` for each item's answer and otherwise kills the child's
  whole process group: that item fails with the timeout, and the items after it in the
  batch fail saying the batch's process was killed.
- Memory: RLIMIT_AS (address space) of `memory_mb`, set in the child before the source
  is compiled (the sandbox's /tmp holds at most `memory_mb` too). An allocation past it
  raises MemoryError, reported as a memory failure; a child killed by a signal is
  reported with the limit too, since that is the usual cause.
  RLIMIT_AS counts reserved address space, so libraries that reserve large arenas up
  front (OpenBLAS threads, some JITs) need a larger `memory_mb` than they use.
- Isolation: the child runs in bubblewrap (`_sandbox.py`): new user, network and PID
  namespaces, a read-only view of only the system and the interpreter (no home, project,
  store or run folder), a fresh /proc, a private size-limited /tmp as its working
  directory, and an environment of only PATH, LANG and HOME. Where bwrap cannot run,
  python graders refuse to, unless `STILL_UNSAFE_PYTHON_GRADERS=1` is set; the child then
  runs directly, with only the guards below.
- Always, before the source runs, the child replaces `socket.socket`,
  `socket.create_connection`, `socket.getaddrinfo` and friends (in `socket` and `_socket`)
  with functions raising PermissionError: a clear error for ordinary library use, and the
  only network guard in the unsafe mode (where a subprocess running curl, or ctypes,
  escapes it). The child gets no core dumps, and its prints go to stderr (kept for
  diagnostics, bounded) so they cannot corrupt the result stream.
- Error text leaving this module is scrubbed of secret-looking environment values
  (`_sandbox.scrub`), since it is stored in the grades table and curation.jsonl.

A non-numeric return (a string, None, NaN, infinity) is a failed grade; so is an
exception, whose error is the exception's last line ("ZeroDivisionError: division by
zero"). bool and numpy numbers count as numbers. Scores are used as returned, not clipped.
The source is executed once per batch, so module-level state is shared by the items of a
batch: a grader must not depend on it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from still.errors import GraderError
from still.graders import _sandbox
from still.graders._registry import register_grader
from still.graders._sandbox import Mode
from still.tasks import PythonSpec
from still.types import Grade

KILL_GRACE_S = 2.0
"""Seconds past `timeout_s` the parent waits for an item before killing the child."""

STARTUP_GRACE_S = 3.0
"""Extra seconds for the child's interpreter to start and compile the source (its top-level
code then runs under `timeout_s` like an item)."""

MAX_LINE_BYTES = 1 << 20
"""Longest result line accepted from a child: more is a protocol error."""

STDERR_TAIL_BYTES = 4096
"""How much of a child's stderr is kept to explain a crash."""

CACHE_SIZE = 4096
"""Grades `prepare` keeps for the `grade` calls that follow, most recently used first. A
GRPO run prepares every sampled group, so an unbounded cache would grow with every step;
the batch a `prepare` call grades is always kept whole, however large."""

# The child's program. It is trusted code run with `-I -c`; it reads {"source", "items",
# "timeout_s", "memory_mb"} from stdin and writes one JSON line per item to the original
# stdout: {"i": n, "score": x} or {"i": n, "error": "...", "kind": "..."}.
_BOOTSTRAP = r"""
import json, math, numbers, os, resource, signal, sys, traceback

job = json.loads(sys.stdin.buffer.read())
sys.stdin.close()
out = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)  # the grader's prints go to stderr, never into the result stream
sys.stdout = sys.stderr

memory_mb = int(job["memory_mb"])
limit = memory_mb * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

import socket, _socket

def _refuse(*args, **kwargs):
    raise PermissionError("network access is disabled for python graders")

class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _refuse()

for _mod in (socket, _socket):
    for _attr in ("create_connection", "create_server", "getaddrinfo", "gethostbyname",
                  "gethostbyname_ex", "gethostbyaddr", "getnameinfo", "socketpair", "fromfd",
                  "socket", "SocketType"):
        if hasattr(_mod, _attr):
            setattr(_mod, _attr, _NoSocket if _attr in ("socket", "SocketType") else _refuse)

class GraderTimeout(BaseException):
    pass

def _alarm(signum, frame):
    raise GraderTimeout()

signal.signal(signal.SIGALRM, _alarm)
timeout = float(job["timeout_s"])

def emit(i, result):
    result["i"] = i
    out.write(json.dumps(result) + "\n")
    out.flush()

def last_line(exc):
    return traceback.format_exception_only(type(exc), exc)[-1].strip()

def memory_error():
    return {"error": "memory limit of %d MB exceeded (MemoryError)" % memory_mb,
            "kind": "memory"}

items = job["items"]
grade = None
try:
    namespace = {"__name__": "__grader__"}
    code = compile(job["source"], "<grader>", "exec")
    signal.setitimer(signal.ITIMER_REAL, timeout)  # module-level code gets the same limit
    try:
        exec(code, namespace)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    grade = namespace.get("grade")
    if not callable(grade):
        setup = {"error": "the source defines no grade(sample, item) function", "kind": "source"}
except GraderTimeout:
    setup = {"error": "timed out after %gs running the source's top level" % timeout,
             "kind": "timeout"}
except MemoryError:
    setup = memory_error()
except BaseException as exc:
    setup = {"error": last_line(exc), "kind": "source"}
del job
out.write('{"ready": true}\n')  # the parent's per-item deadlines start now
out.flush()

for i, (sample, item) in enumerate(items):
    if not callable(grade):
        emit(i, dict(setup))
        continue
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            value = grade(sample, item)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if isinstance(value, numbers.Real) and math.isfinite(float(value)):
            result = {"score": float(value)}
        else:
            result = {"error": "grade() returned %s, not a finite number: %.200r"
                      % (type(value).__name__, value), "kind": "type"}
    except GraderTimeout:
        result = {"error": "timed out after %gs" % timeout, "kind": "timeout"}
    except MemoryError:
        result = memory_error()
    except BaseException as exc:
        result = {"error": last_line(exc), "kind": "exception"}
    emit(i, result)
out.close()
"""


def sandbox() -> Mode:
    """How python graders run here: "bwrap" or, where the user opted out, "unsafe".

    Raises:
        SandboxUnavailable: bwrap cannot run here and the user did not opt out.
    """
    return _sandbox.mode()


def _job_key(sample: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    return json.dumps([sample, item], sort_keys=True, default=str)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


@dataclass(frozen=True)
class _Outcome:
    score: float | None
    error: str | None


@dataclass(frozen=True)
class PythonGrader:
    """A configured python grader.

    Args:
        name: the grade's name in reports and filters.
        source: Python source defining `grade(sample, item) -> float`.
        pass_threshold: a score at or above it passes.
        timeout_s: the longest one `grade` call may run.
        memory_mb: the child process's address-space limit.
        batch_size: items graded by one child process in `grade_many`.
        cache_size: grades kept from `prepare` (least recently used dropped first; the
            last `prepare` call's batch is kept whole even when larger).
    """

    name: str
    source: str
    pass_threshold: float
    timeout_s: float = 5.0
    memory_mb: int = 512
    batch_size: int = 64
    cache_size: int = CACHE_SIZE
    _done: OrderedDict[str, Grade] = field(default_factory=OrderedDict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise GraderError(f"timeout_s must be a positive number, not {self.timeout_s}")
        if self.memory_mb < 64:
            raise GraderError(
                f"memory_mb must be at least 64 (the interpreter needs it), not {self.memory_mb}"
            )
        if self.batch_size < 1:
            raise GraderError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.cache_size < 0:
            raise GraderError(f"cache_size must be at least 0, not {self.cache_size}")

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade:
        """Grade one completion: from what `prepare` graded, else in a child process of
        its own (prefer prepare or grade_many for many)."""
        key = _job_key(sample, item)
        done = self._done.get(key)
        if done is not None:
            self._done.move_to_end(key)
            return done.model_copy(
                update={"example_id": example_id, "completion_id": completion_id}
            )
        return self.grade_many([(sample, item, example_id, completion_id)])[0]

    def prepare(self, jobs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> None:
        """Grade every (sample, item) in batches of `batch_size` per child process, so the
        per-example `grade` calls that follow start no process (a pipeline stage grades
        hundreds of answers: one interpreter each would cost minutes).

        Grades kept from earlier calls are reused; the oldest unused ones beyond
        `cache_size` are dropped, never one of this call's jobs."""
        keys = [_job_key(s, it) for s, it in jobs]
        todo = {}
        for key, (s, it) in zip(keys, jobs, strict=True):
            if key in self._done:
                self._done.move_to_end(key)
            else:
                todo[key] = (s, it)
        grades = self.grade_many([(s, it, "", None) for s, it in todo.values()])
        for key, g in zip(todo, grades, strict=True):
            self._done[key] = g
        keep = max(self.cache_size, len(set(keys)))
        while len(self._done) > keep:
            self._done.popitem(last=False)

    def grade_many(
        self,
        jobs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any], str, str | None]],
    ) -> list[Grade]:
        """Grade many completions, `batch_size` per child process, in order.

        Each job is (sample, item, example_id, completion_id); each item is graded in its
        own try/except, so one failure does not touch the others unless the child has to
        be killed (see the module docstring).
        """
        grades: list[Grade] = []
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start : start + self.batch_size]
            outcomes = self._run([(s, it) for s, it, _, _ in batch])
            for (_, _, example_id, completion_id), outcome in zip(batch, outcomes, strict=True):
                score = outcome.score if outcome.score is not None else 0.0
                grades.append(
                    Grade(
                        grader=self.name,
                        example_id=example_id,
                        completion_id=completion_id,
                        score=score,
                        passed=outcome.error is None and score >= self.pass_threshold,
                        error=None if outcome.error is None else _sandbox.scrub(outcome.error),
                    )
                )
        return grades

    def _command(self, mode: Mode) -> list[str]:
        child = [sys.executable, "-I", "-c", _BOOTSTRAP]
        if mode == "unsafe":
            return child
        size = self.memory_mb << 20 if _sandbox.tmp_size_supported() else None
        return _sandbox.bwrap_command(child, size)

    def _run(self, pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[_Outcome]:
        """One child process for `pairs`; always one outcome per pair."""
        if not pairs:
            return []
        mode = sandbox()  # refuses before anything runs where there is no sandbox
        payload = json.dumps(
            {
                "source": self.source,
                "items": [[s, it] for s, it in pairs],
                "timeout_s": self.timeout_s,
                "memory_mb": self.memory_mb,
            },
            default=str,  # values JSON cannot carry (dates, sets) arrive as their text
        ).encode()
        # In bwrap the child works in the sandbox's own /tmp; this folder is then only
        # bwrap's cwd (and its environment, which its PID-1 reaper keeps, is this one too).
        with tempfile.TemporaryDirectory(prefix="still-grader-") as workdir:
            proc = subprocess.Popen(
                self._command(mode),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=_sandbox.child_env(workdir),
                start_new_session=True,  # its own process group, killed as one
            )
            try:
                return self._talk(proc, payload, len(pairs), mode)
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
                proc.wait()
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError):  # stdin of a child that died
                            stream.close()

    def _talk(
        self, proc: subprocess.Popen[bytes], payload: bytes, n: int, mode: Mode
    ) -> list[_Outcome]:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            # The child reads all of stdin before it does anything else, so this cannot
            # deadlock; it fails only if the child died at start (reported below).
            proc.stdin.write(payload)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        outcomes: list[_Outcome] = []
        buffer = b""
        err_tail = b""
        per_item = self.timeout_s + KILL_GRACE_S
        deadline = time.monotonic() + per_item + STARTUP_GRACE_S
        killed_for: str | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, "out")
            selector.register(proc.stderr, selectors.EVENT_READ, "err")
            while len(outcomes) < n and selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    killed_for = "timeout"
                    break
                for key, _ in selector.select(remaining):
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fileobj)
                    elif key.data == "err":
                        err_tail = (err_tail + data)[-STDERR_TAIL_BYTES:]
                    else:
                        buffer += data
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            if line != b'{"ready": true}':
                                outcomes.append(_parse_line(line, len(outcomes)))
                            deadline = time.monotonic() + per_item
                        if len(buffer) > MAX_LINE_BYTES:
                            killed_for = "protocol"
                            break
                if killed_for:
                    break
        outcomes = outcomes[:n]
        if len(outcomes) == n:
            return outcomes
        # The child is stuck or gone before answering every item.
        if proc.poll() is None:
            _kill_group(proc)
        code = proc.wait()
        if mode == "bwrap" and 128 < code < 128 + signal.NSIG:
            code = 128 - code  # bwrap exits 128+N for a child killed by signal N
        at = len(outcomes)
        if killed_for == "timeout":
            first = (
                f"timed out after {self.timeout_s:g}s (the grader did not stop when "
                f"interrupted; its process was killed)"
            )
            rest = f"not graded: the batch's process was killed after item {at} timed out"
        elif killed_for == "protocol":
            first = rest = "the grader process wrote an oversized result line; it was killed"
        else:
            first = rest = _crash(code, err_tail, self.memory_mb)
            rest = f"not graded: {rest} (at item {at} of the batch)"
        outcomes.append(_Outcome(None, first))
        outcomes.extend(_Outcome(None, rest) for _ in range(n - len(outcomes)))
        return outcomes


def _crash(code: int, err_tail: bytes, memory_mb: int) -> str:
    """Why a child ended without answering, from its exit status and stderr."""
    if code < 0:
        # SIGKILL (the kernel's OOM killer), SIGSEGV or SIGABRT (a C extension that got
        # no memory) are how a memory overrun usually ends when it is not a MemoryError.
        return (
            f"the grader process was killed by {_signal_name(-code)}; it may have exceeded "
            f"the memory limit of {memory_mb} MB"
        )
    lines = err_tail.decode(errors="replace").strip().splitlines()
    last = f": {lines[-1]}" if lines else ""
    return f"the grader process exited with code {code} before answering{last}"


def _parse_line(line: bytes, expected: int) -> _Outcome:
    try:
        result = json.loads(line)
        if result.get("i") != expected:
            return _Outcome(
                None,
                f"grader protocol error: answer for item {result.get('i')!r}, expected {expected}",
            )
        if "score" in result:
            return _Outcome(float(result["score"]), None)
        return _Outcome(None, str(result["error"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return _Outcome(None, "grader protocol error: unreadable result line")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (it leads one: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@register_grader(PythonSpec)
def python_grader(spec: PythonSpec, name: str) -> PythonGrader:
    """`python`: the spec's source, run sandboxed with its time and memory limits."""
    return PythonGrader(
        name=name,
        source=spec.source,
        pass_threshold=spec.pass_threshold,
        timeout_s=spec.timeout_s,
        memory_mb=spec.memory_mb,
    )
