"""data.reader for the MMLU worked examples that ship in the `lm_eval` package.

`lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json` maps each of 57 subjects to a
text of five worked questions:

    Q: <question, possibly several lines>
    (A) <option> (B) <option> (C) <option> (D) <option>
    A: <worked reasoning> The answer is (X).

Each question becomes one example: subject, question, its four options as fields A-D and
the answer letter. A question whose options span several lines is left out (12 of 285).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

_OPTIONS = re.compile(r"\(([A-D])\)\s*(.*?)\s*(?=\([A-D]\)|$)", re.S)
_ANSWER = re.compile(r"The answer is \(([A-D])\)")


def questions(path: Path) -> Iterator[dict[str, str]]:
    """One dict per parsable question, in subject order."""
    prompts = json.loads(Path(path).read_text())
    for subject, text in sorted(prompts.items()):
        for block in text.split("\n\nQ: ")[1:]:
            q, _, rest = block.partition("\nA: ")
            ans = _ANSWER.search(rest)
            lines = q.strip().split("\n")
            opts = _OPTIONS.findall(lines[-1])
            if not ans or [k for k, _ in opts] != ["A", "B", "C", "D"]:
                continue
            yield {
                "subject": subject.replace("_", " "),
                "question": "\n".join(lines[:-1]).strip(),
                **{k: v for k, v in opts},
                "answer": ans.group(1),
            }
