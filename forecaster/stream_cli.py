"""``python -m forecaster stream``: the online forecasting loop.

Reads observations, one record a line (CSV with a header line, or NDJSON), from stdin or a file;
after each record writes the series' new forecast as NDJSON lines (one per target time and target)
to stdout, flushed. The format is ``--format``, or with ``auto`` the first valid line's: a JSON
object, or a CSV header that names every required column. A line that is malformed, not UTF-8 or
longer than ``MAX_LINE_BYTES``, and a rejected record, are reported on stderr (``line N: ...``, at
most 60 characters of a bad value echoed) and skipped; the stream goes on.

``--state PATH`` restores every series' state at start (when the file exists) and snapshots it
atomically every ``--snapshot_every`` seconds (also while the input is idle), at the end of the
input, and on SIGTERM/SIGINT. A signal only sets a flag that the loop reads between records: the
record being processed is finished (state, bookkeeping, forecast), then the snapshot is written
and the process exits 0; stop it and start it again with the same ``--state`` and it continues
where it stopped. Re-sending records is safe: a record at or before its series' last time is
rejected as a duplicate, so after a restart send again everything after the last snapshot you are
sure of (after a SIGKILL up to ``--snapshot_every`` seconds of records are not in it).

``--max_gap N`` rejects a record more than N periods after its series' last time (default: twice
the model's context length; ``none``: no limit); see :class:`forecaster.StreamingForecaster`.

``--history window`` makes the per-step model keep each series' look-back and run it at every
forecast (equal to ``predict`` for any history, O(context) per forecast) instead of carrying its
GRU state over the whole history (``carry``, its default, O(1)); the window model always runs its
window. A snapshot is for one of the two: restart with the same ``--history``.

``--replay DATA`` streams the test part of a dataset through the same loop (the history before it
first), forecasting before each observation, and reports online (prequential) errors per horizon
step and over time beside the seasonal-naive baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

from forecaster.evaluation import replay
from forecaster.lightning_module import load_checkpoint
from forecaster.streaming import StreamingForecaster, _show

# A line longer than this is reported and skipped without being held in memory: a record is a few
# hundred bytes (a thousand covariates fit in well under 64 KiB); this bounds what one line costs.
MAX_LINE_BYTES = 1 << 20
# How often (seconds) the loop wakes while the input is idle, to snapshot on time and see a signal.
WAKE_SECONDS = 0.2


def _json_default(v):
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


# ---- input: bytes lines from a background reader, decoded and parsed one at a time ---------------

class _Idle:
    """No line within the wake interval."""


class _End:
    """End of the input."""


class _Bad:
    """A line that could not be read: ``why`` is reported, the line skipped."""

    def __init__(self, why: str):
        self.why = why


class LineReader:
    """Reads byte lines of a file (stdin) in a background thread into a bounded queue, so that the
    loop can wake while the input is idle (a blocking ``readline`` would hold it until the next
    line: no periodic snapshot, no reaction to a signal). Lines over ``max_bytes`` are skipped
    without being kept. Iterating yields ``bytes`` lines, ``_Idle`` every ``wake`` seconds without
    input, ``_Bad`` for an unreadable line, then ends.

    The thread reads the file descriptor with ``os.read``, not through a buffered file object: a
    daemon thread blocked in ``BufferedReader.readline`` holds its lock, and interpreter shutdown
    then aborts ("could not acquire lock ... possibly due to daemon threads")."""

    def __init__(self, f, wake: float = WAKE_SECONDS, max_bytes: int = MAX_LINE_BYTES, depth: int = 64):
        try:
            fd = f if isinstance(f, int) else f.fileno()
            self._read = lambda: os.read(fd, 1 << 16)
        except (AttributeError, OSError, io.UnsupportedOperation):  # an in-memory file
            self._read = lambda: f.read(1 << 16)
        self.wake, self.max_bytes = wake, max_bytes
        self.queue: queue.Queue = queue.Queue(depth)
        # a daemon: blocked in read() on an open pipe, it must not keep the process alive at exit
        threading.Thread(target=self._run, name="stream-input", daemon=True).start()

    def _too_long(self, size: int) -> _Bad:
        return _Bad(f"line of {size} bytes, longer than MAX_LINE_BYTES = {self.max_bytes}")

    def _run(self) -> None:
        put, limit = self.queue.put, self.max_bytes
        buf, dropped = bytearray(), 0  # the line so far; bytes of an over-long line being dropped
        try:
            while True:
                chunk = self._read()
                if not chunk:
                    break
                start = 0
                while start < len(chunk):
                    nl = chunk.find(b"\n", start)
                    piece = chunk[start:] if nl < 0 else chunk[start:nl + 1]
                    start += len(piece)
                    if dropped:
                        dropped += len(piece)
                    else:
                        buf += piece
                        if len(buf) > limit + 1:  # over the limit (not counting the newline): drop it
                            dropped, buf = len(buf), bytearray()
                    if nl >= 0:
                        if dropped:
                            put(self._too_long(dropped - 1))
                        else:
                            put(bytes(buf))
                        buf, dropped = bytearray(), 0
            if dropped or len(buf) > limit:
                put(self._too_long(dropped or len(buf)))
            elif buf:
                put(bytes(buf))  # a last line without a newline
        except (OSError, ValueError) as e:
            put(_Bad(f"input could not be read ({type(e).__name__}: {e}); stopping"))
        finally:
            put(_End)

    def __iter__(self):
        while True:
            try:
                item = self.queue.get(timeout=self.wake)
            except queue.Empty:
                yield _Idle
                continue
            if item is _End:
                return
            yield item


def _decode(line, n: int) -> str:
    """A line as text: bytes are decoded as UTF-8 (``ValueError`` naming the bad byte)."""
    if isinstance(line, str):
        return line
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte 0x{line[e.start]:02x} at position {e.start})") from None
    return text[1:] if n == 1 and text.startswith("\ufeff") else text  # a byte-order mark


class _LineParser:
    """Turns input lines into records: NDJSON objects, or CSV rows under a header line. With
    ``fmt="auto"`` the first valid line sets the format: a JSON object (NDJSON), or a CSV row that
    names every required column (the header); lines before it are reported and skipped."""

    def __init__(self, fmt: str, required: list[str], keys: tuple = ()):
        self.fmt = fmt
        self.required = list(required)
        self.keys = set(keys)  # the id and time columns: kept as text (ids like "007" or "NA" stay themselves)
        self.header: list[str] | None = None

    def _as_header(self, text: str) -> list[str]:
        row = next(csv.reader(io.StringIO(text)))
        missing = [c for c in self.required if c not in row]
        if missing:
            what = "neither a JSON object nor a CSV header" if self.fmt == "auto" else "not a CSV header"
            raise ValueError(f"{what} naming the columns {self.required} (missing {missing[:5]}); the format "
                             "comes from --format or the first valid line")
        return row

    def parse(self, text: str) -> dict | None:
        text = text.strip()
        if not text:
            return None
        if self.fmt == "auto":
            if text.startswith("{"):
                rec = self._json(text)
                self.fmt = "ndjson"
                return rec
            self.header = self._as_header(text)
            self.fmt = "csv"
            return None
        if self.fmt == "ndjson":
            return self._json(text)
        if self.header is None:
            self.header = self._as_header(text)
            return None
        row = next(csv.reader(io.StringIO(text)))
        if len(row) != len(self.header):
            raise ValueError(f"{len(row)} fields, the header has {len(self.header)}")
        return {k: v if k in self.keys else _csv_value(v) for k, v in zip(self.header, row)}

    @staticmethod
    def _json(text: str) -> dict:
        rec = json.loads(text)
        if not isinstance(rec, dict):
            raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
        return rec


def _csv_value(v: str):
    if v == "" or v.lower() in ("nan", "null", "none", "na"):
        return None
    try:
        return float(v) if any(c in v for c in ".eE") or v.lower() in ("inf", "-inf") else int(v)
    except ValueError:
        return v


# ---- the loop ------------------------------------------------------------------------------------

class _Snapshotter:
    """Writes the state when records were applied and ``every`` seconds have passed since the last
    write, and when forced (at the end)."""

    def __init__(self, stream: StreamingForecaster, path: str | None, every: float):
        self.stream, self.path, self.every = stream, path, every
        self.last = time.monotonic()
        self.dirty = False

    def maybe(self, force: bool = False) -> None:
        if self.path and (force or (self.dirty and time.monotonic() - self.last >= self.every)):
            self.stream.save_state(self.path)
            self.last = time.monotonic()
            self.dirty = False


class StopFlag:
    """Set by SIGTERM/SIGINT (see :func:`stop_on_signals`); the loop reads it between records."""

    def __init__(self):
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Install handlers that only set a :class:`StopFlag` (yielded), never raise: a signal that lands
    inside ``observe`` (between a state update and its bookkeeping) or inside a Polars call
    (``pyo3_runtime.PanicException``) must not interrupt it. The previous handlers come back on exit."""
    stop = StopFlag()

    def handler(signum, frame):
        stop.signal = signum

    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _series_key(stream: StreamingForecaster, rec: dict) -> str:
    return str(rec[stream.id_col]) if stream.id_col else stream.single_id


def run_loop(stream: StreamingForecaster, lines, out, err, fmt: str = "auto", snap: _Snapshotter | None = None,
             stop: StopFlag | None = None) -> dict:
    """Process input lines (``str`` or ``bytes``, or a :class:`LineReader`) until the input ends or
    ``stop`` is set, which is checked between records only; return counts {"lines", "records",
    "rejected", "malformed"}."""
    parser = _LineParser(fmt, stream.required_columns, tuple(c for c in (stream.id_col, stream.time_col) if c))
    counts = {"lines": 0, "records": 0, "rejected": 0, "malformed": 0}
    n = 0
    for line in lines:
        if line is _Idle:
            if snap is not None:
                snap.maybe()
            if stop:
                break
            continue
        n += 1
        counts["lines"] += 1
        _process(stream, parser, line, n, out, err, counts, snap)
        if snap is not None:
            snap.maybe()
        if stop:
            break
    return counts


def _process(stream, parser, line, n, out, err, counts, snap) -> None:
    """One input line: parse, observe, write the forecast; problems are reported on ``err``."""
    try:
        if isinstance(line, _Bad):
            raise ValueError(line.why)
        rec = parser.parse(_decode(line, n))
    except (ValueError, csv.Error) as e:  # json.JSONDecodeError is a ValueError
        counts["malformed"] += 1
        print(f"line {n}: malformed, skipped: {e}", file=err, flush=True)
        return
    if rec is None:
        return
    try:
        report = stream.observe([rec])
    except ValueError as e:
        counts["malformed"] += 1
        print(f"line {n}: {e}; skipped", file=err, flush=True)
        return
    if report.rejected:
        counts["rejected"] += 1
        r = report.rejected[0]
        print(f"line {n}: record for series {_show(r.series)} at {_show(r.time)} rejected: {r.reason}", file=err,
              flush=True)
        return
    counts["records"] += 1
    if snap is not None:
        snap.dirty = True
    try:
        fc = stream.forecast(_series_key(stream, rec))
    except ValueError as e:  # e.g. a model with future covariates: the loop has no values for them
        print(f"line {n}: applied, but no forecast: {e}", file=err, flush=True)
        return
    for row in fc.iter_rows(named=True):
        out.write(json.dumps({k: _clean(v) for k, v in row.items()}, default=_json_default) + "\n")
    out.flush()


def serve(stream: StreamingForecaster, lines, out, err, fmt: str = "auto", state: str | None = None,
          snapshot_every: float = 10.0) -> dict:
    """The stream command's loop with its signal handling and snapshots: restore nothing (the
    caller has), process ``lines`` until their end or SIGTERM/SIGINT, snapshot to ``state`` on
    time and at the end. Returns the counts of :func:`run_loop` plus ``"signal"`` (its number, or
    None)."""
    snap = _Snapshotter(stream, state, snapshot_every)
    with stop_on_signals() as stop:
        try:
            counts = run_loop(stream, lines, out, err, fmt, snap, stop)
        finally:
            snap.maybe(force=True)
    return {**counts, "signal": stop.signal}


def _plot_replay(result, path: str) -> None:
    from forecaster.plot import plot_online_error

    try:
        plot_online_error(result.over_time, path)
    except ImportError as e:
        raise SystemExit(f"--plot: {e}") from None


# ---- entry point ---------------------------------------------------------------------------------

def _max_gap(v: str) -> int | str | None:
    if v.lower() in ("none", "auto"):
        return None if v.lower() == "none" else "auto"
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{v!r}: give a number of periods >= 1, auto (twice the context length) "
                                         "or none (no limit)")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m forecaster stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help="checkpoint written by `python -m forecaster fit`")
    p.add_argument("--input", default="-", help="observations file (default: stdin)")
    p.add_argument("--format", default="auto", choices=["auto", "csv", "ndjson"],
                   help="input format (auto: from the first valid line)")
    p.add_argument("--state", help="state snapshot: restored at start if it exists, written periodically and at exit")
    p.add_argument("--snapshot_every", type=float, default=10.0,
                   help="seconds between snapshots, also while the input is idle (default 10)")
    p.add_argument("--max_gap", type=_max_gap, default="auto", metavar="N",
                   help="reject a record more than N periods after its series' last time (default: twice the "
                        "context length; none: no limit)")
    p.add_argument("--history", choices=["carry", "window"],
                   help="per-step model: carry the GRU state over the whole history (default, O(1) per "
                        "observation) or run the look-back window at each forecast (equals predict)")
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
        # the replay reads a dataset the data module has validated: its gaps are real, never typos
        max_gap = None if args.replay else args.max_gap
        stream = StreamingForecaster(model.net, model.data_spec, device=args.device, new_series=args.new_series,
                                     max_gap=max_gap, history=args.history)
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

    try:
        f = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    except OSError as e:
        print(f"error: --input {args.input!r}: {e.strerror or e}", file=sys.stderr)
        return 2
    counts = serve(stream, LineReader(f), sys.stdout, sys.stderr, args.format, args.state, args.snapshot_every)
    sig = counts.pop("signal")
    how = f"stopped by {signal.Signals(sig).name}" if sig is not None else "done"
    print(f"{how}: {counts}", file=sys.stderr, flush=True)
    return 0
