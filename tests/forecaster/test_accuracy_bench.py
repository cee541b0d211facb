"""The accuracy zoo's harness: a run is `python -m forecaster fit` with the data roles and the
protocol only, and its row reports the test metrics beside the naive baselines."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from forecaster.bench import accuracy, zoo


def _tiny() -> pl.DataFrame:
    t = [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(160)]
    rng = np.random.default_rng(0)
    frames = [pl.DataFrame({"series": [s] * 160, "time": t,
                            "value": 10 + k + np.sin(np.arange(160) * 2 * np.pi / 7) + rng.normal(size=160) * 0.1})
              for k, s in enumerate(("a", "b"))]
    return pl.concat(frames)


def test_fit_args_give_only_the_roles_and_the_protocol():
    args = accuracy.fit_args("airline_1mo", "x.parquet", 3, "/tmp/r")
    given = {a.split(".")[0].lstrip("-") for a in args[1::2] if a.startswith("--")}
    assert given == {"data", "seed_everything", "trainer"}
    assert [a for a in args if a.startswith("--model")] == []
    assert args[args.index("--data.test_size") + 1] == "24"  # k = 2 windows of 12 months


def test_a_zoo_run_reports_test_metrics_beside_the_baselines(monkeypatch):
    monkeypatch.setitem(zoo.ZOO, "tiny_1d", dict(loader=_tiny, freq="1d", context=21, horizon=7, k=2, package="-",
                                                 credit="synthetic"))
    monkeypatch.setattr(accuracy, "ZOO", zoo.ZOO)
    (row,) = accuracy.run(datasets="tiny_1d", seeds="0", extra=["--trainer.max_epochs", "1"])
    assert row["dataset"] == "tiny_1d" and row["seeds"] == 1
    for k in ("mae", "mae_seasonal_naive", "mae_last_value", "mase"):
        assert np.isfinite(row[k]), k
    assert row["beats_both"] == (row["mae"] < min(row["mae_seasonal_naive"], row["mae_last_value"]))
    with pytest.raises(ValueError, match="unknown zoo dataset"):
        accuracy.run(datasets="nope")
