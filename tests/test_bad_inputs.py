"""Bad input, named: every broken file in tests/bad_inputs/ fails as one line.

Each case runs the real CLI on one broken task file, data file, import file, grader file,
gold file or training setup (a student folder that is no causal LM; a sharding, method or
batch the machine cannot run: `still train` after export, refused before any model loads),
against a run whose store already holds completions and grades, and asserts:
exit status 1; one `Error:` line, the last, with no traceback; that line names the file
(and its line or field) and says what to do (the case's expected substrings); the store's
completions and grades are counted the same before and after, and the run folder's task
snapshot and split are untouched. The 10 MB value is written by the test, not committed.

A case whose message loses its file, line or advice, or which starts to crash or to write
to the store, fails here by name.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from still.cli import main
from still.store import Store

INPUTS = Path(__file__).parent / "bad_inputs"
GOOD = INPUTS / "good" / "task.yaml"
BIG = "<10 MB value>"
"""The case whose data file the test writes: a CSV with one 10 MB value."""


@dataclass(frozen=True)
class Case:
    """One broken file and what its error line must say.

    Attributes:
        kind: which command reads it: task (capture), data (capture of the good task with
            this data file), import (store import), grader (check-grader --grader-file),
            gold (check-grader --gold), train (train, after export, of the good task with a
            local student: this model folder's, else the tiny model with this file's
            `train:` settings).
        file: the file, under tests/bad_inputs/ (or BIG).
        expect: substrings of the error line: where (line or field) and what to do.
        names: the file name the line must name (default: `file`'s own name).
        data: extra `data:` settings for a data case (format, pattern).
    """

    kind: str
    file: str
    expect: tuple[str, ...]
    names: str | None = None
    data: dict[str, str] = field(default_factory=dict)


def _task(name: str, *expect: str, names: str | None = None) -> Case:
    return Case("task", f"tasks/{name}.yaml", expect, names)


def _data(name: str, *expect: str, **data: str) -> Case:
    return Case("data", f"data/{name}", expect, data=data)


def _import(name: str, *expect: str) -> Case:
    return Case("import", f"imports/{name}", expect)


def _grader(name: str, *expect: str) -> Case:
    return Case("grader", f"graders/{name}", expect)


def _train(name: str, *expect: str, names: str | None = None) -> Case:
    return Case("train", name, expect, names)


CASES: dict[str, Case] = {
    # --- task files: `still capture TASK` ----------------------------------------------
    "task: malformed YAML": _task("malformed_yaml", "invalid YAML (line 6", "fix the syntax"),
    "task: not a mapping": _task("not_a_mapping", "must be a mapping of fields (name, data"),
    "task: unknown key": _task(
        "unknown_key", "prompts.teacher.few_shot (line 7)", "did you mean `fewshot`?"
    ),
    "task: misspelt required key": _task(
        "misspelt_required_key",
        "data.source (line 2): required, add `source:`",
        "data.sourc (line 3): unknown field, did you mean `source`?",
    ),
    "task: wrong type": _task(
        "wrong_type", "split.heldout (line 6)", "valid integer", "(got 'many')"
    ),
    "task: missing required field": _task(
        "missing_required_field", "answer (line 1): required, add `answer:`"
    ),
    "task: duplicate key": _task(
        "duplicate_key", ":6: duplicate key 'answer' (first on line 4)", "keep one"
    ),
    "task: held-out size 0": _task(
        "split_heldout_zero", "split.heldout (line 6)", "a whole count >= 1", "(got 0)"
    ),
    "task: negative validation size": _task(
        "split_validation_negative", "split.validation (line 6)", "a whole count >= 0"
    ),
    "task: held-out larger than the data": _task(
        "split_too_large", "split.heldout=100", "leave no training examples", "lower them"
    ),
    "task: unknown model reference": _task(
        "unknown_model_scheme", "models.teacher", "'gpt4:latest'", "`still models` lists"
    ),
    "task: template syntax error": _task(
        "template_syntax_error",
        ":8: prompts.teacher.template: syntax error (line 1)",
        "fix the template",
    ),
    "task: template names a missing field": _task(
        "template_missing_field",
        "prompts.student.template",
        "'question' is undefined",
        "available fields: text",
    ),
    "task: template shows the answer": _task(
        "template_shows_answer", "prompts.teacher.template", "'label' is undefined"
    ),
    "task: template outside the sandbox": _task(
        "template_sandbox", "prompts.teacher.template", "sandbox", "not Python internals"
    ),
    "task: name with a slash": _task(
        "name_with_slash", "name (line 1)", "use letters, digits", "no '/'"
    ),
    "task: package path escaping its folder": _task(
        "package_path_escape",
        "leaves the package folder",
        "name a file inside it",
        names="data.source 'package:still/../../../../etc/passwd'",
    ),
    "task: package not installed": _task(
        "package_not_installed",
        "pip install --no-deps no_such_data_package_xyz",
        names="data.source 'package:no_such_data_package_xyz/train.csv'",
    ),
    "task: data file missing": _task(
        "missing_data_file", "no file at", "fix the path", names="no-such-file.jsonl"
    ),
    "task: score mode without labels": _task(
        "score_without_labels", "generation.mode 'score' needs a `labels` list"
    ),
    "task: options and labels disagree": _task(
        "multiple_choice_mismatch", "multiple_choice: 4 option fields need as many `labels`"
    ),
    "task: a role without a prompt": _task(
        "missing_student_prompt", "prompts: missing role(s) ['student']"
    ),
    "task: answer is not a column": _task(
        "answer_not_a_column",
        ":1: answer field 'category' not found",
        "set `answer:`",
        names="data.jsonl",
    ),
    "task: label_map outside the labels": _task(
        "label_map_outside_labels",
        "no usable examples",
        "30 with labels outside the set",
        "data.label_map",
        names="data.jsonl",
    ),
    "task: unknown grader type": _task(
        "unknown_grader_type", "graders.0.type (line 11)", "unknown type 'exact_match'"
    ),
    "task: grader formula error": _task(
        "bad_formula_grader", "graders.0 (combined)", "at position 7"
    ),
    "task: invalid regular expression": _task(
        "invalid_regex_pattern",
        "invalid regular expression",
        "fix the pattern",
        names="data.pattern",
    ),
    "task: invalid output_schema": _task(
        "invalid_output_schema", "output_schema is not a valid JSON Schema"
    ),
    "task: reader file missing": _task(
        "reader_missing_file", "no_such_reader.py", "fix the path", names="data.reader"
    ),
    "task: bytes that are not UTF-8": _task(
        "not_utf8", ":2: not UTF-8 text (byte 0xe9)", "save the file as UTF-8"
    ),
    # --- data files: `still capture` of the good task reading this file -----------------
    "data: CSV without the answer column": _data(
        "missing_answer_column.csv", ":2: answer field 'label' not found", "set `answer:`"
    ),
    "data: empty file": _data("empty.jsonl", "no usable examples (0 rows", "add examples"),
    "data: header only": _data("header_only.csv", "no usable examples (0 rows", "add examples"),
    "data: blank lines only": _data(
        "blank_lines_only.jsonl", "no usable examples (0 rows", "add examples"
    ),
    "data: JSONL line not JSON": _data("line_not_json.jsonl", ":3: invalid JSON"),
    "data: JSONL line not an object": _data(
        "line_not_object.jsonl", ":2: expected a JSON object, got a list"
    ),
    "data: bytes that are not UTF-8": _data(
        "not_utf8.csv", ":3: not UTF-8 text", "save the file as UTF-8"
    ),
    "data: duplicate column": _data(
        "duplicate_column.csv", ":1: duplicate column name(s)", "rename all but one"
    ),
    "data: every row a duplicate": _data(
        "duplicate_rows.jsonl", "19 duplicates dropped", "leave no training examples", "add data"
    ),
    "data: references outside the labels": _data(
        "answers_outside_labels.jsonl", "15 with labels outside the set", "data.label_map"
    ),
    "data: every answer empty": _data(
        "empty_answers.jsonl", "10 without an answer", "check that `answer:`"
    ),
    "data: reserved column name": _data(
        "reserved_column.jsonl", ":1: field name(s) fewshot are reserved", "data.fields"
    ),
    "data: line the pattern does not match": _data(
        "lines_no_match.txt",
        ":3: line does not match data.pattern",
        "fix the line or the pattern",
        format="lines",
        pattern=r"(?P<label>\w+) (?P<text>.+)",
    ),
    "data: parquet that is not parquet": _data("not_parquet.parquet", "cannot read as Parquet"),
    "data: unclosed quote": _data(
        "unclosed_quote.csv", ":2: malformed CSV record", "check the quotes"
    ),
    "data: extra column": _data(
        "extra_column.csv", ":3: 3 columns, the header has 2", "quote a value"
    ),
    "data: JSON that is not a list": _data(
        "json_not_a_list.json", "expected a JSON list of objects, got an object"
    ),
    "data: truncated JSON": _data("json_truncated.json", ":3: invalid JSON"),
    "data: gzip that is not gzip": _data("not_gzip.jsonl.gz", "not a readable gzip file"),
    "data: unknown extension": _data("unknown_extension.xlsx", "set data.format to one of"),
    "data: a 10 MB value": Case(
        "data", BIG, (":2: column 'text'", "10.0 million characters", "shorten"), "big.csv"
    ),
    # --- import files: `still store import` -------------------------------------------------
    "import: truncated listing": _import(
        "truncated_listing.json", ":28: not JSON", "save or download it again"
    ),
    "import: listing without data": _import(
        "listing_without_data.json", "without 'data'", "{'object': 'list', 'data': [...]}"
    ),
    "import: listing data not a list": _import(
        "listing_not_a_list.json", "expected a list or {'data': [...]} listing"
    ),
    "import: listing without messages": _import(
        "listing_without_messages.json", "item 0", "no input messages", "--messages"
    ),
    "import: id with path traversal": _import(
        "id_path_traversal.json", "item 0", "is not a plain file name"
    ),
    "import: one id, two completions": _import(
        "duplicate_ids.json", "item 1: id 'chatcmpl-a1'", "give each completion its own id"
    ),
    "import: chat line not JSON": _import("chat_line_not_json.jsonl", ":3: not JSON", "--skip-bad"),
    "import: chat line not an object": _import(
        "chat_line_is_a_list.jsonl", ":2: expected an object, got list"
    ),
    "import: chat without an answer": _import(
        "chat_no_assistant_answer.jsonl", ":2: the last message must be the assistant's"
    ),
    "import: chat tool message": _import(
        "chat_tool_message.jsonl", ":2: message 1 has role 'tool'", "still imports system"
    ),
    "import: chat image content": _import(
        "chat_image_content.jsonl", ":1: content part of type 'image_url' is not text"
    ),
    "import: metadata not an object": _import(
        "chat_metadata_not_object.jsonl", ":1: metadata must be an object of strings"
    ),
    "import: bytes that are not UTF-8": _import(
        "chat_not_utf8.jsonl", ":1: not UTF-8 text", "export the log as UTF-8"
    ),
    "import: request log without response": _import(
        "request_log_without_response.jsonl", ":2:", "without its 'response'", "--skip-bad"
    ),
    "import: response without choices": _import(
        "request_log_no_choices.jsonl", ":1: the response has no choices"
    ),
    "import: usage not a number": _import(
        "request_log_bad_usage.jsonl", ":1: usage.prompt_tokens must be a whole number"
    ),
    # --- grader files: `still check-grader --grader-file` ----------------------------------
    "grader: unknown type": _grader(
        "unknown_type.json", "type (line 1): unknown type 'exact_match'", "use one of"
    ),
    "grader: formula syntax": _grader("bad_formula.json", "grader 'combined'", "position 13"),
    "grader: formula names no grader": _grader(
        "formula_unknown_grader.json", "calculate_output uses fuzzy", "(they are: exact)"
    ),
    "grader: unknown operation": _grader(
        "unknown_operation.yaml", "operation (line 3)", "'eq', 'ne', 'like' or 'ilike'"
    ),
    "grader: not YAML": _grader("not_yaml.yaml", "invalid YAML (line 3", "fix the syntax"),
    "grader: missing field": _grader(
        "missing_field.json", "pass_threshold (line 1): required, add `pass_threshold:`"
    ),
    "grader: template left open": _grader(
        "grader_template_error.json", "input (line 1)", "a '{{' without its '}}'", "write"
    ),
    "grader: unknown metric": _grader(
        "unknown_metric.json", "grader 'close'", "use one of fuzzy_match"
    ),
    # --- training: `still train` of the good task with a local student, after export ----
    "train: student not a causal LM": _train(
        "models/not_a_causal_lm/config.json",
        "model type 't5' is not a causal language model",
        "expected a Hugging Face causal language model folder",
        names="not_a_causal_lm",
    ),
    "train: fsdp on one process": _train(
        "train/fsdp_one_process.yaml", "train.sharding: fsdp", "sharding: ddp", names="fsdp"
    ),
    "train: zero3 on one process": _train(
        "train/zero3_one_process.yaml", "train.sharding: zero3", "use", names="zero3"
    ),
    "train: a batch that does not fit": _train(
        "train/batch_does_not_fit.yaml",
        # reckoned at the data's own rows (the longest), not max_length's ten million
        "1000000 rows x",
        "(the longest row)",
        "set train.micro_batch_size:",
        names="needs about",
    ),
    "train: qlora without a GPU": _train(
        "train/qlora_on_cpu.yaml", "train.method: qlora", "use method: lora", names="qlora"
    ),
    # --- gold files: `still check-grader --gold` -----------------------------------------
    "gold: passed not a boolean": Case(
        "gold", "gold/passed_not_boolean.jsonl", (":2: not a gold row", '"passed": true or false')
    ),
}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the good task whose store holds the teacher's train answers and grades."""
    root = tmp_path_factory.mktemp("seeded")
    run = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STILL_RUNS", str(root))
        mp.setenv("STILL_HOME", str(root / "home"))
        for stage in ("capture", "grade"):
            res = CliRunner().invoke(main, [stage, str(GOOD), "--run-dir", str(run)])
            assert res.exit_code == 0, res.output
    return run


def _state(run: Path) -> tuple[int, int, dict[str, str]]:
    """Completions and grades in the run's store, and a digest of its other files."""
    with Store(run / "still.db") as s:
        rows, grades = s.count(), len(s.grades())
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.iterdir())
        if p.is_file() and not p.name.startswith("still.db")
    }
    return rows, grades, files


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _train_task(case: Case, tmp: Path, tiny_model: Path) -> Path:
    """The good task with a local student: the case's model folder, or the tiny model
    with the case's `train:` settings."""
    path = INPUTS / case.file
    task = yaml.safe_load(GOOD.read_text())
    task["data"]["source"] = str(GOOD.parent / task["data"]["source"])
    if path.name == "config.json":
        task["models"]["student"] = f"local:{path.parent}"
    else:
        task["models"]["student"] = f"local:{tiny_model}"
        task["train"] = yaml.safe_load(path.read_text())["train"]
    bad = tmp / "train-task.yaml"
    bad.write_text(yaml.safe_dump(task))
    return bad


def _command(case: Case, run: Path, tmp: Path) -> list[str]:
    path = INPUTS / case.file
    if case.kind == "train":
        return ["train", str(tmp / "train-task.yaml"), "--run-dir", str(run)]
    if case.kind == "task":
        return ["capture", str(path), "--run-dir", str(run)]
    if case.kind == "data":
        if case.file == BIG:
            path = tmp / "big.csv"  # 30 good rows after the big one: enough for a run
            good = [f"question {i},{('human', 'location', 'number')[i % 3]}" for i in range(30)]
            path.write_text("\n".join(["text,label", "x" * 10_000_000 + ",human", *good]) + "\n")
        task = yaml.safe_load(GOOD.read_text())
        task["data"] = {"source": str(path), **case.data}
        bad = tmp / "task.yaml"
        bad.write_text(yaml.safe_dump(task))
        return ["capture", str(bad), "--run-dir", str(run)]
    if case.kind == "import":
        messages = tmp / "messages"
        messages.mkdir(exist_ok=True)
        return [
            "store",
            "import",
            "--db",
            str(run / "still.db"),
            str(path),
            "--messages",
            str(messages),
        ]
    if case.kind == "grader":
        return ["check-grader", str(GOOD), "--run-dir", str(run), "--grader-file", str(path)]
    assert case.kind == "gold"
    return [
        "check-grader",
        str(GOOD),
        "--run-dir",
        str(run),
        "--grader",
        "correct",
        "--gold",
        str(path),
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_naming_it_and_the_store_is_unchanged(
    name: str, seeded: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    case = CASES[name]
    if case.file == "train/qlora_on_cpu.yaml" and _has_gpu():
        pytest.skip("QLoRA runs on this machine's GPU")
    run = tmp_path / "run"
    shutil.copytree(seeded, run)
    if case.kind == "train":  # the training data first: training is what must refuse
        task = _train_task(case, tmp_path, request.getfixturevalue("tiny_model"))
        res = CliRunner().invoke(main, ["export", str(task), "--run-dir", str(run)])
        assert res.exit_code == 0, res.output
    before = _state(run)
    assert before[0] > 0 and before[1] > 0  # the store holds something to lose

    res = CliRunner().invoke(main, _command(case, run, tmp_path))

    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.output
    error = errors[0]
    assert (case.names or Path(case.file).name) in error, error
    for part in case.expect:
        assert part in error, f"{part!r} not in {error!r}"
    assert _state(run) == before, "the store or the run folder changed"


def test_there_are_at_least_30_classes_and_every_file_is_a_case() -> None:
    assert len(CASES) >= 30
    files = {
        str(p.relative_to(INPUTS))
        for p in INPUTS.rglob("*")
        if p.is_file() and p.parent.name != "good"
    }
    assert files == {c.file for c in CASES.values() if c.file != BIG}
