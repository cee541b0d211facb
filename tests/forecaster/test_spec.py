"""The one time axis and the data spec: the time rule (zone-aware -> UTC, naive as given), frequency
grid arithmetic, the spec's JSON round trip, and a zone-aware table (with a DST change) that trains,
predicts and streams on one axis."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import numpy as np
import polars as pl
import pytest
import torch

from forecaster.baseline import HISTORY_SLOTS, blend_knots
from forecaster.data import TimeSeriesDataModule
from forecaster.lightning_module import GRUForecaster
from forecaster.nets import StepNet
from forecaster.spec import DataSpec
from forecaster.streaming import StreamingForecaster
from forecaster.timeaxis import Frequency, to_axis

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def ns(iso: str) -> int:
    return int(np.datetime64(iso, "ns").astype(np.int64))


# ---- the time rule ----

def test_aware_values_of_every_kind_land_on_the_same_utc_instant():
    instant = ns("2024-03-31T10:00")  # 12:00 in Berlin (CEST, +02:00)
    aware = dt.datetime(2024, 3, 31, 12, tzinfo=BERLIN)
    forms = [
        ["2024-03-31T12:00+02:00"], ["2024-03-31T10:00Z"], [aware], [aware.astimezone(dt.timezone.utc)],
        pl.Series([aware]), pl.Series([aware]).dt.convert_time_zone("America/New_York"),
    ]
    for values in forms:
        t, null, zoned = to_axis(values, "datetime")
        assert t.tolist() == [instant] and not null.any() and zoned, values


def test_naive_values_are_taken_as_given():
    t, null, zoned = to_axis(["2024-03-31 12:00", None], "datetime")
    assert t[0] == ns("2024-03-31T12:00") and null.tolist() == [False, True] and not zoned
    t, _, _ = to_axis([dt.datetime(2024, 3, 31, 12), dt.date(2024, 3, 31)], "datetime")
    assert t.tolist() == [ns("2024-03-31T12:00"), ns("2024-03-31T00:00")]


def test_unreadable_times_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"'Jan 1 2000' is not an ISO datetime; set time_format"):
        to_axis(["Jan 1 2000"], "datetime")
    t, _, _ = to_axis(["Jan 1 2000", "Feb 29 2000"], "datetime", "%b %d %Y")
    assert t.tolist() == [ns("2000-01-01"), ns("2000-02-29")]
    with pytest.raises(ValueError, match=r"value 'nope' could not be parsed"):
        to_axis(["2000-01-01", "nope"], "datetime")
    _, null, _ = to_axis(["2000-01-01", "nope"], "datetime", strict=False)
    assert null.tolist() == [False, True]
    with pytest.raises(ValueError, match="holds integers, but the time axis is datetime"):
        to_axis([1, 2], "datetime")
    with pytest.raises(ValueError, match="2.5 is not an integer"):
        to_axis([1.0, 2.5], "int")


def _both_readers(monkeypatch, values, kind="datetime", strict=True):
    """to_axis(values) as read in plain Python and forced through Polars: (result, expected), each
    ("ok", t, null, zoned) or ("error", message)."""
    import forecaster.timeaxis as timeaxis

    def run():
        try:
            t, null, zoned = to_axis(values, kind, strict=strict)
            return "ok", t.tolist(), null.tolist(), zoned
        except ValueError as e:
            return "error", str(e)

    result = run()
    with monkeypatch.context() as m:
        m.setattr(timeaxis, "_read_python", lambda *a: None)
        expected = run()
    return result, expected


SHORT_LIST_VALUES = [
    "2024-03-31T12:00+02:00", "2024-03-31T10:00Z", "2024-03-31 10:00", "2024-03-31", "2024-03-31T10:00:00.123456",
    "2500-01-01", "0001-01-01", "nope", dt.datetime(2024, 3, 31, 12, tzinfo=BERLIN), dt.datetime(1960, 1, 1, 0, 0, 0, 5),
    dt.datetime(2500, 1, 1), dt.date(1950, 5, 5), dt.date(1000, 1, 1), None]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_short_lists_follow_the_same_rule_as_polars(monkeypatch, strict):
    """A few Python values (a stream's record) are read in plain Python (a Polars call costs about a
    millisecond); the result must be the Polars reader's, value by value and for every pair (a date
    is naive: beside an aware time it is a mix, as in a longer list)."""
    cases = [[v] for v in SHORT_LIST_VALUES] + [[a, b] for a in SHORT_LIST_VALUES for b in SHORT_LIST_VALUES]
    for values in cases:
        result, expected = _both_readers(monkeypatch, values, strict=strict)
        assert result == expected, values
    for values in ([3, None], [3, 2.5], [-(2 ** 40)]):
        result, expected = _both_readers(monkeypatch, values, "int", strict=strict)
        assert result == expected, values


def test_times_outside_the_nanosecond_range_are_errors_not_wrapped():
    for values in (["2500-01-01"], pl.Series(["0001-01-01"]), [dt.datetime(2500, 1, 1)]):
        with pytest.raises(ValueError, match="outside the years 1677-2262"):
            to_axis(values, "datetime")
        t, null, _ = to_axis(values, "datetime", strict=False)
        assert null.tolist() == [True]


# ---- frequencies ----

@pytest.mark.parametrize("freq,kind,step,text", [
    ("1h", "fixed", 3_600_000_000_000, "1h"), ("30m", "fixed", 1_800_000_000_000, "30m"),
    ("1mo", "month", 1, "1mo"), ("3mo", "month", 3, "1q"), ("1q", "month", 3, "1q"), ("1y", "month", 12, "1y"),
    ("1bd", "bday", 1, "1bd"), ("1w", "fixed", 7 * 86_400_000_000_000, "1w"),
])
def test_frequency_strings(freq, kind, step, text):
    f = Frequency.parse(freq)
    assert (f.kind, f.step, str(f)) == (kind, step, text)


def test_ambiguous_or_bad_frequencies_are_errors_naming_the_fix():
    with pytest.raises(ValueError, match=r"freq='1M'.*for months write '1mo', for minutes '1m'"):
        Frequency.parse("1M")
    with pytest.raises(ValueError, match="could not parse"):
        Frequency.parse("hourly")
    with pytest.raises(ValueError, match="integer step but the time column holds datetimes"):
        Frequency.parse(3)
    with pytest.raises(ValueError, match="is a duration but the time column is integer"):
        Frequency.parse("1h", "int")


def test_month_end_and_business_day_grids():
    f = Frequency.parse("1mo", month_end=True)
    origin = ns("2023-12-31")
    times = f.time(origin, np.arange(4))
    assert times.tolist() == [ns("2023-12-31"), ns("2024-01-31"), ns("2024-02-29"), ns("2024-03-31")]
    k, on = f.index(origin, np.array([ns("2024-02-29"), ns("2024-02-28")]))
    assert k.tolist() == [2, 1] and on.tolist() == [True, False]
    b = Frequency.parse("1bd")
    fri = ns("2024-01-05T09:30")
    assert b.time(fri, np.arange(3)).tolist() == [fri, ns("2024-01-08T09:30"), ns("2024-01-09T09:30")]
    k, on = b.index(fri, np.array([ns("2024-01-08T09:30"), ns("2024-01-06T09:30")]))
    assert k[0] == 1 and on.tolist() == [True, False]


# ---- the spec ----

def test_spec_round_trips_through_json_and_reads_version_1():
    df = pl.DataFrame({"t": pl.datetime_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3), "1h", eager=True)})
    df = df.with_columns(pl.int_range(pl.len()).cast(pl.Float64).alias("y"))
    dm = TimeSeriesDataModule(data=df, time_col="t", target_cols=["y"], context_length=8, horizon=4)
    d = json.loads(json.dumps(dm.spec.to_dict()))
    again = DataSpec.from_dict(d)
    assert again.to_dict() == d and str(again.freq) == "1h"
    v1 = {k: v for k, v in d.items() if k not in ("time_zone", "time_format", "month_end")}
    v1.update(version=1, freq_step=3_600_000_000_000)
    assert DataSpec.from_dict(v1).to_dict()["scalers"] == d["scalers"]
    with pytest.raises(ValueError, match="version 99"):
        DataSpec.from_dict({**d, "version": 99})
    # version 2 (before the baseline's drift): [w_s K, w_l K, mu] reads as the same blend with w_d = w_a = 0;
    # version 3 (before its seasonal adjustment): [w_s K, w_l K, w_d, mu] with w_a = 0; version 4 (before the
    # level): [w_s K, w_l K, w_d, w_a, mu] with alpha = q = 0, the plain mean of the whole look-back it had;
    # version 5 (before the history profile): [w_s K, w_l K, w_d, w_a, alpha, q, mu] with r = s = 0 and no profile
    K = len(blend_knots(4))
    assert dm.spec.baseline.shape == (1, 1, 2 * K + 5 + HISTORY_SLOTS)
    assert (dm.spec.baseline[..., 2 * K + 3] == 1.0).all()  # a new fit's level: over the whole seasons
    for version, keep in ((2, [*range(2 * K), -1]), (3, [*range(2 * K + 1), -1]), (4, [*range(2 * K + 2), -1]),
                          (5, [*range(2 * K + 4), -1])):
        older = {**d, "version": version, "baseline": {s: {c: [w[j] for j in keep] for c, w in per.items()}
                                                       for s, per in d["baseline"].items()}}
        old = DataSpec.from_dict(older).baseline
        assert old.shape == dm.spec.baseline.shape
        np.testing.assert_array_equal(old[..., keep], dm.spec.baseline[..., keep])
        assert (old[..., 2 * K + 4:-1] == 0.0).all()  # no history profile
        assert version == 5 or (old[..., 2 * K + 2:2 * K + 4] == 0.0).all()
        assert (version >= 4 or (old[..., 2 * K + 1] == 0.0).all()) and (version >= 3 or (old[..., 2 * K] == 0.0).all())
    # the blends are read from a file: a weight that is not a finite number is refused in one line, and so is
    # a level the baseline does not compute
    for j, bad, match in [(2 * K + 1, float("nan"), "finite"), (2 * K + 1, float("inf"), "finite"),
                          (2 * K + 1, 1e300, "finite"), (2 * K + 2, 1.0, "alpha in"), (2 * K + 2, -0.1, "alpha in"),
                          (2 * K + 3, 0.5, "q 0 or 1"), (2 * K + 4, 1.5, "r in"), (2 * K + 4, -0.5, "r in"),
                          (2 * K + 5, 0.5, "s 0 or 1"), (2 * K + 6, float("nan"), "finite")]:
        broken = json.loads(json.dumps(d))
        sid = next(iter(broken["baseline"]))
        broken["baseline"][sid]["y"][j] = bad
        with pytest.raises(ValueError, match=match):
            DataSpec.from_dict(broken)


# ---- a zone-aware table with a DST change: one axis for training, prediction and streaming ----

def berlin_frame(n=96) -> pl.DataFrame:
    """Hourly readings of two meters around the Berlin spring-forward night (2024-03-31), with
    zone-aware local times: the wall clock jumps from 01:00 to 03:00, the UTC grid is regular."""
    start = dt.datetime(2024, 3, 29, 0, tzinfo=dt.timezone.utc)
    utc = pl.datetime_range(start, start + dt.timedelta(hours=n - 1), "1h", eager=True, time_zone="UTC")
    rng = np.random.default_rng(0)
    frames = []
    for k, sid in enumerate(("m1", "m2")):
        frames.append(pl.DataFrame({
            "meter": [sid] * n, "time": utc.dt.convert_time_zone("Europe/Berlin"),
            "load": np.sin(np.arange(n) / 5 + k) * 3 + 10 + rng.normal(size=n) * 0.1,
        }))
    return pl.concat(frames)


def test_zone_aware_table_trains_predicts_and_streams_on_one_axis():
    df = berlin_frame()
    dm = TimeSeriesDataModule(data=df, time_col="time", id_col="meter", target_cols=["load"],
                              context_length=24, horizon=6, batch_size=8)
    spec = dm.spec
    assert spec.time_zone == "UTC" and str(spec.freq) == "1h"  # no DST gap on the UTC grid
    assert spec.series_length.tolist() == [96, 96]
    assert dm.timestamps_for(0, 0, 1).dtype == pl.Datetime("ns", "UTC")
    torch.manual_seed(0)
    model = GRUForecaster.from_datamodule(dm, min_origin=2,
                                          net=StepNet(hidden_size=8, d_model=8, head_hidden=16)).eval()

    # predict from the checkpoint's spec on the table's first 60 hours
    cut = df.sort("time").group_by("meter", maintain_order=True).head(60)
    fc = model.forecast_frame(TimeSeriesDataModule.from_spec(model.spec, data=cut))
    assert fc.schema["origin"] == pl.Datetime("ns", "UTC")
    last = cut["time"].max().astimezone(dt.timezone.utc)
    assert fc["origin"].unique().to_list() == [last]
    assert fc.filter(pl.col("step") == 1)["time"].unique().to_list() == [last + dt.timedelta(hours=1)]

    # the same history streamed as ISO strings with offsets (spanning the DST change), as aware
    # datetimes and as the zoned frame: no gap steps, the same state, the forecast of predict
    recs = cut.sort("time", "meter").to_dicts()
    as_text = [{**r, "time": r["time"].isoformat()} for r in recs]
    as_local = [{**r, "time": r["time"].astimezone(BERLIN)} for r in recs]
    streams = [StreamingForecaster(model.net, model.data_spec) for _ in range(3)]
    for stream, data in zip(streams, (as_text, as_local, cut.sort("time", "meter"))):
        report = stream.observe(data)
        assert report.accepted == len(recs) and report.steps == len(recs) and not report.rejected
    for other in streams[1:]:
        torch.testing.assert_close(other.hidden_state()[1], streams[0].hidden_state()[1], rtol=0, atol=0)
    result = streams[0].forecast()
    joined = result.join(fc, on=["series", "time", "target"], suffix="_predict")
    assert joined.height == fc.height
    np.testing.assert_allclose(joined["value"], joined["value_predict"], rtol=1e-4, atol=1e-4)
    assert (joined["origin"] == joined["origin_predict"]).all()

    # 12:00+02:00 after 09:00Z is the next hour (10:00 UTC), not two hours ahead
    s = StreamingForecaster(model.net, model.data_spec)
    s.observe([{"meter": "m1", "time": "2024-04-02T09:00Z", "load": 10.0}])
    report = s.observe([{"meter": "m1", "time": "2024-04-02T12:00+02:00", "load": 10.0}])
    assert report.steps == 1 and not report.rejected
    assert s.info()["last_time"].to_list() == [dt.datetime(2024, 4, 2, 10, tzinfo=dt.timezone.utc)]


def test_an_unknown_series_gets_the_majoritys_seasonal_adjustment():
    """A series the spec does not know gets the median blend of the known ones; the seasonal
    adjustment is 0 or 1, so it is the majority's (a tie: not adjusted), never a half."""
    df = pl.DataFrame({"t": [dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(60)] * 2,
                       "id": ["s1"] * 60 + ["s2"] * 60, "y": [float(i % 7) for i in range(120)]})
    dm = TimeSeriesDataModule(data=df, time_col="t", id_col="id", target_cols=["y"], context_length=8, horizon=4)
    spec = dm.spec
    wa = 2 * len(blend_knots(4)) + 1
    for adjusted, expected in (([0.0, 1.0], 0.0), ([1.0, 1.0], 1.0), ([0.0, 0.0], 0.0)):
        spec.baseline[:, 0, wa] = adjusted
        assert spec.baseline_for(["new"])[0, 0, wa] == expected
