"""forecaster.evaluation.replay: the online errors it reports equal a hand computation from the raw
table (forecast before each observation; actuals, seasonal naive and last value looked up by time)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from forecaster.data import TimeSeriesDataModule
from forecaster.evaluation import replay
from forecaster.nets import StepForecastNet, WindowNet
from forecaster.streaming import StreamingForecaster

T0 = dt.datetime(2024, 5, 1)
N, CTX, H, STEPS = 120, 24, 6, 8


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    rows = []
    for k, sid in enumerate(("a", "b")):
        for i in range(N):
            rows.append({"sid": sid, "t": T0 + dt.timedelta(hours=i),
                         "y": float(np.sin(2 * np.pi * i / 24) * 5 + 20 * k + rng.normal()),
                         "x": float(rng.normal())})
    df = pl.DataFrame(rows)
    test_start = T0 + dt.timedelta(hours=N - 24)  # test_size=24 steps
    # a null actual in the test part (skipped when scored, and a missing input for later forecasts)
    df = df.with_columns(pl.when((pl.col("sid") == "a") & (pl.col("t") == test_start + dt.timedelta(hours=3)))
                         .then(None).otherwise(pl.col("y")).alias("y"))
    dm = TimeSeriesDataModule(data=df, time_col="t", id_col="sid", target_cols=["y"], past_covariate_cols=["x"],
                              context_length=CTX, horizon=H, val_size=24, test_size=24)
    torch.manual_seed(0)
    net = StepForecastNet(1, 1, dm.n_future_covariates, H, hidden_size=8, d_model=8, head_hidden=16,
                          quantiles=[0.1, 0.5, 0.9], backend="torch")
    return df, dm, net, test_start


def test_replay_mae_equals_a_hand_computation(setup):
    df, dm, net, test_start = setup
    result = replay(StreamingForecaster(net, dm.spec), df, {"val_size": 24, "test_size": 24}, max_steps=STEPS)

    # by hand: forecast before each of the first STEPS test hours, then observe that hour
    stream = StreamingForecaster(net, dm.spec)
    stream.observe(df.filter(pl.col("t") < test_start))
    forecasts = []
    for i in range(STEPS):
        t = test_start + dt.timedelta(hours=i)
        forecasts.append(stream.forecast())
        stream.observe(df.filter(pl.col("t") == t).to_dicts())
    fc = pl.concat(forecasts)
    raw = {(r["sid"], r["t"]): r["y"] for r in df.to_dicts()}
    rows = []
    for r in fc.iter_rows(named=True):
        actual = raw.get((r["series"], r["time"]))
        if actual is None:
            continue
        naive = raw[(r["series"], r["time"] - dt.timedelta(hours=24))]  # step <= 6 < 24: one day back
        k, last = r["origin"], None
        while last is None:
            last, k = raw.get((r["series"], k)), k - dt.timedelta(hours=1)
        rows.append((r["step"], abs(r["value"] - actual), abs(naive - actual), abs(last - actual)))
    by_hand = np.array(rows)
    # every (forecast, step) of both series but the null hour of "a", a target of the forecasts made
    # at the first four test hours
    assert len(rows) == result.errors.height == 2 * STEPS * H - 4
    o = result.overall
    assert o["mae"] == pytest.approx(by_hand[:, 1].mean(), rel=1e-5)
    assert o["mae_seasonal_naive"] == pytest.approx(by_hand[:, 2].mean(), rel=1e-5)
    assert o["mae_last_value"] == pytest.approx(by_hand[:, 3].mean(), rel=1e-5)
    assert o["timestamps"] == STEPS and o["forecasts_scored"] == len(rows)
    for step in range(1, H + 1):
        sel = by_hand[by_hand[:, 0] == step]
        got = result.by_step.filter(pl.col("step") == step).row(0, named=True)
        assert got["mae"] == pytest.approx(sel[:, 1].mean(), rel=1e-5) and got["n"] == len(sel)
    assert result.over_time["n"].sum() == len(rows)


def test_replay_of_an_empty_test_part_is_a_clear_error(setup):
    df, dm, net, _ = setup
    with pytest.raises(ValueError, match="made no forecast: the test part is empty"):
        replay(StreamingForecaster(net, dm.spec), df, {"val_size": 24, "test_size": 0})


def test_compare_window_scores_the_zero_state_window_beside_the_stream(setup):
    """For the window model the stream is the window re-run, so both columns agree to rounding; for
    the per-step model (a state carried over all the history) they are scored side by side."""
    from forecaster.lightning_module import GRUForecaster

    df, dm, net, _ = setup
    split = {"val_size": 24, "test_size": 24}
    torch.manual_seed(0)
    window = GRUForecaster.from_datamodule(dm,
                                           net=WindowNet(decoder="last",
                                                         hidden_size=8, d_model=8, head_hidden=16)).eval()
    with torch.no_grad():
        for member in getattr(window.net, "members", [window.net]):
            member.head[-1].weight.normal_(0, 0.3)
    r = replay(StreamingForecaster(window.net, dm.spec), df, split, max_steps=STEPS, compare_window=True)
    np.testing.assert_allclose(r.errors["forecast"], r.errors["window"], rtol=1e-4, atol=1e-4)
    step = replay(StreamingForecaster(net, dm.spec), df, split, max_steps=STEPS, compare_window=True)
    assert {"mae", "mae_window"} <= set(step.overall) and "mae_window" in step.by_step.columns
    assert not np.allclose(step.errors["forecast"], step.errors["window"])  # 96 steps of history > context 24
    # the per-step model running its window at each forecast (history="window") is the window's forecast
    rerun = replay(StreamingForecaster(net, dm.spec, history="window"), df, split, max_steps=STEPS, compare_window=True)
    np.testing.assert_allclose(rerun.errors["forecast"], rerun.errors["window"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rerun.errors["forecast"], step.errors["window"], rtol=1e-4, atol=1e-4)
