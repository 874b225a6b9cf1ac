"""How roles are named for readers (a module of its own: every renderer needs it)."""

ROLE_NAMES = {
    "teacher": "teacher",
    "student": "base student",
    "distilled": "distilled student",
    "control": "control",
}
