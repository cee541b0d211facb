"""Swapping a running stream's model: re-warmed states equal a fresh stream of the new model,
refusals keep the old model, the watcher ignores bad files, snapshots know their model."""

import datetime as dt
import io
import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from forecaster.checkpoint import read_checkpoint
from forecaster.data import TimeSeriesDataModule
from forecaster.lightning_module import GRUForecaster
from forecaster.nets import StepForecastNet, StepNet
from forecaster.snapshot import SnapshotError
from forecaster.spec import DataSpec
from forecaster.stream_cli import main, run_loop
from forecaster.streaming import StreamingForecaster
from forecaster.streaming.metrics import StreamMetrics
from forecaster.streaming.swap import CheckpointWatcher, SwapError

CONTEXT, HORIZON, LENGTH = 24, 4, 60
T0 = dt.datetime(2024, 3, 1)


class Holder(nn.Module):
    def __init__(self, net, spec):
        super().__init__()
        self.net, self.data_spec = net, spec


def frame(n=LENGTH, ids=("s1", "s2", "s3")) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"id": sid, "time": T0 + dt.timedelta(hours=i), "a": float(np.sin(i / 4) * 5 + k + rng.normal()),
             "b": float(np.cos(i / 7) * 2 - k + rng.normal()), "p": float(rng.normal())}
            for k, sid in enumerate(ids) for i in range(n)]
    return pl.DataFrame(rows).sort("time", "id")


def spec_of(df) -> DataSpec:
    dm = TimeSeriesDataModule.from_frame(df, time_col="time", id_col="id", target_cols=["a", "b"],
                                         past_covariate_cols=["p"], context_length=CONTEXT, horizon=HORIZON,
                                         train_size=CONTEXT + HORIZON, val_size=5, test_size=10, batch_size=4)
    return dm.spec


def net_of(spec: DataSpec, seed: int, baseline="blend", inputs="relative", hidden=12) -> StepForecastNet:
    torch.manual_seed(seed)
    net = StepForecastNet(spec.n_targets, spec.n_past_covariates, spec.n_future_covariates, HORIZON,
                          hidden_size=hidden, d_model=8, head_hidden=16, quantiles=[0.1, 0.5, 0.9], backend="torch",
                          baseline=baseline, season_length=spec.season_length, context_length=CONTEXT, inputs=inputs)
    with torch.no_grad():  # the head starts at zero with a baseline: give it something to add
        net.head[-1].weight.normal_(0, 0.1)
        net.head[-1].bias.normal_(0, 0.1)
    return net


@pytest.fixture(scope="module")
def data():
    df = frame()
    return df, spec_of(df)


def feed(stream, df, times):
    for t in times:
        stream.observe(df.filter(pl.col("time") == t))


@pytest.mark.parametrize("baseline,inputs,hidden_b", [("blend", "relative", 12), ("none", "level", 12),
                                                      ("seasonal", "level", 20)],
                         ids=["relative-blend", "level-no-baseline", "wider-new-model"])
def test_swap_mid_stream_equals_a_fresh_stream_of_the_new_model_on_the_look_back(data, baseline, inputs, hidden_b):
    df, spec = data
    times = df["time"].unique().sort()
    a, b = net_of(spec, 0, baseline, inputs), net_of(spec, 1, baseline, inputs, hidden_b)
    stream = StreamingForecaster(a, spec, swappable=True)
    feed(stream, df, times[:40])
    before = stream.forecast()
    report = stream.swap(b)
    assert (report.series, report.rewarmed, report.rescaled) == (3, 3, False)
    assert report.old != report.new and "3 series re-warmed" in report.line()
    expected = StreamingForecaster(b, spec)  # the new model from the same look-back: the last CONTEXT steps
    feed(expected, df, times[40 - CONTEXT:40])
    result = stream.forecast()
    assert result.equals(expected.forecast())
    assert not result.equals(before)
    assert torch.equal(stream.hidden_state()[1], expected.hidden_state()[1])
    feed(stream, df, times[40:50])  # and it goes on as the fresh stream does
    feed(expected, df, times[40:50])
    assert stream.forecast().equals(expected.forecast())


def test_a_young_series_and_a_restarted_one_rewarm_from_what_their_look_back_holds(data):
    df, spec = data
    a, b = net_of(spec, 0), net_of(spec, 1)
    stream = StreamingForecaster(a, spec, swappable=True, max_gap=None)
    young = df.filter(pl.col("id") == "s1").head(5)  # 5 steps: fewer than the look-back
    gap = df.filter(pl.col("id") == "s2")
    gap = pl.concat([gap.head(10), gap.tail(3)])  # a gap longer than the context: a restart
    stream.observe(young)
    stream.observe(gap)
    stream.swap(b)
    fresh = StreamingForecaster(b, spec)  # the young series: what a fresh stream of B computes from its 5 steps
    fresh.observe(young)  # (stepped alone, not beside s2 as in the re-warm: a batch of another size rounds
    np.testing.assert_allclose(stream.forecast("s1")["value"].to_numpy(),  # otherwise in the last bits)
                               fresh.forecast("s1")["value"].to_numpy(), rtol=1e-6, atol=1e-6)
    # the restarted one: the state of B run over the window that ends at its last time (missing steps
    # before the restart), i.e. the forecast of running that window (history="window"), rounding aside
    window = StreamingForecaster(b, spec, history="window", max_gap=None)
    window.observe(young)
    window.observe(gap)
    result, expected = stream.forecast("s2"), window.forecast("s2")
    np.testing.assert_allclose(result["value"].to_numpy(), expected["value"].to_numpy(), rtol=1e-5, atol=1e-5)


def test_window_history_swaps_without_rewarming(data):
    df, spec = data
    times = df["time"].unique().sort()
    a, b = net_of(spec, 0), net_of(spec, 1)
    stream = StreamingForecaster(a, spec, history="window")
    feed(stream, df, times[:30])
    report = stream.swap(b)
    assert report.rewarmed == 0 and "no state to re-warm" in report.line()
    expected = StreamingForecaster(b, spec, history="window")
    feed(expected, df, times[:30])
    assert stream.forecast().equals(expected.forecast())


def test_refitted_scalers_convert_the_look_back(data):
    df, spec = data
    times = df["time"].unique().sort()
    a, b = net_of(spec, 0), net_of(spec, 1)
    other = DataSpec.from_dict(spec.to_dict())
    other.loc = other.loc + 0.5
    other.scale = other.scale * 1.3
    stream = StreamingForecaster(a, spec, swappable=True)
    feed(stream, df, times[:40])
    report = stream.swap(b, other)
    assert report.rescaled and "scalers converted" in report.line()
    expected = StreamingForecaster(b, other)
    feed(expected, df, times[40 - CONTEXT:40])
    result, want = stream.forecast(), expected.forecast()
    np.testing.assert_allclose(result["value"].to_numpy(), want["value"].to_numpy(), rtol=1e-4, atol=1e-4)


def test_an_incompatible_model_is_refused_and_the_old_one_keeps_serving(data):
    df, spec = data
    times = df["time"].unique().sort()
    a = net_of(spec, 0)
    stream = StreamingForecaster(a, spec, swappable=True)
    feed(stream, df, times[:30])
    before, state, digest = stream.forecast(), stream.hidden_state()[1], stream._digest
    other = spec.to_dict()
    other["freq"] = "2h"
    with pytest.raises(SwapError, match=r"other data: freq .*the stream keeps its model"):
        stream.swap(net_of(spec, 1), other)
    with pytest.raises(SwapError, match="other quantile levels"):
        stream.swap(StepForecastNet(2, 1, spec.n_future_covariates, HORIZON, hidden_size=8, quantiles=[0.5],
                                    baseline="blend", context_length=CONTEXT, season_length=spec.season_length,
                                    inputs="relative"))
    with pytest.raises(SwapError, match="other per-series columns"):  # relative inputs keep running sums
        stream.swap(net_of(spec, 1, baseline="blend", inputs="level"))
    with pytest.raises(SwapError, match="forecasting network"):
        stream.swap(nn.Linear(2, 2))
    assert stream._digest == digest and stream.forecast().equals(before)
    assert torch.equal(stream.hidden_state()[1], state)
    feed(stream, df, times[30:32])  # and it still serves
    assert len(stream.forecast()) == 3 * HORIZON * 2


def test_a_failing_rewarm_leaves_the_old_model_and_every_state(data):
    df, spec = data
    times = df["time"].unique().sort()
    stream = StreamingForecaster(net_of(spec, 0), spec, swappable=True)
    feed(stream, df, times[:30])
    before, state, info = stream.forecast(), stream.hidden_state()[1], stream.info()
    bad = net_of(spec, 1)
    with torch.no_grad():
        bad.input_proj[0].weight.fill_(float("inf"))  # every state it computes is non-finite
    with pytest.raises(SwapError, match="non-finite value; the stream keeps its model"):
        stream.swap(bad)
    assert stream.forecast().equals(before) and stream.info().equals(info)
    assert torch.equal(stream.hidden_state()[1], state)


def test_a_carry_stream_without_the_look_back_of_its_covariates_refuses(data):
    df, spec = data
    stream = StreamingForecaster(net_of(spec, 0), spec)  # not swappable: no ring of the covariate p
    stream.observe(df.head(6))
    with pytest.raises(SwapError, match="swappable=True"):
        stream.swap(net_of(spec, 1))


def test_swap_then_snapshot_then_restore(data, tmp_path):
    df, spec = data
    times = df["time"].unique().sort()
    a, b = net_of(spec, 0), net_of(spec, 1)
    path = tmp_path / "state.pt"
    with StreamingForecaster(a, spec, swappable=True) as stream:
        feed(stream, df, times[:30])
        assert stream.save_state(path)["kind"] == "base"
        feed(stream, df, times[30:32])
        assert stream.save_state(path)["kind"] == "delta"
        stream.swap(b)
        written = stream.save_state(path)
        assert written["kind"] == "base" and written["series"] == 3  # every state changed, and its model
        feed(stream, df, times[32:35])
        assert stream.save_state(path)["kind"] == "delta"
        expected = stream.forecast()
    with StreamingForecaster(b, spec, swappable=True) as restored:
        restored.load_state(path)
        assert restored.forecast().equals(expected)
    with StreamingForecaster(a, spec, swappable=True) as old:  # a snapshot of model B is not model A's
        with pytest.raises(SnapshotError, match="written for another model"):
            old.load_state(path)
    with StreamingForecaster(b, spec) as unswappable:  # nor one of another look-back
        with pytest.raises(SnapshotError, match="swappable=True"):
            unswappable.load_state(path)


# ---- checkpoints on disk: the watcher and the CLI ---------------------------------------------------

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("swap"))


def make_checkpoints(root):
    """A tiny model of the embedded data (A), another of the same data (B: A's weights moved), and
    one of another frequency (C), in folder ``root``; and 60 records of the data as NDJSON lines."""
    import lightning as L

    dm = TimeSeriesDataModule(context_length=30, horizon=4, batch_size=32)
    model = GRUForecaster(n_targets=dm.n_targets, n_past_covariates=dm.n_past_covariates,
                          n_future_covariates=dm.n_future_covariates, context_length=30, horizon=4,
                          seasonal_period=dm.season_length, members=1,
                          min_origin=4, data_spec=dm.spec.to_dict(),
                          net=StepNet(hidden_size=8, d_model=8, head_hidden=8))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=str(root))
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(root / "A.ckpt")
    ck = read_checkpoint(root / "A.ckpt")
    g = torch.Generator().manual_seed(1)
    for v in ck["state_dict"].values():
        if v.is_floating_point():
            v.add_(0.05 * torch.randn(v.shape, generator=g))
    torch.save(ck, root / "B.ckpt")
    ck["hyper_parameters"]["data_spec"]["freq"] = "2h"
    torch.save(ck, root / "C.ckpt")
    records = dm.frame().collect().sort("time", "station").head(60)
    lines = [json.dumps({**r, "time": r["time"].isoformat()}) for r in records.to_dicts()]
    return root, lines


def test_the_watcher_swaps_to_a_complete_valid_checkpoint_and_ignores_the_rest(ckpts, tmp_path):
    root, lines = ckpts
    watched = tmp_path / "new.ckpt"
    stream = StreamingForecaster.from_checkpoint(root / "A.ckpt", swappable=True)
    err = io.StringIO()
    watcher = CheckpointWatcher(watched, every=1e-9, err=err)
    metrics = StreamMetrics(stream)
    steps = {5: lambda: watched.write_bytes(b"not a checkpoint\n"),  # garbage
             10: lambda: watched.write_bytes((root / "B.ckpt").read_bytes()[:20000]),  # a truncated write
             15: lambda: shutil.copy(root / "C.ckpt", watched),  # another frequency
             20: lambda: shutil.copy(root / "A.ckpt", watched),  # the weights already served
             25: lambda: shutil.copy(root / "B.ckpt", watched)}  # a new model

    def source():
        for i, line in enumerate(lines):
            if i in steps:
                steps[i]()
            yield line

    digest_a = stream._digest
    counts = run_loop(stream, source(), io.StringIO(), err, metrics=metrics, watcher=watcher)
    messages = err.getvalue().splitlines()
    watch = [m for m in messages if "--watch" in m or m.startswith("swapped")]
    assert len(watch) == 4, messages
    assert "ignored, not a valid checkpoint" in watch[0] and "not a checkpoint file" in watch[0]
    assert "ignored, not a valid checkpoint" in watch[1]
    assert "not swapped to" in watch[2] and "freq" in watch[2] and "keeps its model" in watch[2]
    assert watch[3].startswith(f"swapped model {digest_a} -> ") and "re-warmed" in watch[3]
    assert "Traceback" not in err.getvalue()
    assert counts["swaps"] == 1 and counts["records"] == len(lines) and watcher.ignored == 3
    assert stream._digest == StreamingForecaster.from_checkpoint(root / "B.ckpt")._digest
    assert [s["model"] for s in metrics.summary()["models"]] == [digest_a, stream._digest]


def test_cli_watch_state_restart_continues_on_the_watched_model(ckpts, tmp_path, monkeypatch, capsys):
    root, lines = ckpts
    watched, state = tmp_path / "new.ckpt", tmp_path / "state.pt"
    shutil.copy(root / "B.ckpt", watched)
    src = tmp_path / "in.ndjson"
    src.write_text("\n".join(lines[:30]) + "\n")
    args = ["--ckpt_path", str(root / "A.ckpt"), "--watch", str(watched), "--watch_every", "0.000001",
            "--state", str(state), "--input", str(src)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "swapped model" in err and '"swaps": 1' in err
    summary = json.loads(err.split("done: ", 1)[1].splitlines()[0])
    digest_b = StreamingForecaster.from_checkpoint(root / "B.ckpt")._digest
    assert summary["metrics"]["models"][-1]["model"] == digest_b
    after_first = tmp_path / "first.pt"
    shutil.copy(state, after_first)
    src.write_text("\n".join(lines[30:]) + "\n")
    assert main(args) == 0  # the state is model B's: the restart starts on the watched model
    err = capsys.readouterr().err
    assert "was written for the model at --watch" in err and "restored 2 series" in err
    summary = json.loads(err.split("done: ", 1)[1].splitlines()[0])
    assert summary["swaps"] == 0 and summary["metrics"]["models"][0]["model"] == digest_b
    assert main(["--ckpt_path", str(root / "A.ckpt"), "--state", str(state), "--input", str(src)]) == 2
    assert "written for another model" in capsys.readouterr().err  # without --watch: refused, as before
    expected = StreamingForecaster.from_checkpoint(root / "B.ckpt", swappable=True)
    expected.load_state(after_first)
    run_loop(expected, lines[30:], io.StringIO(), io.StringIO())
    result = StreamingForecaster.from_checkpoint(root / "B.ckpt", swappable=True)
    result.load_state(state)
    assert torch.equal(result.hidden_state()[1], expected.hidden_state()[1])
    assert result.info().equals(expected.info())


def test_replay_with_a_swap_reports_each_models_online_error(ckpts, tmp_path, capsys):
    from forecaster.data import DEFAULT_DATASET

    root, _ = ckpts
    dm = TimeSeriesDataModule(context_length=30, horizon=4)
    begin, _ = dm.split_bounds("test")
    first = dm.grid_time(np.arange(len(dm.series_ids)), begin).max()
    at = (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(first) // 1000 + 10 * 3600 * 10 ** 6)).isoformat()
    report = tmp_path / "report.csv"
    args = ["--ckpt_path", str(root / "A.ckpt"), "--replay", str(DEFAULT_DATASET), "--max_steps", "30"]
    assert main(args + ["--swap", f"{root / 'B.ckpt'}@{at}", "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    assert err.count("swapped model") == 1 and "1 series" not in err
    models = [line for line in out.splitlines() if line.startswith("model ")]
    assert len(models) == 2 and "online MAE" in models[0] and "seasonal naive" in models[1]
    table = pl.read_csv(report)
    assert table.columns == ["period", "model", "mae", "mae_seasonal_naive", "mae_last_value", "n"]
    assert table["model"].n_unique() == 2
    assert main(args + ["--swap", f"{root / 'C.ckpt'}@{at}"]) == 2  # another frequency: refused
    assert "other data: freq" in capsys.readouterr().err
    assert main(args + ["--swap", f"{root / 'B.ckpt'}@not-a-time"]) == 2
    assert "--swap time 'not-a-time'" in capsys.readouterr().err
    assert main(args + ["--swap", "nothing-here"]) == 2
    assert "give CKPT@TIME" in capsys.readouterr().err


@pytest.mark.parametrize("history", ["carry", "window"])
def test_a_swap_converts_the_drifts_anchor_to_the_new_scalers(history):
    """The baseline's drift anchors at each target's first observation, kept scaled: a swap to a
    model with other scalers converts it, so the swapped stream forecasts what a fresh stream of
    the new model does."""
    from forecaster.baseline import blend_knots

    df = frame()
    spec = spec_of(df)
    K, C = len(blend_knots(HORIZON)), 2
    spec.baseline[:, :, 2 * K] = 0.7  # a drift, as the fit keeps for trending series
    other = DataSpec.from_dict(spec.to_dict())  # the same model refitted: other scalers, its anchors in them
    other.loc = other.loc + 0.5
    other.scale = other.scale * 1.3
    other.first_value = (spec.first_value * spec.scale[:, :C] + spec.loc[:, :C] - other.loc[:, :C]) / other.scale[:, :C]
    times = df["time"].unique().sort()
    kw = {"swappable": True} if history == "carry" else {"history": "window"}
    s = StreamingForecaster(net_of(spec, 0), spec, **kw)
    feed(s, df, times[:40])
    s.swap(net_of(spec, 1), other)
    fresh = StreamingForecaster(net_of(spec, 1), other, **({} if history == "carry" else {"history": "window"}))
    feed(fresh, df, times[40 - CONTEXT:40])
    np.testing.assert_allclose(s.forecast()["value"].to_numpy(), fresh.forecast()["value"].to_numpy(), atol=1e-4)
