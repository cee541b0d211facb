"""forecaster.plot: forecast pictures (files written, readable layout) and the message without matplotlib."""

import builtins
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

pytest.importorskip("matplotlib")

from forecaster import plot  # noqa: E402
from forecaster.nets import StepNet


def _data(n=96, ids=("a", "b", "c", "d")):
    t0 = datetime(2024, 1, 1)
    rows = []
    for k, sid in enumerate(ids):
        for i in range(n):
            rows.append({"time": t0 + timedelta(hours=i), "station": sid,
                         "y": float(np.sin(i / 4) + k), "z": float(np.cos(i / 6))})
    return pl.DataFrame(rows)


def _forecasts(df, start=72, h=24, id_name="series", origins=(0,)):
    t0 = datetime(2024, 1, 1)
    rows = []
    for sid in df["station"].unique(maintain_order=True):
        for o in origins:
            for s in range(1, h + 1):
                t = t0 + timedelta(hours=start - 1 + o + s)
                for tgt in ("y", "z"):
                    v = 0.1 * s
                    rows.append({id_name: sid, "origin": t0 + timedelta(hours=start - 1 + o), "time": t, "step": s,
                                 "target": tgt, "value": v, "q0.1": v - 1, "q0.5": v, "q0.9": v + 1})
    return pl.DataFrame(rows)


def test_plot_forecasts_writes_a_png(tmp_path):
    df = _data()
    fc = _forecasts(df)
    out = tmp_path / "fc.png"
    fig = plot.plot_forecasts(df, fc, time_col="time", id_col="station", path=out, title="test")
    assert out.stat().st_size > 20_000
    axes = fig.axes
    assert len(axes) == 3 * 2  # max_series=3 rows, 2 targets
    labels = axes[0].get_legend_handles_labels()[1]
    assert labels == ["history", "q0.1-q0.9 band", "actual", "forecast"]


def test_plot_forecasts_series_targets_and_stream_layout(tmp_path):
    df = _data()
    # a stream's forecasts from several origins: the latest is drawn
    fc = _forecasts(df, origins=(0, 1, 2))
    fig = plot.plot_forecasts(df.lazy(), fc, id_col="station", series=["b"], targets=["z"], path=tmp_path / "one.png")
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "b: z"
    line = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "forecast"][0]
    assert len(line.get_xdata()) == 24  # one origin drawn
    with pytest.raises(ValueError, match="not in the forecasts"):
        plot.plot_forecasts(df, fc, id_col="station", series=["nope"], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"forecasts lack column\(s\) \['series'\]"):
        plot.plot_forecasts(df, fc.rename({"series": "station"}), path=tmp_path / "x.png")


def test_plot_online_error(tmp_path):
    ot = pl.DataFrame({"period": [datetime(2024, 1, d) for d in range(1, 8)], "mae": np.linspace(1, 2, 7),
                       "mae_seasonal_naive": np.linspace(2, 3, 7)})
    out = tmp_path / "online.png"
    plot.plot_online_error(ot, out)
    assert out.stat().st_size > 10_000


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_mpl(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    df = _data()
    with pytest.raises(ImportError, match=r"plotting needs matplotlib: pip install matplotlib"):
        plot.plot_forecasts(df, _forecasts(df), path=tmp_path / "fc.png")
    with pytest.raises(ImportError, match="plotting needs matplotlib"):
        plot.plot_online_error(pl.DataFrame({"period": [1], "mae": [1.0], "mae_seasonal_naive": [1.0]}))


@pytest.fixture(scope="module")
def weather_ckpt(tmp_path_factory):
    """A tiny model trained two batches on the embedded weather data, saved by a plain Trainer."""
    import lightning as L

    from forecaster import GRUForecaster, TimeSeriesDataModule

    root = tmp_path_factory.mktemp("plotfit")
    dm = TimeSeriesDataModule(context_length=48, horizon=12, batch_size=16)
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=root)
    trainer.fit(model, dm)
    trainer.save_checkpoint(root / "m.ckpt")
    return root / "m.ckpt"


@pytest.fixture
def _keep_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_cli_predict_plot(weather_ckpt, tmp_path, capsys, _keep_threads):
    from forecaster.cli import main

    out, png = tmp_path / "fc.parquet", tmp_path / "fc.png"
    code = main(["predict", "--ckpt_path", str(weather_ckpt), "--output", str(out), "--plot", str(png),
                 "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"])
    assert code == 0, capsys.readouterr().err
    assert out.is_file() and png.stat().st_size > 20_000
    assert f"wrote forecast plot to {png}" in capsys.readouterr().out


def test_cli_predict_plot_without_matplotlib(weather_ckpt, tmp_path, capsys, monkeypatch, _keep_threads):
    from forecaster.cli import main

    real_import = builtins.__import__

    def no_mpl(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    png = tmp_path / "fc.png"
    code = main(["predict", "--ckpt_path", str(weather_ckpt), "--output", str(tmp_path / "fc.parquet"),
                 "--plot", str(png), "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"])
    assert code == 2 and not png.exists()
    err = capsys.readouterr().err
    assert "plotting needs matplotlib: pip install matplotlib" in err and "the forecasts were written" in err
    assert (tmp_path / "fc.parquet").exists()  # the forecasts are not lost for want of a picture
