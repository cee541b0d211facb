"""The naive baseline every model starts from: hand computations, the fitted blend, and untrained
models (every decoder, point and quantile) that forecast it exactly."""

from __future__ import annotations

import datetime as dt

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch

from forecaster.baseline import (BASELINES, DRIFT_PRIOR, HISTORY_SLOTS, NO_AGE, baseline_forecast, baseline_from_summary,
                                 baseline_params, blend_knots, blend_weights, fit_blend, fit_panel_blends, rotate_history,
                                 season_width, summary_width, trend_cap, with_first)
from forecaster.choice import CANDIDATES, MIN_WINDOWS, BaselineChoice
from forecaster.data import TimeSeriesDataModule
from forecaster.lightning_module import GRUForecaster
from forecaster.nets import StepNet
from tests.forecaster.netopts import with_net


def test_baseline_by_hand():
    # one series, one target, context y = 1..6 (t = 0..5), season 3, horizon 4
    y = torch.arange(1.0, 7.0).view(1, 6, 1)
    o = torch.ones_like(y)
    params = torch.tensor([[[0.5, 0.3, 2.0]]])  # w_season, w_last, training mean (the empty-window fallback)
    result = baseline_forecast(y, o, params, horizon=4, season_length=3, context_length=6)
    seasonal = torch.tensor([4.0, 5.0, 6.0, 4.0])  # y[t + k - 3 ceil(k / 3)] from t = 5
    expected = 0.5 * seasonal + 0.3 * 6.0 + 0.2 * 3.5  # the look-back's mean: (1 + ... + 6) / 6
    torch.testing.assert_close(result[0, :, 0], expected)
    # an unobserved seasonal value falls back to the last value, and leaves the mean
    o2 = o.clone()
    o2[0, 4, 0] = 0.0  # t = 4 (value 5) missing: the seasonal value of k = 2
    result = baseline_forecast(y * o2, o2, params, 4, 3, 6)
    torch.testing.assert_close(result[0, 1, 0], torch.tensor(0.5 * 6.0 + 0.3 * 6.0 + 0.2 * 16.0 / 5))
    # no observation at all: the training mean
    none = baseline_forecast(torch.zeros_like(y), torch.zeros_like(o), params, 4, 3, 6)
    torch.testing.assert_close(none[0, :, 0], torch.full((4,), 2.0))
    # the mean covers the look-back only: context 4 of the 6 steps
    short_mean = baseline_forecast(y, o, torch.tensor([[[0.0, 0.0, 2.0]]]), 1, 3, 4)
    torch.testing.assert_close(short_mean[0, 0, 0], torch.tensor(4.5))
    # a look-back shorter than the season: the lag is outside the window -> the last value
    short = baseline_forecast(y[:, -2:], o[:, -2:], torch.tensor([[[1.0, 0.0, 0.0]]]), 1, 3, 2)
    torch.testing.assert_close(short[0, :, 0], torch.tensor([6.0]))
    # every origin of a window (forking): origin t sees steps 0..t only
    every = baseline_forecast(y, o, torch.tensor([[[0.0, 1.0, 0.0]]]), 2, 3, 6, origins=6)
    torch.testing.assert_close(every[0, :, 0, 0], torch.arange(1.0, 7.0))
    means = baseline_forecast(y, o, torch.tensor([[[0.0, 0.0, 0.0]]]), 1, 3, 3, origins=6)
    torch.testing.assert_close(means[0, :, 0, 0], torch.tensor([1.0, 1.5, 2.0, 3.0, 4.0, 5.0]))


@pytest.mark.parametrize("kind,expected", [("seasonal", (1.0, 0.0)), ("walk", (0.0, 1.0)), ("noise", (0.0, 0.0))])
def test_fitted_blend_finds_the_naive_that_fits(kind, expected):
    rng = np.random.default_rng(0)
    n, m = 2000, 12
    if kind == "seasonal":
        y = np.tile(rng.normal(size=m), n // m + 1)[:n]
    elif kind == "walk":
        y = np.cumsum(rng.normal(size=n))
    else:
        y = rng.normal(size=n)
    y = (y - y.mean()) / y.std()
    w = fit_blend(y[:, None], np.ones((n, 1), bool), horizon=6, season_length=m, context_length=48)
    K = len(blend_knots(6))
    # knots at steps 1, 2, 4, 6; drift; adjustment; alpha, q; the history profile (r, s, 2F coefficients); mu
    assert K == 4 and w.shape == (1, 2 * K + 5 + HISTORY_SLOTS)
    assert w[0, -1] == pytest.approx(0.0, abs=1e-9)  # the mean of z-scored training values
    if kind == "seasonal" and w[0, 2 * K + 1] == 1.0:
        # seasonally adjusted: the last value moved by the look-back's profile repeats the season as well
        win = torch.tensor(y[-48:]).view(1, 48, 1)
        f = baseline_forecast(win, torch.ones_like(win), torch.tensor(w[None]), 6, m, 48)[0, :, 0]
        np.testing.assert_allclose(f.numpy(), y[np.arange(n - m, n - m + 6)], atol=1e-9)
        return
    assert w[0, 2 * K + 1] == 0.0
    np.testing.assert_allclose(w[0, :K], expected[0], atol=0.1)
    np.testing.assert_allclose(w[0, K:2 * K], expected[1], atol=0.1)


def test_blend_weights_follow_the_step():
    """A daily cycle on a persistent AR(1): the last value wins one step ahead, the level a day
    ahead, both seasonally adjusted by the profile the whole training part shows (the cycle is the
    same every day: the seasonal naive's noise would not help); weights in between are interpolated
    in log(step)."""
    n, m = 4000, 24
    rng = np.random.default_rng(0)
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = 0.9 * ar[i - 1] + rng.normal() * 0.45
    y = np.sin(2 * np.pi * np.arange(n) / m) + ar
    w = fit_blend(((y - y.mean()) / y.std())[:, None], np.ones((n, 1), bool), 24, m, 168)
    ws, wl, _ = blend_weights(torch.tensor(w[None]), 24)
    assert wl[0, 0, 0] > 0.5 and wl[0, 0, -1] < 0.2  # step 1: mostly last; step 24: hardly
    knots = blend_knots(24)
    K = len(knots)
    assert w[0, 2 * K + 1] == 1.0 and w[0, 2 * K + 4] > 0  # adjusted, with the whole training part's profile
    assert (ws < 0.05).all()  # not the season one day back: the mean at step k's phase
    np.testing.assert_allclose(ws[0, 0, knots - 1].numpy(), w[0, :len(knots)])  # exact at the knots


def test_trend_cap_is_the_straight_line_through_the_level_and_the_last_value():
    # no season: k steps on from the last value, whose window mean lies (T - 1) / 2 = 4 steps back
    np.testing.assert_allclose(trend_cap(4, 1, 9), [1.25, 1.5, 1.75, 2.0])
    # season 4 inside the window: step k starts from the value m * ceil(k / m) steps back, and the level is
    # the mean of the window's two whole seasons, (8 - 1) / 2 = 3.5 steps back
    np.testing.assert_allclose(trend_cap(5, 4, 9), [1 + 4 / 3.5] * 4 + [1 + 8 / 3.5])
    # a season longer than the window is read as the last value: k steps
    np.testing.assert_allclose(trend_cap(2, 12, 9), [1.25, 1.5])
    np.testing.assert_array_equal(trend_cap(3, 1, 1), 1.0)
    # a smoothed level lies at the mean lag of its weights (1 - alpha)^i over the window
    c = sum(i * 0.5 ** i for i in range(9)) / sum(0.5 ** i for i in range(9))
    np.testing.assert_allclose(trend_cap(3, 1, 9, alpha=0.5), [1 + 1 / c, 1 + 2 / c, 1 + 3 / c])


@pytest.mark.parametrize("m", [1, 12])
def test_a_trend_is_extrapolated(m):
    """A noisy line (and a line plus a season): the blend continues the trend, going beyond the
    average of last value, season and mean or adding the drift of the whole history (the
    cross-validation chooses), its forecast errs less than any plain naive, and the untrained
    stream's summary gives the same forecast."""
    rng = np.random.default_rng(0)
    n, h, T = 1200, 6, 36
    t = np.arange(n + h, dtype=np.float64)
    y = 0.05 * t + (np.sin(2 * np.pi * t / m) if m > 1 else 0.0) + rng.normal(size=n + h) * 0.1
    z = (y - y[:n].mean()) / y[:n].std()
    w = fit_blend(z[:n, None], np.ones((n, 1), bool), h, m, T)
    K = len(blend_knots(h))
    extrapolates, drifts = (w[0, :K] + w[0, K:2 * K] > 1.0).all(), w[0, 2 * K] > 0.5
    assert extrapolates or drifts, w
    assert (w[0, :K] + w[0, K:2 * K] <= trend_cap(h, m, T)[blend_knots(h) - 1] + 1e-9).all()
    win = torch.tensor(z[n - T:n]).view(1, T, 1)
    obs = torch.ones_like(win)
    params = torch.tensor(w[None])
    # with the series' first observation (the drift of the whole history, if kept): the summary's age
    # is the origin's, the window's that of its first step, and so is the history profile's phase 0
    y0 = torch.tensor([[z[0]]])
    turned = {k: torch.tensor(rotate_history(w[None], k, m, h)) for k in (n - 1, n - T)}
    at_origin = with_first(turned[n - 1], y0, torch.tensor([[n - 1.0]]))
    at_start = with_first(turned[n - T], y0, torch.tensor([[n - T + 0.0]]))
    errs = {mode: (baseline_forecast(win, obs, baseline_params(mode, at_start, h), h, m, T)[0, :, 0]
                   - torch.tensor(z[n:])).abs().mean().item() for mode in ("blend", "seasonal", "last", "mean")}
    assert errs["blend"] < 0.6 * min(errs["seasonal"], errs["last"], errs["mean"]), errs
    W = summary_width(params, h, m, T)
    summary = (win[:, -1], obs[:, -1] > 0, win.mean(1), torch.ones(1, 1, dtype=torch.bool), win[:, -W:], obs[:, -W:])
    torch.testing.assert_close(baseline_from_summary(*summary, params, h, m, T),
                               baseline_forecast(win, obs, params, h, m, T))
    torch.testing.assert_close(baseline_from_summary(*summary, at_origin, h, m, T),
                               baseline_forecast(win, obs, at_start, h, m, T))


def test_a_level_with_noise_is_not_extrapolated():
    """An AR(1) around a fixed level with a daily cycle: the blend averages (the mean pulls the far
    steps back) and does not continue the wiggles of the look-back as a trend."""
    rng = np.random.default_rng(0)
    n, m = 3000, 24
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = 0.8 * ar[i - 1] + rng.normal()
    y = np.sin(2 * np.pi * np.arange(n) / m) + ar
    w = fit_blend(((y - y.mean()) / y.std())[:, None], np.ones((n, 1), bool), 12, m, 96)
    K = len(blend_knots(12))
    assert (w[0, :K] + w[0, K:2 * K] <= 1.0 + 1e-9).all()
    assert w[0, K] > 0.5 and w[0, 2 * K - 1] < w[0, K]  # the last value one step ahead, less further out


def test_short_series_of_a_panel_are_fitted_together():
    """60 series of 14 values, each a line with its own slope and noise, horizon 4: alone, a series
    has 10 origins (too few to check a blend: the last value); pooled, their pairs show the trend,
    and every short series continues it. A long series of the same panel keeps its own fit, and a
    panel of one series is fit_blend itself."""
    rng = np.random.default_rng(0)
    h, T, n = 4, 6, 14
    short = []
    for _ in range(60):
        y = rng.uniform(0.5, 2.0) * np.arange(n) + rng.normal(size=n) * 0.5
        short.append((((y - y.mean()) / y.std())[:, None], np.ones((n, 1), bool)))
    walk = np.cumsum(rng.normal(size=3000))
    long = (((walk - walk.mean()) / walk.std())[:, None], np.ones((3000, 1), bool))
    K = len(blend_knots(h))
    alone = fit_blend(*short[0], h, 1, T)
    np.testing.assert_array_equal(alone[0, K:2 * K], 1.0)  # too short alone: the last value
    panel = fit_panel_blends(short + [long], h, 1, T)
    assert panel.shape == (61, 1, 2 * K + 5 + HISTORY_SLOTS)
    assert (panel[:60, 0, K:2 * K] > 1.0).all()  # the pooled trend, beyond the last value
    np.testing.assert_array_equal(panel[:60, 0, :-1], np.broadcast_to(panel[0, 0, :-1], (60, 2 * K + 4 + HISTORY_SLOTS)))
    np.testing.assert_allclose(panel[:60, 0, -1], [fit_blend(*p, h, 1, T)[0, -1] for p in short])  # own mu
    np.testing.assert_array_equal(panel[60], fit_blend(*long, h, 1, T))
    np.testing.assert_array_equal(fit_panel_blends(short[:1], h, 1, T)[0], alone)
    # targets apart: a second target the long series never observes does not make it short
    two = [(np.hstack([v, v]), np.ones((len(v), 2), bool)) for v, _o in short]
    lv, lo = np.hstack([long[0], long[0]]), np.ones((3000, 2), bool)
    lo[:, 1] = False
    both = fit_panel_blends(two + [(lv, lo)], h, 1, T)
    np.testing.assert_array_equal(both[:60, 0], panel[:60, 0])
    np.testing.assert_array_equal(both[60, 0], panel[60, 0])


def test_the_drift_of_the_whole_history_is_kept_where_it_helps():
    """Random walks with drift, each 30 steps (M3's yearly series are about that short), look-back 6:
    the window's slope is noise, the slope from each series' first value is not; together, the
    cross-validations keep the drift and its forecast from the end of each series errs less than
    the last value. Walks without drift keep none."""
    rng = np.random.default_rng(0)
    h, T, n = 6, 6, 30

    def panel(slope):
        out = []
        for _ in range(200):
            y = np.cumsum(slope * rng.choice([-1.0, 1.0]) + rng.normal(size=n + h))
            mu, sd = y[:n].mean(), y[:n].std()
            out.append(((y - mu) / sd, np.ones((n + h, 1), bool)))
        return out

    K = len(blend_knots(h))
    for slope, keeps in ((0.3, True), (0.0, False)):
        series = panel(slope)
        w = fit_panel_blends([(z[:n, None], o[:n]) for z, o in series], h, 1, T)
        wd = w[:, 0, 2 * K]  # chosen together, each series' own weight (its least squares, in [0, 1])
        assert ((wd > 0).mean() > 0.5 if keeps else (wd == 0).all()), wd
        if keeps:
            win = torch.tensor(np.stack([z[n - T:n] for z, _o in series]))[..., None]
            params = with_first(torch.tensor(w), torch.tensor([[z[0]] for z, _o in series]),
                                torch.full((len(series), 1), n - T + 0.0))
            fc = baseline_forecast(win, torch.ones_like(win), params, h, 1, T)[..., 0].numpy()
            truth = np.stack([z[n:] for z, _o in series])
            last = np.abs(truth - win[:, -1].numpy()).mean()
            assert np.abs(truth - fc).mean() < 0.97 * last, (np.abs(truth - fc).mean(), last)  # 0.660 vs 0.685


def heads_of(model):
    """The head of every network of the model (on data this small ``members="auto"`` builds several)."""
    return [m.head for m in getattr(model.net, "members", [model.net])]


def tiny_rows() -> list[dict]:
    rng = np.random.default_rng(1)
    t0 = dt.datetime(2024, 1, 1)
    rows = []
    for k, sid in enumerate(("a", "b")):
        for i in range(200):
            rows.append({"sid": sid, "t": t0 + dt.timedelta(hours=i),
                         "y": float(np.sin(2 * np.pi * i / 24) * (3 + k) + 0.1 * i + rng.normal() * 0.3),
                         "z": float(rng.normal())})
    return rows


def tiny_dm(**kw):
    args = dict(time_col="t", id_col="sid", target_cols=["y", "z"], context_length=48, horizon=12,
                calendar_features="none")
    args.update(kw)
    return TimeSeriesDataModule(data=pl.DataFrame(tiny_rows()), **args)


@pytest.mark.parametrize("decoder,extra", [("forking", {}), ("last", {}), ("last", {"revin": "std"}),
                                           ("pmf", {"segment_length": 6}), ("forking", {"members": 3}),
                                           ("pmf", {"segment_length": 6, "members": 2})])
@pytest.mark.parametrize("loss", ["quantile", "mae"])
def test_untrained_model_forecasts_the_baseline(decoder, extra, loss):
    dm = tiny_dm()
    K = len(blend_knots(dm.horizon))
    # series a's y as the fit chose it (seasonally adjusted, by the profile of the whole training part), with a
    # drift weight and, in turn, the history profile's shape at the look-back's amplitude (s = 1): the sum by hand
    # below checks every term
    assert dm.spec.baseline[0, 0, 2 * K + 1] == 1.0 and dm.spec.baseline[0, 0, 2 * K + 4] > 0
    batch = dm.predict_batch()
    for b in (dm.spec.baseline, batch["baseline"]):
        b[0, 0, 2 * K] = 0.6
        if loss == "mae":
            b[0, 0, 2 * K + 4:2 * K + 6] = 1.0
    torch.manual_seed(0)
    extra = {"members": 1, **extra}  # one network unless the case names an ensemble
    opts = {"decoder": decoder, **extra} if decoder != "forking" else extra
    model = GRUForecaster.from_datamodule(dm, loss=loss, **with_net(opts, hidden_size=8, d_model=8,
                                                                    head_hidden=16)).eval()
    result = model.forecast(batch)  # (S, h, C, Q), original units
    T = dm.context_length
    base = baseline_forecast(batch["target"][:, :T], batch["observed"][:, :T], batch["baseline"], dm.horizon,
                             dm.season_length, T)
    expected = base * batch["scale"][:, None] + batch["loc"][:, None]
    torch.testing.assert_close(result[..., model.net.anchor], expected, rtol=1e-5, atol=1e-5)
    if loss == "quantile":
        assert (result.diff(dim=-1) > 0).all()  # the quantiles spread around it
    # by hand for one series and target: the blend of the fitted weights on the raw context
    ws, wl, mu = (v.numpy() for v in blend_weights(torch.tensor(dm.spec.baseline[0, 0]), dm.horizon))
    loc, sc = dm.spec.scaler("a", ["y"])
    raw = batch["target"][0, :T, 0].numpy() * sc[0] + loc[0]
    k = np.arange(1, dm.horizon + 1)
    seasonal = raw[T - 1 + k - 24 * ((k + 23) // 24)]
    # the seasonal adjustment: the last value and the mean moved to step k's phase by the profile of the
    # look-back's last whole seasons, mixed (share r) with the profile of the training part (in scaled units, phase
    # 0 at the grid's absolute step 0, 1970-01-01 00:00; with s = 1 at the look-back's amplitude, beta)
    wa, Q = dm.spec.baseline[0, 0, 2 * K + 1], T // 24
    profile = raw[T - Q * 24:].reshape(Q, 24).mean(axis=0)  # by phase, the last season's slots
    r, s = dm.spec.baseline[0, 0, 2 * K + 4:2 * K + 6]
    coef = dm.spec.baseline[0, 0, 2 * K + 6:-1]
    epoch = (dt.datetime(2024, 1, 1) - dt.datetime(1970, 1, 1)) // dt.timedelta(hours=1)  # the spec's phase 0: hour 0
    H = _history_by_hand(coef, epoch + np.arange(200 - 24, 200), 24) * sc[0]  # the last season's hours 176..199
    beta = max(0.0, ((profile - profile.mean()) * (H - H.mean())).sum()) / ((H - H.mean()) ** 2).sum() if s else 1.0
    mixed = (1 - r) * profile + r * (raw.mean() + beta * H)
    A, A_last = mixed[(k - 1) % 24], mixed[-1]
    last, mean = raw[-1] + wa * (A - A_last), raw.mean() + wa * (A - raw.mean())
    by_hand = ws * seasonal + wl * last + (1 - ws - wl) * mean
    # the drift: the slope from the series' first value (the table's first row) to the origin, shrunk
    wd, first = dm.spec.baseline[0, 0, 2 * K], tiny_rows()[0]["y"]  # series a's first hour
    by_hand = by_hand + wd * k * (raw[-1] - first) / (199 + DRIFT_PRIOR * T)  # the origin: hour 199
    np.testing.assert_allclose(result[0, :, 0, model.net.anchor].numpy(), by_hand, rtol=1e-4, atol=1e-4)


def test_the_drift_is_anchored_at_the_fitted_tables_first_observation(tmp_path):
    """The drift's anchor is each series' first observation in the fitted table (the spec keeps
    it): predict on the recent rows only, and a stream that starts from the checkpoint with them,
    forecast what predict on the whole history does; the spec round-trips it."""
    from forecaster.spec import DataSpec
    from forecaster.streaming import StreamingForecaster

    dm = tiny_dm()
    K = len(blend_knots(dm.horizon))
    dm.spec.baseline[:, 0, 2 * K] = 0.6  # a drift (series a trends) and the profile of the whole training part
    assert (dm.spec.baseline[:, 0, 2 * K + 4] > 0).all()  # (anchored there too)
    torch.manual_seed(0)
    model = GRUForecaster.from_datamodule(dm, **with_net({"members": 1}, hidden_size=8, d_model=8,
                                                         head_hidden=16)).eval()
    full = pl.DataFrame(tiny_rows())
    whole = model.forecast_frame(TimeSeriesDataModule.from_spec(model.spec, data=full))
    recent = full.filter(pl.col("t") >= dt.datetime(2024, 1, 1) + dt.timedelta(hours=200 - 60))
    later = model.forecast_frame(TimeSeriesDataModule.from_spec(model.spec, data=recent))
    np.testing.assert_allclose(later["value"], whole["value"], rtol=1e-5, atol=1e-5)
    stream = StreamingForecaster(model.net, model.spec)
    stream.observe(recent)
    streamed = stream.forecast().join(whole, on=["series", "time", "target"], suffix="_predict")
    assert streamed.height == whole.height
    np.testing.assert_allclose(streamed["value"], streamed["value_predict"], rtol=1e-4, atol=1e-4)
    again = DataSpec.from_dict(model.spec.to_dict())
    np.testing.assert_array_equal(again.first_time, model.spec.first_time)
    np.testing.assert_array_equal(again.first_value, model.spec.first_value)
    # without the spec's anchor (a series it does not know), the recent rows' own first one
    unknown = recent.with_columns(pl.col("sid") + "-new")
    new_dm = TimeSeriesDataModule.from_spec(model.spec, data=unknown)
    other = model.forecast_frame(new_dm)
    assert not np.allclose(other.filter(pl.col("series") == "a-new")["value"],
                           whole.filter(pl.col("series") == "a")["value"], atol=1e-3)
    # the table's spec (what a warm start on it keeps) knows the new series' anchors, at their first rows
    assert (new_dm.spec.first_time == new_dm.spec.grid_times(new_dm.spec.series_start[:, None], 0)).all()
    for bad in ([1.0], ["x", 5], [float("nan"), 5], {"v": 1}, [10 ** 400, 5], [1e300, 5], [True, 5], [1.0, 2 ** 70],
                [1.0, -(2 ** 63) + 1], [1.0, 5.0]):
        d = model.spec.to_dict()
        d["series"]["a"]["first"]["y"] = bad
        with pytest.raises(ValueError, match="first observation"):
            DataSpec.from_dict(d)


def test_the_history_profile_keeps_its_phase_wherever_a_table_starts():
    """The training part's profile is phased to the grid's absolute steps, not to a series' first
    observation (the drift's anchor, which an earlier row moves): fitted on hours 10..199, predict
    on hours 0..199 (ten rows before the fitted table's first), on the fitted rows, on the last 60
    and a stream that observed every hour forecast the same (the drift off: its anchor does move)."""
    from forecaster.streaming import StreamingForecaster

    full = pl.DataFrame(tiny_rows())
    fitted = full.filter(pl.col("t") >= dt.datetime(2024, 1, 1, 10))
    dm = TimeSeriesDataModule(data=fitted, time_col="t", id_col="sid", target_cols=["y", "z"], context_length=48,
                              horizon=12, calendar_features="none")
    K = len(blend_knots(dm.horizon))
    b = dm.spec.baseline
    assert b[0, 0, 2 * K + 1] == 1.0 and np.abs(b[0, 0, 2 * K + 6:-1]).max() > 0.1  # adjusted; a daily profile
    b[:, :, 2 * K] = 0.0
    b[:, 0, 2 * K + 4:2 * K + 6] = (0.5, 0.0)
    torch.manual_seed(0)
    model = GRUForecaster.from_datamodule(dm, **with_net({"members": 1}, hidden_size=8, d_model=8,
                                                         head_hidden=16)).eval()
    ref = model.forecast_frame(TimeSeriesDataModule.from_spec(model.spec, data=fitted))
    for table in (full, full.filter(pl.col("t") >= dt.datetime(2024, 1, 1) + dt.timedelta(hours=140))):
        got = model.forecast_frame(TimeSeriesDataModule.from_spec(model.spec, data=table))
        np.testing.assert_allclose(got["value"], ref["value"], rtol=1e-5, atol=1e-5)
    stream = StreamingForecaster(model.net, model.spec)
    stream.observe(full)
    streamed = stream.forecast().join(ref, on=["series", "time", "target"], suffix="_predict")
    assert streamed.height == ref.height
    np.testing.assert_allclose(streamed["value"], streamed["value_predict"], rtol=1e-4, atol=1e-4)
    # the profile does change the forecast: without it (r = 0) the first target's differs
    model.spec.baseline[:, 0, 2 * K + 4] = 0.0
    plain = model.forecast_frame(TimeSeriesDataModule.from_spec(model.spec, data=fitted))
    assert not np.allclose(plain.filter(pl.col("target") == "y")["value"], ref.filter(pl.col("target") == "y")["value"],
                           atol=1e-3)


def test_baseline_modes_and_none():
    dm = tiny_dm()
    batch = dm.predict_batch()
    T = dm.context_length
    for mode, (ws, wl) in {"seasonal": (1.0, 0.0), "last": (0.0, 1.0), "mean": (0.0, 0.0)}.items():
        model = GRUForecaster.from_datamodule(dm, baseline=mode,
                                              net=StepNet(hidden_size=8, d_model=8, head_hidden=16)).eval()
        params = batch["baseline"].clone()
        K = len(blend_knots(dm.horizon))  # [w_s K, w_l K, w_d, w_a, alpha, q, r, s, H 2F, mu, y_first, age]
        params[..., :K], params[..., K:2 * K] = ws, wl
        params[..., 2 * K:2 * K + 5] = 0.0  # a plain mode: no drift, no adjustment, the plain mean, no history
        base = baseline_forecast(batch["target"][:, :T], batch["observed"][:, :T], params, dm.horizon, 24, T)
        expected = base * batch["scale"][:, None] + batch["loc"][:, None]
        torch.testing.assert_close(model.forecast(batch)[..., model.net.anchor], expected, rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    plain = GRUForecaster.from_datamodule(dm, baseline="none", net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    for head in heads_of(plain):
        assert head[-1].weight.abs().sum() > 0  # no baseline: the head keeps its random init
    with pytest.raises(ValueError, match="baseline='median'"):
        GRUForecaster.from_datamodule(dm, baseline="median")
    with pytest.raises(ValueError, match=r"quantiles=\[0.1, 0.9\] lack 0.5"):
        GRUForecaster.from_datamodule(dm, quantiles=[0.1, 0.9])
    GRUForecaster.from_datamodule(dm, quantiles=[0.1, 0.9], baseline="none")  # without a baseline: any levels


def test_validation_keeps_the_network_only_where_it_beats_the_plain_baselines(tmp_path):
    """A network that forecasts badly loses on validation to the plain baselines: the model then
    forecasts the best of them (the point forecast), with the network's quantile spread around it,
    and the choice travels in the checkpoint."""
    import lightning as L

    rng = np.random.default_rng(0)
    n = 800
    walk = pl.DataFrame({"t": [dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(n)],
                         "y": np.cumsum(rng.normal(size=n))})
    dm = TimeSeriesDataModule(data=walk, time_col="t", target_cols=["y"], context_length=48, horizon=12,
                              calendar_features="none", val_size=0.2, test_size=0.1)
    assert len(dm.val_dataset()) >= MIN_WINDOWS
    torch.manual_seed(0)
    model = GRUForecaster.from_datamodule(dm, lr=1e-9, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    with torch.no_grad():
        for head in heads_of(model):  # a network that adds noise to every forecast
            head[-1].bias.normal_(0, 5.0)
    trainer = L.Trainer(max_steps=1, limit_train_batches=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert not bool(model.net.use_network)
    chosen = ("blend", "seasonal", "last", "mean", "none")[int(model.net.fallback)]
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/loss")}
    assert logged["val/loss"] == pytest.approx(logged[f"val/loss_{chosen}"])
    assert logged["val/loss"] < logged["val/loss_network"]
    model.eval()
    batch = dm.predict_batch()
    T = dm.context_length
    params = batch["baseline"].clone()
    K = (params.shape[-1] - 7) // 2  # [w_s K, w_l K, w_d, w_a, alpha, q, mu, y_first, age]
    if chosen != "blend":
        params[..., :K], params[..., K:2 * K] = {"seasonal": (1, 0), "last": (0, 1), "mean": (0, 0)}[chosen]
        params[..., 2 * K:2 * K + 4] = 0.0  # no drift, no adjustment, the plain mean of the whole look-back
    base = baseline_forecast(batch["target"][:, :T], batch["observed"][:, :T], params, dm.horizon, 24, T)
    result = model.forecast(batch)
    torch.testing.assert_close(result[..., model.net.anchor], base * batch["scale"][:, None] + batch["loc"][:, None],
                               rtol=1e-5, atol=1e-5)
    assert (result.diff(dim=-1) > 0).all()
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = GRUForecaster.load_from_checkpoint(tmp_path / "m.ckpt").eval()
    assert not bool(loaded.net.use_network) and int(loaded.net.fallback) == int(model.net.fallback)
    torch.testing.assert_close(loaded.forecast(batch), result)


def test_the_sanity_check_does_not_choose(tmp_path):
    """Lightning's sanity check (two batches of the untrained network) is not a validation: it
    leaves the choice alone."""
    import lightning as L

    rng = np.random.default_rng(0)
    walk = pl.DataFrame({"t": [dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(300)],
                         "y": np.cumsum(rng.normal(size=300))})
    dm = TimeSeriesDataModule(data=walk, time_col="t", target_cols=["y"], context_length=48, horizon=12,
                              calendar_features="none", val_size=0.2)
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    with torch.no_grad():
        for head in heads_of(model):
            head[-1].bias.normal_(0, 5.0)
    trainer = L.Trainer(max_steps=2, num_sanity_val_steps=2, check_val_every_n_epoch=50, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert bool(model.net.use_network)


def test_one_validation_window_is_no_evidence_to_switch(tmp_path):
    """A plain baseline replaces the network only on MIN_SWITCH_WINDOWS validation windows or more:
    with a single window (a short series' validation part) the network stays."""
    import lightning as L

    rng = np.random.default_rng(1)
    walk = pl.DataFrame({"t": [dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(120)],
                         "y": np.cumsum(rng.normal(size=120))})
    dm = TimeSeriesDataModule(data=walk, time_col="t", target_cols=["y"], context_length=24, horizon=12,
                              calendar_features="none", val_size=12, test_size=12)
    assert len(dm.val_dataset()) == 1
    model = GRUForecaster.from_datamodule(dm, lr=1e-9, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    with torch.no_grad():
        for head in heads_of(model):
            head[-1].bias.normal_(0, 5.0)
    trainer = L.Trainer(max_steps=1, limit_train_batches=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert bool(model.net.use_network)
    assert float(trainer.callback_metrics["val/uses_network"]) == 1.0


@pytest.mark.parametrize("case,chosen", [("clearly better", "network"), ("noisy win", "last"),
                                         ("worse", "last"), ("too few windows", "network")])
def test_the_choice_needs_the_network_to_beat_the_best_plain_baseline_by_two_standard_errors(case, chosen):
    """The candidates differ only in their point forecast (a plain baseline keeps the network's
    spread), so the choice compares the points' losses window by window, and the simpler forecast
    is the default: the network is kept only where it beats the best plain baseline (here the
    last value) by more than SWITCH_Z standard errors of the per-window difference, or where there
    are too few windows to tell. Its full quantile loss, lowest in every case here, does not count."""
    dm = tiny_dm(target_cols=["y"], val_size=0.3)
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    n = 4 if case == "too few windows" else 20
    rng = np.random.default_rng(0)
    last = torch.tensor(rng.uniform(0.5, 1.0, size=n))
    noise = torch.tensor(rng.normal(0.0, 0.3, size=n))
    network = {"clearly better": last - 0.1 + 0.01 * noise, "noisy win": last - 0.04 + noise,
               "worse": last + 0.05, "too few windows": last + 0.05}[case]
    assert (network.mean() < last.mean()) == (case in ("clearly better", "noisy win"))  # lower on average
    points = {"network": network, "blend": last + 0.01, "seasonal": last + 1.0, "last": last, "mean": last + 2.0}
    choice = BaselineChoice()
    for name in points:
        choice.loss[name].update(torch.tensor(0.1 if name == "network" else 0.2))
        choice.point[name].update(points[name].float())
    choice.on_validation_epoch_end(L.Trainer(logger=False, enable_progress_bar=False), model)
    assert bool(model.net.use_network) == (chosen == "network")
    if chosen != "network":
        assert BASELINES[int(model.net.fallback)] == chosen


@pytest.mark.parametrize("case,chosen", [("noisy", "blend"), ("clearly", "last"), ("worse", "blend")])
def test_the_fitted_blend_stays_unless_a_plain_naive_beats_it_by_two_standard_errors(case, chosen):
    """The blend was chosen by a cross-validation over the whole training part; a plain naive
    (here the last value) replaces it only where it beats it on the validation windows by SWITCH_Z
    standard errors of the per-window difference, as the network must beat the plain baseline (the
    network, worse than both, is not kept)."""
    dm = tiny_dm(target_cols=["y"], val_size=0.3)
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    n = 20
    rng = np.random.default_rng(0)
    blend = torch.tensor(rng.uniform(0.5, 1.0, size=n))
    noise = torch.tensor(rng.normal(0.0, 0.3, size=n))
    last = {"noisy": blend - 0.04 + noise, "clearly": blend - 0.1 + 0.01 * noise, "worse": blend + 0.05}[case]
    assert (last.mean() < blend.mean()) == (case != "worse")
    points = {"network": blend + 1.0, "blend": blend, "seasonal": blend + 1.0, "last": last, "mean": blend + 2.0}
    choice = BaselineChoice()
    for name in points:
        choice.loss[name].update(torch.tensor(0.2))
        choice.point[name].update(points[name].float())
    choice.on_validation_epoch_end(L.Trainer(logger=False, enable_progress_bar=False), model)
    assert not bool(model.net.use_network) and BASELINES[int(model.net.fallback)] == chosen


@pytest.mark.parametrize("seed", [15, 7, 0])
def test_a_short_random_walk_gets_the_last_value_at_every_step(seed):
    """400 steps of a walk, horizon 24, context 96: by chance the look-back mean can win at the far
    steps of one quarter of the origins (seed 15 and 7 did: the old per-step check kept the mean
    there, or the whole-horizon check on the last quarter everywhere). Cross-validated over every
    quarter, with each step counted alike, the last value is the blend at every step."""
    rng = np.random.default_rng(seed)
    n = 400
    y = np.cumsum(rng.normal(size=n))
    w = fit_blend(((y - y.mean()) / y.std())[:, None], np.ones((n, 1), bool), 24, 24, 96)
    K = len(blend_knots(24))
    np.testing.assert_array_equal(w[0, :K], 0.0)
    np.testing.assert_array_equal(w[0, K:2 * K], 1.0)


def test_the_check_is_per_target_and_needs_observed_pairs():
    """Two targets, each with its own choice: a pure season observed only around its first 30
    origins (the quarters without observations count nothing, on either side of the comparison:
    the season still wins) and a walk (the last value)."""
    rng = np.random.default_rng(0)
    n, m = 2000, 12
    season = np.tile(rng.normal(size=m), n // m + 1)[:n]
    walk = np.cumsum(rng.normal(size=n))
    values = np.stack([season, (walk - walk.mean()) / walk.std()], axis=1)
    observed = np.ones((n, 2), bool)
    observed[30 + 6:, 0] = False  # origins 0..29 have their 6 steps observed, and a few partial ones
    w = fit_blend(values, observed, 6, m, 48)
    K = len(blend_knots(6))
    # the season, fitted on what there is: the seasonal naive, or the last value moved by the look-back's
    # profile (seasonally adjusted), which repeats it as well
    win = torch.tensor(values[-48:]).view(1, 48, 2)
    f = baseline_forecast(win, torch.ones_like(win), torch.tensor(w[None]), 6, m, 48)[0, :, 0]
    np.testing.assert_allclose(f.numpy(), season[np.arange(n - m, n - m + 6)], atol=0.05)
    assert w[0, 2 * K + 1] == 1.0 or np.allclose(w[0, :K], 1.0, atol=0.05)
    assert w[1, 2 * K + 1] == 0.0
    np.testing.assert_array_equal(w[1, :K], 0.0)
    np.testing.assert_array_equal(w[1, K:2 * K], 1.0)


@pytest.mark.parametrize("loss", ["quantile", "mae", "mse"])
def test_point_loss_scores_the_anchor(loss):
    """The switch's point loss of a window: the anchor's absolute error for the quantile loss
    (whatever the other quantiles say), the model's own loss of its single output otherwise, over
    the window's observed elements."""
    dm = tiny_dm(target_cols=["y"])
    quantiles = (0.1, 0.5, 0.9) if loss == "quantile" else None
    model = GRUForecaster.from_datamodule(dm, loss=loss,
                                          **({"quantiles": quantiles} if quantiles else {}),
                                          net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    y = torch.tensor([[1.0, 2.0, 3.0]])
    w = torch.tensor([[1.0, 1.0, 0.0]])  # the third step unobserved
    point = torch.tensor([[1.5, 0.0, 100.0]])
    if quantiles:
        pred = torch.stack([point - 50.0, point, point + 7.0], dim=-1)  # far-off outer quantiles
        expected = (0.5 + 2.0) / 2
    else:
        pred = point[..., None]
        expected = (0.5 + 2.0) / 2 if loss == "mae" else (0.25 + 4.0) / 2
    per_window, seen = model.window_point_losses(pred, y, w)
    assert per_window.shape == (1,) and float(per_window[0]) == pytest.approx(expected) and bool(seen[0])
    none_seen = model.window_point_losses(pred, y, torch.zeros_like(w))[1]
    assert not bool(none_seen[0])


def test_no_observed_validation_window_keeps_the_network():
    """Validation batches whose windows have no observed target add nothing to the comparison:
    with no window at all the network stays (and nothing fails)."""
    dm = tiny_dm(target_cols=["y"], val_size=0.3)
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    model.net.use_network.fill_(True)
    choice = BaselineChoice()
    for name in CANDIDATES:
        choice.loss[name].update(torch.tensor(0.0), torch.tensor(0.0))
        choice.point[name].update(torch.empty(0))
    choice.on_validation_epoch_end(L.Trainer(logger=False, enable_progress_bar=False), model)
    assert bool(model.net.use_network)


@pytest.mark.parametrize("m,T", [(4, 12), (12, 12), (20, 12), (1, 6), (7, 30)])
def test_the_summary_of_a_look_back_gives_its_baseline(m, T):
    """What a stream keeps (the last observed value, the look-back's mean, the last season) gives the
    baseline of the whole look-back: windows with gaps, with the last observation only at the start,
    with none at all, and seasons longer than the look-back."""
    g = torch.Generator().manual_seed(m * 100 + T)
    B, C, h = 7, 2, 9
    target = torch.randn(B, T, C, generator=g)
    observed = (torch.rand(B, T, C, generator=g) > 0.3).float()
    observed[0] = 0.0  # nothing observed
    observed[1] = 0.0
    observed[1, 0] = 1.0  # only the oldest step
    observed[2, -1] = 0.0  # the last step missing
    target = target * observed  # missing values are 0, as in a batch
    K = len(blend_knots(h))
    params = torch.cat([torch.rand(B, C, K, generator=g) * 0.5, torch.rand(B, C, K, generator=g) * 0.5,
                        torch.zeros(B, C, 1), (torch.rand(B, C, 1, generator=g) > 0.5).to(torch.float32),
                        0.3 * (torch.rand(B, C, 1, generator=g) > 0.5), (torch.rand(B, C, 1, generator=g) > 0.5) * 1.0,
                        torch.randn(B, C, 1, generator=g)], dim=-1)  # no drift; adjusted or not; each level
    expected = baseline_forecast(target, observed, params, h, m, T)
    # the summary, by hand
    last = torch.zeros(B, C)
    has_last = torch.zeros(B, C, dtype=torch.bool)
    for b in range(B):
        for c in range(C):
            seen = observed[b, :, c].nonzero().flatten()
            if len(seen):
                last[b, c], has_last[b, c] = target[b, seen[-1], c], True
    cnt = observed.sum(1)
    mean = (target * observed).sum(1) / cnt.clamp_min(1)
    W = summary_width(params, h, m, T)
    assert W <= T and W >= season_width(m, T, adjusted=False)
    got = baseline_from_summary(last, has_last, mean, cnt > 0, target[:, -W:], observed[:, -W:], params, h, m, T)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    if W > season_width(m, T, adjusted=False):  # one step fewer than a target needs: refused in one line
        with pytest.raises(ValueError, match="look-back summary holds"):
            baseline_from_summary(last, has_last, mean, cnt > 0, target[:, 1 - W:], observed[:, 1 - W:], params, h,
                                  m, T)
    # with a drift weight and the first observation: ages at and before it (no drift), never observed, long
    age = torch.tensor([0.0, -5.0, NO_AGE, 3.0, 40.0, 1000.0])[torch.arange(B) % 6].view(B, 1).expand(B, C)
    anchored = with_first(torch.cat([params[..., :2 * K], torch.rand(B, C, 1, generator=g), params[..., 2 * K + 1:]],
                                    dim=-1),
                          torch.randn(B, C, generator=g), age)
    expected = baseline_forecast(target, observed, anchored, h, m, T)
    at_origin = anchored.clone()
    at_origin[..., -1] = anchored[..., -1] + T - 1
    got = baseline_from_summary(last, has_last, mean, cnt > 0, target[:, -W:], observed[:, -W:], at_origin, h, m, T)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    plain = baseline_forecast(target, observed, params, h, m, T)
    moved = (expected - plain).abs().amax(dim=(1, 2)) > 1e-6  # (B,): where the drift applies
    assert moved[age[:, 0] + T - 1 >= 1].any() and not moved[age[:, 0] + T - 1 < 1].any()


def _level_by_hand(y, o, t, W, alpha, fallback):
    """The level of origin t as a plain loop: the observed values of the last W steps, the one i
    steps back weighted (1 - alpha)^i (``fallback`` where none is observed)."""
    num = den = 0.0
    for i in range(W):
        j = t - i
        if j >= 0 and o[j]:
            num, den = num + (1 - alpha) ** i * y[j], den + (1 - alpha) ** i
    return num / den if den else fallback


def _adjusted_by_hand(y, o, t, h, m, T, mu, W=None, alpha=0.0):
    """The seasonally adjusted last value and mean of origin t, step by step, as plain loops: the
    profile ``A(p)``, the mean of the observed values at phase p over the last ``T // m`` whole
    seasons; ``L + A(t + k) - A(t_L)`` and ``A(t + k)`` (the mean moved fully), with the look-back's
    level (:func:`_level_by_hand` over its last W steps, all T by default) where a phase has no
    observation and the training mean ``mu`` where the look-back has none."""
    Q = T // m
    look = [j for j in range(max(0, t - T + 1), t + 1) if o[j]]
    mean = _level_by_hand(y, o, t, T if W is None else W, alpha, mu)
    last_j = look[-1] if look else None
    last = y[last_j] if look else mu

    def A(p):
        vals = [y[j] for j in range(max(0, t - Q * m + 1), t + 1) if o[j] and (j - p) % m == 0]
        return np.mean(vals) if vals else mean

    A_last = A(last_j) if last_j is not None else mean
    ks = range(1, h + 1)
    return np.array([last + A(t + k) - A_last for k in ks]), np.array([A(t + k) for k in ks]), last, mean


@pytest.mark.parametrize("m,T", [(4, 12), (7, 20), (12, 12), (5, 8), (1, 9)])
def test_the_level_and_the_seasonal_adjustment_by_hand(m, T):
    """The level (plain or smoothed, over the whole look-back or its whole seasons) and the
    adjusted last value and mean by plain loops (gaps, a stretch longer than the look-back
    unobserved, the first origins with a short history) against the fit's regressors
    (:func:`blend_pairs`: the plain level of the whole seasons and each of :data:`LEVEL_ALPHAS`)
    and the forecast of every origin (:func:`baseline_forecast`) with ``w_a`` 1, 0.5 and 0 and
    each level."""
    from forecaster.baseline import LEVEL_ALPHAS, blend_pairs, level_window

    rng = np.random.default_rng(m * 100 + T)
    n, h = 90, 6
    y = np.sin(2 * np.pi * np.arange(n) / m) * 2 + 0.05 * np.arange(n) + rng.normal(size=n) * 0.3
    o = rng.random(n) > 0.25
    o[40:40 + T + 3] = False  # longer than the look-back: no last value, no profile
    mu, pairs = blend_pairs(y[:, None], o[:, None], h, m, T, max_origins=10_000)
    s_, l_, t_, w, d_, a_, p_, e_ = pairs[:8]
    origins, Wq = n - h, level_window(m, T)
    assert Wq == ((T // m) * m if 1 < m <= T else T)
    assert e_.shape == (origins, len(LEVEL_ALPHAS), 1) and (a_ is None) == (m == 1)
    yz = np.where(o, y, 0.0)
    K = len(blend_knots(h))
    ws, wl = rng.uniform(0, 0.6, K), rng.uniform(0, 0.6, K)
    for t in range(origins):  # the fit's regressors
        P, A, last, mean = _adjusted_by_hand(y, o, t, h, m, T, mu[0], Wq)
        np.testing.assert_allclose(l_[t, :, 0], last - mean, atol=1e-9)
        for g, alpha in enumerate(LEVEL_ALPHAS):
            np.testing.assert_allclose(e_[t, g, 0], _level_by_hand(y, o, t, Wq, alpha, mean) - mean, atol=1e-9)
        if a_ is not None:
            np.testing.assert_allclose(a_[t, :, 0], A - mean, atol=1e-9)
            np.testing.assert_allclose(p_[t, :, 0], P - mean, atol=1e-9)
    for wa, alpha, q in ((1.0, 0.0, 1.0), (0.5, 0.3, 0.0), (0.0, 0.1, 1.0), (0.0, 0.0, 0.0)):
        params = torch.tensor(np.concatenate([ws, wl, [0.0, wa, alpha, q, mu[0]]]))[None, None]
        f = baseline_forecast(torch.tensor(yz).view(1, n, 1), torch.tensor(o, dtype=torch.float64).view(1, n, 1),
                              params, h, m, T, origins=origins)[0, :, :, 0].numpy()  # (origins, h)
        w_s, w_l, _mu = (v.numpy() for v in blend_weights(params[0, 0], h))
        for t in range(origins):
            P, A, last, mean = _adjusted_by_hand(y, o, t, h, m, T, mu[0], Wq if q else T, alpha)
            if m == 1:
                P, A = np.full(h, last), np.full(h, mean)  # no whole season to adjust by
            k = np.arange(1, h + 1)
            lag = t + k - m * np.ceil(k / m).astype(int)
            S = np.array([y[j] if j >= 0 and j > t - T and o[j] else last for j in lag])
            expected = w_s * S + w_l * (last + wa * (P - last)) + (1 - w_s - w_l) * (mean + wa * (A - mean))
            np.testing.assert_allclose(f[t], expected, atol=1e-9)


def _history_by_hand(coef, age, m):
    """The history profile at ``age`` (steps since the first observation) as the plain sum of its
    harmonics."""
    F = len(coef) // 2
    return sum(coef[j - 1] * np.cos(2 * np.pi * j * age / m) + coef[F + j - 1] * np.sin(2 * np.pi * j * age / m)
               for j in range(1, F + 1))


@pytest.mark.parametrize("m,T", [(4, 12), (7, 20), (12, 24), (5, 8)])
def test_the_history_profile_by_hand(m, T):
    """The profile of the training part (:func:`history_profile`, phase 0 at its first step)
    recovers a known one; the fit's regressors with it (:func:`blend_pairs`: mixed half and half
    with the look-back's profile, and its shape at the look-back's amplitude beta) and the forecast
    of every origin, of the last one and of the stream's summary with ``r``, ``s`` (0.5, 0) and (1,
    1) (each turned to its window's first step or origin, :func:`rotate_history`), against plain
    loops (gaps, a stretch longer than the look-back unobserved, a first observation after the
    part's first step)."""
    from forecaster.baseline import blend_pairs, history_profile, level_window, rotate_history

    rng = np.random.default_rng(m * 10 + T)
    n, h, first = 120, 6, 3
    t_ = np.arange(n)
    S = rng.normal(size=m)
    S -= S.mean()
    clean = 0.03 * t_ + S[(t_ - first) % m]
    coef = history_profile(clean, t_ >= first, m)  # a linear trend is the moving average's: exact for m <= 13
    np.testing.assert_allclose(_history_by_hand(coef, np.arange(m), m), S[(np.arange(m) - first) % m], atol=1e-9)
    K1 = len(blend_knots(h))
    vec = np.r_[np.zeros(2 * K1 + 6), coef, 0.0]
    for shift in (5, -3, 2 ** 40 + 1):  # turned: phase 0 moved shift steps on, exactly for any integer
        turned = rotate_history(vec, shift, m, h)[2 * K1 + 6:-1]
        np.testing.assert_allclose(_history_by_hand(turned, np.arange(m), m), _history_by_hand(
            coef, (np.arange(m) + shift) % m, m), atol=1e-9)
    assert not history_profile(clean[:first + 3 * m - 1], t_[:first + 3 * m - 1] >= first, m).any()  # < 3 seasons
    assert not history_profile(clean, t_ >= first, 1).any()
    y = clean + rng.normal(size=n) * 0.2
    o = (rng.random(n) > 0.2) & (t_ >= first)
    o[first] = True  # the phase's anchor
    o[50:50 + T + 3] = False
    coef = history_profile(y, o, m)
    np.testing.assert_allclose(_history_by_hand(coef, np.arange(m), m), S[(np.arange(m) - first) % m],
                               atol=0.25)  # noisy, with gaps
    mu, pairs = blend_pairs(y[:, None], o[:, None], h, m, T, max_origins=10_000)
    _s, _l, _t, _w, _d, a_, p_, _e, a_h, p_h, a_b, p_b = pairs
    origins, Q, Wq = n - h, T // m, level_window(m, T)
    K = len(blend_knots(h))
    ws, wl = rng.uniform(0, 0.6, K), rng.uniform(0, 0.6, K)
    k = np.arange(1, h + 1)
    yz = np.where(o, y, 0.0)
    expected = {(0.5, 0.0): np.zeros((origins, h)), (1.0, 1.0): np.zeros((origins, h))}
    for t in range(origins):
        P, A, last, mean = _adjusted_by_hand(y, o, t, h, m, T, mu[0], Wq)
        look = [j for j in range(max(0, t - T + 1), t + 1) if o[j]]
        recent = bool(look) and look[-1] > t - Q * m
        Hk = _history_by_hand(coef, t + k, m)
        HL = _history_by_hand(coef, look[-1], m) if look else 0.0
        # beta: the look-back's profile at the m latest phases (centred) on the history's there
        prof = [np.mean(v) if (v := [y[j] for j in range(max(0, p - Q * m + 1), p + 1)
                                      if o[j] and (j - p) % m == 0]) else mean for p in range(t - m + 1, t + 1)]
        Hm = _history_by_hand(coef, np.arange(t - m + 1, t + 1), m)
        Ac, Hc = np.array(prof) - np.mean(prof), Hm - Hm.mean()
        beta = max(0.0, float((Ac * Hc).sum())) / float((Hc * Hc).sum())
        if recent:
            np.testing.assert_allclose(a_h[t, :, 0], Hk, atol=1e-9)
            np.testing.assert_allclose(p_h[t, :, 0], last - mean + Hk - HL, atol=1e-9)
            np.testing.assert_allclose(a_b[t, :, 0], beta * Hk, atol=1e-9)
            np.testing.assert_allclose(p_b[t, :, 0], last - mean + beta * (Hk - HL), atol=1e-9)
        else:  # the last observation before the last whole seasons: the look-back's profile
            for got, want in ((a_h, a_), (p_h, p_), (a_b, a_), (p_b, p_)):
                np.testing.assert_array_equal(got[t], want[t])
        lag = t + k - m * np.ceil(k / m).astype(int)
        Sv = np.array([y[j] if j >= 0 and j > t - T and o[j] else last for j in lag])
        w_s, w_l, _mu = (v.numpy() for v in blend_weights(torch.tensor(np.r_[ws, wl, 0.0]), h))
        for (r, sc), out in expected.items():
            g = beta if sc else 1.0
            Pr = last + (1 - r) * (P - last) + r * g * (Hk - HL) if recent else P
            Ar = (1 - r) * A + r * (mean + g * Hk) if recent else A
            out[t] = w_s * Sv + w_l * Pr + (1 - w_s - w_l) * Ar
    for (r, sc), want in expected.items():
        fitted = np.r_[ws, wl, [0.0, 1.0, 0.0, 1.0, r, sc], coef, mu[0]]
        assert len(fitted) == 2 * K + 5 + HISTORY_SLOTS
        params = with_first(torch.tensor(fitted)[None, None], torch.tensor([[y[first]]]), torch.tensor([[-float(first)]]))
        f = baseline_forecast(torch.tensor(yz).view(1, n, 1), torch.tensor(o, dtype=torch.float64).view(1, n, 1),
                              params, h, m, T, origins=origins)[0, :, :, 0].numpy()
        np.testing.assert_allclose(f, want, atol=1e-9)
        for t in (origins - 1, 49, 60):  # the last origin of a window ending at t, and the stream's summary there
            win = torch.tensor(yz[t + 1 - T:t + 1]).view(1, T, 1)
            wo = torch.tensor(o[t + 1 - T:t + 1], dtype=torch.float64).view(1, T, 1)
            at = torch.tensor(rotate_history(params.numpy(), t + 1 - T, m, h))  # phase 0: the window's first step
            at[..., -1] = t + 1 - T - first  # its age
            np.testing.assert_allclose(baseline_forecast(win, wo, at, h, m, T)[0, :, 0].numpy(), want[t], atol=1e-9)
            W = summary_width(at, h, m, T)
            at = torch.tensor(rotate_history(params.numpy(), t, m, h))  # phase 0: the origin
            at[..., -1] = t - first  # its age
            seen = wo.sum(1) > 0
            last_j = np.flatnonzero(o[t + 1 - T:t + 1])
            last = torch.tensor([[yz[t + 1 - T + last_j[-1]] if len(last_j) else 0.0]])
            got = baseline_from_summary(last, seen, (win * wo).sum(1) / wo.sum(1).clamp_min(1), seen,
                                        win[:, T - W:], wo[:, T - W:], at, h, m, T)
            np.testing.assert_allclose(got[0, :, 0].numpy(), want[t], atol=1e-9)


def test_the_adjusted_last_origin_ignores_what_lies_before_its_whole_seasons():
    """T = 20, m = 8: the profile reads the last 16 steps; a huge value at step 2 (inside the
    look-back, before them) does not enter it, not even as a rounding error (float32): the window's
    last origin, the stream's summary and the plain loops agree. A summary of the last season only
    is refused in one line for an adjusted target and enough for one that is not."""
    T, m, h = 20, 8, 8
    K = len(blend_knots(h))
    y = torch.randn(1, T, 1, generator=torch.Generator().manual_seed(0))
    y[0, 2, 0] = 1e8
    o = torch.ones(1, T, 1)
    params = torch.tensor([[[0.0] * K + [1.0] * K + [0.0, 1.0, 0.0]]])  # the adjusted last value
    W = season_width(m, T)
    assert W == 16 and season_width(m, T, adjusted=False) == 8
    summary = (y[:, -1], torch.tensor([[True]]), y.mean(1), torch.tensor([[True]]))
    got = baseline_from_summary(*summary, y[:, -W:], o[:, -W:], params, h, m, T)
    window = baseline_forecast(y, o, params, h, m, T)
    yd = y[0, :, 0].double().numpy()
    P, _A, _last, _mean = _adjusted_by_hand(yd, np.ones(T, bool), T - 1, h, m, T, 0.0)
    np.testing.assert_allclose(window[0, :, 0].numpy(), P, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, window)
    with pytest.raises(ValueError, match="seasonally adjusted baseline"):
        baseline_from_summary(*summary, y[:, -8:], o[:, -8:], params, h, m, T)
    plain = params.clone()
    plain[..., 2 * K + 1] = 0.0
    torch.testing.assert_close(baseline_from_summary(*summary, y[:, -8:], o[:, -8:], plain, h, m, T),
                               baseline_forecast(y, o, plain, h, m, T))


def test_the_level_keeps_its_precision():
    """The level's ways against plain loops in float64 where float32 sums would not do: a huge
    value early in the look-back (before its whole seasons, T = 10, m = 4) does not enter the level
    over the whole seasons at the last origin (predict) or in the summary (the stream) (every
    origin's, from running sums, may round it, as the seasonal adjustment's); a smoothed level whose only observations lie 150+ steps back (0.5^150 is below
    float32's range) is still their weighted mean; and a row with the plain mean gets the same
    numbers, to the bit, whatever the other rows of its batch are smoothed by."""
    h = 3
    K = len(blend_knots(h))

    def level_params(alpha, q, B=1):  # the level alone: w_s = w_l = 0
        p = torch.zeros(B, 1, 2 * K + 5)
        p[..., 2 * K + 2], p[..., 2 * K + 3], p[..., -1] = alpha, q, -7.0
        return p

    T, m = 10, 4
    y = torch.full((1, T, 1), 0.5)
    y[0, 0, 0] = 1e8
    o = torch.ones(1, T, 1)
    p = level_params(0.0, 1.0)
    summary = (y[:, -1], torch.tensor([[True]]), y.mean(1), torch.tensor([[True]]))
    W = summary_width(p, h, m, T)
    assert W == 8
    for got in (baseline_forecast(y, o, p, h, m, T)[0, :, 0],
                baseline_from_summary(*summary, y[:, -W:], o[:, -W:], p, h, m, T)[0, :, 0]):
        torch.testing.assert_close(got, torch.full((h,), 0.5))
    T, m = 168, 24
    yd = np.full(T, np.pi)
    od = np.zeros(T, bool)
    od[:T - 155] = True  # the last observation 155 steps before the origin
    y, o = torch.tensor(yd, dtype=torch.float32).view(1, T, 1), torch.tensor(od, dtype=torch.float32).view(1, T, 1)
    p = level_params(0.5, 1.0)
    expected = _level_by_hand(yd, od, T - 1, T, 0.5, -7.0)
    assert expected == pytest.approx(np.pi)
    summary = (y[:, 0], torch.tensor([[True]]), y[:, 0], torch.tensor([[True]]))
    for got in (baseline_forecast(y, o, p, h, m, T)[0, :, 0], baseline_forecast(y, o, p, h, m, T, origins=T)[0, -1, :, 0],
                baseline_from_summary(*summary, y, o, p, h, m, T)[0, :, 0]):
        torch.testing.assert_close(got, torch.full((h,), float(expected)))
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 40, 1, generator=g) * 1e3
    o = (torch.rand(2, 40, 1, generator=g) > 0.2).float()
    mixed = torch.cat([level_params(0.0, 1.0), level_params(0.3, 1.0)])
    alone = baseline_forecast(y[:1], o[:1], mixed[:1], h, 12, 30, origins=40)
    assert torch.equal(baseline_forecast(y, o, mixed, h, 12, 30, origins=40)[:1], alone)
