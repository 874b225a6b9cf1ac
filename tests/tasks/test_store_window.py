"""`data.store.since` / `until`: a `store:` source read by date, and held-out traffic that
stays held out whatever window a run reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from still.store import Store, read_traffic
from still.tasks import DataError, TaskError, load_examples, load_task, split_examples
from test_helpers.traffic import LABELS, traffic_rows, write_request_log

DAY = 86_400
FEB_1 = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())


def _store(path: Path, rows: list[dict[str, Any]]) -> Path:
    log = write_request_log(path.with_suffix(".jsonl"), rows)
    with Store(path) as s:
        s.put_new(read_traffic(log).completions)
    return path


def _dated(start: int, app: str = "support-triage") -> list[dict[str, Any]]:
    """The 24 tickets, one a day from `start` (ticket n on day n)."""
    rows = traffic_rows(app=app)
    for n, row in enumerate(rows):
        row["response"]["created"] = start + n * DAY + 3600  # 01:00 UTC
    return rows


def _task(tmp_path: Path, store: dict[str, Any], **overrides: object) -> Path:
    task: dict[str, object] = {
        "name": "triage",
        "data": {"source": "store:prod.db", "store": store},
        "answer": "recorded",
        "labels": LABELS,
        "models": {"teacher": "openai:gpt-4o-mini", "student": "scripted:first-label"},
        **overrides,
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task, sort_keys=False))
    return path


def _days(examples: list[Any], report: Any) -> list[int]:
    return sorted((int(report.recorded[e.id].created_at) - FEB_1) // DAY for e in examples)


def test_since_and_until_read_the_traffic_of_those_days(tmp_path: Path) -> None:
    _store(tmp_path / "prod.db", _dated(FEB_1))
    # until a date includes that day; since is inclusive; dates without an offset are UTC
    examples, report = load_examples(
        load_task(_task(tmp_path, {"since": "2026-02-03", "until": "2026-02-05"}))
    )
    assert _days(examples, report) == [2, 3, 4]
    # a time with an offset: 2026-02-10T01:30+01:00 is 00:30 UTC, before day 9's 01:00
    text = "data:\n  source: store:prod.db\n  store:\n    since: 2026-02-08T00:00:00Z\n" \
        "    until: 2026-02-10T01:30:00+01:00\n"  # fmt: skip
    path = _task(tmp_path, {})
    raw = yaml.safe_load(path.read_text())
    raw.pop("data")
    path.write_text(text + yaml.safe_dump(raw, sort_keys=False))
    examples, report = load_examples(load_task(path))
    assert _days(examples, report) == [7, 8]
    # since alone, with the other filters
    examples, report = load_examples(load_task(_task(
        tmp_path, {"since": "2026-02-20", "metadata": {"app": "support-triage"},
                   "model": "openai:gpt-4o-mini"})))  # fmt: skip
    assert _days(examples, report) == [19, 20, 21, 22, 23]


def test_a_window_with_no_traffic_says_when_the_traffic_is(tmp_path: Path) -> None:
    _store(tmp_path / "prod.db", _dated(FEB_1))
    with pytest.raises(DataError) as err:
        load_examples(load_task(_task(tmp_path, {"since": "2026-03-01"})))
    message = str(err.value)
    assert "(since 2026-03-01)" in message
    assert "made from 2026-02-01 01:00 to 2026-02-24 01:00 UTC" in message
    assert message.endswith("fix data.store's model, metadata or dates")


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"since": "last week"}, r"'last week' is not an ISO date or time; write e.g. 2026-01-01"),
        ({"since": "2026-02-05", "until": "2026-02-01"}, r"since \(2026-02-05\) must come before"),
    ],
)
def test_a_bad_date_is_refused_with_the_field(
    tmp_path: Path, store: dict[str, Any], message: str
) -> None:
    with pytest.raises(TaskError, match=message):
        load_task(_task(tmp_path, store))


def test_held_out_traffic_stays_held_out_whatever_window_a_run_reads(tmp_path: Path) -> None:
    """A student trained on one window is tested on another: a conversation recorded in
    both (the same messages asked again later) is on the same side of the split in each,
    so no held-out conversation of the later run was trained on by the earlier one."""
    early = _dated(FEB_1)
    again = _dated(FEB_1 + 40 * DAY, app="support-triage")  # the same 24 tickets, in March
    for row in again:
        row["response"]["id"] = row["response"]["id"] + "-again"
    _store(tmp_path / "prod.db", early[:16] + again[8:])
    split = {"seed": 3, "heldout": 0.25, "validation": 0}
    feb = load_task(_task(tmp_path, {"until": "2026-02-28"}, split=split))
    mar = load_task(_task(tmp_path, {"since": "2026-03-01"}, split=split))
    feb_ex, _ = load_examples(feb)
    mar_ex, _ = load_examples(mar)
    assert len(feb_ex) == len(mar_ex) == 16
    shared = {e.id for e in feb_ex} & {e.id for e in mar_ex}
    assert len(shared) == 8  # tickets 8-15 were recorded in both months
    a, b = split_examples(feb_ex, feb.split), split_examples(mar_ex, mar.split)
    trained_in_feb = {e.id for e in a.train}
    assert not trained_in_feb & {e.id for e in b.heldout}
    held = {e.id for e in a.heldout} & shared
    assert held and held == {e.id for e in b.heldout} & shared
