"""The streaming predictor against re-running the context window (what window-based libraries do
for every forecast), in one run: latency of one observe + forecast, and throughput for many series,
for the per-step model (one recurrent step per observation) and the window model (a ring buffer per
series; the window runs when a forecast is asked for)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import torch

from kernels.bench.timing import measure, measure_pair
from forecaster.data import TimeSeriesDataModule
from forecaster.nets import EnsembleNet, StepForecastNet, WindowForecastNet
from forecaster.streaming import StreamingForecaster

T0 = dt.datetime(2024, 1, 1)


def _setup(n_series: int, hidden: int, context: int, horizon: int, device: str, model: str = "step",
           members: int = 1):
    steps = context + horizon + 4
    rng = np.random.default_rng(0)
    t = np.arange(steps)
    frame = pl.DataFrame({
        "id": np.repeat(np.arange(n_series), steps).astype(str),
        "time": np.tile(np.array([T0 + dt.timedelta(hours=int(i)) for i in t], dtype="datetime64[us]"), n_series),
        "y": (np.sin(np.tile(t, n_series) * 2 * np.pi / 24) + rng.normal(size=n_series * steps) * 0.1),
        "x": rng.normal(size=n_series * steps),
    })
    window = model == "window"
    dm = TimeSeriesDataModule.from_frame(frame, time_col="time", id_col="id", target_cols=["y"],
                                         past_covariate_cols=[] if window else ["x"], context_length=context,
                                         horizon=horizon, train_size=context + horizon, val_size=2, test_size=2,
                                         calendar_features="none" if window else "auto")
    torch.manual_seed(0)
    common = dict(hidden_size=hidden, num_layers=1, quantiles=[0.1, 0.5, 0.9], backend="auto", baseline="blend",
                  season_length=dm.season_length, context_length=context)
    def one():
        if window:  # SegGRU as in configs/etth1.yaml: RevIN, 24-step segments, channel-independent
            return WindowForecastNet(dm.n_targets, 0, 0, horizon, channel_independent=True, revin="last",
                                     segment_length=24, decoder="last", head_hidden=0, **common)
        return StepForecastNet(dm.n_targets, dm.n_past_covariates, dm.n_future_covariates, horizon,
                               inputs="relative", **common)  # the fit default

    net = one() if members == 1 else EnsembleNet([one() for _ in range(members)])
    return frame, dm, net.to(device).eval()


def run(device: str = "cpu", quick: bool = False, n_series: int | None = None, hidden: int = 64,
        context: int = 168, horizon: int = 24, members: list[int] | None = None) -> list[dict]:
    """The per-step model carrying its state (``step``) and running its look-back at each forecast
    (``step, history=window``), and the window model, each beside re-running the window; for each
    number of networks in ``members`` (an ensemble, ``model.members``; default one network)."""
    rows = []
    for model, history in (("step", None), ("step", "window"), ("window", None)):
        for k in members or [1]:
            rows += _run(model, history, device, quick, n_series, hidden, context, horizon, k)
    return rows


def _run(model: str, history: str | None, device: str, quick: bool, n_series: int | None, hidden: int,
         context: int, horizon: int, members: int = 1) -> list[dict]:
    n_series = n_series or (1000 if quick else 10_000)
    frame, dm, net = _setup(n_series, hidden, context, horizon, device, model, members)
    label = (model if history is None else f"{model}, history={history}") + (f", {members} networks" if members > 1
                                                                              else "")
    rows = []

    # latency: one series, one record (a list with one dict) then its forecast
    stream = StreamingForecaster(net, dm.spec, device=device, history=history)
    one = frame.filter(pl.col("id") == "0").sort("time")
    stream.observe(one.head(context))
    recs = one.slice(context).to_dicts()
    state = {"i": 0}

    def observe_forecast():
        i = state["i"]
        rec = {**recs[0], "time": recs[0]["time"] + dt.timedelta(hours=i)}
        stream.observe([rec])
        stream.forecast("0")
        state["i"] = i + 1

    lat = measure(observe_forecast, device, repeats=200, warmup=5)
    rows.append({"bench": "latency", "model": label, "series": 1, "H": hidden, "device": device,
                 "observe+forecast_us": round(lat["median_ms"] * 1e3, 1),
                 "p25_us": round(lat["p25_ms"] * 1e3, 1), "p75_us": round(lat["p75_ms"] * 1e3, 1)})

    # throughput: every series gets one new observation, then a forecast for all of them
    stream = StreamingForecaster(net, dm.spec, device=device, history=history)
    hist = frame.filter(pl.col("time") < T0 + dt.timedelta(hours=context))
    stream.observe(hist)
    step = {"k": context}
    template = frame.filter(pl.col("time") == T0 + dt.timedelta(hours=context))

    def stream_update():
        k = step["k"]
        stream.observe(template.with_columns(pl.lit(T0 + dt.timedelta(hours=k)).cast(pl.Datetime("us")).alias("time")))
        stream.forecast_values()  # every series' forecast tensor, as the window baseline produces
        step["k"] = k + 1

    ds = dm.train_dataset()
    batch = {k: v.to(device) for k, v in ds.__getitems__(list(range(n_series))).items()}

    @torch.inference_mode()
    def window_recompute():
        net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], context,
                          batch["baseline"])

    with torch.inference_mode():
        t_stream, t_window = measure_pair(stream_update, window_recompute, device, repeats=5, warmup=1)
    rows.append({
        "bench": "throughput", "model": label, "series": n_series, "H": hidden, "context": context, "device": device,
        "stream_obs_per_s": round(n_series / (t_stream["median_ms"] / 1e3)),
        "window_recompute_obs_per_s": round(n_series / (t_window["median_ms"] / 1e3)),
        "speedup": round(t_window["median_ms"] / t_stream["median_ms"], 1),
    })
    return rows
