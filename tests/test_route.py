"""Routes: a tag's traffic moves to the student when the last N shadowed requests agree at
the threshold with the interval's lower end above it, back when the rate falls below it,
and every switch carries its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from still.bench import wilson
from still.route import RouteConfig, RouteError, Router, RouteSpec, load_routes


@dataclass(frozen=True)
class Rec:
    agree: bool | None
    tags: dict[str, str] = field(default_factory=lambda: {"app": "triage"})
    passed: bool | None = None


def _router(**kw: object) -> Router:
    spec = {"match": {"app": "triage"}, "student": "S", "teacher": "T", "min_agreement": 0.8,
            "window": 50, **kw}  # fmt: skip
    return Router(RouteConfig(routes=[RouteSpec.model_validate(spec)], default="D"))


def _feed(router: Router, pattern: list[bool], times: int) -> list:  # type: ignore[type-arg]
    return router.observe([Rec(a) for _ in range(times) for a in pattern], now=1.0)


def test_the_student_takes_over_once_the_window_agrees_beyond_doubt() -> None:
    router = _router()
    assert _feed(router, [True], 49) == []  # 49 of 49 agree, but the window holds 50
    assert router.choose({"app": "triage"}, 0.99) == "T"
    (switch,) = _feed(router, [True], 1)
    assert (switch.route, switch.to, switch.upstream) == ("app=triage", "student", "S")
    assert (switch.n, switch.agreed, switch.rate) == (50, 50, 1.0)
    assert (switch.low, switch.high) == pytest.approx(wilson(50, 50))
    assert switch.low >= 0.8 and "interval" in switch.reason
    assert router.choose({"app": "triage"}, 0.99) == "S"


def test_a_rate_above_the_threshold_is_not_enough_while_its_interval_reaches_below() -> None:
    router = _router(window=20)
    # 17 of 20 = 0.85 >= 0.8, but with 20 requests the interval reaches down to ~0.64
    assert _feed(router, [True] * 17 + [False] * 3, 1) == []
    assert wilson(17, 20)[0] < 0.8
    assert router.states()[0].serving == "teacher"


def test_the_route_falls_back_below_the_threshold_and_does_not_flap_near_it() -> None:
    router = _router(window=100)
    assert [s.to for s in _feed(router, [True], 100)] == ["student"]
    # 85% agreement: above 0.8, so the student keeps the traffic
    assert _feed(router, [True] * 17 + [False] * 3, 5) == []
    # 70%: below the threshold, back to the teacher, with the evidence of the fall
    switches = _feed(router, [True] * 7 + [False] * 3, 10)
    assert [s.to for s in switches] == ["teacher"]
    back = switches[0]
    assert back.rate < 0.8 and back.n == 100 and back.upstream == "T"
    assert back.agreed == round(back.rate * 100)
    # 85% again: above the threshold, but its interval is not, so it stays on the teacher
    assert _feed(router, [True] * 17 + [False] * 3, 20) == []
    assert router.choose({"app": "triage"}, 0.5) == "T"
    # near-perfect agreement brings the student back
    assert [s.to for s in _feed(router, [True], 100)] == ["student"]


def test_records_without_a_verdict_or_of_other_tags_are_not_evidence() -> None:
    router = _router(window=5, min_agreement=0.5)  # 5 of 5: interval [0.57, 1]
    noise = [Rec(None), Rec(True, {"app": "search"}), Rec(True, {})] * 10
    assert router.observe(noise, now=0.0) == []
    assert router.states()[0].n == 0
    assert len(router.observe([Rec(True)] * 5, now=0.0)) == 1


def test_the_graded_metric_reads_the_graders_verdict() -> None:
    router = _router(window=5, min_agreement=0.5, metric="graded")
    assert router.observe([Rec(False, passed=True)] * 5, now=0.0)[0].to == "student"
    assert router.observe([Rec(True, passed=False)] * 5, now=0.0)[0].to == "teacher"


def test_the_canary_sends_its_fraction_to_the_student_and_others_go_to_the_default() -> None:
    router = _router(canary=0.05)
    draws = [i / 1000 for i in range(1000)]
    to_student = sum(router.choose({"app": "triage", "env": "x"}, d) == "S" for d in draws)
    assert to_student == 50
    assert router.choose({"app": "search"}, 0.0) == "D"
    assert router.choose({}, 0.0) == "D"


def test_the_first_matching_route_wins_and_refs_are_listed_once() -> None:
    config = RouteConfig.model_validate(
        {"routes": [
            {"match": {"app": "a", "env": "prod"}, "student": "S1", "teacher": "T",
             "min_agreement": 0.9},
            {"match": {"app": "a"}, "student": "S2", "teacher": "T", "min_agreement": 0.9,
             "canary": 1.0},
        ]}
    )  # fmt: skip
    router = Router(config)
    assert router.choose({"app": "a", "env": "prod"}, 0.5) == "T"
    assert router.choose({"app": "a", "env": "dev"}, 0.5) == "S2"
    assert config.fallback == "T" and config.refs() == ["T", "S1", "S2"]


def test_a_route_file_loads_and_its_mistakes_are_one_line(tmp_path: Path) -> None:
    good = tmp_path / "route.yaml"
    good.write_text(yaml.safe_dump({"routes": [
        {"match": {"app": "triage"}, "student": "http://127.0.0.1:1/v1#s",
         "teacher": "openai:gpt-4o-mini", "min_agreement": 0.9, "window": 100, "canary": 0.05},
    ]}))  # fmt: skip
    config = load_routes(good)
    assert config.routes[0].window == 100 and config.fallback == "openai:gpt-4o-mini"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"routes": [
        {"match": {"app": "x"}, "student": "s", "teacher": "t", "min_agreement": 1.5},
    ]}))  # fmt: skip
    with pytest.raises(RouteError, match=r"bad.yaml: routes.0.min_agreement: .*less than or eq"):
        load_routes(bad)
    bad.write_text("routes: [{student: s, teacher: t, min_agreement: 0.9, windw: 5}]")
    with pytest.raises(RouteError, match="routes.0.windw"):
        load_routes(bad)
    with pytest.raises(RouteError, match="missing.yaml"):
        load_routes(tmp_path / "missing.yaml")
