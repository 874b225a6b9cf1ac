"""Routes: send a tag's traffic to the student once the shadow says it has earned it.

A route file (`still proxy --route route.yaml`) names, per tag, a student and a teacher:

```yaml
# still proxy --route route.yaml --db prod.db
routes:
  - match: {app: triage}       # the calls carrying these tags (metadata or X-Still-Tags)
    student: http://127.0.0.1:8001/v1#student   # `still serve STUDENT --shadow TEACHER`
    teacher: openai:gpt-4o-mini
    min_agreement: 0.9         # the switch threshold
    window: 200                # over the last 200 shadowed requests of this tag
    canary: 0.05               # while on the teacher, 5% of calls go to the student
default: openai:gpt-4o-mini    # the calls no route matches (default: the first teacher)
```

A route starts on its teacher. Its evidence is the shadow records (`still.shadow`) whose
tags match it, in the order they are observed: it moves to the student once the last
`window` of them agree at a rate of at least `min_agreement` *and* the lower end of the
rate's 95% Wilson interval is at least `min_agreement` too; it moves back to the teacher as
soon as the rate over the last `window` falls below `min_agreement`. The gap between the
two rules (the interval's half-width) is the hysteresis: a student just at the threshold
does not flap. Every switch is a `Switch` with its evidence (n, agreements, rate,
interval). While a route is on its teacher only its canary fraction reaches the student,
and only that traffic (shadowed by `still serve --shadow`) brings new evidence.

This module is pure: `Router.observe` takes records and returns switches, `Router.choose`
takes a call's tags and a uniform draw and returns an upstream reference. Reading the
store, drawing and logging are the proxy's (`still.proxy`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from still.bench import wilson
from still.errors import StillError

Serving = Literal["teacher", "student"]


class RouteError(StillError):
    """A route file that cannot be used."""


class RouteSpec(BaseModel):
    """One route: the calls carrying `match`'s tags, their student and their teacher."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: dict[str, str] = Field(
        default_factory=dict,
        description="Tags a call must carry, all of them (its `metadata` or `X-Still-Tags`); "
        "{} matches every call.",
    )
    student: str = Field(description="Where the student answers (an upstream reference).")
    teacher: str = Field(description="Where the teacher answers (an upstream reference).")
    min_agreement: float = Field(
        gt=0, le=1, description="The agreement rate the student must reach, and keep."
    )
    window: int = Field(200, ge=1, description="How many of the last shadowed requests count.")
    canary: float = Field(
        0.0, ge=0, le=1, description="While on the teacher, the fraction of calls sent to the "
        "student (which its shadow measures)."
    )  # fmt: skip
    metric: Literal["agreement", "graded"] = Field(
        "agreement",
        description="`agreement`: the answers agree; `graded`: the task's graders pass "
        "(`still serve --shadow --task`).",
    )
    name: str = Field("", description="The route's name in logs (default: its match).")

    @property
    def label(self) -> str:
        """The route's name, or its match as `key=value,...` (`*` for every call)."""
        return self.name or ",".join(f"{k}={v}" for k, v in sorted(self.match.items())) or "*"


class RouteConfig(BaseModel):
    """A route file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: list[RouteSpec] = Field(min_length=1, description="First match wins.")
    default: str | None = Field(
        None, description="Where calls no route matches go (default: the first route's teacher)."
    )
    evidence: str | None = Field(
        None, description="The store the shadow records are read from (default: the proxy's "
        "--db)."
    )  # fmt: skip
    refresh_s: float = Field(2.0, gt=0, description="How often new records are read.")

    @model_validator(mode="after")
    def _distinct(self) -> RouteConfig:
        labels = [r.label for r in self.routes]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"two routes are named {twice[0]!r}: give them distinct `name`s")
        return self

    @property
    def fallback(self) -> str:
        """Where a call no route matches goes."""
        return self.default or self.routes[0].teacher

    def refs(self) -> list[str]:
        """Every upstream reference the routes name, the fallback first, each once."""
        refs = [self.fallback] + [ref for r in self.routes for ref in (r.teacher, r.student)]
        return list(dict.fromkeys(refs))


def load_routes(path: str | Path) -> RouteConfig:
    """Read and check a route file.

    Raises:
        RouteError: the file is missing, not YAML, or breaks the schema (one line naming
            the field).
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RouteError(f"route file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RouteError(f"route file {path} is not YAML: {exc}") from None
    try:
        return RouteConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise RouteError(f"route file {path}: {where}: {err['msg']}") from None


class Evidence(Protocol):
    """What a route reads of one shadow record (`still.shadow.ShadowRecord` is one)."""

    @property
    def tags(self) -> Mapping[str, str]: ...

    @property
    def agree(self) -> bool | None: ...

    @property
    def passed(self) -> bool | None: ...


@dataclass(frozen=True)
class Switch:
    """A route changing where it sends its calls, with the evidence that made it."""

    route: str
    to: Serving
    upstream: str
    """The reference calls now go to."""
    at: float
    """When (Unix seconds)."""
    n: int
    """Shadowed requests in the window."""
    agreed: int
    """Of those, the ones that agreed (or passed, for `metric: graded`)."""
    rate: float
    low: float
    high: float
    """The rate's 95% Wilson interval."""
    min_agreement: float
    reason: str


@dataclass(frozen=True)
class RouteState:
    """Where a route sends its calls now, and its evidence."""

    route: str
    serving: Serving
    n: int
    agreed: int
    low: float
    high: float


class _Route:
    def __init__(self, spec: RouteSpec) -> None:
        self.spec = spec
        self.serving: Serving = "teacher"
        self.window: deque[bool] = deque(maxlen=spec.window)

    def matches(self, tags: Mapping[str, str]) -> bool:
        return all(tags.get(k) == v for k, v in self.spec.match.items())

    def outcome(self, record: Evidence) -> bool | None:
        return record.agree if self.spec.metric == "agreement" else record.passed

    def decide(self, now: float) -> Switch | None:
        n, k, t = len(self.window), sum(self.window), self.spec.min_agreement
        low, high = wilson(k, n)
        rate = k / n if n else 0.0
        if self.serving == "teacher" and n >= self.spec.window and rate >= t and low >= t:
            to: Serving = "student"
            why = f"the last {n} agree at {rate:.3f}, interval [{low:.3f}, {high:.3f}] >= {t}"
        elif self.serving == "student" and n and rate < t:
            to = "teacher"
            why = f"the last {n} agree at {rate:.3f} < {t}"
        else:
            return None
        self.serving = to
        ref = self.spec.student if to == "student" else self.spec.teacher
        return Switch(self.spec.label, to, ref, now, n, k, rate, low, high, t, why)


class Router:
    """Decides, per route, whether its calls go to the student or the teacher.

    Args:
        config: the routes.
    """

    def __init__(self, config: RouteConfig) -> None:
        self.config = config
        self._routes = [_Route(spec) for spec in config.routes]

    def observe(self, records: Iterable[Evidence], now: float) -> list[Switch]:
        """Take new shadow records, each once, in the order they were made; every switch
        they cause, in order. A record goes to the first route it matches; one without a
        verdict (the teacher failed, or not graded for `metric: graded`) is not evidence.

        Args:
            records: the records not observed before.
            now: the time the switches are stamped with.
        """
        switches = []
        for record in records:
            route = self._route(record.tags)
            if route is None:
                continue
            outcome = route.outcome(record)
            if outcome is None:
                continue
            route.window.append(outcome)
            switch = route.decide(now)
            if switch is not None:
                switches.append(switch)
        return switches

    def choose(self, tags: Mapping[str, str], draw: float) -> str:
        """The upstream reference a call with these tags goes to.

        Args:
            tags: the call's tags.
            draw: a uniform draw in [0, 1) for the canary.
        """
        route = self._route(tags)
        if route is None:
            return self.config.fallback
        if route.serving == "student" or draw < route.spec.canary:
            return route.spec.student
        return route.spec.teacher

    def route_of(self, tags: Mapping[str, str]) -> str | None:
        """The name of the route calls (and records) with these tags belong to."""
        route = self._route(tags)
        return None if route is None else route.spec.label

    def states(self) -> list[RouteState]:
        """Every route's state, in file order."""
        out = []
        for r in self._routes:
            n, k = len(r.window), sum(r.window)
            low, high = wilson(k, n)
            out.append(RouteState(r.spec.label, r.serving, n, k, low, high))
        return out

    def _route(self, tags: Mapping[str, str]) -> _Route | None:
        return next((r for r in self._routes if r.matches(tags)), None)
