"""Helpers to write small task files and data for pipeline and CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

LABELS = ["human", "location", "number"]


def write_task(
    tmp: Path,
    student: str,
    teacher: str = "scripted:echo",
    n: int = 40,
    heldout: int = 10,
    **overrides: object,
) -> Path:
    """A task whose questions name their label, so `scripted:echo` is a perfect teacher."""
    data = tmp / "data.jsonl"
    with data.open("w") as f:
        for i in range(n):
            label = LABELS[i % 3]
            f.write(json.dumps({"text": f"question {i} about {label}", "label": label}) + "\n")
    task: dict[str, object] = {
        "name": "toy",
        "data": {"source": "data.jsonl"},
        "answer": "label",
        "labels": LABELS,
        "split": {"seed": 1, "heldout": heldout},
        "prompts": {
            "teacher": {
                "fewshot": 2,
                "template": "{{ text }}",
                "system": "{% for s in fewshot %}{{ s.text }}: {{ s.answer }}\n{% endfor %}",
            },
            "student": {"system": "Classify.", "template": "{{ text }}"},
        },
        "models": {"teacher": teacher, "student": student},
        "generation": {"batch_size": 4},
        "train": {"epochs": 1, "batch_size": 4, "learning_rate": 0.001, "lora_r": 4},
    }
    task.update(overrides)
    path = tmp / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path
