"""``python -m forecaster stream``: the online forecasting loop.

Reads observations, one record a line (CSV with a header line, or NDJSON), from stdin or a file;
after each record writes the series' new forecast as NDJSON lines (one per target time and target)
to stdout, flushed. A malformed line or a rejected record is reported on stderr and skipped.

``--state PATH`` restores every series' state at start (when the file exists) and snapshots it
atomically every ``--snapshot_every`` seconds, at the end of the input, and on SIGTERM/SIGINT: stop
the process and start it again with the same ``--state`` and it continues where it stopped. (After
a SIGKILL, up to ``--snapshot_every`` seconds of records are not in the snapshot; re-sending them is
safe: records at or before a series' last time are rejected as duplicates.)

``--replay DATA`` streams the test part of a dataset through the same loop (the history before it
first), forecasting before each observation, and reports online (prequential) errors per horizon
step and over time beside the seasonal-naive baseline.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from forecaster.evaluation import replay
from forecaster.lightning_module import load_checkpoint
from forecaster.streaming import StreamingForecaster


def _json_default(v):
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


class _LineParser:
    """Turns input lines into records: NDJSON objects, or CSV rows under the first (header) line."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.header: list[str] | None = None

    def parse(self, line: str) -> dict | None:
        text = line.strip()
        if not text:
            return None
        fmt = self.fmt
        if fmt == "auto":
            fmt = self.fmt = "ndjson" if text.startswith("{") else "csv"
        if fmt == "ndjson":
            rec = json.loads(text)
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            return rec
        row = next(csv.reader(io.StringIO(text)))
        if self.header is None:
            self.header = row
            return None
        if len(row) != len(self.header):
            raise ValueError(f"{len(row)} fields, the header has {len(self.header)}")
        return {k: _csv_value(v) for k, v in zip(self.header, row)}


def _csv_value(v: str):
    if v == "" or v.lower() in ("nan", "null", "none", "na"):
        return None
    try:
        return float(v) if any(c in v for c in ".eE") or v.lower() in ("inf", "-inf") else int(v)
    except ValueError:
        return v


class _Snapshotter:
    def __init__(self, stream: StreamingForecaster, path: str | None, every: float):
        self.stream, self.path, self.every = stream, path, every
        self.last = time.monotonic()

    def maybe(self, force: bool = False) -> None:
        if self.path and (force or time.monotonic() - self.last >= self.every):
            self.stream.save_state(self.path)
            self.last = time.monotonic()


def _series_key(stream: StreamingForecaster, rec: dict) -> str:
    return str(rec[stream.id_col]) if stream.id_col else stream.single_id


def run_loop(stream: StreamingForecaster, lines, out, err, fmt: str = "auto", snap: _Snapshotter | None = None) -> dict:
    """Process input lines; return counts {"lines", "records", "rejected", "malformed"}."""
    parser = _LineParser(fmt)
    counts = {"lines": 0, "records": 0, "rejected": 0, "malformed": 0}
    for n, line in enumerate(lines, start=1):
        counts["lines"] += 1
        try:
            rec = parser.parse(line)
        except (ValueError, json.JSONDecodeError, csv.Error) as e:
            counts["malformed"] += 1
            print(f"line {n}: malformed, skipped: {e}", file=err, flush=True)
            continue
        if rec is None:
            continue
        try:
            report = stream.observe([rec])
        except ValueError as e:
            counts["malformed"] += 1
            print(f"line {n}: {e}; skipped", file=err, flush=True)
            continue
        if report.rejected:
            counts["rejected"] += 1
            r = report.rejected[0]
            print(f"line {n}: record for series {r.series!r} at {r.time} rejected: {r.reason}", file=err, flush=True)
            continue
        counts["records"] += 1
        fc = stream.forecast(_series_key(stream, rec))
        for row in fc.iter_rows(named=True):
            out.write(json.dumps({k: _clean(v) for k, v in row.items()}, default=_json_default) + "\n")
        out.flush()
        if snap is not None:
            snap.maybe()
    return counts


def _plot_replay(result, path: str) -> None:
    from forecaster.plot import plot_online_error

    try:
        plot_online_error(result.over_time, path)
    except ImportError as e:
        raise SystemExit(f"--plot: {e}") from None


# ---- entry point ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m forecaster stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help="checkpoint written by `python -m forecaster fit`")
    p.add_argument("--input", default="-", help="observations file (default: stdin)")
    p.add_argument("--format", default="auto", choices=["auto", "csv", "ndjson"])
    p.add_argument("--state", help="state snapshot: restored at start if it exists, written periodically and at exit")
    p.add_argument("--snapshot_every", type=float, default=10.0, help="seconds between snapshots (default 10)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--new_series", default="pooled", choices=["pooled", "reject"])
    p.add_argument("--replay", metavar="DATA", help="replay the test part of this dataset and report online errors")
    p.add_argument("--max_steps", type=int, help="with --replay: only the first N test timestamps")
    p.add_argument("--compare_window", action="store_true",
                   help="with --replay: also score re-running the look-back window at every origin (mae_window)")
    p.add_argument("--report", help="with --replay: write the error-over-time table to this CSV")
    p.add_argument("--plot", help="with --replay: draw online error over time against the baseline (PNG)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model, ckpt = load_checkpoint(args.ckpt_path, map_location=args.device)
        stream = StreamingForecaster(model.net, model.data_spec, device=args.device, new_series=args.new_series)
        if args.state and Path(args.state).exists():
            stream.load_state(args.state)
            print(f"restored {len(stream)} series from {args.state}", file=sys.stderr, flush=True)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.replay:
        split = ckpt.get("datamodule_hyper_parameters") or {}
        try:
            result = replay(stream, args.replay, split, args.max_steps, compare_window=args.compare_window)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        o = result.overall
        window = f"  re-running the window {o['mae_window']:.4f}" if "mae_window" in o else ""
        print(f"online MAE {o['mae']:.4f}{window}  seasonal naive {o['mae_seasonal_naive']:.4f}  last value "
              f"{o['mae_last_value']:.4f}  ({o['forecasts_scored']} forecast values over {o['timestamps']} "
              f"timestamps, observe {o['observe_ms_per_timestamp']:.2f} ms per timestamp)")
        with pl.Config(tbl_rows=50):
            print(result.by_step)
        if args.report:
            result.over_time.write_csv(args.report)
        if args.plot:
            _plot_replay(result, args.plot)
        return 0

    snap = _Snapshotter(stream, args.state, args.snapshot_every)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.input == "-":
            lines = iter(sys.stdin.readline, "")
        else:
            lines = open(args.input, encoding="utf-8")
        counts = run_loop(stream, lines, sys.stdout, sys.stderr, args.format, snap)
        print(f"done: {counts}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
    finally:
        snap.maybe(force=True)
    return 0
