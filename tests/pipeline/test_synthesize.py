"""Teacher-written inputs (`still synthesize`): balanced across labels, deduplicated
(exact and near), refused near validation and test inputs, resumable through the store,
and added to the train split alone when `synthesize.use` says so."""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from still.cli import main
from still.models import register_provider
from still.pipeline import (
    capture_role,
    estimate_synthesis,
    export_stage,
    open_run,
    synthesize_stage,
)
from still.pipeline._synthesize import (
    NearIndex,
    distinct_ngrams,
    is_synthetic,
    jaccard,
    ngrams,
    synthesis_report,
    synthesize_for_run,
)
from still.report import markdown_sections
from still.types import Completion, Request
from test_helpers import LABELS, write_task

SPLIT = {"seed": 1, "heldout": 8, "validation": 6}

CALLS: list[Request] = []
"""Every request the test writer answered, in order."""

SCRIPT: list[Callable[[Request], str]] = []
"""The writer's answer function (the last one set); default: `_fresh`."""


def _label(req: Request) -> str:
    m = re.search(r'whose answer is "([^"]+)"', req.messages[-1].content)
    return m.group(1) if m else "free"


def _fresh(req: Request) -> str:
    """A new input unlike any other: random letters, seeded by the request, naming its
    label (so `scripted:echo`, the teacher, answers it with that label)."""
    rng = random.Random(req.key())
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(6))
    return f"{words} about {_label(req)}"


class _Writer:
    name = "synthtest:writer"

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        out = []
        for req in requests:
            CALLS.append(req)
            text = (SCRIPT[-1] if SCRIPT else _fresh)(req)
            out.append(Completion(request=req, request_hash=req.key(), text=text))
        return out


register_provider("synthtest", "test writer of new inputs")(lambda ref: _Writer())


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    SCRIPT.clear()
    yield
    SCRIPT.clear()


def _task(tmp_path: Path, **synth: Any) -> Path:
    spec = {"model": "synthtest:writer", "examples_per_prompt": 3, **synth}
    return write_task(tmp_path, student="scripted:echo", n=60, split=SPLIT, synthesize=spec)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _queue(texts: dict[str, list[str]]) -> Callable[[Request], str]:
    """Answers each label's requests with its texts in turn, then with fresh ones."""
    left = {k: list(v) for k, v in texts.items()}

    def answer(req: Request) -> str:
        queue = left.get(_label(req))
        return queue.pop(0) if queue else _fresh(req)

    return answer


def test_label_tasks_are_balanced_and_each_request_shows_its_label(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path), tmp_path / "run")
    stats = synthesize_stage(run, n=12)

    rows = _jsonl(run.dir / "synthetic.jsonl")
    assert len(rows) == stats.kept == 12 and stats.called == 12
    assert Counter(r["asked_label"] for r in rows) == {lab: 4 for lab in LABELS}
    assert all(r["synthetic"] is True and set(r) >= {"text", "asked_label"} for r in rows)
    saved = json.loads((run.dir / "synth.json").read_text())
    assert saved["kept_per_label"] == {lab: 4 for lab in LABELS}
    assert saved["diversity"]["distinct_1"] > 0 and saved["requested"] == 12
    for req in CALLS:  # every example shown is a training input of the label asked for
        label = _label(req)
        shown = re.findall(r"Example \d+:\n(.*)", req.messages[-1].content)
        assert len(shown) == 3 and all(s.endswith(f"about {label}") for s in shown)
        train = {e.fields["text"] for e in run.split.train + run.split.fewshot}
        assert set(shown) <= train
    # stored like every completion, tagged role=synth and the label asked for
    stored = run.store.lookup(CALLS[0].key())
    assert stored is not None and stored.metadata["role"] == "synth"
    assert stored.metadata["label"] == _label(CALLS[0])


def test_a_rerun_sends_no_request_and_requests_depend_on_the_seed_alone(tmp_path: Path) -> None:
    task = _task(tmp_path)
    first = synthesize_stage(open_run(task, tmp_path / "run"), n=9)
    keys = {r.key() for r in CALLS}
    assert first.called == 9 and len(keys) == 9

    CALLS.clear()
    again = synthesize_stage(open_run(task, tmp_path / "run"), n=9)
    assert CALLS == [] and again.from_store == 9 and again.kept == 9
    # a second run folder (its own store) asks the very same requests
    synthesize_stage(open_run(task, tmp_path / "other"), n=9)
    assert {r.key() for r in CALLS} == keys
    # another seed, other requests
    CALLS.clear()
    synthesize_stage(open_run(task, tmp_path / "third"), n=9, seed=7)
    assert not {r.key() for r in CALLS} & keys


def test_exact_and_near_duplicates_are_dropped_and_replaced(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path, max_requests=3), tmp_path / "run")
    train_text = next(e.fields["text"] for e in run.split.train if e.answer == "human")
    SCRIPT.append(
        _queue(
            {
                "human": [
                    "A wholly new question on human matters",
                    "a WHOLLY new   question on human matters",  # exact, once normalised
                    "A wholly new question on human matters!",  # near the first
                    train_text + "?",  # near a training input
                    "",  # unparseable
                ]
            }
        )
    )
    stats = synthesize_stage(run, n=6)

    assert (stats.duplicates, stats.near_duplicates, stats.leaked) == (1, 2, 0)
    assert stats.returned - stats.parsed == 1
    assert stats.kept == 6 and stats.kept_per_label["human"] == 2
    assert stats.requested_per_label["human"] == 6  # 4 dropped, replaced by more requests
    texts = [r["text"] for r in _jsonl(run.dir / "synthetic.jsonl")]
    assert "A wholly new question on human matters" in texts
    assert not any(t.lower().startswith("a wholly new") and t.endswith("!") for t in texts)
    assert train_text + "?" not in texts
    reasons = Counter(d["reason"] for d in _jsonl(run.dir / "synth-dropped.jsonl"))
    assert reasons == {"duplicate": 1, "near duplicate": 2, "unparseable": 1}


def test_the_similarity_threshold_is_the_tasks(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path, similarity=1.0), tmp_path / "run")
    SCRIPT.append(_queue({"human": ["A wholly new question", "A wholly new question!"]}))
    stats = synthesize_stage(run, n=3)
    assert stats.near_duplicates == 0 and stats.kept == 3  # only identical grams drop


def test_inputs_close_to_validation_or_test_inputs_are_refused(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path), tmp_path / "run")
    val = run.split.validation[0]
    test = run.split.heldout[0]
    texts: dict[str, list[str]] = {}
    texts.setdefault(val.answer, []).append(val.fields["text"].upper())  # another case
    texts.setdefault(test.answer, []).append(test.fields["text"] + " ?")  # near, not equal
    SCRIPT.append(_queue(texts))
    stats = synthesize_stage(run, n=6)

    assert stats.leaked == 2 and stats.kept == 6
    kept = {r["text"].lower().strip(" ?") for r in _jsonl(run.dir / "synthetic.jsonl")}
    assert val.fields["text"].lower() not in kept and test.fields["text"] not in kept
    dropped = [d for d in _jsonl(run.dir / "synth-dropped.jsonl") if d["reason"] == "leaked"]
    assert {d["near"] for d in dropped} == {val.source, test.source}


def test_used_synthetic_inputs_join_train_alone_and_have_no_gold(tmp_path: Path) -> None:
    task = _task(tmp_path, use=True)
    run = open_run(task, tmp_path / "run")
    real = len(run.split.train)
    synthesize_stage(run, n=6)
    assert len(run.split.train) == real + 6  # the stage's own run sees them at once
    # a row that reads like a validation input is never added, whatever the file says
    val = run.split.validation[0]
    with (run.dir / "synthetic.jsonl").open("a") as f:
        f.write(json.dumps({"text": val.fields["text"], "synthetic": True}) + "\n")

    run = open_run(task, tmp_path / "run")
    synth = [e for e in run.split.train if e.source.startswith("synthetic.jsonl:")]
    assert len(synth) == 6 and len(run.split.train) == real + 6
    assert all(e.answer == "" for e in synth)  # the label asked for is not gold
    others = run.split.validation + run.split.heldout + run.split.fewshot
    assert not {e.id for e in synth} & {e.id for e in others}
    assert not any(e.source.startswith("synthetic") for e in others)
    # the teacher answers them with the train split; the teacher-only student learns them
    stats = capture_role(run, "teacher", "train")
    assert stats.total == real + 6
    export_stage(run, "parsed")
    prompts = {r["messages"][-2]["content"] for r in _jsonl(run.train_file("parsed"))}
    assert {e.fields["text"] for e in synth} <= prompts


def test_the_report_gives_diversity_at_equal_size_and_the_teachers_labels(
    tmp_path: Path,
) -> None:
    """Diversity of the synthetic inputs beside the real ones at the same count, and per
    label asked for, how the teacher labelled what was kept (the label balance)."""
    run = open_run(_task(tmp_path, use=True), tmp_path / "run")
    assert synthesis_report(run) is None  # nothing synthesized: no section
    real = [e.fields["text"] for e in run.split.train]
    # one input asked for as "human" reads as a location question: the teacher says so
    SCRIPT.append(_queue({"human": ["which river flows past this location"]}))
    synthesize_stage(run, n=len(real) + 3)
    capture_role(run, "teacher", "train")
    syn = synthesis_report(run)
    assert syn is not None and syn["real_inputs"] == len(real)
    texts = [r["text"] for r in _jsonl(run.dir / "synthetic.jsonl")]
    assert syn["diversity_same_size"] == distinct_ngrams(texts[: len(real)])
    assert syn["train_diversity"] == distinct_ngrams(real)
    per = syn["per_label"]
    assert sum(c["kept"] for c in per.values()) == len(texts)
    assert per["human"]["other"] == 1 and per["human"]["none"] == 0
    assert all(c["agrees"] == c["kept"] for lab, c in per.items() if lab != "human")
    assert syn["teacher_labels"]["location"] == per["location"]["kept"] + 1
    text = markdown_sections({"synthesis": syn})
    human = per["human"]
    assert f"| human | {syn['requested_per_label']['human']} | {human['kept']} | " in text
    assert f"the first {len(real)} synthetic inputs distinct-1" in text


def test_still_run_synthesizes_once_when_used(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path, use=True, n=3), tmp_path / "run")
    first = synthesize_for_run(run)
    assert first is not None and first.kept == 3 and len(CALLS) == 3
    assert synthesize_for_run(open_run(_task(tmp_path, use=True, n=3), tmp_path / "run")) is None
    unused = open_run(_task(tmp_path), tmp_path / "run2")
    assert synthesize_for_run(unused) is None and len(CALLS) == 3


def test_a_larger_n_in_the_task_synthesizes_again_asking_only_the_new_inputs(
    tmp_path: Path,
) -> None:
    """Raising `synthesize.n` makes `still run` write the larger set: the first inputs come
    from the store (not asked again), only the new ones are asked; `still synthesize --n`
    output (settings of its own) is kept as it is."""
    synthesize_for_run(open_run(_task(tmp_path, use=True, n=3), tmp_path / "run"))
    assert len(CALLS) == 3
    run = open_run(_task(tmp_path, use=True, n=6), tmp_path / "run")
    more = synthesize_for_run(run)
    assert more is not None and more.kept == 6 and more.from_store == 3
    assert len(CALLS) == 6
    assert len(_jsonl(run.dir / "synthetic.jsonl")) == 6
    assert sum(is_synthetic(e) for e in run.split.train) == 6
    assert synthesize_for_run(open_run(_task(tmp_path, use=True, n=6), tmp_path / "run")) is None

    chosen = open_run(_task(tmp_path, use=True, n=6), tmp_path / "run3")
    synthesize_stage(chosen, n=2)  # the command line's own n
    assert synthesize_for_run(open_run(_task(tmp_path, use=True, n=6), tmp_path / "run3")) is None
    assert len(_jsonl(chosen.dir / "synthetic.jsonl")) == 2


def test_one_line_inputs_stop_at_the_line_end_and_keep_the_first_line(tmp_path: Path) -> None:
    """A base-model writer continues the list of examples: with one-line training inputs
    each request stops at a newline, and a writer ignoring it gives its first line only."""
    SCRIPT.append(lambda req: f"\n{_fresh(req)}\nanother question about human\n3. more")
    run = open_run(_task(tmp_path), tmp_path / "run")
    stats = synthesize_stage(run, n=3)
    assert stats.kept == 3 and all(r.params.stop == ("\n",) for r in CALLS)
    texts = [r["text"] for r in _jsonl(run.dir / "synthetic.jsonl")]
    assert texts == [_fresh(r) for r in CALLS]  # the first line that is not empty
    # inputs of several lines (a letter, a dialogue): no stop, the whole answer is one input
    CALLS.clear()
    SCRIPT.append(lambda req: f"{_fresh(req)}\n{_fresh(req)[::-1]}")
    (tmp_path / "multi").mkdir()
    task = _task(tmp_path / "multi")
    data = tmp_path / "multi" / "data.jsonl"
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    data.write_text("".join(
        json.dumps({**r, "text": r["text"] + "\nsecond line"}) + "\n" for r in rows
    ))  # fmt: skip
    synthesize_stage(open_run(task, tmp_path / "multi" / "run"), n=3)
    assert CALLS and all(r.params.stop == () for r in CALLS)
    kept = [r["text"] for r in _jsonl(tmp_path / "multi" / "run" / "synthetic.jsonl")]
    assert kept == [f"{_fresh(r)}\n{_fresh(r)[::-1]}" for r in CALLS]


def test_only_the_fields_the_prompts_read_are_written(tmp_path: Path) -> None:
    """A data column no prompt reads (TREC's fine-grained label) is no input: showing it
    would hand the writer gold, and asking for it would make it write labels."""
    task = _task(tmp_path)
    data = tmp_path / "data.jsonl"
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({**r, "fine": "secret"}) + "\n" for r in rows))
    run = open_run(task, tmp_path / "run")
    assert all(e.fields.get("fine") == "secret" for e in run.split.train)
    synthesize_stage(run, n=3)
    assert not any("secret" in r.messages[-1].content for r in CALLS)
    assert all(set(r) == {"text", "synthetic", "asked_label", "request_hash"}
               for r in _jsonl(run.dir / "synthetic.jsonl"))  # fmt: skip


def test_free_text_requests_vary_by_instruction(tmp_path: Path) -> None:
    task = write_task(
        tmp_path, student="scripted:echo", n=30, split=SPLIT, labels=None,
        generation={"mode": "generate"},
        synthesize={"model": "synthtest:writer", "instructions": ["Be terse.", "Be {{ 'odd' }}."]},
    )  # fmt: skip
    run = open_run(task, tmp_path / "run")
    stats = synthesize_stage(run, n=4)
    assert stats.kept == 4 and stats.kept_per_label == {"": 4}
    said = Counter(
        next(i for i in ("Be terse.", "Be {{ 'odd' }}.") if i in r.messages[-1].content)
        for r in CALLS
    )
    assert said == {"Be terse.": 2, "Be {{ 'odd' }}.": 2}
    assert all(r["asked_label"] is None for r in _jsonl(run.dir / "synthetic.jsonl"))


def test_estimate_counts_every_request_synthesis_may_send(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path, max_requests=2), tmp_path / "run")
    before = estimate_synthesis(run, n=6)
    assert before.requests == 12 and before.stored == 0 and before.prompt_tokens > 0
    assert before.role == "synth" and before.output_tokens_max == 12 * 128
    synthesize_stage(run, n=6)
    assert estimate_synthesis(run, n=6).stored == 6 and CALLS


def test_estimate_of_a_run_that_synthesizes_starts_with_the_synthesis(tmp_path: Path) -> None:
    from still.pipeline import estimate_run

    run = open_run(_task(tmp_path, use=True, n=6), tmp_path / "run")
    assert [s.role for s in estimate_run(run)][:2] == ["synth", "teacher"]
    synthesize_stage(run, n=6)
    assert "synth" not in [s.role for s in estimate_run(run)]  # synthetic.jsonl is written


def test_synthesize_command(tmp_path: Path) -> None:
    task = _task(tmp_path)
    args = ["synthesize", str(task), "--run-dir", str(tmp_path / "run"), "--n", "6"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "kept 6 of 6" in result.output
    assert len(_jsonl(tmp_path / "run" / "synthetic.jsonl")) == 6


def test_near_index_finds_what_brute_force_finds() -> None:
    rng = random.Random(0)
    base = ["".join(rng.choices("abcde ", k=rng.randint(3, 30))) for _ in range(150)]
    for threshold in (0.5, 0.8):
        index = NearIndex(threshold)
        for i, text in enumerate(base):
            index.add(text, str(i))
        for probe in base[:40] + [t + "x" for t in base[:40]]:
            sims = [jaccard(ngrams(probe), ngrams(t)) for t in base]
            best = max(sims)
            found = index.nearest(probe)
            if best >= threshold:
                assert found is not None and found[1] == pytest.approx(best)
            else:
                assert found is None
