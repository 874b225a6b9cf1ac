"""data.reader for the Countdown task: seeded, generated problems, nothing downloaded.

Each problem is four numbers from 1 to 25 and a target between 10 and 250 that some
arithmetic expression over all four reaches (+, -, *, and / where it divides exactly);
the expression found is the reference answer, one of possibly many. The source path is
this file itself (a reader needs one): only the seed and the count below decide the data,
so every machine generates the same problems.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

SEED = 17
COUNT = 1200


def _expression(rng: random.Random, numbers: list[int]) -> tuple[str, Fraction]:
    """A random expression using every number once, left to right, with its value."""
    order = numbers[:]
    rng.shuffle(order)
    text, value, last = str(order[0]), Fraction(order[0]), ""
    for n in order[1:]:
        op = rng.choice("+-*/")
        if op == "/" and value % n:
            op = "+"  # only exact divisions
        if op in "*/" and last in ("+", "-"):
            text = f"({text})"
        value = {"+": value + n, "-": value - n, "*": value * n, "/": value / n}[op]
        text, last = f"{text} {op} {n}", op
    return text, value


def problems(path: Path) -> Iterator[dict[str, str]]:
    """COUNT distinct problems: numbers (comma-separated), target, and a solution."""
    rng = random.Random(SEED)
    seen: set[tuple[tuple[int, ...], int]] = set()
    while len(seen) < COUNT:
        numbers = [rng.randint(1, 25) for _ in range(4)]
        text, value = _expression(rng, numbers)
        if value.denominator != 1 or not 10 <= value <= 250:
            continue
        key = (tuple(sorted(numbers)), int(value))
        if key in seen:
            continue
        seen.add(key)
        yield {
            "numbers": ", ".join(map(str, numbers)),
            "target": str(int(value)),
            "solution": text,
        }
