"""What bad data can do to ``fit`` (issue 24, items 6 and 8): scaling holds from 1e-12 to 1e12 (one
dataset may mix both)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from forecaster import TimeSeriesDataModule

N = 400  # hourly steps; with the default split: train 0..319, val 320..359, test 360..399


def hours(n=N):
    return pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 1) + pl.duration(hours=n - 1), "1h",
                             eager=True)


def wave(n=N, phase=0.0):
    t = np.arange(n)
    return 3.0 + np.sin(2 * np.pi * t / 24 + phase) + 0.3 * np.cos(0.7 * t)


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
