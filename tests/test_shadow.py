"""`still serve --shadow`: the student answers every client at once, a seeded sample is asked
of the teacher in the background, and each pair is stored with its agreement and grades."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx2
import pytest

from still.models import get_model
from still.serve import create_app
from still.shadow import Grading, Shadow, ShadowError, judge_pair, read_shadow
from still.store import Store
from still.types import Completion, Message, Request
from test_helpers import LABELS, write_task
from test_helpers.serve import AppServer
from test_helpers.shadow import HeldTeacher, label_body


def _completions(model: str, questions: list[str]) -> list[Completion]:
    provider = get_model(model)
    reqs = [
        Request(model=provider.name, messages=(Message(role="user", content=q),)) for q in questions
    ]
    return provider.complete(reqs)


@pytest.mark.parametrize("stream", [False, True])
def test_the_client_has_its_answer_while_the_teacher_is_still_answering(
    tmp_path: Path, stream: bool
) -> None:
    teacher = HeldTeacher("yes", hold_s=2.0)  # answers in 2 s, or as soon as `release` is set
    shadow = Shadow(teacher, tmp_path / "shadow.db", sample=1.0)
    app = create_app(get_model("scripted:const=yes"), "student", observer=shadow)
    with AppServer(app) as server:
        body = {"model": "student", "messages": [{"role": "user", "content": "ok?"}]}
        got = httpx2.post(f"{server.base_url}/chat/completions", json={**body, "stream": stream})
        finished_before_client = len(teacher.released_early)  # teacher calls that returned
        teacher.release.set()  # the client has its whole answer: let the teacher answer
        assert got.status_code == 200 and "yes" in got.text
        assert shadow.flush(10)
    assert finished_before_client == 0
    # the teacher was asked, and was still answering when the client's answer had arrived
    assert teacher.started.is_set() and teacher.released_early == [True]
    with Store(tmp_path / "shadow.db") as store:
        (record,) = read_shadow(store)
    assert record.agree is True


def test_the_sample_fraction_holds_over_many_requests_and_the_seed_fixes_which(
    tmp_path: Path,
) -> None:
    served = _completions("scripted:echo", [f"q{i}" for i in range(2000)])
    picked: list[list[str]] = []
    for run, seed in enumerate([7, 7, 8]):
        db = tmp_path / f"{run}.db"
        with Shadow(get_model("scripted:echo"), db, 0.1, seed=seed, queue_size=5000) as shadow:
            for c in served:
                shadow.offer(c, {"q": c.request.messages[0].content})
            assert shadow.flush(60)
            stats = shadow.stats()
        with Store(db) as store:
            picked.append(sorted(r.tags["q"] for r in read_shadow(store)))
        assert stats["offered"] == 2000
        assert stats["sampled"] == stats["shadowed"] == len(picked[-1])
        assert stats["dropped"] == 0
    n = len(picked[0])
    assert abs(n - 200) <= 4 * math.sqrt(2000 * 0.1 * 0.9), n  # binomial, 4 sigma
    assert picked[0] == picked[1]  # the same seed draws the same requests
    assert picked[0] != picked[2]


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    teacher = HeldTeacher("yes", hold_s=30.0)
    served = _completions("scripted:const=yes", [f"q{i}" for i in range(10)])
    shadow = Shadow(teacher, tmp_path / "s.db", sample=1.0, queue_size=2, workers=1)
    shadow.offer(served[0], {})
    assert teacher.started.wait(10)  # the one worker is held by the teacher
    for c in served[1:]:
        shadow.offer(c, {})  # returns at once even though the teacher answers nothing
    stats = shadow.stats()
    teacher.release.set()
    shadow.close()
    assert stats["sampled"] == 10 and stats["dropped"] == 7 and stats["waiting"] == 3
    assert shadow.stats()["shadowed"] == 3


def test_pairs_are_stored_with_their_agreement_and_the_request_tags(tmp_path: Path) -> None:
    db = tmp_path / "shadow.db"
    shadow = Shadow(get_model("scripted:echo"), db, sample=1.0)  # answers the question
    app = create_app(get_model("scripted:first-label"), "student", observer=shadow)
    questions = [f"a question about {label}" for label in LABELS]
    with AppServer(app) as server:
        for q in questions:
            got = httpx2.post(
                f"{server.base_url}/chat/completions",
                json=label_body(q, LABELS, metadata={"app": "triage", "env": "dev"}),
                headers={"X-Still-Tags": "env=prod, team=a%2Cb"},
            )
            assert json.loads(got.json()["choices"][0]["message"]["content"]) == {
                "label": LABELS[0]
            }
        assert shadow.flush(10)
    with Store(db) as store:
        records = read_shadow(store)
        teachers = store.list(metadata={"shadow": "1", "shadow_role": "teacher"})
        disagreements = store.list(metadata={"shadow_agree": "0"})
    # the student always says the first label; the teacher names the question's
    assert [r.agree for r in records] == [True, False, False]
    assert len(disagreements) == 2
    assert all(r.tags == {"app": "triage", "env": "prod", "team": "a,b"} for r in records)
    assert sorted(t.metadata["shadow_pair"] for t in teachers) == sorted(r.pair for r in records)
    assert {t.text for t in teachers} == set(questions)
    assert all(t.model == "scripted:echo" and t.request.labels == tuple(LABELS) for t in teachers)


def test_a_task_s_graders_grade_the_student_against_the_teacher_s_answer(
    tmp_path: Path,
) -> None:
    contains = {"type": "string_check", "name": "contains", "operation": "ilike",
                "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}  # fmt: skip
    task = write_task(tmp_path, "scripted:echo", labels=None, graders=[contains])
    db = tmp_path / "shadow.db"
    # the teacher says "about"; the student repeats the question, which contains it
    served = _completions("scripted:echo", ["what about it", "what is it"])
    with Shadow(get_model("scripted:const=about"), db, 1.0, Grading.from_task(task)) as shadow:
        for c in served:
            shadow.offer(c, {})
        assert shadow.flush(10)
    with Store(db) as store:
        records = read_shadow(store)
        grades = store.grades(grader="contains")
    assert [(r.agree, r.passed, r.grades) for r in records] == [
        (False, True, {"contains": True}),
        (False, False, {"contains": False}),
    ]
    assert sorted(g.completion_id or "" for g in grades) == sorted(r.id for r in records)


def test_a_failed_teacher_gives_no_verdict_and_a_failed_student_disagrees(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shadow.db"
    with Shadow(get_model("scripted:fail"), db, 1.0) as shadow:
        for c in _completions("scripted:echo", ["one"]):
            shadow.offer(c, {"case": "teacher-failed"})
        assert shadow.flush(10)
        assert shadow.stats()["teacher_errors"] == 1
    shadow = Shadow(get_model("scripted:echo"), db, sample=1.0)
    app = create_app(get_model("scripted:fail"), "student", observer=shadow)
    with AppServer(app) as server:
        got = httpx2.post(
            f"{server.base_url}/chat/completions",
            json={"messages": [{"role": "user", "content": "two"}], "metadata": {"case": "x"}},
        )
        assert got.status_code == 500
        assert shadow.flush(10)
    with Store(db) as store:
        failed_teacher, failed_student = read_shadow(store)
        stored_teacher = store.list(metadata={"shadow_role": "teacher"}, errors=True)
    assert failed_teacher.agree is None and len(stored_teacher) == 1
    assert failed_student.agree is False and failed_student.student_error


def test_answers_agree_once_normalised() -> None:
    (student,) = _completions("scripted:const=The answer is 42.", ["q"])
    (same,) = _completions("scripted:const=the  answer is 42", ["q"])
    (other,) = _completions("scripted:const=the answer is 43", ["q"])
    assert judge_pair(student, same, None).agree is True
    assert judge_pair(student, other, None).agree is False


def test_a_sample_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ShadowError, match="between 0 and 1"):
        Shadow(get_model("scripted:echo"), tmp_path / "s.db", sample=1.5)


def test_workers_finishing_together_write_through_one_connection_and_lose_no_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import still.shadow

    opened: list[Store] = []

    class SlowToOpen(Store):  # widens the window in which both workers find no store yet
        def __init__(self, *args: object, **kwargs: object) -> None:
            time.sleep(0.2)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            opened.append(self)

    monkeypatch.setattr(still.shadow, "Store", SlowToOpen)
    db = tmp_path / "shadow.db"
    with Shadow(get_model("scripted:const=about"), db, 1.0, None, workers=2) as shadow:
        for c in _completions("scripted:echo", [f"question {i}" for i in range(6)]):
            shadow.offer(c, {})
        assert shadow.flush(10)
        assert shadow.counts.errors == 0 and shadow.counts.shadowed == 6
    assert len(opened) == 1  # two lazily opened connections raced for the write lock
    with Store(db) as store:
        assert len(read_shadow(store)) == 6
