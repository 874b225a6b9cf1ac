"""How roles are named for readers (a module of its own: every renderer needs it)."""

ROLE_NAMES = {
    "teacher": "teacher",
    "student": "base student",
    "distilled": "distilled student (teacher answers)",
    "distilled-verified": "distilled student (grader-verified)",
    "control": "control",
}
