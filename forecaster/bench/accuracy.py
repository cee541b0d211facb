"""Accuracy with the defaults on the zoo (:mod:`forecaster.bench.zoo`): for every dataset and seed,
``python -m forecaster fit`` with nothing but the data roles, the frequency, the context, the
horizon and the test part given (the protocol of the zoo entry), in its own process; test MAE and
MASE beside seasonal naive and the last value, on the same windows.

    python -m forecaster bench --only accuracy [--datasets airline_1mo,macro_1q] [--seeds 0,1,2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from forecaster.bench.zoo import ZOO, load

__all__ = ["run", "fit_args"]


def fit_args(name: str, path: str, seed: int, root: str) -> list[str]:
    """The ``fit`` command line of one zoo run: the data's roles and the protocol only."""
    z = ZOO[name]
    return ["fit", "--data.path", path, "--data.time_col", "time", "--data.id_col", "series",
            "--data.target_cols", "[value]", "--data.freq", z["freq"], "--data.context_length", str(z["context"]),
            "--data.horizon", str(z["horizon"]), "--data.test_size", str(z["k"] * z["horizon"]),
            "--seed_everything", str(seed), "--trainer.default_root_dir", root,
            "--trainer.logger.init_args.save_dir", root, "--trainer.enable_progress_bar", "false"]


def _one(name: str, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as tmp:
        path = str(Path(tmp) / f"{name}.parquet")
        load(name).write_parquet(path)
        cmd = [sys.executable, "-m", "forecaster", *fit_args(name, path, seed, tmp), *extra]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            return {"dataset": name, "seed": seed, "error": (r.stderr or r.stdout).strip().splitlines()[-1:]}
        metrics = pl.read_csv(next(Path(tmp).rglob("metrics.csv")))
        last = {c: float(metrics[c].drop_nulls()[-1]) for c in metrics.columns if c.startswith("test/")
                and metrics[c].drop_nulls().len()}
        epochs = int(metrics["epoch"].max()) + 1
        val = metrics["val/loss"].drop_nulls() if "val/loss" in metrics.columns else None
    return {"dataset": name, "seed": seed, "mae": last["test/mae"], "mase": last["test/mase"],
            "mae_seasonal_naive": last["test/mae_seasonal_naive"], "mae_last_value": last["test/mae_last_value"],
            "mase_seasonal_naive": last["test/mase_seasonal_naive"], "mase_last_value": last["test/mase_last_value"],
            "val_loss": float(val.min()) if val is not None and val.len() else None,
            "epochs": epochs, "seconds": round(wall, 1)}


def run(device: str = "cpu", quick: bool = False, datasets: str | None = None, seeds: str = "0",
        extra: list[str] | None = None, out: str | None = None) -> list[dict]:
    """Rows per dataset and seed, then a summary row per dataset (mean, and the seeds' spread as the
    largest distance from the mean relative to it)."""
    names = [d.strip() for d in datasets.split(",")] if datasets else list(ZOO)
    if quick and not datasets:
        names = ["airline_1mo", "macro_1q", "fertility_1y", "sunspots_1y"]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise ValueError(f"unknown zoo dataset(s) {unknown}; choose from {list(ZOO)}")
    seed_list = [int(s) for s in str(seeds).split(",")]
    extra = list(extra or []) + (["--trainer.accelerator", "gpu"] if device.startswith("cuda") else [])
    runs = []
    for name in names:
        for seed in seed_list:
            r = _one(name, seed, extra)
            runs.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
            if out:
                Path(out).write_text(json.dumps(runs, indent=1))
    rows = []
    for name in names:
        ok = [r for r in runs if r["dataset"] == name and "error" not in r]
        if not ok:
            rows.append({"dataset": name, "error": next(r["error"] for r in runs if r["dataset"] == name)})
            continue
        mae = np.array([r["mae"] for r in ok])
        rows.append({
            "dataset": name, "freq": ZOO[name]["freq"], "seeds": len(ok),
            "mae": round(float(mae.mean()), 4), "seed_spread": f"{np.abs(mae - mae.mean()).max() / mae.mean():.1%}",
            "mae_seasonal_naive": round(ok[0]["mae_seasonal_naive"], 4),
            "mae_last_value": round(ok[0]["mae_last_value"], 4),
            "mase": round(float(np.mean([r["mase"] for r in ok])), 3),
            "mase_seasonal_naive": round(ok[0]["mase_seasonal_naive"], 3),
            "beats_both": bool(mae.mean() < min(ok[0]["mae_seasonal_naive"], ok[0]["mae_last_value"])),
            "seconds": round(float(np.mean([r["seconds"] for r in ok])), 1),
        })
    return rows
