"""Calendar frequencies end to end: monthly series with real dates written as text (time_format),
month starts and month ends, through fit, predict and the stream; season length from the
frequency; the data summary; a short context."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from forecaster.cli import main
from forecaster.data import TimeSeriesDataModule
from forecaster.lightning_module import GRUForecaster
from forecaster.nets import StepNet
from forecaster.streaming import StreamingForecaster
from forecaster.timeaxis import Frequency

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]



def monthly(month_end: bool = False, n: int = 96, symbols=("AAA", "BBB", "CCC")) -> pl.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for k, sym in enumerate(symbols):
        price = 50.0 + 10 * k
        for i in range(n):
            y, m = 2000 + i // 12, i % 12 + 1
            d = (dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)) if month_end else dt.date(y, m, 1)
            price *= 1.0 + 0.01 + 0.03 * np.sin(2 * np.pi * m / 12) + 0.02 * rng.normal()
            rows.append({"symbol": sym, "date": d.strftime("%b %d %Y"), "price": round(price, 2)})
    return pl.DataFrame(rows)


@pytest.mark.parametrize("month_end", [False, True], ids=["month-start", "month-end"])
def test_monthly_text_dates_fit_predict_and_stream(tmp_path, capsys, month_end):
    df = monthly(month_end)
    path = tmp_path / "prices.csv"
    df.write_csv(path)
    root = tmp_path / "run"
    data = ["--data.path", str(path), "--data.time_col", "date", "--data.id_col", "symbol",
            "--data.target_cols", "[price]", "--data.time_format", "%b %d %Y", "--data.context_length", "24",
            "--data.horizon", "6"]
    code = main(["fit", *data, "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
                 "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
                 "--model.net.hidden_size", "8", "--model.net.d_model", "8", "--model.net.head_hidden", "16", *QUIET])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "frequency 1mo (inferred); season length 12 (from the frequency)" in out
    assert "calendar features: month_of_year kept" in out  # 6+ years of training months
    (ckpt,) = root.rglob("*.ckpt")
    fc_path = tmp_path / "fc.parquet"
    code = main(["predict", "--ckpt_path", str(ckpt), "--data.path", str(path), "--output", str(fc_path),
                 "--trainer.logger", "false", *QUIET])
    assert code == 0, capsys.readouterr().err
    fc = pl.read_parquet(fc_path).filter(pl.col("series") == "AAA").sort("step")
    last = dt.datetime(2007, 12, 31) if month_end else dt.datetime(2007, 12, 1)
    assert fc["origin"].unique().to_list() == [last]
    expected = [dt.datetime(2008, m, 1) for m in range(1, 7)]
    if month_end:
        expected = [dt.datetime(2008, m + 1, 1) - dt.timedelta(days=1) for m in range(1, 7)]
    assert fc["time"].to_list() == expected
    # the stream: the next month's record is one step; the forecast times are months
    stream = StreamingForecaster.from_checkpoint(ckpt)
    stream.observe(df.to_dicts())
    nxt = "Jan 31 2008" if month_end else "Jan 01 2008"
    report = stream.observe([{"symbol": "AAA", "date": nxt, "price": 100.0}])
    assert report.steps == 1 and not report.rejected
    times = stream.forecast("AAA").sort("step")["time"].to_list()
    assert times[0] == (dt.datetime(2008, 2, 29) if month_end else dt.datetime(2008, 2, 1))


def test_month_like_but_wrong_frequencies_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "p.csv"
    monthly(n=60).write_csv(path)
    args = ["fit", "--data.path", str(path), "--data.time_col", "date", "--data.id_col", "symbol",
            "--data.target_cols", "[price]", "--data.time_format", "%b %d %Y", "--data.context_length", "12",
            "--data.horizon", "3", "--trainer.max_steps", "1", *QUIET]
    assert main([*args, "--data.freq", "1M"]) == 2
    err = capsys.readouterr().err
    assert "freq='1M'" in err and "'1mo'" in err and "'1m'" in err and "Traceback" not in err
    assert main([*args[:-6], "--data.time_format", "%Y-%m-%d", *args[-4:]]) == 2
    assert "could not be parsed with time_format '%Y-%m-%d'" in capsys.readouterr().err


@pytest.mark.parametrize("freq,season", [("30m", 48), ("1h", 24), ("1d", 7), ("1bd", 5), ("1w", 52), ("1mo", 12),
                                         ("1q", 4), ("1y", 1)])
def test_season_length_from_the_frequency(freq, season):
    assert Frequency.parse(freq).default_season_length() == season


def test_the_summary_says_what_was_read():
    df = monthly(n=60).with_columns(pl.col("date").str.to_date("%b %d %Y"))
    df = df.filter(~((pl.col("symbol") == "BBB") & (pl.col("date") == dt.date(2002, 3, 1))))  # a missing month
    dm = TimeSeriesDataModule(data=df, time_col="date", id_col="symbol", context_length=12, horizon=3,
                              season_length=6)
    s = dm.summary()
    assert "3 series, 179 rows, 2000-01-01T00:00:00 .. 2004-12-01T00:00:00" in s
    assert "frequency 1mo (inferred); season length 6 (given)" in s
    assert "missing steps filled: 1 of 180 grid steps (0.6%)" in s
    assert "targets ['price'] (every numeric column (target_cols not set))" in s
    assert "month_of_year kept: the training part covers" in s
    n_train = len(dm.train_dataset())
    assert f"windows: train {n_train:,}, val {len(dm.val_dataset())}, test {len(dm.test_dataset())}" in s
    assert "baseline blend (median over series" in s


def test_a_short_context_trains_with_the_default_min_origin():
    df = monthly(n=40).with_columns(pl.col("date").str.to_date("%b %d %Y"))
    dm = TimeSeriesDataModule(data=df, time_col="date", id_col="symbol", target_cols=["price"], context_length=6,
                              horizon=2, batch_size=8)
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    assert model.min_origin == 2  # min(24, 6 // 3)
    batch = next(iter(dm.train_dataloader()))
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"min_origin=6 must be in \[0, context_length=6\)"):
        GRUForecaster.from_datamodule(dm, min_origin=6)


def test_the_streams_first_record_of_a_series_must_be_on_the_models_grid():
    df = monthly(n=48).with_columns(pl.col("date").str.to_date("%b %d %Y"))
    dm = TimeSeriesDataModule(data=df, time_col="date", id_col="symbol", context_length=12, horizon=3)
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    stream = StreamingForecaster(model.net, model.spec)
    report = stream.observe([{"symbol": "NEW", "date": "2020-01-31", "price": 1.0},   # not days 1..28
                             {"symbol": "AAA", "date": "2020-01-15", "price": 1.0},   # off AAA's training grid
                             {"symbol": "NEW2", "date": "2020-01-01", "price": 1.0}])
    assert [r.index for r in report.rejected] == [0, 1] and report.accepted == 1
    assert "days 1..28" in report.rejected[0].reason and "trained on" in report.rejected[1].reason
    with pytest.raises(ValueError, match=r"series \['NEW'\] have no observations yet"):
        stream.forecast("NEW")
    # business days: a Saturday cannot start a series
    days = pl.DataFrame({"d": pl.date_range(dt.date(2024, 1, 1), dt.date(2024, 6, 28), "1d", eager=True)})
    days = days.filter(pl.col("d").dt.weekday() <= 5).with_columns(pl.int_range(pl.len()).cast(pl.Float64).alias("y"))
    bdm = TimeSeriesDataModule(data=days, time_col="d", target_cols=["y"], context_length=10, horizon=5)
    assert str(bdm.spec.freq) == "1bd"
    bmodel = GRUForecaster.from_datamodule(bdm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    bstream = StreamingForecaster(bmodel.net, bmodel.spec)
    assert "off the 1bd grid" in bstream.observe([{"d": "2024-07-06", "y": 1.0}]).rejected[0].reason  # a Saturday


def test_naive_and_zoned_times_are_not_mixed_between_a_model_and_new_data():
    start = dt.datetime(2024, 1, 1)
    df = pl.DataFrame({"t": pl.datetime_range(start, start + dt.timedelta(hours=199), "1h", eager=True),
                       "y": np.sin(np.arange(200) / 5)})
    dm = TimeSeriesDataModule(data=df, time_col="t", target_cols=["y"], context_length=24, horizon=6)
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    zoned = df.with_columns(pl.col("t").dt.replace_time_zone("Europe/Berlin"))
    with pytest.raises(ValueError, match="holds zone-aware times but the model was trained on naive ones"):
        TimeSeriesDataModule.from_spec(model.spec, data=zoned).spec
    # cut-offs: ISO first, then the data's own format
    text = df.with_columns(pl.col("t").dt.strftime("%d/%m/%Y %H:%M"))
    cut = TimeSeriesDataModule(data=text, time_col="t", target_cols=["y"], time_format="%d/%m/%Y %H:%M",
                               context_length=24, horizon=6, test_start="2024-01-08 00:00")
    assert cut.split_bounds("test")[0].tolist() == [168]
    # a date outside 1677-2262 is an error that names it, not a Polars exception
    far = pl.DataFrame({"d": [dt.date(1600, 1, 1), dt.date(1600, 1, 2)], "y": [1.0, 2.0]})
    with pytest.raises(ValueError, match="outside the years 1677-2262"):
        TimeSeriesDataModule(data=far, time_col="d", target_cols=["y"], context_length=1, horizon=1).spec


def test_stream_csv_keeps_ids_as_text(tmp_path):
    from forecaster.stream_cli import _LineParser

    p = _LineParser("csv", ["id", "t", "y"], keys=("id", "t"))
    assert p.parse("id,t,y") is None
    assert p.parse("007,2024-01-01,1.5") == {"id": "007", "t": "2024-01-01", "y": 1.5}
    assert p.parse("NA,2024-01-01,NA") == {"id": "NA", "t": "2024-01-01", "y": None}
