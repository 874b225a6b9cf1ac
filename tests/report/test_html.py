"""report.html: self-contained, escaped, and it renders in a real browser (headless Chromium).

The browser test needs Chromium (Debian: `apt-get install -y chromium`) and the `playwright`
Python package (its own browser download is not needed: it drives /usr/bin/chromium).
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from still.bench import (
    Comparison,
    ModelResult,
    baselines,
    compare_pairs,
    percentile,
    wilson,
)
from still.report import write_html, write_reports
from still.report._html import headline

LABELS = ["positive", "negative", "neutral"]
ROLES = ["teacher", "student", "distilled", "control"]
MODELS = {
    "teacher": "openai:gpt-<b>big</b>",  # markup in a model name must come out escaped
    "student": "local:/models/smollm2-135m",
    "distilled": "local:/runs/x/adapter",
    "control": "local:/models/smollm2-135m & co",
}
SKILL = {"teacher": 0.9, "student": 0.35, "distilled": 0.85, "control": 0.5}
LATENCY = {"teacher": 1.5, "student": 0.08, "distilled": 0.09, "control": 0.1}
N = 30


def _data(priced: bool = True) -> tuple[Comparison, list[dict[str, Any]]]:
    """Four roles over the same 30 examples, with plausible answers, failures and times."""
    rng = random.Random(7)
    gold = [LABELS[i % 3] for i in range(N)]
    rows: list[dict[str, Any]] = []
    results = []
    for role in ROLES:
        correct = unparseable = errors = 0
        lat: list[float] = []
        for i, ref in enumerate(gold):
            u = rng.random()
            failure = None
            if u < SKILL[role]:
                pred: str | None = ref
            elif role == "student" and u > 0.9:
                pred, failure = None, "unparseable"
            elif role == "control" and u > 0.97:
                pred, failure = None, "error"
            else:
                pred = rng.choice([x for x in LABELS if x != ref])
            ok = pred == ref
            correct += ok
            unparseable += failure == "unparseable"
            errors += failure == "error"
            latency = LATENCY[role] * rng.lognormvariate(0, 0.3)
            if failure != "error":
                lat.append(latency)
            rows.append(
                {
                    "role": role,
                    "model": MODELS[role],
                    "example_id": f"ex{i}",
                    "reference": ref,
                    "prediction": pred,
                    "correct": ok,
                    "failure": failure,
                    "latency_s": latency,
                    "prompt_tokens": 120,
                    "completion_tokens": 3,
                    "cost": 0.0004 if priced and role == "teacher" else None,
                }
            )
        low, high = wilson(correct, N)
        results.append(
            ModelResult(
                role=role,
                model=MODELS[role],
                n=N,
                correct=correct,
                accuracy=correct / N,
                ci_low=low,
                ci_high=high,
                unparseable=unparseable,
                errors=errors,
                mean_latency_s=sum(lat) / len(lat),
                p95_latency_s=percentile(lat, 95),
                tokens_per_s=123 * len(lat) / sum(lat),
                prompt_tokens_mean=120.0,
                prompt="teacher" if role in ("teacher", "control") else "student",
                cost_per_1k=0.4 if priced and role == "teacher" else None,
            )
        )
    return _analysed(Comparison(results), rows, gold), rows


def _analysed(cmp: Comparison, rows: list[dict[str, Any]], gold: list[str]) -> Comparison:
    """What the pipeline adds: paired tests, the gap closed with its interval, baselines."""
    return cmp.analyse(rows, baselines(gold, gold, LABELS), n_resamples=2000)


class _Page(HTMLParser):
    """What the tests look for in the page: table rows, figures, external references."""

    def __init__(self) -> None:
        super().__init__()
        self.in_table = self.in_body = False
        self.body_rows = 0
        self.plots: list[str] = []
        self.imgs: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("id") == "comparison":
            self.in_table = True
        elif tag == "tbody" and self.in_table:
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.body_rows += 1
        elif tag == "figure" and "plot" in (a.get("class") or "").split():
            self.plots.append(a.get("data-plot") or "")
        elif tag == "img":
            self.imgs.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.in_table = False


EXPECTED_PLOTS = {
    "accuracy",
    "accuracy-cost",
    "latency",
    *(f"confusion-{r}" for r in ROLES),
    "label-distribution",
    "position-bias",
    "selection",
}
EXPECTED_SECTIONS = [
    "paired",
    "economics",
    "label-distribution",
    "position-bias",
    "accuracy-by-length",
    "selection",
]


def _extra(cmp: Comparison, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What report_extra adds, computed by the real functions on the fixture's rows, plus
    position bias (a model that always says A) and a selection between two candidates."""
    from still.bench import Answer, accuracy_by_length, economics, summarise
    from still.bench._bias import label_distribution
    from still.bench._paired import compare_pairs
    from still.cost import Price
    from still.pipeline import apply_policy

    for i, row in enumerate(rows):
        row["input_chars"] = 20 + 7 * (i % N)
    always_a = [Answer(f"q{q}", r, 0, f"opt{(r + q) % 4}") for q in range(10) for r in range(4)]
    fair = [Answer(f"q{q}", r, r, "right") for q in range(10) for r in range(4)]
    sel = apply_policy([cmp.results[0], cmp.results[1]], floor=None, control=None)
    return {
        "paired": compare_pairs(rows),
        "economics": economics(cmp, Price(input=2.5, output=10.0), 120.0, 1.2),
        "label_distribution": label_distribution(rows, LABELS),
        "accuracy_by_length": accuracy_by_length(rows),
        "position_bias": [
            {"role": "teacher", **summarise("t", fair, "ABCD").as_dict()},
            {"role": "student", **summarise("s", always_a, "ABCD").as_dict()},
        ],
        # a selection.json written by another version: an unknown field is ignored
        "selection": {
            **sel.as_dict(),
            "results": [{**r, "written_by_a_newer_still": 1} for r in sel.as_dict()["results"]],
        },
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cmp, rows = _data()
    path = tmp_path_factory.mktemp("html") / "report.html"
    extra = _extra(cmp, rows)
    assert (
        write_html(cmp, rows, path, title="sentiment <held-out>", labels=LABELS, extra=extra)
        == path
    )
    return path


def test_extra_sections_render_as_tables_with_the_numbers(report: Path) -> None:
    text = html_text(report)
    names = re.findall(r'<section class="extra" data-section="([^"]+)"', text)
    assert names == EXPECTED_SECTIONS
    # the always-A student: every prediction A, accuracy 25% (only when the answer is A)
    assert "100.0% / 0.0% / 0.0% / 0.0%" in text and "25.0%" in text
    assert "McNemar exact p" in text and "paid for after" in text


def test_page_has_table_and_every_plot(report: Path) -> None:
    page = _Page()
    page.feed(report.read_text())
    assert page.body_rows == 4 + 2  # the roles, then the majority and chance baselines
    text = report.read_text()
    assert "majority baseline" in text and "uniform over the labels" in text
    assert sorted(page.plots) == sorted(EXPECTED_PLOTS)
    assert len(page.imgs) == len(EXPECTED_PLOTS)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 2000 for src in page.imgs)


def test_page_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<script|<link|<iframe|<object|<embed|@import|url\(", text, re.I)
    page = _Page()
    page.feed(text)
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:"), (tag, name, value[:80])


def test_text_from_data_is_escaped(report: Path) -> None:
    text = report.read_text()
    assert "<b>" not in text and "&lt;b&gt;big&lt;/b&gt;" in text
    assert "<held-out>" not in text and "sentiment &lt;held-out&gt;" in text
    assert "smollm2-135m &amp; co" in text


def test_headline_celebrates_a_win(report: Path) -> None:
    cmp, _ = _data()
    text, mood, _ = headline(cmp)
    assert mood == "win"
    assert re.match(
        r"Distilled student \(teacher answers\) closes \d+% of the teacher–base-student gap "
        r"\[-?\d+%, \d+%\], beats the base student by \+[\d.]+ points", text
    )
    assert re.search(r"it runs at 1/\d+ the latency", text)
    assert html_text(report).count(text) == 1


def test_headline_says_plainly_when_it_loses() -> None:
    cmp, rows = _data()
    student = {x["example_id"]: x["correct"] for x in rows if x["role"] == "student"}
    worse = [
        {**x, "correct": student[x["example_id"]] and i % 3 != 0} if x["role"] == "distilled"
        else x for i, x in enumerate(rows)
    ]  # fmt: skip
    cmp.paired = compare_pairs(worse, n_resamples=2000)
    text, mood, _ = headline(cmp)
    assert mood == "loss" and "is below the base student by -" in text
    assert "closes" not in text
    same = [{**x, "correct": student[x["example_id"]]} if x["role"] == "distilled" else x
            for x in rows]  # fmt: skip
    cmp.paired = compare_pairs(same, n_resamples=2000)
    text, mood, _ = headline(cmp)
    assert mood == "mixed" and "within noise of the base student" in text


def test_no_price_plots_latency_and_no_labels_no_confusion(tmp_path: Path) -> None:
    cmp, rows = _data(priced=False)
    path = write_html(cmp, rows, tmp_path / "r.html", title="t")
    page = _Page()
    page.feed(path.read_text())
    assert sorted(page.plots) == ["accuracy", "accuracy-cost", "latency"]
    assert "No model has a price" in path.read_text()


def test_write_reports_writes_html_beside_markdown(tmp_path: Path) -> None:
    cmp, rows = _data()
    paths = write_reports(cmp, rows, tmp_path, title="t", labels=LABELS)
    assert paths["html"] == tmp_path / "report.html" and (tmp_path / "report.md").exists()
    assert 'data-plot="confusion-teacher"' in paths["html"].read_text()


def test_write_reports_takes_labels_from_the_label_distribution(tmp_path: Path) -> None:
    """The pipeline passes report_extra's label_distribution, not the labels themselves."""
    from still.bench._bias import label_distribution

    cmp, rows = _data()
    extra = {"label_distribution": label_distribution(rows, LABELS)}
    text = write_reports(cmp, rows, tmp_path, title="t", extra=extra)["html"].read_text()
    assert 'data-plot="label-distribution"' in text


def html_text(path: Path) -> str:
    import html

    return html.unescape(path.read_text())


# ---------------------------------------------------------------------------- the browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    """Open the page offline in Chromium: the table and every plot must actually render
    (an image that fails to decode has naturalWidth 0 and no size)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 3000})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            assert page.locator("#comparison tbody tr").count() == 4 + 2  # + baselines
            assert page.locator("#comparison thead th").count() == 12
            for name in EXPECTED_SECTIONS:
                content = page.locator(f'section[data-section="{name}"] :is(tbody tr, p)')
                assert content.count() > 0 and content.first.is_visible(), name
            model = page.locator('#comparison tr[data-role="teacher"] td:nth-child(2)')
            assert model.get_attribute("title") == MODELS["teacher"]  # text, not markup
            assert model.locator("b").count() == 0
            figures = page.locator("figure.plot")
            names = figures.evaluate_all("fs => fs.map(f => f.dataset.plot)")
            assert sorted(names) == sorted(EXPECTED_PLOTS)
            for name in names:
                img = page.locator(f'figure.plot[data-plot="{name}"] img')
                loaded = img.evaluate(
                    "i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0"
                )
                assert loaded, f"plot {name} did not decode"
                box = img.bounding_box()
                assert box and box["width"] > 200 and box["height"] > 100, (name, box)
            assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
            shot = Path(tempfile.gettempdir()) / "still-report-html.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def test_degenerate_inputs_still_make_a_page(tmp_path: Path) -> None:
    """Nothing answered, no latencies, a '$' in a label (math text in matplotlib) and an
    empty comparison: the page is still written, with every plot."""
    failed = ModelResult(
        role="teacher", model="m", n=2, correct=0, accuracy=0.0, ci_low=0.0, ci_high=0.66,
        unparseable=0, errors=2, mean_latency_s=float("nan"), p95_latency_s=float("nan"),
        tokens_per_s=0.0, prompt_tokens_mean=0.0,
    )  # fmt: skip
    rows = [
        {"role": "teacher", "example_id": i, "reference": "x", "prediction": None,
         "failure": "error", "latency_s": None}
        for i in range(2)
    ]  # fmt: skip
    page = _Page()
    page.feed(write_html(Comparison([failed]), rows, tmp_path / "a.html", title="t",
                         labels=["x", "$y$"]).read_text())  # fmt: skip
    assert page.plots == ["accuracy", "accuracy-cost", "latency", "confusion-teacher",
                          "label-distribution"]  # fmt: skip
    assert headline(Comparison([failed]))[1] == "none"
    empty = write_html(Comparison([]), [], tmp_path / "b.html", title="t").read_text()
    assert "No results." in empty


def test_a_priced_model_right_every_time_is_plotted(tmp_path: Path) -> None:
    """6 of 6 right: the Wilson upper bound rounds to just below 1.0, under the accuracy;
    the accuracy-cost plot must not fail on the negative error bar that would give (a
    teacher graded against its own recorded answers is right every time)."""
    low, high = wilson(6, 6)
    assert high < 1.0  # the rounding this guards against
    teacher = ModelResult(
        role="teacher", model="openai:gpt-4o-mini", n=6, correct=6, accuracy=1.0, ci_low=low,
        ci_high=high, unparseable=0, errors=0, mean_latency_s=0.5, p95_latency_s=0.5,
        tokens_per_s=10.0, prompt_tokens_mean=30.0, cost_per_1k=0.006,
    )  # fmt: skip
    rows = [
        {"role": "teacher", "example_id": i, "reference": "x", "prediction": "x",
         "failure": None, "latency_s": 0.5}
        for i in range(6)
    ]  # fmt: skip
    page = _Page()
    page.feed(write_html(Comparison([teacher]), rows, tmp_path / "r.html", title="t").read_text())
    assert "accuracy-cost" in page.plots
