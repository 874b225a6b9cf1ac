"""Shadowing a served student with its teacher, to measure in production how often they agree.

`still serve STUDENT --shadow TEACHER --sample 0.1` answers every request with the student;
a sampled fraction is also asked of the teacher, in the background. The client never waits
for it: `still serve` offers each request to `Shadow.offer` once its answer has gone out, and
`offer` only draws the sample and puts the pair in a bounded queue (when the queue is full
the pair is dropped and counted, never waited for). Worker threads ask the teacher, judge
the pair and store both completions:

- the teacher's answer (its parsed label, for a label task) is the reference. With a task's
  graders (`--task`), the student's completion is graded against it as an example whose
  answer is the teacher's, and its grades are stored; `passed` is every grader passing.
  Always, `agree` is whether the two answers are the same once normalised (the parsed
  label; JSON compared as values; free text with case, spacing and closing punctuation
  ignored);
- both completions are stored tagged `shadow=1`, `shadow_role=student|teacher`,
  `shadow_pair=<id>` and the request's own tags (its `metadata` and `X-Still-Tags`); the
  student's also carries the verdicts (`shadow_agree` 1, 0 or `?` when the teacher failed
  or gave no answer; `shadow_pass` 1 or 0 when graded), so `still store ls --metadata
  shadow_agree=0` lists the disagreements.

`read_shadow` reads these records back for `still monitor` and the proxy's routes
(`still.route`).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from still.errors import StillError
from still.graders import Capture, Grader, answer_of, build_grader, grade, prepare_graders
from still.models import Provider, get_model
from still.store import MAX_METADATA_KEYS, Store, check_metadata
from still.tasks import Example, example_id, load_task
from still.types import Completion, Grade, Request

log = logging.getLogger("still.shadow")

SHADOW = "shadow"
"""The tag every shadow record carries (`shadow=1`)."""
ROLE = "shadow_role"
"""`student` (the answer the client got) or `teacher` (the background one)."""
PAIR = "shadow_pair"
"""The id both completions of one shadowed request share."""
AGREE = "shadow_agree"
"""On the student's record: `1` the answers agree, `0` they differ, `?` no teacher answer."""
PASS = "shadow_pass"
"""On the student's record, with a task's graders: `1` every grader passed, `0` one failed."""
_OURS = (SHADOW, ROLE, PAIR, AGREE, PASS)
_RESERVED_FIELDS = ("answer", "labels", "fewshot")


class ShadowError(StillError):
    """A shadow that cannot run as asked (a sample fraction outside 0-1)."""


@dataclass
class ShadowStats:
    """What the shadow did since it started."""

    offered: int = 0
    """Requests the server answered and offered."""
    sampled: int = 0
    """Of those, the ones drawn for the teacher."""
    dropped: int = 0
    """Sampled ones left out because the queue was full (the teacher fell behind)."""
    shadowed: int = 0
    """Pairs judged and stored."""
    teacher_errors: int = 0
    """Pairs whose teacher failed or gave no answer (stored with `shadow_agree=?`)."""
    errors: int = 0
    """Pairs lost to a failure while judging or storing them (logged)."""


@dataclass(frozen=True)
class Grading:
    """How a pair is graded beyond agreement: a task's graders and labels.

    Args:
        graders: the graders; the teacher's answer is their reference (`item.answer`).
        labels: the task's label set, which answers are parsed onto.
        judge: how model graders call their judge (needed when there are any).
    """

    graders: Sequence[Grader] = ()
    labels: tuple[str, ...] | None = None
    judge: Capture | None = None

    @classmethod
    def from_task(cls, path: str | Path) -> Grading:
        """The graders and labels of a task file; model graders ask their judge directly
        (its answers are grades, not stored completions).

        Raises:
            TaskError: the task file is invalid.
            GraderError: a grader cannot be built.
        """
        task = load_task(path)
        graders = [build_grader(spec) for spec in task.graders]
        return cls(graders, tuple(task.labels) if task.labels else None, _direct_judge())


def _direct_judge() -> Capture:
    """A judge capture that asks each judge model directly (one provider per model)."""
    providers: dict[str, Provider] = {}
    lock = threading.Lock()

    def ask(requests: dict[str, Request], grader: str) -> dict[str, Completion]:
        if not requests:
            return {}
        ref = next(iter(requests.values())).model
        with lock:
            if ref not in providers:
                providers[ref] = get_model(ref)
        outs = providers[ref].complete(list(requests.values()))
        return dict(zip(requests, outs, strict=True))

    return ask


@dataclass(frozen=True)
class Verdict:
    """How one student answer compares with the teacher's."""

    agree: bool | None
    """The normalised answers are equal; None when the teacher gave no answer."""
    passed: bool | None = None
    """Every grader passed; None without graders or without a teacher answer."""
    grades: tuple[Grade, ...] = ()
    """Each grader's grade of the student's answer against the teacher's."""


def normalise(text: str) -> str:
    """An answer as compared: JSON re-serialised with sorted keys, else lower case with
    spaces collapsed and closing punctuation dropped.

    >>> normalise("  The Answer is 42. ") == normalise("the answer is 42")
    True
    >>> normalise('{"b": 1, "a": 2}') == normalise('{"a":2,"b":1}')
    True
    """
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(stripped), sort_keys=True)
        except ValueError:
            pass
    return " ".join(stripped.casefold().split()).rstrip(".!?;: ")


def judge_pair(student: Completion, teacher: Completion, grading: Grading | None) -> Verdict:
    """Compare a student's completion with the teacher's on the same request.

    The teacher's parsed answer (its label, when there is a label set: the task's, else
    the request's) is the reference; a student that failed or gave an unparseable answer
    disagrees, and fails every grader.
    """
    labels = grading.labels if grading and grading.labels else student.request.labels
    reference = answer_of(teacher, labels).answer
    if reference is None:
        return Verdict(None)
    answer = answer_of(student, labels).answer
    agree = answer is not None and normalise(answer) == normalise(reference)
    if grading is None or not grading.graders:
        return Verdict(agree)
    msgs = student.request.messages
    example = Example(
        id=example_id({"messages": json.dumps([m.model_dump() for m in msgs])}),
        fields={k: v for k, v in student.metadata.items() if k not in _RESERVED_FIELDS + _OURS},
        answer=reference,
        source=f"shadow#{teacher.id}",
        messages=msgs,
    )
    # judges and python graders answer first (a no-op for the others)
    prepare_graders(grading.graders, [(example, student)], labels, grading.judge)
    grades = grade(grading.graders, example, student, labels)
    return Verdict(agree, all(g.passed for g in grades), tuple(grades))


@dataclass
class _Job:
    student: Completion
    tags: dict[str, str]


class Shadow:
    """Asks the teacher about a sample of served requests, in the background, and stores
    each pair with its verdict. Give it to `still.serve.create_app(observer=...)`.

    Args:
        teacher: the teacher model.
        db: the store the pairs are written to (created when missing).
        sample: the fraction of requests shadowed (0-1), drawn at random.
        grading: a task's graders and labels (None: agreement only).
        seed: the seed of the draws (None: a random one).
        queue_size: how many sampled requests may wait for the teacher; more are dropped.
        workers: how many teacher calls run at once.

    Raises:
        ShadowError: `sample` outside 0-1, or `queue_size` or `workers` below 1.
    """

    def __init__(
        self,
        teacher: Provider,
        db: str | Path,
        sample: float,
        grading: Grading | None = None,
        seed: int | None = None,
        queue_size: int = 256,
        workers: int = 2,
    ) -> None:
        if not 0 <= sample <= 1:
            raise ShadowError(f"--sample {sample}: use a fraction between 0 and 1, e.g. 0.1")
        if queue_size < 1 or workers < 1:
            raise ShadowError("the shadow's queue size and workers must be at least 1")
        self.teacher = teacher
        self.db = Path(db)
        self.sample = sample
        self.grading = grading
        self.counts = ShadowStats()
        self._rng = random.Random(seed)
        self._queue: queue.Queue[_Job] = queue.Queue(queue_size)
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # jobs queued or being handled
        self._stop = threading.Event()
        self._store: Store | None = None
        # the workers call their teachers at once but write one at a time, through one
        # connection: two lazily opened ones raced, and one pair was lost to the lock
        self._write = threading.Lock()

    def __enter__(self) -> Shadow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the request path: never blocks --------------------------------------------------
    def offer(self, completion: Completion, tags: Mapping[str, str]) -> None:
        """Draw whether this answered request is shadowed and, if so, queue it for the
        teacher. Returns at once: never calls the teacher, never waits for the queue."""
        with self._lock:
            self.counts.offered += 1
            if self._rng.random() >= self.sample:
                return
            self.counts.sampled += 1
            try:
                if self._stop.is_set():
                    raise queue.Full
                self._queue.put_nowait(_Job(completion, dict(tags)))
            except queue.Full:
                self.counts.dropped += 1
                if self.counts.dropped in (1, 10, 100) or self.counts.dropped % 1000 == 0:
                    log.warning(
                        "shadow queue full (%d waiting for %s): %d sampled requests dropped "
                        "so far; lower --sample or add workers",
                        self._queue.maxsize, self.teacher.name, self.counts.dropped,
                    )  # fmt: skip
                return
            self._busy += 1
            if not self._threads:
                self._start()

    def _start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"still-shadow-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    # -- the background -----------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                self._shadow(job)
            except Exception:  # one bad pair must not stop the shadow
                log.exception("shadow pair of %s lost", job.student.id)
                with self._lock:
                    self.counts.errors += 1
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _shadow(self, job: _Job) -> None:
        student = job.student
        request = student.request.model_copy(update={"model": self.teacher.name})
        try:
            teacher = self.teacher.complete([request])[0]
        except Exception as exc:  # noqa: BLE001 - a failed teacher is a stored failed completion
            teacher = Completion(request=request, error=f"{type(exc).__name__}: {exc}")
        pair = "pair-" + uuid.uuid4().hex[:16]
        tags = _fit(job.tags)
        student = student.model_copy(update={"metadata": tags})
        verdict = judge_pair(student, teacher, self.grading)
        ours = {SHADOW: "1", PAIR: pair}
        teacher = teacher.model_copy(update={"metadata": {**tags, **ours, ROLE: "teacher"}})
        mine = {**tags, **ours, ROLE: "student", AGREE: _flag(verdict.agree)}
        if verdict.passed is not None:
            mine[PASS] = _flag(verdict.passed)
        # stamped when judged, not when asked: readers that follow the store by time
        # (`still proxy --route`) then see the pairs in the order they are stored
        student = student.model_copy(update={"metadata": mine, "created_at": time.time()})
        try:
            with self._write:
                if self._store is None:
                    self._store = Store(self.db)
                self._store.put_many([student, teacher])
                if verdict.grades:
                    self._store.put_grades(verdict.grades)
        except (sqlite3.Error, OSError) as exc:
            log.warning("shadow pair not stored in %s: %s", self.db, exc)
            with self._lock:
                self.counts.errors += 1
            return
        with self._lock:
            self.counts.shadowed += 1
            if verdict.agree is None:
                self.counts.teacher_errors += 1

    # -- control --------------------------------------------------------------------------
    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued pair is stored; False on timeout (at once once closed)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._busy and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the queued pairs (waiting at most `timeout_s`), then stop the workers.
        Later offers are counted and dropped; closing again does nothing."""
        if self._stop.is_set():
            return
        if not self.flush(timeout_s):
            log.warning("shadow: %d pairs left unjudged at shutdown", self._busy)
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._threads.clear()
        with self._write:
            if self._store is not None:
                self._store.close()
                self._store = None
        log.info("shadow: %s", self.stats())

    def stats(self) -> dict[str, Any]:
        """The counts (`ShadowStats`) and how many pairs wait now."""
        with self._lock:
            return {**asdict(self.counts), "waiting": self._busy, "sample": self.sample}


def _flag(value: bool | None) -> str:
    return "?" if value is None else str(int(value))


def _fit(tags: Mapping[str, str]) -> dict[str, str]:
    """The request's tags that a stored completion can hold beside the shadow's own: valid
    ones, at most as many as leave room for ours (first by name); the rest logged."""
    kept: dict[str, str] = {}
    room = MAX_METADATA_KEYS - len(_OURS)
    for key in sorted(tags):
        if key in _OURS:
            continue
        try:
            check_metadata({key: tags[key]})
        except ValueError as exc:
            log.warning("shadow: tag left out: %s", exc)
            continue
        if len(kept) == room:
            log.warning("shadow: more than %d tags; %r and later ones left out", room, key)
            break
        kept[key] = tags[key]
    return kept


@dataclass(frozen=True)
class ShadowRecord:
    """One shadowed request as read back from the store (the student's side)."""

    id: str
    """The student's completion id."""
    pair: str
    created_at: float
    """When the pair was judged and stored (Unix seconds): the request's answer is older by
    the teacher's wait and latency."""
    model: str
    """The student's model reference."""
    tags: dict[str, str]
    """The request's tags (without the shadow's own)."""
    agree: bool | None
    """The answers agree; None when the teacher gave no answer."""
    passed: bool | None = None
    """Every grader passed; None when not graded."""
    grades: dict[str, bool] = field(default_factory=dict)
    """Each grader's verdict, by grader name."""
    student_error: str | None = None
    """Why the student failed, when it did (the client got an error)."""


def read_shadow(
    store: Store,
    *,
    metadata: Mapping[str, str] | None = None,
    model: str | None = None,
    since: float | None = None,
    last: int | None = None,
) -> list[ShadowRecord]:
    """The shadow records of a store, oldest first.

    Args:
        store: the store `still serve --shadow` writes.
        metadata: only records carrying these request tags.
        model: only this student model.
        since: only pairs judged at or after this time (Unix seconds).
        last: only the last this many (after the other filters).
    """
    wanted = {**(metadata or {}), SHADOW: "1", ROLE: "student"}
    offset = 0
    if last is not None:
        offset = max(0, store.count(model=model, metadata=wanted, since=since) - last)
    found = store.list(model=model, metadata=wanted, since=since, offset=offset)
    verdicts: dict[str, dict[str, bool]] = {}
    for g in store.grades(completion_ids=[c.id for c in found]):
        verdicts.setdefault(g.completion_id or "", {})[g.grader] = g.passed
    flags = {"1": True, "0": False}
    return [
        ShadowRecord(
            id=c.id,
            pair=c.metadata.get(PAIR, ""),
            created_at=c.created_at,
            model=c.model,
            tags={k: v for k, v in c.metadata.items() if k not in _OURS},
            agree=flags.get(c.metadata.get(AGREE, "?")),
            passed=flags.get(c.metadata.get(PASS, "?")),
            grades=verdicts.get(c.id, {}),
            student_error=c.error,
        )
        for c in found
    ]


def open_shadow(
    teacher: str,
    db: str | Path,
    sample: float,
    task: str | Path | None = None,
    seed: int | None = None,
    queue_size: int = 256,
    workers: int = 2,
) -> Shadow:
    """A `Shadow` of the teacher a reference names, graded by a task's graders when given.

    Raises:
        ModelError: the teacher reference names no model.
        TaskError, GraderError: the task file or one of its graders is invalid.
        ShadowError: see `Shadow`.
    """
    grading = Grading.from_task(task) if task is not None else None
    return Shadow(get_model(teacher), db, sample, grading, seed, queue_size, workers)
