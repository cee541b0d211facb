"""StreamingForecaster: one observation at a time equals the batch model; stream semantics;
snapshots."""

import datetime as dt
import os

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from forecaster.baseline import blend_knots, summary_width
from forecaster.data import TimeSeriesDataModule
from forecaster.nets import StepForecastNet, WindowNet
from forecaster.streaming import StreamingForecaster
from tests.forecaster.netopts import with_net

CONTEXT, HORIZON, LENGTH = 40, 5, 60
T0 = dt.datetime(2024, 3, 1)


class Holder(nn.Module):
    """A trained model's ``net`` and ``data_spec``: what StreamingForecaster is built from."""

    def __init__(self, net, spec):
        super().__init__()
        self.net, self.data_spec = net, spec


def stream_of(model, **kw) -> StreamingForecaster:
    return StreamingForecaster(model.net, model.data_spec, **kw)


def raw_frame(drop_rows=(17, 18), null_at=((9, "a"),)) -> pl.DataFrame:
    """Two hourly series with two targets and a past covariate; rows 17-18 of series "s1"
    missing (a gap) and a null target."""
    rng = np.random.default_rng(0)
    rows = []
    for sid, shift in (("s1", 0.0), ("s2", 3.0)):
        for i in range(LENGTH):
            if sid == "s1" and i in drop_rows:
                continue
            rows.append({"id": sid, "time": T0 + dt.timedelta(hours=i),
                         "a": float(np.sin(i / 4) * 5 + shift + rng.normal()),
                         "b": float(np.cos(i / 7) * 2 - shift + rng.normal()),
                         "p": float(rng.normal())})
    df = pl.DataFrame(rows)
    for i, col in null_at:
        df = df.with_columns(pl.when((pl.col("id") == "s1") & (pl.col("time") == T0 + dt.timedelta(hours=i)))
                             .then(None).otherwise(pl.col(col)).alias(col))
    return df


def make(quantiles=(0.1, 0.5, 0.9), reset_after=True, baseline="none", inputs="level"):
    df = raw_frame()
    dm = TimeSeriesDataModule.from_frame(
        df, time_col="time", id_col="id", target_cols=["a", "b"], past_covariate_cols=["p"],
        context_length=CONTEXT, horizon=HORIZON, train_size=CONTEXT + HORIZON, val_size=5, test_size=10,
        batch_size=4, shuffle=False,
    )
    torch.manual_seed(0)
    net = StepForecastNet(dm.n_targets, dm.n_past_covariates, dm.n_future_covariates, HORIZON,
                          hidden_size=16, num_layers=2, d_model=8, head_hidden=16, quantiles=list(quantiles),
                          reset_after=reset_after, backend="torch", baseline=baseline,
                          season_length=dm.season_length, context_length=CONTEXT, inputs=inputs)
    if baseline != "none":
        with torch.no_grad():  # the head starts at zero with a baseline: give it something to add
            net.head[-1].weight.normal_(0, 0.1)
            net.head[-1].bias.normal_(0, 0.1)
    return df, dm, Holder(net, dm.spec.to_dict())


@pytest.mark.parametrize("reset_after,baseline,inputs", [(True, "none", "level"), (False, "none", "level"),
                                                          (True, "blend", "level"), (True, "seasonal", "level"),
                                                          (True, "blend", "relative"), (False, "none", "relative")],
                         ids=["reset_after", "reset_before", "blend", "seasonal", "relative", "relative-no-baseline"])
def test_one_observation_at_a_time_equals_batch_model(reset_after, baseline, inputs):
    df, dm, model = make(reset_after=reset_after, baseline=baseline, inputs=inputs)
    ds = dm.train_dataset()
    sids = [dm.series_ids[int(s)] for s in ds.__getitems__(list(range(len(ds))))["series"]]
    stream = stream_of(model)
    compared = 0
    for sid in ("s1", "s2"):
        i = sids.index(sid)
        batch = ds.__getitems__([i])
        assert int(batch["start"][0]) == 0
        with torch.no_grad():
            expected = model.net(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], CONTEXT,
                                 batch["baseline"])
        expected = expected[0] * batch["scale"][0][None, :, None] + batch["loc"][0][None, :, None]  # (T, H, C, Q)
        rows = df.filter(pl.col("id") == sid).sort("time").to_dicts()
        for rec in rows:
            t = int((rec["time"] - T0) / dt.timedelta(hours=1))
            if t >= CONTEXT:
                break
            report = stream.observe([rec])
            assert report.accepted == 1 and not report.rejected
            result = stream.forecast(sid)
            got = (result.sort(["step", "target"]).select("q0.1", "q0.5", "q0.9").to_numpy()
                   .reshape(HORIZON, 2, 3))
            np.testing.assert_allclose(got, expected[t].numpy(), rtol=1e-4, atol=1e-4)
            compared += 1
    assert compared == 2 * CONTEXT - 2  # every record of both series but the two missing hours


def test_forecast_frame_columns_and_times():
    df, dm, model = make()
    stream = stream_of(model)
    stream.observe(df.filter(pl.col("time") <= T0 + dt.timedelta(hours=3)))
    result = stream.forecast()
    assert result.columns == ["series", "origin", "time", "step", "target", "value", "q0.1", "q0.5", "q0.9"]
    assert result.height == 2 * HORIZON * 2
    first = result.filter((pl.col("series") == "s2") & (pl.col("step") == 1))
    assert first["origin"].to_list() == [T0 + dt.timedelta(hours=3)] * 2
    assert first["time"].to_list() == [T0 + dt.timedelta(hours=4)] * 2
    assert (result["q0.1"] <= result["q0.5"]).all() and (result["q0.5"] <= result["q0.9"]).all()
    assert (result["value"] == result["q0.5"]).all()


def test_forecast_does_not_change_state():
    df, dm, model = make()
    stream = stream_of(model)
    stream.observe(df.head(10))
    before = stream.hidden_state()[1]
    a = stream.forecast()
    b = stream.forecast()
    assert a.equals(b)
    assert torch.equal(stream.hidden_state()[1], before)


def test_gap_is_advanced_as_unobserved_steps():
    df, dm, model = make()
    s1 = df.filter(pl.col("id") == "s1").sort("time")
    gap_fed, dense_fed = stream_of(model), stream_of(model)
    rec_before, rec_after = s1.row(2, named=True), s1.row(3, named=True)
    gap_fed.observe([rec_before])
    report = gap_fed.observe([{**rec_after, "time": rec_before["time"] + dt.timedelta(hours=4)}])
    assert report.steps == 4  # three missing hours + the record
    dense_fed.observe([rec_before])
    for k in (1, 2, 3):
        dense_fed.observe([{**rec_before, "time": rec_before["time"] + dt.timedelta(hours=k),
                            "a": None, "b": None, "p": None}])
    dense_fed.observe([{**rec_after, "time": rec_before["time"] + dt.timedelta(hours=4)}])
    torch.testing.assert_close(gap_fed.hidden_state()[1], dense_fed.hidden_state()[1])
    assert gap_fed.info()["steps"].to_list() == [5]
    assert gap_fed.info()["observations"].to_list() == [2]


def test_out_of_order_duplicate_and_off_grid_records_are_rejected_others_processed():
    df, dm, model = make()
    stream = stream_of(model)
    recs = df.filter(pl.col("id") == "s1").sort("time").head(4).to_dicts()
    stream.observe(recs[:3])
    before = stream.hidden_state("s1")[1].clone()
    other = df.filter(pl.col("id") == "s2").row(0, named=True)
    report = stream.observe([
        recs[1],                                                     # out of order
        recs[2],                                                     # duplicate
        {**recs[3], "time": recs[2]["time"] + dt.timedelta(minutes=30)},  # off the hourly grid
        other,                                                       # fine
    ])
    assert [r.index for r in report.rejected] == [0, 1, 2]
    assert "out-of-order" in report.rejected[0].reason
    assert "duplicate" in report.rejected[1].reason
    assert "grid" in report.rejected[2].reason
    assert report.accepted == 1
    assert torch.equal(stream.hidden_state("s1")[1], before)
    assert stream.series == ["s1", "s2"]


def test_null_nan_is_missing_inf_rejected_bad_columns_raise():
    df, dm, model = make()
    stream = stream_of(model)
    rec = df.row(0, named=True)
    report = stream.observe([{**rec, "a": None, "b": float("nan")}])
    assert report.accepted == 1 and stream.info()["observations"].to_list() == [0]
    report = stream.observe([{**rec, "time": rec["time"] + dt.timedelta(hours=1), "a": float("inf")}])
    assert report.accepted == 0 and "infinite" in report.rejected[0].reason
    # a record of a list that lacks a column, or is no dict, is rejected on its own; the others apply
    nxt = {**rec, "time": rec["time"] + dt.timedelta(hours=1)}
    report = stream.observe([{k: v for k, v in nxt.items() if k != "p"}, ["not", "a", "dict"], nxt])
    assert report.accepted == 1 and [r.index for r in report.rejected] == [0, 1]
    assert "lacks column(s) ['p']" in report.rejected[0].reason and "is a list" in report.rejected[1].reason
    rec = nxt
    with pytest.raises(ValueError, match="must be numeric"):
        stream.observe(pl.DataFrame({"id": ["s1"], "time": [T0], "a": ["x"], "b": [1.0], "p": [1.0]}))
    report = stream.observe([{**rec, "time": rec["time"] + dt.timedelta(hours=2), "a": "12"}])
    assert "not a number" in report.rejected[0].reason


def test_new_series_uses_pooled_scaler_or_is_rejected():
    df, dm, model = make()
    stream = stream_of(model)
    rec = {**df.row(0, named=True), "id": "brand-new"}
    assert stream.observe([rec]).accepted == 1
    spec = model.data_spec
    expected_loc = np.median([[spec["scalers"][s][c][0] for c in ("a", "b")] for s in ("s1", "s2")], axis=0)
    np.testing.assert_allclose(stream.table.t["params"][stream.table.ids["brand-new"], 0, :2], expected_loc, rtol=1e-6)
    strict = stream_of(model, new_series="reject")
    report = strict.observe([rec])
    assert report.accepted == 0 and "unknown series" in report.rejected[0].reason


def test_snapshot_round_trip_gives_identical_forecasts(tmp_path):
    df, dm, model = make()
    stream = stream_of(model)
    stream.observe(df.filter(pl.col("time") < T0 + dt.timedelta(hours=20)))
    path = tmp_path / "state.pt"
    stream.save_state(path)
    restored = stream_of(model)
    restored.load_state(path)
    assert restored.forecast().equals(stream.forecast())
    nxt = df.filter(pl.col("time") == T0 + dt.timedelta(hours=20))
    stream.observe(nxt)
    restored.observe(nxt)
    assert restored.forecast().equals(stream.forecast())


@pytest.mark.parametrize("kind", ["base", "delta"])
def test_snapshot_is_atomic_under_a_crash_mid_write(tmp_path, monkeypatch, kind):
    df, dm, model = make()
    stream = stream_of(model)
    stream.observe(df.head(5))
    path = tmp_path / "state.pt"
    stream.save_state(path)
    good = path.read_bytes()
    stream.observe(df.slice(5, 5))
    expected = stream.forecast()
    if kind == "base":  # a new stream's first snapshot replaces the file: crash while writing its temporary
        stream.close()
        stream = stream_of(model)
        stream.observe(df.head(10))
        real_write = os.fdopen

        def fdopen(fd, *a, **k):
            f = real_write(fd, *a, **k)
            f.write = lambda b: (os.write(fd, b[:7]), (_ for _ in ()).throw(KeyboardInterrupt("killed mid-write")))
            return f

        monkeypatch.setattr(os, "fdopen", fdopen)
    else:  # a delta appended to the file: crash after part of it is written
        real_pwrite = os.pwrite

        def pwrite(fd, data, offset):
            real_pwrite(fd, data[:7], offset)
            raise KeyboardInterrupt("killed mid-write")

        monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(KeyboardInterrupt):
        stream.save_state(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt", "state.pt.lock"]
    stream.save_state(path)  # the next try writes what the interrupted one could not
    restored = stream_of(model)
    restored.load_state(path)
    assert restored.forecast().equals(expected)


def test_load_state_errors(tmp_path):
    df, dm, model = make()
    stream = stream_of(model)
    with pytest.raises(ValueError, match="does not exist"):
        stream.load_state(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a snapshot")
    with pytest.raises(ValueError, match="not a readable snapshot"):
        stream.load_state(tmp_path / "junk.pt")
    other = StreamingForecaster(StepForecastNet(2, 1, dm.n_future_covariates, HORIZON, hidden_size=8),
                                model.data_spec)
    other.observe(df.head(2))
    other.save_state(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="written for another model"):
        stream.load_state(tmp_path / "other.pt")


def test_hidden_state_exposed_per_series():
    df, dm, model = make()
    stream = stream_of(model)
    stream.observe(df.head(3))
    ids, states = stream.hidden_state()
    assert ids == ["s1"] and states.shape == (1, 2, 16)
    with pytest.raises(ValueError, match="no observations yet"):
        stream.forecast("s9")


def test_vectorised_frame_path_equals_record_path():
    df, dm, model = make()
    frame_fed, record_fed = stream_of(model), stream_of(model)
    first = df.filter(pl.col("time") == T0)
    frame_fed.observe(first)
    record_fed.observe(first.to_dicts())
    for k in range(1, 12):  # s1 has a null at hour 9; both series move together each hour
        part = df.filter(pl.col("time") == T0 + dt.timedelta(hours=k))
        frame_fed.table.clock += 1  # what observe() does first
        fast = frame_fed.stepper.observe_frame_fast(part)
        assert fast is not None and fast.accepted == part.height
        record_fed.observe(part.to_dicts())
    torch.testing.assert_close(frame_fed.hidden_state()[1], record_fed.hidden_state()[1], rtol=0, atol=0)
    assert frame_fed.info().equals(record_fed.info())


def test_wide_data_without_id_column_uses_the_data_modules_series_id():
    df = raw_frame().filter(pl.col("id") == "s2").drop("id")
    dm = TimeSeriesDataModule.from_frame(df, time_col="time", target_cols=["a", "b"], past_covariate_cols=["p"],
                                         context_length=CONTEXT, horizon=HORIZON, val_size=5, test_size=10)
    net = StepForecastNet(dm.n_targets, dm.n_past_covariates, dm.n_future_covariates, HORIZON, hidden_size=8)
    stream = StreamingForecaster(net, dm.spec, new_series="reject")
    report = stream.observe(df.head(3))
    assert report.accepted == 3 and not report.rejected  # its own scaler, not an "unknown series"
    assert stream.series == dm.series_ids
    assert stream.forecast()["series"].unique().to_list() == dm.series_ids


MODELS = {
    "forking": dict(),
    "forking-no-baseline": dict(baseline="none"),
    "forking-history-window": dict(history="window"),
    "forking-relative-history-window": dict(baseline="none", inputs="relative", history="window"),
    "last": dict(decoder="last"),
    "last-revin-std": dict(decoder="last", revin="std"),
    "segments": dict(decoder="last", segment_length=5, revin="last"),
    "channel-independent": dict(decoder="last", segment_length=5, channel_independent=True, revin="last",
                                no_covariates=True),
    "pmf": dict(decoder="pmf", segment_length=5, channel_independent=True, no_covariates=True),
    "pmf-no-baseline": dict(decoder="pmf", segment_length=5, revin="mean", baseline="none", no_covariates=True),
    "forking-ensemble": dict(members=3),
    "forking-ensemble-history-window": dict(members=2, history="window"),
    "last-ensemble": dict(decoder="last", revin="std", members=2),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_streams_and_equals_predict(name, tmp_path):
    """After observing the same history (with a gap and a null), the streamed forecast equals
    predict's at the same origin, for every decoder and option. The window model keeps the look-back
    and runs it: any history. The per-step model carries its state over the whole history while
    predict starts its window from zero, so both see the same only when the history fits the window
    (longer histories: replay --compare_window measures the difference), unless it runs the window
    too (``history="window"``)."""
    from forecaster.lightning_module import GRUForecaster

    opts = {"members": 1, **MODELS[name]}  # one network unless the case names an ensemble
    no_cov = opts.pop("no_covariates", False)
    history = opts.pop("history", None)
    df = raw_frame(null_at=((9, "a"), (0, "b"), (1, "b")))  # s1's "b" first observed at its third step
    dm = TimeSeriesDataModule.from_frame(
        df, time_col="time", id_col="id", target_cols=["a", "b"], past_covariate_cols=[] if no_cov else ["p"],
        calendar_features="none" if no_cov else ["hour_of_day"], context_length=CONTEXT, horizon=HORIZON,
        val_size=5, test_size=5)
    torch.manual_seed(0)
    model = GRUForecaster.from_datamodule(dm, **with_net(opts, hidden_size=8, d_model=8, head_hidden=16)).eval()
    K = len(blend_knots(HORIZON))
    model.spec.baseline[:, :, 2 * K] = 0.7  # the drift from each target's first observation, in every model
    model.spec.baseline[:, 0, 2 * K + 1] = 1.0  # and the first target seasonally adjusted, the second's level
    model.spec.baseline[:, 1, 2 * K + 2] = 0.3  # smoothed (both over the look-back's whole seasons, q = 1)
    assert (model.spec.baseline[:, :, 2 * K + 3] == 1.0).all()
    # the first target's adjustment mixed with a profile of its whole history (phase 0 at its first observation),
    # half and half in the first series, its shape at the look-back's amplitude in the others
    model.spec.baseline[:, 0, 2 * K + 4:2 * K + 6] = 1.0
    model.spec.baseline[0, 0, 2 * K + 4:2 * K + 6] = (0.5, 0.0)
    coef = np.random.default_rng(0).normal(size=model.spec.baseline[:, 0, 2 * K + 6:-1].shape) * 0.3
    model.spec.baseline[:, 0, 2 * K + 6:-1] = coef
    with torch.no_grad():  # a head that adds something to the baseline (every member's, in an ensemble)
        for net in getattr(model.net, "members", [model.net]):
            for p in net.head.parameters():
                p.normal_(0, 0.2)
    end = 52 if opts.get("decoder") or history else CONTEXT - 1
    cut = df.filter(pl.col("time") <= T0 + dt.timedelta(hours=end))
    expected = model.forecast_frame(TimeSeriesDataModule.from_spec(model.spec, data=cut))
    stream = StreamingForecaster(model.net, model.spec, history=history)
    for k in range(0, end + 1, 7):  # in chunks, record by record for the last one
        part = cut.filter((pl.col("time") >= T0 + dt.timedelta(hours=k)) & (pl.col("time") < T0 + dt.timedelta(hours=k + 7)))
        report = stream.observe(part if k + 7 <= end else part.to_dicts())
        assert not report.rejected
    result = stream.forecast()
    assert result.columns == expected.columns
    joined = result.join(expected, on=["series", "time", "target"], suffix="_predict")
    assert joined.height == expected.height == 2 * HORIZON * 2
    for q in ("value", "q0.1", "q0.9"):
        np.testing.assert_allclose(joined[q], joined[f"{q}_predict"], rtol=1e-4, atol=1e-4)
    assert (joined["origin"] == joined["origin_predict"]).all()
    mem = stream.info()["memory_bytes"].to_list()
    assert len(set(mem)) == 1 and mem[0] == stream.memory_per_series()
    stream.save_state(tmp_path / "s.pt")  # snapshots carry the buffers
    restored = StreamingForecaster(model.net, model.spec, history=history)
    restored.load_state(tmp_path / "s.pt")
    assert restored.forecast().equals(result)
    nxt = df.filter(pl.col("time") == T0 + dt.timedelta(hours=end + 1))
    stream.observe(nxt)
    restored.observe(nxt)
    assert not stream.forecast().equals(result) and stream.forecast().equals(restored.forecast())
    if history:  # a snapshot of windows is not a snapshot of carried states, and the other way round
        with pytest.raises(ValueError, match=r"written with history='window', this stream uses history='carry'; "
                                             r"start it with history='window' \(--history window\)"):
            StreamingForecaster(model.net, model.spec).load_state(tmp_path / "s.pt")
        carried = StreamingForecaster(model.net, model.spec)
        carried.observe(cut)
        carried.save_state(tmp_path / "c.pt")
        with pytest.raises(ValueError, match="written with history='carry', this stream uses history='window'"):
            restored.load_state(tmp_path / "c.pt")
        assert restored.forecast().equals(stream.forecast())  # the failed load changed nothing


def test_history_option_is_checked():
    df, dm, model = make(baseline="blend")
    with pytest.raises(ValueError, match="history must be 'carry' or 'window'"):
        stream_of(model, history="state")
    assert stream_of(model).history == "carry" and stream_of(model, history="window").history == "window"
    window = WindowNet(hidden_size=8, d_model=8, head_hidden=16).build(
        dm.n_targets, dm.n_past_covariates, dm.n_future_covariates, HORIZON, CONTEXT, quantiles=None, baseline="none",
        season_length=1)
    with pytest.raises(ValueError, match="history='carry' needs the per-step model"):
        StreamingForecaster(window, dm.spec, history="carry")
    assert StreamingForecaster(window, dm.spec).history == "window"
    windowed = stream_of(model, history="window")
    windowed.observe(df.filter(pl.col("id") == "s1"))
    with pytest.raises(ValueError, match="keeps no state between observations"):
        windowed.hidden_state("s1")


@pytest.mark.parametrize("season", [24, 50, 12])
def test_the_streams_running_look_back_summary_gives_the_windows_baseline(season):
    """The per-step model with relative inputs reads its baseline from the running summary (last
    value, look-back mean, the look-back's last whole seasons: O(T) per forecast), target "a"
    seasonally adjusted (where the season fits the look-back), "b" too with season 12 (three whole seasons, the
    look-back's first 4 steps outside them); at every step of a long history
    with a target missing for longer than the look-back, dropped rows, a season longer than the
    look-back and a huge value (1e20, finite in float32, whose leaving the running sum cannot
    subtract exactly), that equals the baseline of the look-back window itself."""
    rng = np.random.default_rng(1)
    n = 200
    rows = [{"id": "s1", "time": T0 + dt.timedelta(hours=i), "a": float(np.sin(i / 4) * 5 + rng.normal()),
             "b": 1e20 if i == 61 else float(rng.normal()), "p": float(rng.normal())}
            for i in range(n) if not 150 <= i < 156]
    df = pl.DataFrame(rows).with_columns(
        pl.when(pl.col("time").is_between(T0 + dt.timedelta(hours=80), T0 + dt.timedelta(hours=129)))
        .then(None).otherwise(pl.col("a")).alias("a"))
    trained_on = df.with_columns(pl.when(pl.col("b") > 1e10).then(None).otherwise(pl.col("b")).alias("b"))
    dm = TimeSeriesDataModule.from_frame(trained_on, time_col="time", id_col="id", target_cols=["a", "b"],
                                         past_covariate_cols=["p"], context_length=CONTEXT, horizon=HORIZON,
                                         val_size=5, test_size=5)
    torch.manual_seed(0)
    net = StepForecastNet(dm.n_targets, dm.n_past_covariates, dm.n_future_covariates, HORIZON, hidden_size=8,
                          d_model=8, head_hidden=16, backend="torch", baseline="blend", season_length=season,
                          context_length=CONTEXT, inputs="relative").eval()
    stream = StreamingForecaster(net, dm.spec)
    t = stream.table.t
    assert "sum_y" in t  # the running summary exists for this model
    compared = 0
    for rec in df.sort("time").to_dicts():
        report = stream.observe([rec])
        assert report.accepted == 1, report
        rows_ = np.array([0])
        params = torch.from_numpy(t["base"][rows_]).clone()
        params[:, 0 if season != 12 else slice(None), 2 * len(blend_knots(HORIZON)) + 1] = 1.0  # "a" adjusted (12: both)
        params[:, 1, 2 * len(blend_knots(HORIZON)) + 2] = 0.2  # "b"'s level smoothed
        width = summary_width(params, HORIZON, net.season_length, CONTEXT)
        assert width == {24: 24, 50: CONTEXT, 12: 36}[season]  # "b"'s level: the whole seasons (or look-back)
        zero = torch.zeros(1, HORIZON, 2, 3)
        win_y, win_o, _ = stream.lookback.window(t, rows_)
        expected = net.add_baseline(zero, torch.from_numpy(win_y), torch.from_numpy(win_o), params)
        summary = tuple(torch.from_numpy(a) for a in stream.lookback.summary(t, rows_, width))
        got = net.add_baseline_from_summary(zero, summary, params)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        compared += 1
    assert compared == n - 6
    assert t["cnt"][0, 1] == CONTEXT and np.abs(t["sum_y"][0, 1]) < 1e3  # it has left
