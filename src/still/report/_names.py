"""How roles are named for readers (a module of its own: every renderer needs it).

A name says what a model learned from, and that depends on the run: a student trained by
reinforcement fine-tuning (`train.recipe: grpo`) learned from its own sampled answers and
the graders' rewards, not from teacher answers. So the bench stage names the roles of its
run once (`role_names`), report.json carries that mapping ("role_names"), and every
renderer takes it as an argument, falling back to `ROLE_NAMES` when given none (a
report.json written before the mapping was stored). Nothing here is mutated.
"""

from __future__ import annotations

from collections.abc import Mapping

ROLE_NAMES = {
    "teacher": "teacher",
    "student": "base student",
    "distilled": "distilled student (teacher answers)",
    "distilled-verified": "distilled student (grader-verified)",
    "control": "control",
}

# The names a recipe changes. sft, kd and dpo (preference pairs of teacher answers) all
# learn from the teacher's answers: the defaults hold for them.
_BY_RECIPE: Mapping[str, Mapping[str, str]] = {
    "grpo": {"distilled": "RFT student (grpo, graders' rewards)"},
}


def role_names(recipe: str | None = None) -> dict[str, str]:
    """Every role's name for readers in a run whose students `recipe` (its
    `train.recipe`) trained; `ROLE_NAMES` for a recipe that learns from teacher answers.

    Args:
        recipe: the run's train.recipe (None or unknown: the defaults).

    Returns:
        a new dict, role -> name, for `extra["role_names"]` and the renderers.
    """
    return {**ROLE_NAMES, **_BY_RECIPE.get(recipe or "", {})}


def role_name(role: str, names: Mapping[str, str] | None = None, *, start: bool = False) -> str:
    """`role`'s name in `names` (a run's `role_names`), else in `ROLE_NAMES`, else `role`;
    `start`: it begins a sentence (first letter upper case, the rest kept: "RFT")."""
    name = (names or {}).get(role) or ROLE_NAMES.get(role, role)
    return name[:1].upper() + name[1:] if start else name
