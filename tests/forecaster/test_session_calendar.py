"""Business hours: the session frequency ('5m@Mon-Fri 09:00-17:00'), whose closed hours and days are
no steps at all; the hint that suggests it for sparse sub-daily data; context_length='auto', which
covers a season longer than the default look-back; the seasonal naive when the season is longer
than the context."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.data import TimeSeriesDataModule
from forecaster.data.build import AUTO_CONTEXT, auto_context
from forecaster.lightning_module import GRUForecaster
from forecaster.metrics import seasonal_naive_forecast
from forecaster.nets import StepNet
from forecaster.streaming import StreamingForecaster
from forecaster.timeaxis import Frequency

SESSION = "30m@Mon-Fri 09:00-17:00"  # 16 steps a day


def ns(text: str) -> int:
    return int(np.datetime64(text, "ns").astype(np.int64))


def business_hours(weeks: int = 6, step_min: int = 30, ids=("a", "b")) -> pl.DataFrame:
    """Records only inside 09:00-17:00 on weekdays; one holiday (a Wednesday) without records."""
    rows, rng = [], np.random.default_rng(0)
    holiday = dt.date(2024, 6, 12)
    for k, sid in enumerate(ids):
        for d in range(weeks * 7):
            day = dt.date(2024, 6, 3) + dt.timedelta(days=d)
            if day.weekday() >= 5 or day == holiday:
                continue
            for j in range(8 * 60 // step_min):
                t = dt.datetime.combine(day, dt.time(9)) + dt.timedelta(minutes=step_min * j)
                rows.append({"id": sid, "t": t, "y": 10.0 * (k + 1) + 5 * np.sin(np.pi * j / 16) + rng.normal(0, .3)})
    return pl.DataFrame(rows)


def test_parse_names_and_round_trip():
    f = Frequency.parse(SESSION)
    assert f.kind == "session" and f.slots_per_day == 16 and f.default_season_length() == 16
    assert str(f) == SESSION and Frequency.parse(str(f)) == f
    assert f.session == (9 * 3600 * 10**9, 17 * 3600 * 10**9, "1111100")
    for text, canon in [("1h@08:00-18:00", "1h@08:00-18:00"), ("15m@sun-thu 08:00-16:30", "15m@Sun-Thu 08:00-16:30"),
                        ("1h@Mon,Wed,Fri 00:00-24:00", "1h@Mon,Wed,Fri 00:00-24:00"),
                        ("10m@Sat-Mon 10:00-12:00", "10m@Sat-Mon 10:00-12:00"),
                        ("1h@Tue 09:00-10:00", "1h@Tue 09:00-10:00")]:
        assert str(Frequency.parse(text)) == canon
    assert Frequency.parse("1h@Tue 09:00-10:00").default_season_length() == 1  # one step a day, one open day
    assert Frequency.parse("1h@Mon-Fri 09:00-10:00").default_season_length() == 5  # a week of one-step days
    # a week of business hours on the axis: 7 days / (5 days * 16 steps)
    assert f.nominal_ns == 7 * 86_400 * 10**9 // 80


@pytest.mark.parametrize("text,why", [
    ("5m@17:00-09:00", "across midnight"), ("7m@09:00-17:00", "does not divide"),
    ("5m@Mon-Fry 09:00-17:00", "'Fry' is not a weekday"), ("1mo@09:00-17:00", "under a day"),
    ("5m@9-17", "STEP@"), ("5m@09:00-25:00", "not a time of day"), ("1d@09:00-17:00", "under a day"),
])
def test_bad_sessions_are_one_line_errors(text, why):
    with pytest.raises(ValueError, match=why):
        Frequency.parse(text)
    with pytest.raises(ValueError, match="is integer"):
        Frequency.parse(SESSION, "int")


def test_grid_skips_nights_weekends_and_rounds_down():
    f = Frequency.parse(SESSION)
    fri = ns("2024-07-05T16:00")
    t = f.time(fri, np.arange(-1, 4))
    assert [str(np.datetime64(int(x), "ns"))[:16] for x in t] == [
        "2024-07-05T15:30", "2024-07-05T16:00", "2024-07-05T16:30", "2024-07-08T09:00", "2024-07-08T09:30"]
    k, on = f.index(fri, t)
    assert k.tolist() == [-1, 0, 1, 2, 3] and on.all()
    # closed times round down to the last open step before them, and are off the grid
    off = [ns("2024-07-05T17:00"), ns("2024-07-06T12:00"), ns("2024-07-08T08:59"), ns("2024-07-08T09:10")]
    k, on = f.index(fri, np.array(off))
    assert k.tolist() == [1, 1, 1, 2] and not on.any()


@settings(max_examples=200, deadline=None)
@given(o=st.integers(0, 3000), k=st.integers(-5000, 5000), mask=st.integers(1, 127),
       open_h=st.integers(0, 12), hours=st.integers(1, 11))
def test_time_and_index_are_inverse(o, k, mask, open_h, hours):
    days = ",".join(d for i, d in enumerate(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]) if mask >> i & 1)
    f = Frequency.parse(f"1h@{days} {open_h:02d}:00-{open_h + hours:02d}:00")
    origin = int(f.time(ns("2024-01-01T00:00"), o))  # a grid time
    t = f.time(origin, np.array([k, k + 1]))
    kk, on = f.index(origin, t)
    assert kk.tolist() == [k, k + 1] and on.all() and t[1] > t[0]
    assert f.index(origin, t[0] + 1)[0] == k  # a nanosecond later: the same step, off the grid


def test_fit_on_business_hours_has_no_missing_steps_and_a_day_season():
    df = business_hours()
    dm = TimeSeriesDataModule(data=df, time_col="t", id_col="id", target_cols=["y"], freq=SESSION,
                              context_length=32, horizon=8)
    assert dm.season_length == 16
    info = dm.summary()
    assert "5m" not in info and SESSION in info
    n_grid = int(dm._grid.lengths.sum())
    assert n_grid == df.height + 2 * 16  # the holiday is the only missing day: 16 steps per series
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    stream = StreamingForecaster(model.net, model.spec)
    last = df.filter(pl.col("id") == "a")["t"].max()  # a Friday 16:30
    assert last.weekday() == 4 and last.time() == dt.time(16, 30)
    report = stream.observe([
        {"id": "a", "t": "2024-07-13T10:00", "y": 1.0},   # a Saturday
        {"id": "a", "t": "2024-07-15T08:30", "y": 1.0},   # before opening
        {"id": "a", "t": "2024-07-15T09:00", "y": 1.0},   # the next open step after Friday 16:30
    ])
    assert [r.index for r in report.rejected] == [0, 1] and report.accepted == 1
    assert "grid" in report.rejected[0].reason
    fc = stream.forecast("a")
    times = fc["time"].to_list()
    assert times[0] == dt.datetime(2024, 7, 15, 9, 30) and times[-1] == dt.datetime(2024, 7, 15, 13, 0)


def test_sparse_sub_daily_data_suggest_the_session():
    df = business_hours(weeks=4, ids=("a",))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        dm = TimeSeriesDataModule(data=df, time_col="t", target_cols=["y"], context_length=32, horizon=8)
        dm.spec
    text = " ".join(str(x.message) for x in w)
    assert "freq='30m@Mon-Fri 09:00-17:00'" in text and "business hours" in text


def test_zoned_times_refuse_a_session():
    df = business_hours(weeks=2, ids=("a",)).with_columns(pl.col("t").dt.replace_time_zone("UTC"))
    with pytest.raises(ValueError, match="wall-clock"):
        TimeSeriesDataModule(data=df, time_col="t", target_cols=["y"], freq=SESSION, context_length=16,
                             horizon=4).spec


def test_auto_context_covers_a_long_season():
    assert auto_context(24, 24) == AUTO_CONTEXT == 72
    assert auto_context(48, 48) == 72            # a season shorter than the default look-back
    assert auto_context(288, 12) == 300          # a day of 5-minute data and the horizon
    assert auto_context(1440, 60) == 72          # beyond MAX_AUTO_CONTEXT: the default
    start = dt.datetime(2024, 1, 1)
    n = 288 * 4
    df = pl.DataFrame({"t": pl.datetime_range(start, start + dt.timedelta(minutes=5 * (n - 1)), "5m", eager=True),
                       "y": np.sin(np.arange(n) * 2 * np.pi / 288)})
    dm = TimeSeriesDataModule(data=df, time_col="t", target_cols=["y"], context_length="auto", horizon=12,
                              calendar_features="none")
    assert dm.season_length == 288 and dm.context_length == 300 and dm.spec.context_length == 300
    assert "context_length" not in dm.hparams  # the model records the resolved steps
    assert TimeSeriesDataModule(data=df, time_col="t", target_cols=["y"], context_length=50,
                                horizon=12).context_length == 50
    with pytest.raises(ValueError, match="'auto'"):
        TimeSeriesDataModule(data=df, time_col="t", target_cols=["y"], context_length="long", horizon=12)


def test_seasonal_naive_with_a_season_longer_than_the_context_is_the_last_value():
    ctx = torch.arange(10, dtype=torch.float32).view(1, 10, 1)
    obs = torch.ones_like(ctx)
    obs[0, -1] = 0  # the last step missing: the last observed value is 8
    out = seasonal_naive_forecast(ctx, 3, 24, obs)
    assert out.shape == (1, 3, 1) and out.flatten().tolist() == [8.0, 8.0, 8.0]
    assert seasonal_naive_forecast(ctx, 3, 24).flatten().tolist() == [9.0, 9.0, 9.0]
    assert seasonal_naive_forecast(ctx, 3, 4).flatten().tolist() == [6.0, 7.0, 8.0]  # unchanged within the context
