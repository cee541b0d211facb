"""Issue 24, cases 2 and 5: every line is a record or a reported rejection, whatever its bytes.

The regression cases the probe found (a deeply nested JSON value, a 400-digit id, ids ``"²"``,
``" "`` and ``"a\\nb"``, a value of 1e39), then property tests (hypothesis) over random NDJSON,
CSV and byte lines through the stream's loop, and over random batches through ``observe``: no
exception escapes, no state or table value becomes non-finite, every output line is strict JSON,
and a rejected record changes nothing (a batch leaves the same state as its accepted records
alone)."""

from __future__ import annotations

import datetime as dt
import io
import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecaster.stream_cli import MAX_JSON_DEPTH, forecast_lines, json_depth, run_loop
from tests.forecaster.test_streaming import T0, make, stream_of

HOUR = dt.timedelta(hours=1)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def setup():
    df, dm, model = make()
    return df, model


def seeded(model, df):
    """A stream that has seen the first hour of both series (so later records can apply)."""
    stream = stream_of(model)
    stream.observe(df.filter(pl.col("time") == T0))
    return stream


def strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def assert_finite(stream) -> None:
    t = stream.table
    n = len(t)
    assert torch.isfinite(t.state[:, :n]).all()
    for k, v in t.t.items():
        if v.dtype.kind == "f":
            assert np.isfinite(v[:n]).all(), k


def loop(stream, lines, fmt="auto"):
    out, err = io.StringIO(), io.StringIO()
    counts = run_loop(stream, lines, out, err, fmt)
    return counts, out.getvalue().splitlines(), err.getvalue().splitlines()


# ---- the probe's cases ------------------------------------------------------------------------------

def good_line(hour: int, **change) -> str:
    rec = {"id": "s1", "time": (T0 + hour * HOUR).isoformat(), "a": 1.0, "b": 2.0, "p": 0.5, **change}
    return json.dumps(rec)


@pytest.mark.parametrize("bad, why", [
    ("[" * 100_000 + "]" * 100_000, "nested 100000 levels deep"),
    ('{"id": "s1", "x": ' + "[" * 5_000 + "]" * 5_000 + "}", "nested 5001 levels deep"),
    (good_line(1, id=int("9" * 400)), "more than 256 digits"),
    (good_line(1, id="\u00b2"), None),  # "²" passes isdigit(): it is an ordinary (new) id, not the number 2
    (good_line(1, id=" "), "blank id"),
    (good_line(1, id="a\nb"), "non-printable character U+000A"),
    (good_line(1, id="a\u202eb"), "non-printable character U+202E"),
    (good_line(1, a=1e39), "overflows float32"),
    (good_line(1, a=-1e39), "overflows float32"),
    (good_line(1, a=int("9" * 400)), "too large for a float"),
    (good_line(1, time=int("9" * 400)), "could not be read"),
    (good_line(1, time=[1, 2]), "could not be read"),
    (good_line(1, a={"x": 1}), "not a number"),
], ids=["deep_array", "deep_value", "400_digit_id", "superscript_two", "blank_id", "newline_id", "rtl_override_id",
        "1e39", "-1e39", "400_digit_value", "400_digit_time", "list_time", "object_value"])
def test_one_bad_line_is_reported_and_the_next_line_still_applies(setup, bad, why):
    df, model = setup
    stream = seeded(model, df)
    counts, out, err = loop(stream, [bad, good_line(1)], fmt="ndjson")
    assert counts["lines"] == 2 and not any("Traceback" in e for e in err)
    if why is None:
        assert counts["records"] == 2 and "\u00b2" in stream.series
    else:
        assert counts["records"] == 1 and len(err) == 1 and why in err[0], err
        assert err[0].startswith("line 1: ") and len(err[0]) < 400
    assert stream.info().filter(pl.col("series") == "s1")["observations"].item() == 2  # line 2 applied
    for line in out:
        strict_json(line)
    assert_finite(stream)


def test_observe_rejects_odd_records_on_their_own_and_applies_the_rest_of_the_batch(setup):
    """The probe: through ``observe`` a 400-digit id raised OverflowError and the good records of the
    same batch were not applied."""
    df, model = setup
    stream = seeded(model, df)
    good = [{"id": sid, "time": T0 + HOUR, "a": 1.0, "b": 2.0, "p": 0.5} for sid in ("s1", "s2")]
    odd = [{**good[0], "id": int("9" * 400)}, {**good[0], "id": "\u00b2", "time": T0 + HOUR},
           {**good[0], "id": " "}, {**good[0], "id": "a\nb"}, {**good[0], "a": 1e39}, "not a record",
           {**good[0], "time": {"nested": [1]}}]
    report = stream.observe([good[0], *odd, good[1]])
    assert report.accepted == 3 and [r.index for r in report.rejected] == [1, 3, 4, 5, 6, 7]
    assert report.series == ["s1", "\u00b2", "s2"]
    assert stream.info()["observations"].to_list()[:2] == [2, 2]


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth('{"id": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == 1
    assert json_depth('{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": [[1]]}') == 3
    assert json_depth("[" * (MAX_JSON_DEPTH + 1)) == MAX_JSON_DEPTH + 1


def test_forecasts_beyond_float32_are_written_as_null_never_infinity():
    fc = pl.DataFrame({"series": ["s1", "s1"], "value": [float("inf"), 1.5], "q0.1": [float("nan"), -math.inf]})
    text, dropped = forecast_lines(fc)
    rows = [strict_json(line) for line in text.splitlines()]
    assert rows == [{"series": "s1", "value": None, "q0.1": None}, {"series": "s1", "value": 1.5, "q0.1": None}]
    assert dropped == 2  # the two infinities (a NaN is an ordinary missing value)


# ---- properties ---------------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10 ** 400, max_value=10 ** 400),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1e6, max_value=1e6),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                   st.dictionaries(st.text(max_size=4), c, max_size=3)),
                      max_leaves=5)
# a plausible record (so records apply and states move) with up to two fields replaced by anything
# at all, or one left out
hours = st.integers(-3, 30).map(lambda h: (T0 + h * HOUR).isoformat())
odd = st.one_of(values, st.sampled_from(["s1 ", "S1", "007", "7", "\u00b2", " ", "a\nb", "", "NaT", "2024-13-01",
                                         "2024-03-01 05:00", "2024-03-01T05:30:00+02:00"]),
                st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(lambda d: d.isoformat()))
plausible = st.fixed_dictionaries({"id": st.sampled_from(["s1", "s2", "new"]), "time": hours,
                                   **{c: st.one_of(st.floats(-1e3, 1e3), st.none()) for c in ("a", "b", "p")}})
records = st.builds(lambda rec, change, drop: {k: v for k, v in {**rec, **change}.items() if k != drop},
                    plausible, st.dictionaries(st.sampled_from(["id", "time", "a", "b", "p", "extra"]), odd, max_size=2),
                    st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["id", "time", "a", "p"])))


def json_line(rec) -> str:
    try:
        return json.dumps(rec)
    except (TypeError, ValueError):
        return "{}"


lines = st.one_of(records.map(json_line),
                  st.text(max_size=40),
                  st.binary(max_size=40),
                  st.lists(st.text(max_size=8), min_size=1, max_size=7).map(lambda f: ",".join(f)),
                  st.integers(1, 30).map(lambda d: "[" * d + "]" * d))


@FUZZ
@given(body=st.lists(lines, max_size=6), fmt=st.sampled_from(["auto", "ndjson", "csv"]),
       csv_first=st.booleans())
def test_no_line_stops_the_loop_or_breaks_the_state_or_the_output(setup, body, fmt, csv_first):
    df, model = setup
    stream = seeded(model, df)
    head = ["id,time,a,b,p"] if csv_first else []
    good = [good_line(1), "s2," + (T0 + HOUR).isoformat() + ",1,2,3"]
    counts, out, err = loop(stream, head + body + good, fmt)  # never raises
    assert counts["lines"] == len(head) + len(body) + 2
    assert counts["records"] + counts["rejected"] + counts["malformed"] <= counts["lines"]
    for line in out:
        strict_json(line)
    assert not any("Traceback" in e for e in err)
    assert_finite(stream)


@FUZZ
@given(batch=st.lists(st.one_of(records, st.integers(0, 3).map(lambda h: {
    "id": ["s1", "s2"][h % 2], "time": T0 + (1 + h // 2) * HOUR, "a": 1.0, "b": -1.0, "p": 0.0})), max_size=8))
def test_a_rejected_record_changes_nothing_and_the_rest_of_its_batch_applies(setup, batch):
    df, model = setup
    stream = seeded(model, df)
    report = stream.observe(batch)  # never raises for a list of records
    assert report.accepted + len(report.rejected) == len(batch)
    assert sorted(r.index for r in report.rejected) == [r.index for r in report.rejected]
    assert_finite(stream)
    rejected = {r.index for r in report.rejected}
    alone = seeded(model, df)
    again = alone.observe([rec for i, rec in enumerate(batch) if i not in rejected])
    assert again.accepted == report.accepted and not again.rejected
    assert alone.info().equals(stream.info())
    ids, state = stream.hidden_state()
    assert alone.hidden_state(ids)[1].equal(state)
