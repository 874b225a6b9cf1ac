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

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

from still.bench import MCItem, position_bias
from still.models import get_model

MODELS = ["local:smollm2-135m-instruct", "local:gemma3-270m"]
_OPTIONS = re.compile(r"\(([A-D])\)\s*(.*?)\s*(?=\([A-D]\)|$)", re.S)
_ANSWER = re.compile(r"The answer is \(([A-D])\)")


def load_mmlu() -> list[MCItem]:
    """Parse the worked examples: 'Q: ...', one line of '(A) .. (B) ..', 'A: ... (X).'"""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install the data: .venv/bin/pip install --no-deps lm_eval==0.4.13")
    root = Path(spec.submodule_search_locations[0])
    prompts = json.loads((root / "tasks/mmlu/flan_cot_fewshot/_cot_prompts.json").read_text())
    items = []
    for subject, text in sorted(prompts.items()):
        for n, block in enumerate(text.split("\n\nQ: ")[1:]):
            q, _, rest = block.partition("\nA: ")
            ans = _ANSWER.search(rest)
            lines = q.strip().split("\n")
            opts = _OPTIONS.findall(lines[-1])
            if not ans or [k for k, _ in opts] != ["A", "B", "C", "D"]:
                continue  # a question whose options span lines: left out, counted below
            items.append(
                MCItem(
                    id=f"{subject}-{n}",
                    question="\n".join(lines[:-1]),
                    options=tuple(v for _, v in opts),
                    answer="ABCD".index(ans.group(1)),
                )
            )
    return items


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
