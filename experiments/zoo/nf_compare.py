#!/usr/bin/env python
"""neuralforecast GRU reference for the accuracy zoo (see README.md next to this file).

Runs neuralforecast's ``GRU`` with its DEFAULT hyper-parameters except ``h``,
``input_size`` and ``random_seed`` through
``NeuralForecast.cross_validation(df, n_windows=k, step_size=h, refit=False)``
and compares its test MAE with two baselines on the same windows.

Data and protocol come from the repo: ``forecaster/bench/zoo.py`` (``load(name)``
and ``ZOO[name]``: freq, horizon -> h, context -> input_size, k). The module file
is loaded by path (importlib), not as ``forecaster.bench.zoo``, so that neither
the ``forecaster`` package nor its ``bench/__init__`` (which imports torch and
the benchmark helpers) is imported; it needs only numpy, polars and the zoo's
source packages. ``--h``, ``--input-size``, ``--k`` and ``--season-length``
override the defaults.

Gaps: neuralforecast needs gap-free series. For the calendar frequencies (30m,
1h, 1d, 1w, 1mo, 1q, 1y) every series is put on its regular grid from its first
to its last time stamp (``polars.DataFrame.upsample``) and the missing values
(absent grid steps, NaN values) are filled by linear interpolation in time
(``interpolate()`` over the grid steps, per series). In the zoo this fills
nyc_temp_1h (24-27 missing hours per station, 75 in all, and one NaN
temperature: 76 values) and co2_1w (the 59 weeks the source leaves empty);
the other datasets have no gaps. ``1bd`` (msft_1d:
trading days, market holidays absent) is NOT gridded: its rows are taken as
consecutive steps. The same filling was used for the reference runs.

Test windows, per series of length n (after filling and the optional ``--trim``):
    [n - k*h + j*h, n - k*h + (j+1)*h)   for j = 0..k-1
each forecast from the actual history before its first step (refit=False: the
model is trained ONCE on the first n - k*h steps of each series, val_size=0).

Baselines on the same windows (s = first index of the window):
  * seasonal naive: y_hat[s+i] = y[s - m + (i mod m)]  (m = season length;
    steps beyond one season repeat the last observed season)
  * last value:     y_hat[s+i] = y[s-1]

MAE = mean |y - y_hat| over all series, windows and steps (original units).

The series' time axis is replaced by an integer step index 0..n-1 for
neuralforecast (freq=1): the GRU uses no calendar features, so this is
equivalent, and it avoids pandas-frequency trouble (business days with
holidays, month-start vs month-end, W-SAT, ...).

Examples (from the repo root)
-----------------------------
  OMP_NUM_THREADS=1 /work/nf-venv/bin/python experiments/zoo/nf_compare.py --dataset airline_1mo \
      --seeds 0 1 2 --out results/airline_1mo.json

  OMP_NUM_THREADS=1 /work/nf-venv/bin/python experiments/zoo/nf_compare.py --dataset co2_1w --baselines-only

  OMP_NUM_THREADS=1 /work/nf-venv/bin/python experiments/zoo/nf_compare.py --parquet table.parquet \
      --id-col series --time-col time --target value --freq 1mo --season-length 12 \
      --h 12 --input-size 36 --k 4 --seeds 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import time
import warnings

import numpy as np
import polars as pl

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ZOO_PY = os.path.join(REPO, "forecaster", "bench", "zoo.py")

# Season length m of the seasonal-naive baseline, per zoo dataset (the values of the reference runs):
# taylor: 48 half-hours = 1 day; nyc: 24 hours; seattle: 365 days (weather has no weekly cycle);
# msft: 5 trading days = 1 week; co2: 52 weeks; airline and us_employment: 12 months; macro: 4
# quarters; fertility: 1 (no season: seasonal naive = last value); sunspots: 11 years (the solar
# cycle, not a calendar season).
SEASON_LENGTH = {
    "taylor_30m": 48,
    "nyc_temp_1h": 24,
    "seattle_tmax_1d": 365,
    "msft_1d": 5,
    "co2_1w": 52,
    "airline_1mo": 12,
    "us_employment_1mo": 12,
    "macro_1q": 4,
    "fertility_1y": 1,
    "sunspots_1y": 11,
}


def import_zoo():
    """``forecaster/bench/zoo.py`` of this checkout, loaded as a standalone module."""
    spec = importlib.util.spec_from_file_location("forecaster_bench_zoo", ZOO_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fill_grid(df: pl.DataFrame, freq: str) -> tuple[pl.DataFrame, int]:
    """Regular grid per series for a calendar ``freq`` (a polars interval), missing steps and NaNs
    filled by linear interpolation in time; business-day frequencies (``1bd``) are left as they are.
    Returns the table and the number of values filled."""
    if freq.endswith("bd"):
        return df, 0
    df = df.sort(["series", "time"])
    full = df.upsample(time_column="time", every=freq, group_by="series").sort(["series", "time"])
    n_missing = int(full["value"].fill_nan(None).null_count())
    # linear in the grid step = linear in time where steps have a fixed length (all filled zoo gaps)
    full = full.with_columns(pl.col("value").fill_nan(None).interpolate().over("series"))
    return full.select("series", "time", "value"), n_missing


def load_table(args) -> tuple[pl.DataFrame, int, str, str, int]:
    """Return (long df with series/time/value, season_length, freq, name, values filled)."""
    if args.parquet:
        raw = pl.read_parquet(args.parquet)
        df = raw.select(
            pl.col(args.id_col).cast(pl.String).alias("series"),
            pl.col(args.time_col).alias("time"),
            pl.col(args.target).cast(pl.Float64).alias("value"),
        ).sort(["series", "time"])
        if args.season_length is None:
            sys.exit("--season-length is required with --parquet")
        filled = 0
        if args.freq:
            df, filled = fill_grid(df, args.freq)
        return df, args.season_length, args.freq or "?", os.path.basename(args.parquet), filled
    zoo = import_zoo()
    if args.dataset not in zoo.ZOO:
        sys.exit(f"unknown zoo dataset {args.dataset!r}; choose from {list(zoo.ZOO)}")
    meta = zoo.ZOO[args.dataset]
    for flag, key in (("h", "horizon"), ("input_size", "context"), ("k", "k")):
        if getattr(args, flag) is None:
            setattr(args, flag, meta[key])
    m = args.season_length if args.season_length is not None else SEASON_LENGTH.get(args.dataset)
    if m is None:
        sys.exit(f"no season length known for {args.dataset!r}: pass --season-length")
    df, filled = fill_grid(zoo.load(args.dataset), meta["freq"])
    return df, m, meta["freq"], args.dataset, filled


def to_arrays(df: pl.DataFrame, trim: int | None) -> dict[str, np.ndarray]:
    out = {}
    for (sid,), g in df.sort(["series", "time"]).group_by("series", maintain_order=True):
        y = g["value"].to_numpy().astype(np.float64)
        if np.isnan(y).any():
            raise ValueError(f"series {sid!r} has missing values; fill them first")
        if trim:
            y = y[:trim] if trim > 0 else y[: len(y) + trim]
        out[sid] = y
    return out


def baselines(series: dict[str, np.ndarray], h: int, k: int, m: int):
    sn_err, lv_err = [], []
    for y in series.values():
        n = len(y)
        for j in range(k):
            s = n - k * h + j * h
            truth = y[s : s + h]
            sn = np.array([y[s - m + (i % m)] for i in range(h)])
            lv = np.full(h, y[s - 1])
            sn_err.append(np.abs(truth - sn))
            lv_err.append(np.abs(truth - lv))
    return float(np.mean(np.concatenate(sn_err))), float(np.mean(np.concatenate(lv_err)))


def run_gru(series, h, input_size, k, seed, max_steps=None):
    import pandas as pd
    import torch
    from neuralforecast import NeuralForecast
    from neuralforecast.models import GRU

    frames = []
    for sid, y in series.items():
        frames.append(pd.DataFrame({"unique_id": sid, "ds": np.arange(len(y), dtype=np.int64), "y": y}))
    pdf = pd.concat(frames, ignore_index=True)

    kwargs = dict(h=h, input_size=input_size, random_seed=seed)
    if max_steps is not None:  # deviation from defaults, recorded in the output
        kwargs["max_steps"] = max_steps
    # Lightning Trainer options only (no effect on the model or its training):
    quiet = dict(enable_progress_bar=False, enable_model_summary=False, logger=False)
    model = GRU(**kwargs, **quiet)
    nf = NeuralForecast(models=[model], freq=1)
    t0 = time.time()
    cv = nf.cross_validation(pdf, n_windows=k, step_size=h, refit=False)
    wall = time.time() - t0

    # check the windows are exactly the last k*h steps of every series
    cv = cv.reset_index() if "unique_id" not in cv.columns else cv
    errs = []
    for sid, y in series.items():
        g = cv[cv["unique_id"] == sid].sort_values(["cutoff", "ds"])
        n = len(y)
        expect = np.arange(n - k * h, n)
        got = g["ds"].to_numpy()
        if len(got) != k * h or not np.array_equal(got, expect):
            raise RuntimeError(f"unexpected CV windows for {sid}: {got[:5]}..{got[-5:]} vs {expect[:3]}..")
        cut = g["cutoff"].to_numpy()
        exp_cut = np.repeat(n - k * h + np.arange(k) * h - 1, h)
        if not np.array_equal(cut, exp_cut):
            raise RuntimeError(f"unexpected cutoffs for {sid}")
        if not np.allclose(g["y"].to_numpy(), y[expect]):
            raise RuntimeError(f"y mismatch for {sid}")
        errs.append(np.abs(g["y"].to_numpy() - g["GRU"].to_numpy()))
    return float(np.mean(np.concatenate(errs))), wall, int(torch.get_num_threads())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a name from forecaster.bench.zoo.ZOO")
    src.add_argument("--parquet", help="external long table")
    p.add_argument("--id-col", default="series")
    p.add_argument("--time-col", default="time")
    p.add_argument("--target", default="value")
    p.add_argument("--freq", default=None,
                   help="with --parquet: a polars interval (30m, 1h, 1d, 1w, 1mo, 1q, 1y) puts every series on "
                        "that grid and interpolates gaps; 1bd or none leaves the rows as they are")
    p.add_argument("--season-length", type=int, default=None, help="override SEASON_LENGTH")
    p.add_argument("--h", type=int, default=None, help="default: ZOO[dataset]['horizon']")
    p.add_argument("--input-size", type=int, default=None, help="default: ZOO[dataset]['context']")
    p.add_argument("--k", type=int, default=None, help="number of test windows; default: ZOO[dataset]['k']")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--baselines-only", action="store_true",
                   help="load, fill, count and score the baselines; no neuralforecast (not even imported)")
    p.add_argument("--trim", type=int, default=None,
                   help="keep only the first TRIM steps of every series (negative: drop the last -TRIM)")
    p.add_argument("--max-steps", type=int, default=None, help="DEVIATION from the default 1000 (recorded)")
    p.add_argument("--out", default=None, help="JSON output path (rewritten after every seed)")
    args = p.parse_args(argv)
    if args.parquet and None in (args.h, args.input_size, args.k):
        p.error("--h, --input-size and --k are required with --parquet")

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)

    df, m, freq, name, filled = load_table(args)
    series = to_arrays(df, args.trim)
    lengths = [len(y) for y in series.values()]
    h, k = args.h, args.k
    min_len = min(lengths)
    if min_len - k * h < args.input_size + h:
        print(f"WARNING: shortest series has {min_len - k * h} training steps < input_size + h", file=sys.stderr)
    sn, lv = baselines(series, h, k, m)

    res = {
        "dataset": name,
        "freq": freq,
        "n_series": len(series),
        "length_min": min_len,
        "length_max": max(lengths),
        "values_interpolated": filled,
        "h": h,
        "input_size": args.input_size,
        "k": k,
        "test_steps_per_series": k * h,
        "train_steps_per_series_min": min_len - k * h,
        "season_length": m,
        "mae_seasonal_naive": sn,
        "mae_last_value": lv,
        "gru": {},
        "gru_mae_mean": None,
        "deviations": ({"max_steps": args.max_steps} if args.max_steps is not None else {}),
        "neuralforecast": None,
        "torch": None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    print(f"{name}: {len(series)} series, len {min_len}..{max(lengths)} ({filled} interpolated), h={h} "
          f"input_size={args.input_size} k={k} m={m}  snaive MAE={sn:.6g}  last MAE={lv:.6g}", flush=True)

    def write():
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(res, f, indent=2)

    if args.baselines_only:
        write()
        print(json.dumps(res, indent=2))
        return

    import neuralforecast
    import torch

    res["neuralforecast"], res["torch"] = neuralforecast.__version__, torch.__version__
    for seed in args.seeds:
        mae, wall, nthreads = run_gru(series, h, args.input_size, k, seed, args.max_steps)
        res["gru"][str(seed)] = {"mae": mae, "wall_s": round(wall, 1), "torch_threads": nthreads}
        maes = [v["mae"] for v in res["gru"].values()]
        res["gru_mae_mean"] = float(np.mean(maes))
        res["gru_mae_std"] = float(np.std(maes))
        print(f"  seed {seed}: GRU MAE={mae:.6g}  wall={wall:.1f}s", flush=True)
        write()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
