"""What bad data can do to ``fit`` (issue 24, items 6 and 8): too little observed target is refused
before training and a non-finite validation loss stops the fit without a checkpoint; scaling and
the metrics hold from 1e-12 to 1e12 (one dataset may mix both); a time column mixing naive times
and UTC offsets, or a CSV value of another type past the rows Polars infers types from, gets one
line that says what is wrong."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch

from forecaster import GRUForecaster, TimeSeriesDataModule
from forecaster.cli import main
from forecaster.metrics import ForecastMetrics
from forecaster.nets import StepNet
from forecaster.timeaxis import to_axis

N = 400  # hourly steps; with the default split: train 0..319, val 320..359, test 360..399
WINDOW = ["--data.context_length", "48", "--data.horizon", "12"]
TINY = [*WINDOW, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar",
        "false", "--trainer.enable_model_summary", "false", "--model.net.hidden_size", "8", "--model.net.d_model", "8",
        "--model.net.head_hidden", "16", "--model.members", "1"]


def hours(n=N):
    return pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 1) + pl.duration(hours=n - 1), "1h",
                             eager=True)


def wave(n=N, phase=0.0):
    t = np.arange(n)
    return 3.0 + np.sin(2 * np.pi * t / 24 + phase) + 0.3 * np.cos(0.7 * t)


def fit(tmp_path, csv, *args):
    """``python -m forecaster fit`` on ``csv`` (in-process): (exit code, checkpoints written)."""
    code = main(["fit", "--data.path", str(csv), "--data.time_col", "time", *TINY, *args,
                 "--trainer.default_root_dir", str(tmp_path / "runs"),
                 "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    return code, sorted((tmp_path / "runs").rglob("*.ckpt"))


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---- item 6: too little observed target ----

def test_fit_refuses_a_target_observed_once_before_training(tmp_path, capsys):
    y = wave()
    y[1:] = np.nan  # 399 of 400 target values missing
    csv = tmp_path / "sparse.csv"
    pl.DataFrame({"time": hours(), "y": y}).write_csv(csv)
    code, ckpts = fit(tmp_path, csv)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and not ckpts
    assert "too little observed target to train on" in line
    assert "series '0': 'y' observed at 1 of 320 training steps" in line and "drop those series" in line


def test_the_refusal_names_only_the_series_and_targets_short_of_observations():
    frames = []
    for sid, (n_y, n_z) in {"ok": (320, 320), "thin": (5, 320), "empty_z": (320, 0)}.items():
        y, z = wave(), wave(phase=1.0)
        y[n_y:320], z[n_z:320] = np.nan, np.nan
        frames.append(pl.DataFrame({"id": sid, "time": hours(), "y": y, "z": z}))
    dm = TimeSeriesDataModule(data=pl.concat(frames), time_col="time", id_col="id", target_cols=["y", "z"],
                              context_length=48, horizon=12)
    with pytest.raises(ValueError, match=r"2 of 3 series have fewer than horizon \+ 1 = 13 observed values of "
                                         r"\['y', 'z'\] in the training part \(series 'empty_z': 'z' observed at 0 of "
                                         r"320 training steps; series 'thin': 'y' observed at 5 of 320") as e:
        dm.setup()
    assert "'ok'" not in str(e.value) and "\n" not in str(e.value)


def test_fit_refuses_a_validation_part_without_an_observed_target(tmp_path, capsys):
    y = wave()
    y[320:360] = np.nan  # the whole validation part
    csv = tmp_path / "noval.csv"
    pl.DataFrame({"time": hours(), "y": y}).write_csv(csv)
    code, ckpts = fit(tmp_path, csv)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and not ckpts
    assert "the validation part holds no observed value of ['y'] in any series" in line


def test_a_nan_validation_loss_stops_fit_without_a_checkpoint(tmp_path, capsys):
    # the validation batches that run (two windows; a third is observed) forecast missing steps only:
    # val/loss is 0 / 0 (limit_val_batches 1 would read as 1.0, all batches)
    y = wave()
    y[320:344] = np.nan
    csv = tmp_path / "firstval.csv"
    pl.DataFrame({"time": hours(), "y": y}).write_csv(csv)
    code, ckpts = fit(tmp_path, csv, "--data.eval_batch_size", "1", "--trainer.limit_val_batches", "2")
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and not ckpts
    assert "val/loss = nan at step 2" in line and "hold no observed target" in line
    assert "no checkpoint was saved" in line


def test_a_diverged_network_stops_fit_naming_the_series_and_targets(tmp_path):
    frame = pl.concat([pl.DataFrame({"id": s, "time": hours(), "y": wave(phase=k), "z": wave(phase=k + 1)})
                       for k, s in enumerate(("a", "b"))])
    dm = TimeSeriesDataModule(data=frame, time_col="time", id_col="id", target_cols=["y", "z"], context_length=48,
                              horizon=12)
    model = GRUForecaster.from_datamodule(dm, members=1, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    torch.set_num_threads(1)
    with torch.no_grad():  # what a diverged training leaves behind
        for p in model.parameters():
            p.fill_(float("nan"))
    trainer = L.Trainer(max_steps=2, val_check_interval=2, default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    expected = r"at step 2: the forecasts are not finite for 2 series \(series 'a': \['y', 'z'\]; series 'b': "
    with pytest.raises(ValueError, match=expected + r"\['y', 'z'\]\): training diverged") as e:
        trainer.fit(model, dm)
    assert type(e.value).__name__ == "NonFiniteLossError"
    assert not list(tmp_path.rglob("*.ckpt"))


# ---- item 6: magnitudes ----

MAGNITUDES = [1e-12, 1.0, 1e12]


def frame_at(mags) -> pl.DataFrame:
    """Series k: the same kind of wave (phase k) times mags[k]."""
    return pl.concat([pl.DataFrame({"id": f"s{k}", "time": hours(300), "y": wave(300, phase=k) * m,
                                    "x": np.cos(np.arange(300) / 5.0 + k) * m})
                      for k, m in enumerate(mags)])


def dm_at(mags, **kw) -> TimeSeriesDataModule:
    args = dict(time_col="time", id_col="id", target_cols=["y"], past_covariate_cols=["x"], context_length=48,
                horizon=12, batch_size=16)
    return TimeSeriesDataModule(data=frame_at(mags), **{**args, **kw})


@pytest.mark.parametrize("scaling", ["standard", "robust"])
@pytest.mark.parametrize("mags", [[1e-12] * 3, [1e12] * 3, MAGNITUDES], ids=["1e-12", "1e12", "mixed"])
def test_scaled_windows_do_not_depend_on_the_magnitude(mags, scaling):
    ref, dm = dm_at([1.0] * 3, scaling=scaling), dm_at(mags, scaling=scaling)
    for split in ("train", "val", "test"):
        idx = list(range(len(getattr(ref, f"{split}_dataset")())))
        expected = getattr(ref, f"{split}_dataset")().__getitems__(idx)
        result = getattr(dm, f"{split}_dataset")().__getitems__(idx)
        for key in ("target", "past_cov", "baseline"):
            torch.testing.assert_close(result[key], expected[key], rtol=1e-5, atol=1e-5)
        m = torch.tensor(mags, dtype=torch.float32)[result["series"]][:, None]
        torch.testing.assert_close(result["scale"], expected["scale"] * m, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("level", [0.0, 5e-12, 5.0, 5e12])
def test_a_constant_column_scales_by_its_level(level):
    frame = pl.DataFrame({"time": hours(200), "y": wave(200) * max(level, 1.0), "c": np.full(200, level)})
    dm = TimeSeriesDataModule(data=frame, time_col="time", target_cols=["y"], past_covariate_cols=["c"],
                              context_length=24, horizon=6)
    loc, scale = dm.spec.scaler("0", ["c"])
    assert loc[0] == pytest.approx(level, rel=1e-6) and scale[0] == pytest.approx(level or 1.0, rel=1e-6)


def test_robust_scaling_of_mostly_zero_data_uses_the_spread():
    y = np.zeros(200)
    y[::10] = 4e12  # quartiles all 0
    dm = TimeSeriesDataModule(data=pl.DataFrame({"time": hours(200), "y": y}), time_col="time", context_length=24,
                              horizon=6, scaling="robust")
    loc, scale = dm.spec.scaler("0", ["y"])
    train = y[:int(dm.split_bounds("train")[1][0])]
    assert loc[0] == 0.0 and scale[0] == pytest.approx(train.std(), rel=1e-6)


def test_training_is_the_same_in_scaled_units_at_any_magnitude():
    """The same data times 1e-12, 1 and 1e12, and a dataset mixing the three, train (same seed) to
    the same forecasts in scaled units: scale-free metrics equal, MAE and RMSE times the magnitude."""

    def test_metrics(mags):
        L.seed_everything(0, verbose=False)
        dm = dm_at(mags)
        model = GRUForecaster.from_datamodule(dm, members=1, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
        trainer = L.Trainer(max_steps=6, val_check_interval=3, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, dm)
        (res,) = trainer.test(model, dm, verbose=False)
        return res

    torch.set_num_threads(1)  # as the CLI trains (a tiny GRU is fastest on one; restored by conftest)
    expected = test_metrics([1.0] * 3)
    assert 0.1 < expected["test/mase"] < 5 and 0.01 < expected["test/smape"] < 1
    for mags in ([1e-12] * 3, [1e12] * 3, MAGNITUDES):
        result = test_metrics(mags)
        for k in ("test/mase", "test/smape", "test/mae_scaled", "test/mse_scaled", "test/mase_seasonal_naive",
                  "test/smape_seasonal_naive", "test/smape_last_value"):
            assert result[k] == pytest.approx(expected[k], rel=1e-4), (mags, k)
        if len(set(mags)) == 1:
            for k in ("test/mae", "test/rmse", "test/mae_seasonal_naive", "test/rmse_last_value"):
                assert result[k] == pytest.approx(expected[k] * mags[0], rel=1e-4), (mags, k)


@pytest.mark.parametrize("magnitude", [1e-20, 1e-12, 1.0, 1e12, 1e20])
def test_metrics_in_original_units_hold_at_any_magnitude(magnitude):
    # float32 squares overflow past 1.8e19 and leave the normal range below 1e-19
    target = torch.tensor([[[1.0], [2.0], [4.0]]]) * magnitude
    pred = torch.tensor([[[2.0], [2.0], [1.0]]]) * magnitude
    m = ForecastMetrics()
    m.update({"model": pred}, target, torch.ones_like(target), torch.full((1, 1), 2.0 * magnitude))
    result = {k: float(v.compute()) for k, v in m.items() if not k.endswith(("_naive", "_value"))}
    assert result["mae"] == pytest.approx(4 / 3 * magnitude, rel=1e-6)
    assert result["rmse"] == pytest.approx(math.sqrt(10 / 3) * magnitude, rel=1e-6)
    assert result["smape"] == pytest.approx((2 / 3 + 0 + 6 / 5) / 3, rel=1e-6)
    assert result["mase"] == pytest.approx(2 / 3, rel=1e-6)


def test_smape_counts_a_zero_forecast_of_a_zero_target_as_exact():
    m = ForecastMetrics()
    target = torch.tensor([[[0.0], [1.0]]])
    m.update({"model": torch.tensor([[[0.0], [0.0]]])}, target, torch.ones_like(target), torch.ones(1, 1))
    assert float(m.metrics["smape"].compute()) == pytest.approx((0 + 2) / 2)


# ---- item 8: messages ----

@pytest.mark.parametrize("first", ["naive", "offset"])
@pytest.mark.parametrize("row", [12, 150])
def test_naive_times_mixed_with_offsets_say_so(tmp_path, first, row):
    naive = hours(300).dt.strftime("%Y-%m-%dT%H:%M").to_list()
    offset = [t + "+02:00" for t in naive]
    a, b = (naive, offset) if first == "naive" else (offset, naive)
    csv = tmp_path / "mixed.csv"
    pl.DataFrame({"time": a[:row] + b[row:], "y": wave(300)}).write_csv(csv)
    dm = TimeSeriesDataModule(path=str(csv), time_col="time", context_length=24, horizon=6)
    with pytest.raises(ValueError, match="time_col 'time' mixes naive times .* and times with a UTC offset .*: give "
                                         "every time an offset, or none") as e:
        dm.setup()
    assert "could not be parsed" not in str(e.value) and "\n" not in str(e.value)


def test_an_unreadable_time_is_still_called_unreadable():
    with pytest.raises(ValueError, match="value 'garbage' could not be parsed as an ISO datetime"):
        to_axis(pl.Series(["2024-01-01T00:00", "garbage"]), "datetime", what="time_col 'time'")


@pytest.mark.parametrize("value, hint", [("abc", ""), ("NA", " ('NA' looks like a missing-value marker")])
@pytest.mark.parametrize("row", [12, 150, 2500])
def test_a_text_value_gets_the_same_message_in_any_row(tmp_path, capsys, row, value, hint):
    y = [f"{v:.3f}" for v in wave(3000)]
    y[row] = value
    csv = tmp_path / "text.csv"
    pl.DataFrame({"time": hours(3000), "y": y}).write_csv(csv)
    code = main(["fit", "--data.path", str(csv), "--data.time_col", "time", "--data.target_cols", "[y]", *WINDOW,
                 "--trainer.logger", "false"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert f"target column 'y' in '{csv}' is String, not numeric: '{value}' is not a number{hint}" in line


def test_a_column_whose_type_changes_past_the_inferred_rows_reads(tmp_path):
    # ids 1..: integers for the first 150 rows, then text; values integers, then decimals
    csv = tmp_path / "late.csv"
    pl.DataFrame({"time": hours(150).to_list() * 2, "id": ["1"] * 150 + ["b"] * 150,
                  "y": [str(i % 24) for i in range(150)] + [f"{v:.2f}" for v in wave(150)]}).write_csv(csv)
    dm = TimeSeriesDataModule(path=str(csv), time_col="time", id_col="id", target_cols=["y"], context_length=24,
                              horizon=6)
    assert dm.series_ids == ["1", "b"]
    assert dm.frame().collect()["y"].dtype == pl.Float64  # the frame the data module reads, for predict --plot too


# ---- issue 27: calendar labels and splits of short series -----------------------------------------

def test_quarter_and_iso_week_labels_read_as_their_periods_first_day():
    from forecaster.timeaxis import to_axis

    t, null, _ = to_axis(["1998 Q1", "1998-Q2", "1998Q3", "Q4 1998"], "datetime")
    assert t.astype("datetime64[ns]").astype("datetime64[D]").astype(str).tolist() == ["1998-01-01", "1998-04-01", "1998-07-01", "1998-10-01"]
    t, _, _ = to_axis(pl.Series(["1991 W06", "1991-W07", "1991W52", "2020 W53"]), "datetime")
    assert t.astype("datetime64[ns]").astype("datetime64[D]").astype(str).tolist() == ["1991-02-04", "1991-02-11", "1991-12-23", "2020-12-28"]
    with pytest.raises(ValueError, match="holds calendar labels such as '1998 Q1'.*but '1998 Q5' is not one"):
        to_axis(["1998 Q1", "1998 Q5"], "datetime")


def test_74_quarters_with_labels_fit_with_the_defaults(tmp_path, capsys):
    """74 quarters (as tsibble writes them) at horizon 8: the default 10% validation and test parts
    (7 steps) are shorter than the horizon; a fraction is at least one window, so fit trains and
    tests with the defaults."""
    labels = [f"{1998 + i // 4} Q{i % 4 + 1}" for i in range(74)]
    rng = np.random.default_rng(0)
    y = 100 + np.arange(74) * 0.5 + 5 * np.sin(np.arange(74) * np.pi / 2) + rng.normal(0, 1, 74)
    csv = tmp_path / "quarters.csv"
    pl.DataFrame({"quarter": labels, "takings": y}).write_csv(csv)
    code = main(["fit", "--data.path", str(csv), "--data.time_col", "quarter", "--data.target_cols", "[takings]",
                 "--data.context_length", "16", "--data.horizon", "8", "--trainer.max_steps", "3",
                 "--model.net.hidden_size", "8", "--model.members", "1", "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "frequency 1q" in out and "test metrics" in out and "(no test metrics)" not in out
    code = main(["fit", "--data.path", str(csv), "--data.time_col", "quarter", "--data.target_cols", "[takings]",
                 "--data.context_length", "16", "--data.horizon", "8", "--data.test_size", "4",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "the test part has no window" in err and "--test_after_fit false" in err


def test_series_with_no_target_to_learn_from_are_dropped_when_others_have_enough():
    """Many series, a few of them too short in their training part for any target (as 52 of M3's 756
    quarterly series with the default splits): those are dropped with a warning naming them, the
    others train; a series short of only one of its targets is still refused (the test above)."""
    frames = []
    for sid, n in {"a": 320, "b": 320, "short": 10}.items():
        y = wave()
        y[n:320] = np.nan
        frames.append(pl.DataFrame({"id": sid, "time": hours(), "y": y}))
    dm = TimeSeriesDataModule(data=pl.concat(frames), time_col="time", id_col="id", target_cols=["y"],
                              context_length=48, horizon=12)
    with pytest.warns(UserWarning, match=r"dropping 1 of 3 series .* fewer than horizon \+ 1 = 13 observed target "
                                         r"values .*\['short'\]"):
        spec = dm.spec
    assert spec.series_ids == ["a", "b"]
    assert "dropped 1 series" in dm.summary()
    dm.setup()
    assert len(dm.train_dataloader()) > 0
