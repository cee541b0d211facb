"""TimeSeriesDataModule: reading, validation, regularisation, splits, scaling, windows, predict.
All data are built here (tiny), except the embedded default dataset."""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings

import numpy as np
import polars as pl
import pytest
import torch

from forecaster.data import TimeSeriesDataModule
from forecaster.spec import DataSpec
from forecaster.timeaxis import Frequency, calendar_features

T0 = dt.datetime(2021, 3, 1)


def long_frame(n_series=2, n_steps=40, freq_h=1, seed=0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(n_series):
        frames.append(pl.DataFrame({
            "sid": [f"s{s}"] * n_steps,
            "ts": pl.datetime_range(T0, T0 + dt.timedelta(hours=freq_h * (n_steps - 1)), f"{freq_h}h", eager=True),
            "y": (np.arange(n_steps) + 100.0 * s).astype(np.float64),
            "y2": rng.normal(size=n_steps),
            "pc": rng.normal(size=n_steps),
            "fc": rng.normal(size=n_steps),
        }))
    return pl.concat(frames)


def dm_for(df, **kw) -> TimeSeriesDataModule:
    args = dict(time_col="ts", id_col="sid", target_cols=["y"], context_length=4, horizon=2,
                calendar_features="none", val_size=0.2, test_size=0.2, batch_size=1000)
    args.update(kw)
    return TimeSeriesDataModule(data=df, **args)


def full_batch(ds):
    return ds.__getitems__(list(range(len(ds))))


# ---- windows: count and content on a hand-made series ----

def test_windows_count_and_content_integer_time():
    df = pl.DataFrame({"t": list(range(10)), "v": [float(x) for x in range(10)]})
    dm = TimeSeriesDataModule(data=df, time_col="t", target_cols=["v"], context_length=3, horizon=2, stride=2,
                              train_size=8, val_size=2, test_size=0, scaling="none", calendar_features="auto")
    ds = dm.train_dataset()
    # train part = steps 0..7, windows of 5 with stride 2 start at 0, 2 (4 would end at 8 > 7)
    result = full_batch(ds)
    assert len(ds) == 2
    expected = torch.tensor([[0, 1, 2, 3, 4], [2, 3, 4, 5, 6]], dtype=torch.float32)[..., None]
    torch.testing.assert_close(result["target"], expected)
    assert result["start"].tolist() == [0, 2]
    assert result["observed"].eq(1).all()
    assert result["past_cov"].shape == (2, 5, 0) and result["future_cov"].shape == (2, 5, 0)
    assert dm.freq == 1 and dm.spec.time_kind == "int"
    # val = steps 8, 9: one window whose forecast part is exactly [8, 10), context 5..7 from train
    val = full_batch(dm.val_dataset())
    assert val["start"].tolist() == [5]
    torch.testing.assert_close(val["target"][0, :, 0], torch.tensor([5.0, 6, 7, 8, 9]))


def test_windows_are_vectorised_views_not_python_lists():
    dm = dm_for(long_frame(n_series=3, n_steps=50), stride=1)
    ds = dm.train_dataset()
    # per series: train = 50 - 10 - 10 = 30 steps -> 30 - 6 + 1 = 25 windows
    assert len(ds) == 3 * 25
    b = full_batch(ds)
    assert b["series"].tolist() == [0] * 25 + [1] * 25 + [2] * 25
    # window content equals the raw series (scaling="standard" inverted)
    raw = long_frame(n_series=3, n_steps=50)
    for i in (0, 30, 74):
        s, st = int(b["series"][i]), int(b["start"][i])
        expected = raw.filter(pl.col("sid") == f"s{s}")["y"].to_numpy()[st:st + 6]
        result = (b["target"][i, :, 0] * b["scale"][i, 0] + b["loc"][i, 0]).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-4)
    single = ds[30]
    torch.testing.assert_close(single["target"], b["target"][30])


# ---- long / wide, sorting, gaps ----

def test_wide_format_without_id_multivariate():
    df = long_frame(n_series=1, n_steps=30).drop("sid")
    dm = TimeSeriesDataModule.from_frame(df, time_col="ts", target_cols=["y", "y2"], past_covariate_cols=["pc"],
                              future_covariate_cols=["fc"], context_length=6, horizon=3)
    b = next(iter(dm.train_dataloader()))
    assert dm.series_ids == ["0"] and dm.n_targets == 2 and dm.n_past_covariates == 1
    # hourly: the calendar candidates are hour_of_day, day_of_week, day_of_year, but 24 training
    # hours cover none of their periods three times: 1 user future covariate
    assert dm.n_future_covariates == 1 and dm.season_length == 24 and dm.freq == "1h"
    assert b["target"].shape[1:] == (9, 2) and b["future_cov"].shape[1:] == (9, 1)


@pytest.mark.parametrize("days,kept", [(2, []), (3, ["hour_of_day"]), (21, ["hour_of_day", "day_of_week"]),
                                       (3 * 366, ["hour_of_day", "day_of_week", "day_of_year"])])
def test_calendar_features_only_where_the_training_part_covers_their_period(days, kept):
    n = days * 24 + 10  # + the 10 steps of val and test
    df = pl.DataFrame({"ts": pl.datetime_range(T0, T0 + dt.timedelta(hours=n - 1), "1h", eager=True),
                       "y": np.zeros(n)})
    dm = TimeSeriesDataModule(data=df, time_col="ts", target_cols=["y"], context_length=4, horizon=2, val_size=5,
                              test_size=5)
    assert dm.spec.calendar == kept
    summary = dm.summary()
    assert ("day_of_year dropped: the training part covers" in summary) == ("day_of_year" not in kept)
    explicit = TimeSeriesDataModule(data=df, time_col="ts", target_cols=["y"], context_length=4, horizon=2,
                                    val_size=5, test_size=5, calendar_features=["day_of_year"])
    assert explicit.spec.calendar == ["day_of_year"]  # a list is taken as given


def test_target_cols_default_to_numeric_columns():
    df = long_frame(n_series=2, n_steps=20)
    dm = TimeSeriesDataModule(data=df, time_col="ts", id_col="sid", past_covariate_cols=["pc"],
                              context_length=4, horizon=2)
    assert dm.target_cols == ["y", "y2", "fc"]


def test_unsorted_input_is_sorted():
    df = long_frame(n_series=2, n_steps=30)
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=1)
    assert not shuffled.equals(df)
    result = full_batch(dm_for(shuffled).train_dataset())
    expected = full_batch(dm_for(df).train_dataset())
    for k in expected:
        torch.testing.assert_close(result[k], expected[k])


def test_gaps_become_unobserved_not_interpolated():
    df = long_frame(n_series=1, n_steps=20)
    df = df.with_columns(pl.when(pl.col("y") == 5).then(None).otherwise(pl.col("y")).alias("y"))  # null
    df = df.filter(pl.col("y").fill_null(-1) != 8)  # a missing row (regularisation gap)
    dm = dm_for(df, scaling="none", val_size=0, test_size=0, stride=1)
    assert dm.freq == "1h"
    b = full_batch(dm.train_dataset())
    first = b["start"] == 0
    obs, tgt = b["observed"][first][0, :, 0], b["target"][first][0, :, 0]
    assert obs.tolist() == [1, 1, 1, 1, 1, 0]  # steps 0..5: 5 is null
    w3 = b["start"] == 3  # steps 3..8: 5 null, 8 missing row
    assert b["observed"][w3][0, :, 0].tolist() == [1, 1, 0, 1, 1, 0]
    assert b["target"][w3][0, :, 0].tolist() == [3, 4, 0, 6, 7, 0]
    assert tgt[:5].tolist() == [0, 1, 2, 3, 4]
    assert dm.spec.to_dict()["series"]["s0"]["length"] == 20


def test_integer_time_with_step_and_gap():
    df = pl.DataFrame({"t": [0, 10, 20, 40, 50, 60, 70, 80], "v": [1.0, 2, 3, 5, 6, 7, 8, 9]})
    dm = TimeSeriesDataModule(data=df, time_col="t", target_cols=["v"], context_length=2, horizon=1,
                              val_size=0, test_size=0, scaling="none")
    assert dm.freq == 10 and dm.n_future_covariates == 0
    b = full_batch(dm.train_dataset())
    assert len(b["start"]) == 7  # grid of 9 steps (30 missing) -> 7 windows of 3
    assert b["observed"][2, :, 0].tolist() == [1, 0, 1]  # steps 2, 3, 4 = t 20, 30, 40
    ts = dm.timestamps_for(0, 2, 3)
    assert ts.dtype == pl.Int64 and ts.to_list() == [20, 30, 40]


# ---- splits and leakage ----

def test_fraction_split_no_leakage_and_train_only_scalers():
    df = long_frame(n_series=2, n_steps=100, seed=3)
    dm = dm_for(df, target_cols=["y2"], past_covariate_cols=["pc"], context_length=8, horizon=4,
                val_size=0.2, test_size=0.1, eval_stride=1)
    # per series: train 0..69, val 70..89, test 90..99
    for split, (lo, hi) in {"train": (0, 70), "val": (70, 90), "test": (90, 100)}.items():
        b = full_batch(getattr(dm, f"{split}_dataset")())
        fc0 = b["start"] + (0 if split == "train" else 8)  # first step whose target is used as a loss target
        assert int(fc0.min()) >= lo
        assert int((b["start"] + 12).max()) <= hi  # no window reaches past its part
        if split != "train":
            assert int((b["start"] + 8).min()) == lo  # stride 1: the first forecast starts at the cut-off
            assert len(b["start"]) == 2 * (hi - lo - 4 + 1)
    spec = dm.spec.to_dict()
    for s in ("s0", "s1"):
        part = df.filter(pl.col("sid") == s).sort("ts").head(70)
        for c in ("y2", "pc"):
            x = part[c].to_numpy()
            expected = [x.mean(), x.std()]
            np.testing.assert_allclose(spec["scalers"][s][c], expected, rtol=1e-5)


def test_row_count_split_like_etth1():
    df = long_frame(n_series=1, n_steps=60).drop("sid")
    dm = TimeSeriesDataModule(data=df, time_col="ts", target_cols=["y"], context_length=5, horizon=3,
                              train_size=30, val_size=10, test_size=10, eval_stride=1, calendar_features="none")
    tr, va, te = (full_batch(getattr(dm, f"{s}_dataset")()) for s in ("train", "val", "test"))
    assert len(tr["start"]) == 30 - 8 + 1 and len(va["start"]) == 10 - 3 + 1 and len(te["start"]) == 8
    assert int((te["start"] + 8).max()) == 50  # rows 50..59 are unused
    y = np.arange(60.0)[:30]
    loc, sc = dm.spec.scaler("0", ["y"])
    np.testing.assert_allclose([loc[0], sc[0]], [y.mean(), y.std()], rtol=1e-6)


def test_whole_number_float_sizes_are_step_counts():
    # the CLI's config parser can hand `train_size: 30` over as 30.0 (typing.Union caches the order
    # float | int); a whole number >= 1 is a step count, anything else >= 1 is an error
    df = long_frame(n_series=1, n_steps=60).drop("sid")
    kw = dict(data=df, time_col="ts", target_cols=["y"], context_length=5, horizon=3, eval_stride=1,
              calendar_features="none")
    a = TimeSeriesDataModule(train_size=30, val_size=10, test_size=10, **kw)
    b = TimeSeriesDataModule(train_size=30.0, val_size=10.0, test_size=10.0, **kw)
    assert [x.tolist() for s in ("train", "val", "test") for x in a.split_bounds(s)] == \
        [x.tolist() for s in ("train", "val", "test") for x in b.split_bounds(s)] == [[0], [30], [30], [40], [40], [50]]
    with pytest.raises(ValueError, match=r"train_size=30.5: a float is a fraction and must be in \[0, 1\)"):
        TimeSeriesDataModule(train_size=30.5, val_size=10, test_size=10, **kw).n_targets


def test_cutoff_timestamp_split():
    df = long_frame(n_series=2, n_steps=48)
    dm = dm_for(df, val_start="2021-03-02 00:00", test_start="2021-03-02 12:00", eval_stride=1)
    va = full_batch(dm.val_dataset())
    times = [dm.timestamps_for(int(s), int(st) + 4, 1)[0] for s, st in zip(va["series"], va["start"])]
    assert min(times) == dt.datetime(2021, 3, 2, 0) and max(times) == dt.datetime(2021, 3, 2, 10)
    te = full_batch(dm.test_dataset())
    assert int((te["start"] + 4).min()) == 36
    begin, end = dm.split_bounds("test")
    assert begin.tolist() == [36, 36] and end.tolist() == [48, 48]


def test_robust_scaler_train_only():
    df = long_frame(n_series=1, n_steps=50, seed=5)
    dm = dm_for(df, target_cols=["y2"], scaling="robust")
    x = df["y2"].to_numpy()[:30]
    q25, q50, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(dm.spec.to_dict()["scalers"]["s0"]["y2"], [q50, q75 - q25], rtol=1e-5)


# ---- predict ----

def test_predict_window_is_last_context_plus_unknown_future():
    df = long_frame(n_series=2, n_steps=30)
    dm = dm_for(df, scaling="none", calendar_features="auto")
    b = next(iter(dm.predict_dataloader()))
    assert b["target"].shape == (2, 6, 1) and b["start"].tolist() == [26, 26]
    assert b["target"][0, :4, 0].tolist() == [26, 27, 28, 29] and b["observed"][:, 4:].eq(0).all()
    assert b["target"][:, 4:].eq(0).all()
    future_t = dm.grid_time(0, 26 + np.arange(6))
    np.testing.assert_allclose(b["future_cov"][0].numpy(), dm.spec.calendar_features(future_t), atol=1e-6)
    assert dm.timestamps_for(0, 30, 1)[0] == T0 + dt.timedelta(hours=30)


def test_predict_future_covariates_missing_raises():
    dm = dm_for(long_frame(n_series=1, n_steps=30), future_covariate_cols=["fc"])
    with pytest.raises(ValueError, match=r"future covariates \['fc'\].*series 's0'"):
        dm.predict_batch()


def test_predict_uses_future_covariate_rows_beyond_last_target():
    df = long_frame(n_series=1, n_steps=30)
    df = df.with_columns(pl.when(pl.int_range(pl.len()) >= 28).then(None).otherwise(pl.col("y")).alias("y"))
    dm = dm_for(df, future_covariate_cols=["fc"], scaling="none")
    b = dm.predict_batch()
    assert b["start"].tolist() == [24]  # last observed = 27, context 24..27, future 28, 29 (in table)
    np.testing.assert_allclose(b["future_cov"][0, 4:, 0].numpy(), df["fc"].to_numpy()[28:30], rtol=1e-6)


# ---- spec and pure helpers ----

def test_spec_is_json_and_helpers_invert():
    dm = dm_for(long_frame(n_series=2, n_steps=40), target_cols=["y", "y2"], past_covariate_cols=["pc"])
    d = json.loads(json.dumps(dm.spec.to_dict()))
    for k in ("version", "time_kind", "freq", "calendar", "season_length", "context_length", "horizon",
              "scaling", "scalers", "series", "target_cols"):
        assert k in d
    spec = DataSpec.from_dict(d)
    assert spec.to_dict() == dm.spec.to_dict()
    b = full_batch(dm.train_dataset())
    i = 5
    sid = dm.series_ids[int(b["series"][i])]
    orig = spec.unscale_values(b["target"][i].numpy(), sid)
    np.testing.assert_allclose(orig, b["target"][i].numpy() * b["scale"][i].numpy() + b["loc"][i].numpy(), rtol=1e-6)
    np.testing.assert_allclose(spec.scale_values(orig, sid), b["target"][i].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="series 'nope'"):
        spec.scaler("nope")


def test_calendar_features_values():
    t = np.array([np.datetime64("2024-01-01T06:00")], dtype="datetime64[ns]").astype(np.int64)  # a Monday
    f = calendar_features(t, ["hour_of_day", "day_of_week"])
    np.testing.assert_allclose(f[0], [1.0, 0.0, 0.0, 1.0], atol=1e-6)  # 6h = quarter day; Monday = 0
    assert Frequency.parse("1h30m").step == 5_400_000_000_000 and Frequency.parse(7, "int").step == 7


# ---- the embedded dataset, files, globs ----

def test_default_dataset_no_arguments():
    dm = TimeSeriesDataModule()
    assert dm.series_ids == ["greensboro_nc", "sand_point_ak"] and dm.freq == "1h" and dm.season_length == 24
    assert dm.context_length == 168 and dm.horizon == 24 and dm.n_targets == 3
    # hour of day and weekday as sin+cos; one year of data cannot teach the day of the year
    assert dm.n_past_covariates == 4 and dm.n_future_covariates == 4 and dm.spec.calendar == ["hour_of_day", "day_of_week"]
    b = next(iter(dm.train_dataloader()))
    assert b["target"].shape == (64, 192, 3) and b["future_cov"].shape == (64, 192, dm.n_future_covariates)
    assert torch.isfinite(b["target"]).all()
    assert len(dm.test_dataset()) > 0 and len(dm.test_dataset()) < 200


def test_glob_of_parquet_files_and_csv(tmp_path):
    df = long_frame(n_series=3, n_steps=30)
    for i, part in enumerate(df.partition_by("sid")):
        part.write_parquet(tmp_path / f"part{i}.parquet")
    result = full_batch(dm_for(None, path=str(tmp_path / "*.parquet")).train_dataset())
    expected = full_batch(dm_for(df).train_dataset())
    torch.testing.assert_close(result["target"], expected["target"])
    df.write_csv(tmp_path / "all.csv")
    result = full_batch(dm_for(None, path=str(tmp_path / "all.csv")).train_dataset())
    torch.testing.assert_close(result["target"], expected["target"])
    with pytest.raises(ValueError, match="no file matches"):
        dm_for(None, path=str(tmp_path / "nothing*.parquet")).n_targets


# ETTh1 is CC BY-ND: never in the repository; point ETTH1_CSV at a copy to run this test
ETTH1 = os.environ.get("ETTH1_CSV")


@pytest.mark.parametrize("context_length", [96, 336, 480, 720])
def test_etth1_protocol_if_present(context_length):
    """Every look-back sees the same val/test windows: their context comes from before the part starts."""
    if not ETTH1 or not os.path.isfile(ETTH1):
        pytest.skip("set ETTH1_CSV to the path of ETTh1.csv to run the ETTh1 protocol test")
    path = ETTH1
    dm = TimeSeriesDataModule(path=path, time_col="date", target_cols=["HUFL", "HULL", "MUFL", "MULL", "LUFL",
                              "LULL", "OT"], context_length=context_length, horizon=96, train_size=8640,
                              val_size=2880, test_size=2880, eval_stride=1, calendar_features="none")
    assert dm.freq == "1h"
    assert len(dm.val_dataset()) == len(dm.test_dataset()) == 2880 - 96 + 1
    ot = pl.read_csv(path)["OT"].to_numpy()[:8640]
    np.testing.assert_allclose(dm.spec.scaler("0", ["OT"]), [[ot.mean()], [ot.std()]], rtol=1e-5)


# ---- bad input: each a clear ValueError ----

def test_missing_column_suggests_the_close_name():
    with pytest.raises(ValueError, match=r"target column 'yy' not found.*did you mean 'y'"):
        dm_for(long_frame(), target_cols=["yy"]).n_targets
    with pytest.raises(ValueError, match="time_col column 'time' not found"):
        dm_for(long_frame(), time_col="time").n_targets


def test_non_numeric_target():
    df = long_frame().with_columns(pl.col("y").cast(pl.String))
    with pytest.raises(ValueError, match="target column 'y'.*String.*not numeric"):
        dm_for(df).n_targets


def test_duplicate_rows_named():
    df = long_frame()
    df = pl.concat([df, df.filter((pl.col("sid") == "s1") & (pl.col("ts") == T0 + dt.timedelta(hours=3)))])
    with pytest.raises(ValueError, match=r"duplicate \(series, ts\) rows.*\('s1', 2021-03-01T03:00"):
        dm_for(df).n_targets


def test_empty_table():
    with pytest.raises(ValueError, match="empty"):
        dm_for(long_frame().head(0)).n_targets


# ---- messages that say what is wrong with a file (issue 16, item 9) ----

def test_csv_problems_are_named_with_the_file(tmp_path):
    blank = tmp_path / "blank.csv"
    blank.write_text("ts,sid,y,x\n2021-03-01 00:00,a,,1\n2021-03-01 01:00,a,,2\n")
    with pytest.raises(ValueError, match=rf"target column 'y' in '{blank}' is empty \(every cell is blank\)"):
        dm_for(None, path=str(blank)).n_targets
    header = tmp_path / "header.csv"
    header.write_text("ts,sid,y\n")
    for targets in (["y"], None):
        with pytest.raises(ValueError, match=rf"'{header}' is empty: it has a header but no rows"):
            dm_for(None, path=str(header), target_cols=targets).n_targets
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=rf"path '{empty}': the file is empty \(0 bytes"):
        dm_for(None, path=str(empty)).n_targets
    long_frame().write_csv(tmp_path / "good.csv")
    with pytest.raises(ValueError, match=r"1 of its 4 files is empty \(0 bytes.*, e\.g\. '.*empty\.csv'"):
        dm_for(None, path=str(tmp_path / "*.csv")).n_targets
    marker = tmp_path / "na.csv"
    marker.write_text("ts,sid,y\n2021-03-01 00:00,a,1.5\n2021-03-01 01:00,a,NA\n")
    with pytest.raises(ValueError, match=r"'y' in .* is String, not numeric: 'NA' is not a number \('NA' looks like a "
                                         r"missing-value marker: leave those cells empty\)"):
        dm_for(None, path=str(marker)).n_targets


def test_an_inferred_grid_with_many_missing_steps_warns_naming_the_series():
    half = long_frame(n_series=2, n_steps=40).with_columns(  # s0 and s1 every 30 minutes
        (pl.lit(T0) + (pl.int_range(pl.len()).over("sid") * pl.duration(minutes=30))).alias("ts"))
    hourly = long_frame(n_series=1, n_steps=40).with_columns(pl.lit("h").alias("sid"))
    df = pl.concat([half, hourly])
    with pytest.warns(UserWarning, match=r"inferred frequency 30m of the given frame leaves 25% of the grid steps "
                                         r"missing overall; series with more than 20% of their steps missing: 'h' 49% "
                                         r"missing, its own step 1h\. .*set freq \(e\.g\. freq='30m'\)"):
        dm = dm_for(df)
        assert dm.freq == "30m"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm_for(df, freq="30m").n_targets  # the grid was chosen: no warning
        dm_for(long_frame().filter(pl.col("y") % 10 != 3)).n_targets  # a few gaps (10%): no warning


def test_short_series_dropped_with_warning_or_error():
    short = long_frame(n_series=2, n_steps=4).filter(pl.col("sid") == "s1")
    df = pl.concat([long_frame(n_series=1, n_steps=30), short])
    with pytest.warns(UserWarning, match=r"dropping 1 series shorter.*'s1'"):
        dm = dm_for(df)
        assert dm.series_ids == ["s0"]
    with pytest.raises(ValueError, match="every series .* is shorter than context_length \\+ horizon = 6"):
        dm_for(long_frame(n_steps=5)).n_targets


def test_frequency_cannot_be_inferred():
    df = pl.DataFrame({"ts": [T0, T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=5)] * 1,
                       "y": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"inferred frequency 2h.*2021-03-01T05:00.*off the grid"):
        TimeSeriesDataModule(data=df, time_col="ts", target_cols=["y"], context_length=1, horizon=1).n_targets
    with pytest.raises(ValueError, match=r"to freq='2h'.*2021-03-01T05:30.*off the grid"):
        TimeSeriesDataModule(data=df.with_columns(pl.col("ts").dt.offset_by("30m")), time_col="ts", target_cols=["y"],
                             freq="2h", context_length=1, horizon=1).n_targets
    one = pl.DataFrame({"ts": [T0], "y": [1.0]})
    with pytest.raises(ValueError, match="cannot infer the frequency"):
        TimeSeriesDataModule(data=one, time_col="ts", target_cols=["y"], context_length=1, horizon=1).n_targets


def test_all_null_targets():
    df = long_frame().with_columns(pl.lit(None, dtype=pl.Float64).alias("y"))
    with pytest.raises(ValueError, match="target column 'y' is entirely null"):
        dm_for(df).n_targets
    df = long_frame().with_columns(pl.when(pl.col("sid") == "s1").then(float("nan")).otherwise(pl.col("y")).alias("y"))
    with pytest.raises(ValueError, match=r"target 'y' is all null/NaN in series \['s1'\]"):
        dm_for(df).n_targets


def test_infinities():
    df = long_frame().with_columns(
        pl.when((pl.col("sid") == "s1") & (pl.col("ts") == T0 + dt.timedelta(hours=7)))
        .then(float("inf")).otherwise(pl.col("pc")).alias("pc"))
    with pytest.raises(ValueError, match=r"column 'pc' has 1 infinite.*series 's1' at ts=2021-03-01T07:00"):
        dm_for(df, past_covariate_cols=["pc"]).n_targets


def test_bad_arguments():
    with pytest.raises(ValueError, match="scaling='minmax'"):
        dm_for(long_frame(), scaling="minmax")
    with pytest.raises(ValueError, match="train_size \\+ val_size \\+ test_size = 50 steps but series 's0'"):
        dm_for(long_frame(), train_size=30, val_size=10, test_size=10).n_targets
    with pytest.raises(ValueError, match="freq='1mo'"):
        dm_for(long_frame(), freq="1mo").n_targets


# ---- loaders ----

def test_shuffled_loader_covers_every_window_once_with_workers():
    dm = dm_for(long_frame(n_series=3, n_steps=40), batch_size=7, num_workers=2)
    n = len(dm.train_dataset())
    starts = []
    for b in dm.train_dataloader():
        assert b["target"].shape[1:] == (6, 1) and b["target"].shape[0] <= 7
        starts += list(zip(b["series"].tolist(), b["start"].tolist()))
    assert len(starts) == n and len(set(starts)) == n
    assert starts != sorted(starts)  # shuffled


def test_lightning_fit_smoke():
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self, n_targets, horizon):
            super().__init__()
            self.lin = torch.nn.Linear(1, n_targets)
            self.h = horizon

        def training_step(self, batch, i):
            pred = self.lin(torch.ones(*batch["target"].shape[:2], 1))[:, -self.h:]
            return ((pred - batch["target"][:, -self.h:]) ** 2 * batch["observed"][:, -self.h:]).mean()

        def validation_step(self, batch, i):
            self.log("v", batch["target"].mean())

        def predict_step(self, batch, i):
            return batch["series"], batch["observed"][:, -self.h:].sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = dm_for(long_frame(n_series=2, n_steps=40))
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(Tiny(dm.n_targets, dm.horizon), datamodule=dm)
    assert trainer.global_step == 3
    preds = trainer.predict(Tiny(dm.n_targets, dm.horizon), datamodule=dm)
    assert [p[0].tolist() for p in preds] == [[0, 1]] and float(preds[0][1]) == 0.0


def test_string_and_date_time_columns():
    s = pl.DataFrame({"d": [f"2020-01-{i:02d}" for i in range(1, 31)], "y": [float(i) for i in range(30)]})
    for df in (s, s.with_columns(pl.col("d").str.to_date())):
        dm = TimeSeriesDataModule(data=df, time_col="d", target_cols=["y"], context_length=5, horizon=2)
        assert dm.freq == "1d" and dm.season_length == 7
        assert dm.timestamps_for(0, 1, 1).to_list() == [dt.datetime(2020, 1, 2)]
    bad = pl.DataFrame({"d": ["2020-01-01", "nope", "2020-01-03"], "y": [1.0, 2, 3]})
    with pytest.raises(ValueError, match="time_col 'd': value 'nope' could not be parsed"):
        TimeSeriesDataModule(data=bad, time_col="d", target_cols=["y"], context_length=1, horizon=1).n_targets


# ---- fitting a spec and applying one ----

def test_applying_a_spec_to_its_own_training_table_reproduces_the_fitted_arrays():
    from forecaster.data.build import apply_spec, fit_spec
    from forecaster.data.table import Roles, Source
    from forecaster.data.windows import SplitArgs

    df = long_frame(n_series=3, n_steps=60).filter(pl.col("ts") != T0 + dt.timedelta(hours=9))  # a gap
    src, splits = Source(data=df), SplitArgs(val_size=0.2, test_size=0.2)
    fitted = fit_spec(src, Roles("ts", "sid", ["y", "y2"], ["pc"], ["fc"]), time_format=None, freq=None,
                      calendar_features="auto", season_length=None, context_length=8, horizon=3, scaling="robust",
                      splits=splits)
    result = apply_spec(src, fitted.spec, splits=splits)
    assert result.spec.to_dict() == fitted.spec.to_dict()
    for k, expected in fitted.arrays.items():
        assert torch.equal(result.arrays[k], expected), k
    for k, (b, e) in fitted.splits.items():
        assert np.array_equal(result.splits[k][0], b) and np.array_equal(result.splits[k][1], e), k
    assert fitted.info["freq_source"] == "inferred" and result.info["freq_source"] == "the checkpoint"


# ---- the command line's help (issue 25) ----

def test_the_docstring_gives_every_constructor_argument_its_own_entry():
    """jsonargparse reads each option's help from the class docstring's "Args:" (Google style);
    one entry naming several arguments makes docstring_parser drop all of them."""
    import inspect

    import docstring_parser

    doc = docstring_parser.parse(TimeSeriesDataModule.__doc__, docstring_parser.DocstringStyle.GOOGLE)
    result = [p.arg_name for p in doc.params]
    expected = [p for p in inspect.signature(TimeSeriesDataModule.__init__).parameters if p != "self"]
    assert result == expected
    assert all(p.description and p.description.strip() for p in doc.params)


def _option_helps(text: str, prefix: str) -> dict[str, str]:
    """argparse help output -> {option: its help text without the "(type: ..., default: ...)"}."""
    import re

    helps, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if m:
            name = m.group(1).split()[0].rstrip(",")
            current = name if name == prefix or name.startswith(prefix + ".") else None
            if current:
                helps[current] = m.group(2) or ""
        elif current and line.startswith("    "):
            helps[current] += " " + line.strip()
        else:
            current = None
    return {k: v.split("(type:")[0].strip() for k, v in helps.items()}


def test_fit_help_describes_every_data_option(capsys):
    import inspect

    from forecaster.cli import main

    assert main(["fit", "--help"]) == 0
    helps = _option_helps(capsys.readouterr().out, "--data")
    params = [p for p in inspect.signature(TimeSeriesDataModule.__init__).parameters if p != "self"]
    assert {f"--data.{p}" for p in params} <= set(helps), sorted(helps)
    assert not [k for k, v in helps.items() if not v], helps
