"""Accuracy with the defaults on the zoo (:mod:`forecaster.bench.zoo`): for every dataset and seed,
``python -m forecaster fit`` with nothing but the data roles, the frequency, the context, the
horizon and the test part given (the protocol of the zoo entry), in its own process; test MAE and
MASE beside seasonal naive and the last value, on the same windows. With ``peers``, statsforecast's
AutoETS, AutoARIMA, AutoTheta and MSTL on exactly those windows (:mod:`forecaster.bench.peers`),
their MAE and fit + predict seconds beside ours (ours: the wall time of the ``fit`` process, which
also scores the test part).

    python -m forecaster bench --only accuracy [--datasets airline_1mo,macro_1q] [--seeds 0,1,2] [--peers]
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

__all__ = ["run", "fit_args", "zoo_test_windows"]


def fit_args(name: str, path: str, seed: int, root: str) -> list[str]:
    """The ``fit`` command line of one zoo run: the data's roles and the protocol only."""
    z = ZOO[name]
    return ["fit", "--data.path", path, "--data.time_col", "time", "--data.id_col", "series",
            "--data.target_cols", "[value]", "--data.freq", z["freq"], "--data.context_length", str(z["context"]),
            "--data.horizon", str(z["horizon"]), "--data.test_size", str(z["k"] * z["horizon"]),
            "--seed_everything", str(seed), "--trainer.default_root_dir", root,
            "--trainer.logger.init_args.save_dir", root, "--trainer.enable_progress_bar", "false"]


def zoo_test_windows(name: str, data=None):
    """The test windows of zoo dataset ``name`` (:func:`forecaster.bench.peers.test_windows` with the
    arguments :func:`fit_args` gives ``fit``); ``data``: its table (default: :func:`load`)."""
    from forecaster.bench.peers import test_windows

    z = ZOO[name]
    return test_windows(load(name) if data is None else data, time_col="time", id_col="series", target_col="value",
                        freq=z["freq"], context_length=z["context"], horizon=z["horizon"],
                        test_size=z["k"] * z["horizon"])


def _peer_columns(name: str, peers: list[str], refit: str) -> dict:
    from forecaster.bench.peers import run_peers

    w = zoo_test_windows(name)
    res = run_peers(w, peers, refit=refit, log=lambda line: print(f"[{name}] {line}", file=sys.stderr, flush=True))
    check = run_peers(w, ["SeasonalNaive"], refit="once")["SeasonalNaive"]
    cols = {"seasonal_naive_check": round(check["mae"], 4)}
    for p, r in res.items():
        cols[p] = "n/a" if r["mae"] is None else round(r["mae"], 4)
        cols[f"{p}_s"] = "" if r["seconds"] is None else r["seconds"]
    scored = {p: r["mae"] for p, r in res.items() if r["mae"] is not None and np.isfinite(r["mae"])}
    best = min(scored, key=scored.get) if scored else None
    cols["best_peer"] = best or "none"
    cols["peer_refit"] = refit
    cols["_peer_details"] = res
    cols["_best_peer_mae"] = scored.get(best) if best else None
    return cols


def run_fit(args: list[str], root: str) -> tuple[subprocess.CompletedProcess, float, pl.DataFrame | None]:
    """``python -m forecaster`` with ``args`` in its own process (one intra-op thread unless
    ``OMP_NUM_THREADS`` says otherwise): the finished process, its wall seconds and, when it
    succeeded, the metrics CSV its logger wrote under ``root`` (None otherwise)."""
    cmd = [sys.executable, "-m", "forecaster", *args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    metrics = pl.read_csv(next(Path(root).rglob("metrics.csv"))) if r.returncode == 0 else None
    return r, wall, metrics


def last_test_metrics(metrics: pl.DataFrame) -> dict[str, float]:
    """``{"test/mae": ..., ...}``: the last logged value of every ``test/`` column."""
    return {c: float(metrics[c].drop_nulls()[-1]) for c in metrics.columns if c.startswith("test/")
            and metrics[c].drop_nulls().len()}


def _one(name: str, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as tmp:
        path = str(Path(tmp) / f"{name}.parquet")
        load(name).write_parquet(path)
        r, wall, metrics = run_fit([*fit_args(name, path, seed, tmp), *extra], tmp)
        if r.returncode != 0:
            return {"dataset": name, "seed": seed, "error": (r.stderr or r.stdout).strip().splitlines()[-1:]}
        last = last_test_metrics(metrics)
        epochs = int(metrics["epoch"].max()) + 1
        val = metrics["val/loss"].drop_nulls() if "val/loss" in metrics.columns else None
    return {"dataset": name, "seed": seed, "mae": last["test/mae"], "mase": last["test/mase"],
            "mae_seasonal_naive": last["test/mae_seasonal_naive"], "mae_last_value": last["test/mae_last_value"],
            "mase_seasonal_naive": last["test/mase_seasonal_naive"], "mase_last_value": last["test/mase_last_value"],
            "val_loss": float(val.min()) if val is not None and val.len() else None,
            "epochs": epochs, "seconds": round(wall, 1)}


def run(device: str = "cpu", quick: bool = False, datasets: str | None = None, seeds: str = "0",
        extra: list[str] | None = None, out: str | None = None, peers: bool = False, peer_refit: str = "once",
        peer_models: str | None = None) -> list[dict]:
    """Rows per dataset and seed, then a summary row per dataset (mean, and the seeds' spread as the
    largest distance from the mean relative to it). ``peers``: also the statistical peers on the same
    windows (``peer_models``: comma-separated subset of AutoETS, AutoARIMA, AutoTheta, MSTL; default
    all; ``peer_refit``: ``"once"`` or ``"window"``, see :mod:`forecaster.bench.peers`), checked to be
    installed before anything is trained."""
    names = [d.strip() for d in datasets.split(",")] if datasets else list(ZOO)
    if quick and not datasets:
        names = ["airline_1mo", "macro_1q", "fertility_1y", "sunspots_1y"]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise ValueError(f"unknown zoo dataset(s) {unknown}; choose from {list(ZOO)}")
    seed_list = [int(s) for s in str(seeds).split(",")]
    peer_list: list[str] = []
    if peers:
        from forecaster.bench.peers import PEERS, require_statsforecast

        require_statsforecast()
        peer_list = [p.strip() for p in peer_models.split(",")] if peer_models else list(PEERS)
        bad = [p for p in peer_list if p not in PEERS]
        if bad:
            raise ValueError(f"unknown peer(s) {bad}; choose from {list(PEERS)}")
        if peer_refit not in ("once", "window"):
            raise ValueError(f"peer_refit={peer_refit!r}: choose 'once' or 'window'")
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
        peer_cols = _peer_columns(name, peer_list, peer_refit) if peer_list else {}
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
        if peer_cols:
            best = peer_cols.pop("_best_peer_mae")
            details = peer_cols.pop("_peer_details")
            rows[-1].update(peer_cols)
            rows[-1]["beats_peers"] = bool(best is not None and mae.mean() < best)
            rows[-1]["peer_seasons"] = "; ".join(f"{p} {d['season']}" for p, d in details.items())
            failed = sum(d.get("failed_fits", 0) for d in details.values())
            if failed:
                rows[-1]["peer_failed_fits"] = failed
    return rows
