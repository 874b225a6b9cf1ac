"""Position bias of the bundled models on real multiple-choice questions.

The questions are the MMLU worked examples that ship in the `lm_eval` package
(`lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json`: 5 per subject, 57 subjects, each
with four options and its answer). Every question is asked in all four cyclic rotations of
its options (still.bench.position_bias), answers scored over the letters A-D.

    .venv/bin/pip install --no-deps lm_eval==0.4.13     # the data file only
    .venv/bin/python benchmarks/bench_position_bias.py [N_QUESTIONS]

Prints, per model: accuracy (chance is 25%), accuracy by the correct answer's position,
the share of each predicted letter (uniform is 25% each; chi-square p-value), and
consistency (questions answered with the same option in all four rotations).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from still.bench import MCItem, position_bias
from still.models import get_model
from still.tasks import load_examples, load_task

MODELS = ["local:smollm2-135m-instruct", "local:gemma3-270m"]
TASK = Path(__file__).resolve().parent.parent / "examples/mmlu/task.yaml"


def load_mmlu() -> list[MCItem]:
    """The questions as the example task reads them (examples/mmlu/mmlu.py), in file order."""
    task = load_task(TASK)
    examples, _ = load_examples(task)
    return [
        MCItem(
            e.id, e.fields["question"], tuple(e.fields[x] for x in "ABCD"), "ABCD".index(e.answer)
        )
        for e in examples
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    items = load_mmlu()
    print(f"{len(items)} MMLU questions parsed; using {min(n, len(items))}")
    items = items[:n]
    answers = "".join("ABCD"[it.answer] for it in items)
    print("gold letters:", {x: answers.count(x) for x in "ABCD"})
    print()
    print(
        "| model | accuracy | acc. with answer at A / B / C / D | predicted A / B / C / D "
        "| chi-square p | consistency | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for ref in MODELS:
        start = time.perf_counter()
        b = position_bias(get_model(ref), items)
        secs = time.perf_counter() - start
        by_pos = " / ".join(f"{b.accuracy_by_position[x]:.0%}" for x in "ABCD")
        share = " / ".join(f"{b.predicted_share[x]:.0%}" for x in "ABCD")
        p = "n/a" if b.chi2_p is None else f"{b.chi2_p:.1e}"
        print(
            f"| {ref} | {b.accuracy:.1%} | {by_pos} | {share} | {p} | "
            f"{b.consistency:.1%} | {secs:.0f} |"
        )


if __name__ == "__main__":
    main()
