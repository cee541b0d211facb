"""Future covariates on the stream (issue 26, item 3): a record with the id, a future time and the
future covariate columns (no targets) is kept for the forecasts and for the steps it names, so a
model with future covariates streams from the command line as from Python; the replay reads them
from its table."""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import polars as pl
import pytest
import torch

from forecaster.data import TimeSeriesDataModule
from forecaster.evaluation import replay
from forecaster.nets import StepForecastNet
from forecaster.stream_cli import run_loop
from forecaster.streaming import StreamingForecaster

T0 = dt.datetime(2024, 3, 1)
HOUR = dt.timedelta(hours=1)
CONTEXT, HORIZON, LENGTH = 24, 4, 80


def frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for sid in ("a", "b"):
        price = rng.uniform(1, 3, size=LENGTH)
        for i in range(LENGTH):
            rows.append({"id": sid, "time": T0 + i * HOUR, "y": float(np.sin(i / 4) + price[i] + rng.normal() * 0.1),
                         "price": float(price[i])})
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def setup():
    df = frame()
    dm = TimeSeriesDataModule.from_frame(df, time_col="time", id_col="id", target_cols=["y"],
                                         future_covariate_cols=["price"], context_length=CONTEXT, horizon=HORIZON,
                                         val_size=8, test_size=8)
    torch.manual_seed(0)
    net = StepForecastNet(dm.n_targets, dm.n_past_covariates, dm.n_future_covariates, HORIZON, hidden_size=8,
                          d_model=8, head_hidden=16, backend="torch", context_length=CONTEXT, baseline="none")
    with torch.no_grad():
        net.head[-1].weight.normal_(0, 0.3)
    return df, dm, net.eval()


def ahead_records(df: pl.DataFrame, sid: str, after: dt.datetime, n: int = HORIZON) -> list[dict]:
    part = df.filter((pl.col("id") == sid) & (pl.col("time") > after)).sort("time").head(n)
    return [{"id": r["id"], "time": r["time"], "price": r["price"]} for r in part.to_dicts()]


def test_values_sent_ahead_give_the_forecast_an_explicit_future_gives(setup):
    df, dm, net = setup
    stream = StreamingForecaster(net, dm.spec)
    cut = T0 + 40 * HOUR
    stream.observe(df.filter(pl.col("time") <= cut))
    with pytest.raises(ValueError, match=r"series 'a' lacks their values for step\(s\) \[1, 2, 3, 4\]"):
        stream.forecast("a")
    future = df.filter((pl.col("time") > cut) & (pl.col("time") <= cut + HORIZON * HOUR))
    expected = stream.forecast(["a", "b"], future=future)
    report = stream.observe(ahead_records(df, "a", cut) + ahead_records(df, "b", cut))
    assert report.accepted == report.ahead == 2 * HORIZON and report.steps == 0 and not report.rejected
    assert stream.forecast(["a", "b"]).equals(expected)


def test_an_observation_without_its_future_covariate_uses_the_value_sent_ahead(setup):
    df, dm, net = setup
    cut = T0 + 40 * HOUR
    nxt = df.filter((pl.col("id") == "a") & (pl.col("time") == cut + HOUR)).to_dicts()
    with_value, sent_ahead = StreamingForecaster(net, dm.spec), StreamingForecaster(net, dm.spec)
    for s in (with_value, sent_ahead):
        s.observe(df.filter(pl.col("time") <= cut))
    with_value.observe(nxt)
    sent_ahead.observe(ahead_records(df, "a", cut, 2 * HORIZON))  # two horizons ahead: all kept
    sent_ahead.observe([{k: v for k, v in nxt[0].items() if k != "price"}])
    torch.testing.assert_close(sent_ahead.hidden_state("a")[1], with_value.hidden_state("a")[1], rtol=0, atol=0)
    assert sent_ahead.forecast("a").height == HORIZON  # the rest of the values sent ahead cover the next horizon


def test_values_ahead_that_cannot_be_kept_are_rejected_with_a_reason(setup):
    df, dm, net = setup
    stream = StreamingForecaster(net, dm.spec)
    cut = T0 + 40 * HOUR
    stream.observe(df.filter(pl.col("time") <= cut))
    report = stream.observe([{"id": "a", "time": cut, "price": 1.0},
                             {"id": "a", "time": cut + 3 * HORIZON * HOUR, "price": 1.0},
                             {"id": "a", "time": cut + HOUR + dt.timedelta(minutes=30), "price": 1.0},
                             {"id": "new", "time": cut + HOUR, "price": 1.0},
                             {"id": "a", "time": cut + HOUR, "price": "cheap"},
                             {"id": "a", "time": cut + HOUR, "price": None}])
    reasons = [r.reason for r in report.rejected]
    assert report.accepted == 0 and len(reasons) == 6
    for why, expected in zip(reasons, ["at or before the series' last time", "kept for the next 8 periods",
                                       "off the", "no observation yet", "not a number", "no value"]):
        assert expected in why, (expected, why)


def test_values_kept_ahead_survive_a_snapshot(setup, tmp_path):
    df, dm, net = setup
    stream = StreamingForecaster(net, dm.spec)
    cut = T0 + 40 * HOUR
    stream.observe(df.filter(pl.col("time") <= cut))
    stream.observe(ahead_records(df, "a", cut))
    stream.save_state(tmp_path / "s.pt")
    stream.close()
    restored = StreamingForecaster(net, dm.spec)
    restored.load_state(tmp_path / "s.pt")
    assert restored.forecast("a").equals(stream.forecast("a"))


def test_a_model_with_future_covariates_streams_from_the_command_line(setup):
    df, dm, net = setup
    cut = T0 + 40 * HOUR

    def line(r):
        return json.dumps({**r, "time": r["time"].isoformat()})

    history = [line(r) for r in df.filter((pl.col("time") <= cut) & (pl.col("id") == "a")).sort("time").to_dicts()]
    ahead = [line(r) for r in ahead_records(df, "a", cut + HOUR)]
    obs = line(df.filter((pl.col("id") == "a") & (pl.col("time") == cut + HOUR)).to_dicts()[0])
    out, err = io.StringIO(), io.StringIO()
    stream = StreamingForecaster(net, dm.spec)
    counts = run_loop(stream, history + ahead + [obs], out, err, "ndjson")
    assert counts["records"] == len(history) + len(ahead) + 1 and counts["rejected"] == 0
    forecasts = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(forecasts) == HORIZON and forecasts[0]["origin"] == (cut + HOUR).isoformat()
    assert sum("no forecast" in e for e in err.getvalue().splitlines()) == len(history)  # no values ahead then


def test_the_replay_reads_the_future_covariates_from_its_table(setup):
    df, dm, net = setup
    result = replay(StreamingForecaster(net, dm.spec), df, {"val_size": 8, "test_size": 8})
    assert result.overall["forecasts_scored"] > 0 and result.overall["rejected"] == 0
