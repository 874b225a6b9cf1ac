"""Multiple-choice tasks: rotated options through the store, position bias in the report,
and the `data.reader` hook that reads the MMLU example's file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from still.bench import rotate_example
from still.pipeline import bench_stage, open_run, report_stage
from still.tasks import DataError, Example, TaskError, load_examples, load_task

LETTERS = ["A", "B", "C", "D"]
# A teacher that reads the options: it names the letter of the option saying "correct",
# wherever the rotation put it (scripted:echo answers with the rendered prompt).
READER = (
    "".join(
        f"{'{%' if i == 0 else '{% el'}if 'correct' in {x} %}}{x}" for i, x in enumerate(LETTERS)
    )
    + "{% endif %}"
)


def _mc_task(tmp: Path, n: int = 16, **overrides: object) -> Path:
    with (tmp / "mc.jsonl").open("w") as f:
        for i in range(n):
            gold = i % 4
            opts = {x: f"option {j} of {i}" + (" correct" if j == gold else "")
                    for j, x in enumerate(LETTERS)}  # fmt: skip
            f.write(json.dumps({"question": f"question {i}?", **opts,
                                "answer": LETTERS[gold]}) + "\n")  # fmt: skip
    task: dict[str, object] = {
        "name": "mc",
        "data": {"source": "mc.jsonl"},
        "answer": "answer",
        "labels": LETTERS,
        "multiple_choice": {"options": LETTERS, "questions": 6},
        "split": {"seed": 0, "heldout": 8},
        "prompts": {
            "teacher": {"system": "{{ question }}", "template": READER},
            "student": {"template": "{{ question }} A) {{ A }} B) {{ B }} C) {{ C }} D) {{ D }}"},
        },
        "models": {"teacher": "scripted:echo", "student": "scripted:first-label"},
        "generation": {"batch_size": 4},
    }
    task.update(overrides)
    path = tmp / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def test_rotations_move_the_correct_option_to_every_letter() -> None:
    ex = Example(id="q", fields={"question": "?", "A": "a", "B": "b", "C": "c!", "D": "d"},
                 answer="C", source="t:1")  # fmt: skip
    rotated = rotate_example(ex, LETTERS, LETTERS)
    assert [r.id for r, _ in rotated] == ["q", "q@r1", "q@r2", "q@r3"]
    assert rotated[0][0] == ex
    for r, pos in rotated:
        assert r.fields[LETTERS[pos]] == "c!" and r.answer == LETTERS[pos]
    assert sorted(pos for _, pos in rotated) == [0, 1, 2, 3]


def test_bench_reports_position_bias_and_report_rebuilds_it_without_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))
    run = open_run(_mc_task(tmp_path), tmp_path / "run")
    bench_stage(run, roles=("teacher", "student"), show=False)
    # 8 held-out answers a role, then 3 more rotations of the first 6 (rotation 0 is stored)
    assert len(calls.read_text().splitlines()) == 2 * (8 + 3 * 6)
    report = json.loads((run.dir / "report.json").read_text())
    bias = {b["role"]: b for b in report["position_bias"]}
    teacher, student = bias["teacher"], bias["student"]
    assert teacher["n_questions"] == 6 and teacher["k"] == 4
    assert teacher["accuracy"] == 1.0 and teacher["consistency"] == 1.0
    assert teacher["predicted_share"] == {x: 0.25 for x in LETTERS}
    assert student["predicted_share"] == {"A": 1.0, "B": 0.0, "C": 0.0, "D": 0.0}
    assert student["accuracy_by_position"] == {"A": 1.0, "B": 0.0, "C": 0.0, "D": 0.0}
    assert student["accuracy"] == 0.25 and student["consistency"] == 0.0
    assert student["chi2_p"] < 1e-6
    md = (run.dir / "report.md").read_text()
    assert "### Position bias" in md and "100.0% / 0.0% / 0.0% / 0.0%" in md
    html = (run.dir / "report.html").read_text()
    assert 'data-plot="position-bias"' in html and 'data-section="position-bias"' in html

    n = len(calls.read_text().splitlines())
    report_stage(run, roles=("teacher", "student"), show=False)
    assert len(calls.read_text().splitlines()) == n
    again = json.loads((run.dir / "report.json").read_text())["position_bias"]
    assert again == report["position_bias"]


def test_multiple_choice_needs_a_label_per_option(tmp_path: Path) -> None:
    path = _mc_task(tmp_path, labels=["A", "B", "C"])
    with pytest.raises(TaskError, match="3 `labels`|4 option fields need as many"):
        load_task(path)


def test_a_reader_function_reads_what_no_format_knows(tmp_path: Path) -> None:
    (tmp_path / "odd.txt").write_text("q1?|A\nq2?|B\n")
    (tmp_path / "read.py").write_text(
        "def rows(path):\n"
        "    for line in open(path):\n"
        "        q, a = line.strip().split('|')\n"
        "        yield {'question': q, 'answer': a}\n"
        "def broken(path):\n"
        "    return [{'question': 'x', 'answer': 'A'}, 'not a dict']\n"
    )
    path = _mc_task(tmp_path, data={"source": "odd.txt", "reader": "read.py:rows"},
                    multiple_choice=None)  # fmt: skip
    examples, _ = load_examples(load_task(path))
    assert sorted((e.fields["question"], e.answer) for e in examples) == [
        ("q1?", "A"),
        ("q2?", "B"),
    ]
    assert examples[0].source.startswith(str(tmp_path / "odd.txt"))

    bad = _mc_task(tmp_path, data={"source": "odd.txt", "reader": "read.py:broken"},
                   multiple_choice=None)  # fmt: skip
    with pytest.raises(DataError, match=r"odd.txt \(row 2 of data.reader 'read.py:broken'\)"):
        load_examples(load_task(bad))
    missing = _mc_task(tmp_path, data={"source": "odd.txt", "reader": "read.py:nope"},
                       multiple_choice=None)  # fmt: skip
    with pytest.raises(DataError, match="has no function 'nope'"):
        load_examples(load_task(missing))


def test_the_mmlu_example_reads_the_lm_eval_file() -> None:
    pytest.importorskip("lm_eval", reason="pip install --no-deps lm_eval==0.4.13")
    task = load_task(Path(__file__).parents[2] / "examples/mmlu/task.yaml")
    examples, report = load_examples(task)
    assert len(examples) == 272 and report.rows == 273  # one duplicate question
    assert all(e.answer in "ABCD" and all(e.fields[x] for x in "ABCD") for e in examples)
