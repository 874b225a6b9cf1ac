"""Issue 17's measurement task files: each group of variants differs only in what it
compares (bench_variants.py runs them in one folder, so they must share split, models,
prompts and graders), and the countdown sizes are the ones its comments budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from still.tasks import Task, load_task
from still.train import get_recipe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _shared(task: Task) -> tuple[object, ...]:
    """What every variant of a comparison must have in common."""
    return (
        task.name, task.split, task.models, task.prompts, task.graders, task.generation,
        task.curate, task.answer, task.labels,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("files", "differs"),
    [
        (["trec/few.yaml", "trec/synth.yaml"], "synthesize"),
        (["sarcasm/xtok-sft.yaml", "sarcasm/xtok-uld.yaml", "sarcasm/xtok-align.yaml"], "train"),
    ],
)
def test_variants_differ_only_in_what_they_compare(files: list[str], differs: str) -> None:
    tasks = [load_task(EXAMPLES / f) for f in files]
    first, *rest = tasks
    for t in rest:
        # the name only names a default run folder: the variants share one by --run-dir
        assert _shared(t)[1:] == _shared(first)[1:], t.name
        assert getattr(t, differs) != getattr(first, differs)
    assert all(t.curate.students == ["parsed"] for t in tasks)  # teacher-only students


def test_the_trec_variants_have_fifty_labelled_examples_and_the_synthetic_ones_are_used() -> None:
    few, synth = (load_task(EXAMPLES / "trec" / f) for f in ("few.yaml", "synth.yaml"))
    assert few.split.train == 50 and few.synthesize is None
    assert synth.synthesize is not None and synth.synthesize.use and synth.synthesize.n == 1000


def test_the_cross_tokenizer_variants_are_sft_uld_and_align_and_rows_fit() -> None:
    sft, uld, align = (
        load_task(EXAMPLES / "sarcasm" / f"xtok-{v}.yaml") for v in ("sft", "uld", "align")
    )
    assert (sft.train.recipe, uld.train.recipe, align.train.recipe) == ("sft", "kd", "kd")
    assert (uld.train.kd.cross_tokenizer, align.train.kd.cross_tokenizer) == ("uld", "align")
    # the teacher's 3-shot prompt (about 105 Gemma tokens) and a 32-token answer fit
    assert all(t.train.max_length >= 105 + sft.generation.max_tokens for t in (sft, uld, align))


def test_countdown_trains_32_grpo_steps_and_its_distil_task_asks_the_rft_model() -> None:
    rft = load_task(EXAMPLES / "countdown" / "task.yaml")
    g = rft.train.grpo
    steps = rft.split.train / rft.train.batch_size * rft.train.epochs
    assert (steps, g.group_size, g.kl_weight, g.eval_every) == (32, 8, 0.0, 8)
    assert get_recipe(rft.train.recipe).prompts
    distil = load_task(EXAMPLES / "countdown" / "distil.yaml")
    assert distil.models.teacher == "local:runs/countdown/rft-teacher"
    assert distil.models.student == rft.models.student and distil.train.recipe == "sft"
    # the RFT model learned with the student's prompt: it is asked with that prompt
    teacher, student = distil.prompts["teacher"], rft.prompts["student"]
    assert (teacher.system, teacher.template) == (student.system, student.template)
    assert distil.split == rft.split
