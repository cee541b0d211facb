"""``python -m forecaster stream``: the online forecasting loop.

Reads observations, one record a line (CSV with a header line, or NDJSON), from stdin or a file;
after each record writes the series' new forecast as NDJSON lines (one per target time and target)
to stdout, flushed. The format is ``--format``, or with ``auto`` the first valid line's: a JSON
object, or a CSV header that names every required column. Every line is a record or a reported
rejection, whatever its bytes: a line that is malformed, not UTF-8, nested deeper than
``MAX_JSON_DEPTH`` or longer than ``MAX_LINE_BYTES``, and a rejected record, are reported on
stderr (``line N: ...``, at most 60 characters of a bad value echoed) and skipped; the stream goes
on. Forecast lines are JSON that every parser reads (no ``NaN`` / ``Infinity``: ``null``).

``--state PATH`` takes the state file's lock (``PATH.lock``; a second stream on the same file is
refused, naming the holder's pid), restores every series' state at start (when the file exists)
and snapshots it every ``--snapshot_every`` seconds (also while the input is idle), at the end of
the input, and on SIGTERM/SIGINT. A snapshot appends the series that changed to the file, crash
safe (:mod:`forecaster.snapshot`). A snapshot that fails (a full or read-only disk) is reported
once and retried with backoff while the stream goes on; the last good snapshot is never touched;
when the last attempt at the end fails too the exit status is 3. A signal only sets a flag that
the loop reads between records: the record being processed is finished (state, bookkeeping,
forecast), then the snapshot is written and the process exits 0; stop it and start it again with
the same ``--state`` and it continues where it stopped. Re-sending records is safe: a record at or
before its series' last time is rejected as a duplicate, so after a restart send again everything
after the last snapshot you are sure of (after a SIGKILL up to ``--snapshot_every`` seconds of
records are not in it).

``--max_series N`` keeps at most N series (default 100,000; ``none``: no limit): beyond it the
least recently seen are evicted, one stderr line each.

At the end a summary line on stderr: ``done: {JSON}`` (or ``stopped by SIGTERM: {JSON}``) with the
counts of lines, records, rejections, series and snapshots. Exit status: 0, 2 for a bad argument,
checkpoint or state file, 3 when the state could not be saved at the end.

``--max_gap N`` rejects a record more than N periods after its series' last time (default: twice
the model's context length; ``none``: no limit); see :class:`forecaster.StreamingForecaster`.

``--history window`` makes the per-step model keep each series' look-back and run it at every
forecast (equal to ``predict`` for any history, O(context) per forecast) instead of carrying its
GRU state over the whole history (``carry``, its default, O(1)); the window model always runs its
window. A snapshot is for one of the two: restart with the same ``--history``.

``--source nats://HOST:PORT/SUBJECT`` reads the observations from a NATS JetStream subject instead
(a durable consumer, acknowledged after each snapshot; ``--partition K/N`` for worker K of N,
``--sink`` to publish the forecasts): :mod:`forecaster.service`.

``--replay DATA`` streams the test part of a dataset through the same loop (the history before it
first), forecasting before each observation, and reports online (prequential) errors per horizon
step and over time beside the seasonal-naive baseline; ``--swap CKPT@TIME`` swaps models on the way
and reports the online error of each.

``--watch PATH`` swaps the running stream to each new, complete, valid and compatible checkpoint
written at PATH (polled every ``--watch_every`` seconds), re-warming the carried states from each
series' look-back; anything else at PATH is reported in one line and ignored
(:mod:`forecaster.streaming.swap`). ``--metrics_port N`` serves Prometheus metrics on
127.0.0.1:N (records/s, lag, rejections by reason, the online MAE beside the baselines and the
drift rule, :mod:`forecaster.streaming.metrics`); the summary line has them too (``metrics``).
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
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

from forecaster.streaming import MAX_SERIES, StreamingForecaster, show as _show

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
        self.last_arrival: float | None = None  # time.monotonic() when the line last yielded was read (the lag)
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
                            put((time.monotonic(), bytes(buf)))
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
            if type(item) is tuple:
                self.last_arrival, item = item
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
        text = text.rstrip("\r\n")  # a CSV field keeps its spaces (an id " a" is not "a")
        if not text.strip():
            return None
        if self.fmt == "auto":
            if text.lstrip().startswith("{"):
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
        depth = json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested {depth} levels deep; a record is a flat object of column -> value "
                             f"(at most MAX_JSON_DEPTH = {MAX_JSON_DEPTH} levels)")
        rec = json.loads(text)
        if not isinstance(rec, dict):
            raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
        return rec


# A record is a flat JSON object (depth 1). Deeper values are refused before json.loads, whose
# recursion would otherwise raise RecursionError (a line of 100,000 "[" is 100 KB).
MAX_JSON_DEPTH = 16
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_depth(text: str) -> int:
    """How deeply ``text``'s JSON arrays and objects nest (brackets inside strings do not count);
    O(len(text)), and only a few string operations for a line with few brackets."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:  # the common case: cannot be deeper
        return text.count("[") + text.count("{")
    code = np.frombuffer(_JSON_STRING.sub('""', text).encode("utf-8", "replace"), dtype=np.uint8)
    step = np.isin(code, (ord("["), ord("{"))).astype(np.int64) - np.isin(code, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


# A number in a CSV field: ASCII digits only (int() and float() also take "١٢", "1_000" and " 5 ").
_CSV_INT = re.compile(r"[+-]?[0-9]+")
_CSV_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity)", re.I)


def _csv_value(v: str):
    """A CSV field as a record value: None for empty / nan / null / none / na, an int or a float
    for an ASCII number (surrounding spaces allowed), else the text (rejected as not a number)."""
    t = v.strip()
    if t == "" or t.lower() in ("nan", "null", "none", "na"):
        return None
    if _CSV_INT.fullmatch(t):
        return int(t)
    if _CSV_FLOAT.fullmatch(t):
        return float(t)
    return v


# ---- the loop ------------------------------------------------------------------------------------

class _Snapshotter:
    """Writes the state when records were applied and ``every`` seconds have passed since the last
    write, and when forced (at the end). A write that fails (a full or read-only disk, the file
    replaced) is reported once on ``err`` and retried with backoff (1, 2, 4, ... seconds, at most
    ``RETRY_MAX_SECONDS``) while the stream goes on; the last good snapshot is untouched meanwhile
    and the records since it stay in memory, so the next good write holds them all."""

    def __init__(self, stream: StreamingForecaster, path: str | None, every: float, err=None):
        self.stream, self.path, self.every, self.err = stream, path, every, err or sys.stderr
        self.last = time.monotonic()
        self.dirty = False
        self.written = 0  # snapshots written
        self.failures = 0  # failed attempts since the last good write
        self.failed_total = 0
        self.retry_at = 0.0
        self.last_good: str | None = None  # wall-clock time of the last good write

    def maybe(self, force: bool = False) -> bool:
        """Snapshot if due (or ``force``); False when a due write failed."""
        if not self.path:
            return True
        now = time.monotonic()
        if not force and (not self.dirty or (now < self.retry_at if self.failures else now - self.last < self.every)):
            return True
        try:
            self.stream.save_state(self.path)
        except Exception as e:  # noqa: BLE001 - SnapshotError for disk faults; anything else the same way
            self.failures += 1
            self.failed_total += 1
            self.retry_at = now + min(RETRY_MAX_SECONDS, 2.0 ** (self.failures - 1))
            if self.failures == 1:
                kept = f"the last good one ({self.last_good}) is kept" if self.last_good else "no snapshot yet"
                _say(self.err, f"snapshot to {self.path} failed: {_one_line(e)}; {kept}; the stream goes on and "
                     "retries with backoff")
            return False
        if self.failures:
            _say(self.err, f"snapshot to {self.path} written again after {self.failures} failed attempt(s)")
        for note in self.stream.state_notes:
            _say(self.err, f"note: {note}")
        self.failures, self.last, self.dirty = 0, time.monotonic(), False
        self.written += 1
        self.last_good = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return True


# Longest wait between two attempts at a snapshot that keeps failing.
RETRY_MAX_SECONDS = 60.0


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


def run_loop(stream: StreamingForecaster, lines, out, err, fmt: str = "auto", snap: _Snapshotter | None = None,
             stop: StopFlag | None = None, metrics=None, watcher=None) -> dict:
    """Process input lines (``str`` or ``bytes``, or a :class:`LineReader`) until the input ends or
    ``stop`` is set, which is checked between records only; return counts {"lines", "records",
    "rejected", "malformed"} (plus "swaps" with a ``watcher``). ``metrics``: a
    :class:`~forecaster.streaming.metrics.StreamMetrics` told of every line; ``watcher``: a
    :class:`~forecaster.streaming.swap.CheckpointWatcher` polled between lines and while idle."""
    parser = _LineParser(fmt, stream.required_columns, tuple(c for c in (stream.id_col, stream.time_col) if c))
    counts = {"lines": 0, "records": 0, "rejected": 0, "malformed": 0}
    if watcher is not None:
        counts["swaps"] = 0
    n = 0
    for line in lines:
        if watcher is not None and _watch(stream, watcher, metrics, snap):
            counts["swaps"] += 1
        if line is _Idle:
            if snap is not None:
                snap.maybe()
            if stop:
                break
            continue
        n += 1
        counts["lines"] += 1
        if metrics is not None and getattr(lines, "last_arrival", None) is not None:
            metrics.set_lag(time.monotonic() - lines.last_arrival)
        try:
            _process(stream, parser, line, n, out, err, counts, snap, metrics)
        except OutputClosed:
            counts["output_closed"] = True
            _say(err, f"line {n}: the output was closed; stopping")
            break
        if snap is not None:
            snap.maybe()
        if stop:
            break
    return counts


def _watch(stream, watcher, metrics, snap) -> bool:
    """Poll the watched checkpoint; after a swap the next snapshot holds every series (the new model's)."""
    report = watcher.poll(stream)
    if report is None:
        return False
    if metrics is not None:
        metrics.start_model(report.new)
    if snap is not None:
        snap.dirty = True
    return True


def _one_line(e: BaseException) -> str:
    """An exception as one line of at most a few hundred characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:300] + "..."


def _process(stream, parser, line, n, out, err, counts, snap, metrics=None) -> None:
    """One input line: parse, observe, write the forecast; problems are reported on ``err``. No
    exception of a line escapes (whatever its bytes): it is reported with its type and skipped."""
    try:
        if isinstance(line, _Bad):
            raise ValueError(line.why)
        rec = parser.parse(_decode(line, n))
    except (ValueError, csv.Error) as e:  # json.JSONDecodeError is a ValueError
        counts["malformed"] += 1
        if metrics is not None:
            metrics.malformed_line()
        _say(err, f"line {n}: malformed, skipped: {_one_line(e)}")
        return
    except (Exception, RecursionError) as e:  # noqa: BLE001 - a line must never stop the stream
        counts["malformed"] += 1
        if metrics is not None:
            metrics.malformed_line()
        _say(err, f"line {n}: malformed, skipped: {type(e).__name__}: {_one_line(e)}")
        return
    if rec is None:
        return
    try:
        report = stream.observe([rec])
    except ValueError as e:
        counts["malformed"] += 1
        if metrics is not None:
            metrics.malformed_line()
        _say(err, f"line {n}: {_one_line(e)}; skipped")
        return
    except Exception as e:  # noqa: BLE001 - observe put every series back as it was; the stream goes on
        counts["malformed"] += 1
        if metrics is not None:
            metrics.malformed_line()
        _say(err, f"line {n}: not applied ({type(e).__name__}: {_one_line(e)}); the series are as before the line")
        return
    for sid in report.evicted:
        _say(err, f"line {n}: series {_show(sid)} evicted (the least recently seen of more than "
                  f"max_series={stream.max_series}); its state is gone")
    if metrics is not None and report.evicted:
        metrics.forget(report.evicted)
    if report.rejected:
        counts["rejected"] += 1
        r = report.rejected[0]
        if metrics is not None:
            metrics.rejected_record(r.reason)
        _say(err, f"line {n}: record for series {_show(r.series)} at {_show(r.time)} rejected: {r.reason}")
        return
    counts["records"] += 1
    if snap is not None:
        snap.dirty = True
    if not report.series:  # future covariates kept for later forecasts (no step), or applied then evicted
        return
    try:
        fc = stream.forecast(report.series[0])
    except Exception as e:  # noqa: BLE001 - e.g. a model with future covariates: the loop has no values for them
        if metrics is not None:
            observed_metrics(metrics, stream, report.series[0], rec, None)
        _say(err, f"line {n}: applied, but no forecast: {_one_line(e)}")
        return
    if metrics is not None:
        observed_metrics(metrics, stream, report.series[0], rec, fc)
    text, dropped = forecast_lines(fc)
    if dropped:
        _say(err, f"line {n}: applied; {dropped} forecast value(s) beyond float32's range written as null")
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:  # the reader is gone: stop reading (a snapshot is still written)
        raise OutputClosed from None
    except (OSError, ValueError) as e:  # a full disk under stdout: the state is right, this forecast is lost
        counts["unwritten"] = counts.get("unwritten", 0) + 1
        if counts["unwritten"] == 1:
            _say(err, f"line {n}: applied, but its forecast could not be written ({_one_line(e)}); the stream goes "
                      "on (counted as 'unwritten')")


def observed_metrics(metrics, stream, sid: str, rec: dict, fc) -> None:
    """Tell ``metrics`` of an applied record of ``sid`` and the forecast table issued after it."""
    from forecaster.streaming.metrics import record_targets

    row = stream.table.ids.get(sid)
    if row is None:
        return
    point = None if fc is None else fc["value"].to_numpy().reshape(stream.horizon, len(stream.target_cols))
    metrics.observed(sid, int(stream.table.t["last"][row]), record_targets(rec, stream.target_cols), point)


class OutputClosed(Exception):
    """The forecasts' reader closed its end (``| head``): the loop stops after a snapshot."""


def _say(err, text: str) -> None:
    """A message on ``err``; a full disk or closed stream under it never stops the loop."""
    try:
        print(text, file=err, flush=True)
    except (OSError, ValueError):
        pass


def forecast_lines(fc: pl.DataFrame) -> tuple[str, int]:
    """A forecast table as NDJSON text (one line per row) that every JSON parser reads: NaN and
    infinite values become ``null`` (never ``NaN`` / ``Infinity``). Returns ``(text, number of
    non-finite values nulled)``."""
    lines, dropped = [], 0
    f32 = {k for k, dt in fc.schema.items() if dt == pl.Float32}  # written as float32's shortest form: 6.0, not
    for row in fc.iter_rows(named=True):                           # 5.999999523162842
        clean = {}
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v):
                dropped += not math.isnan(v)
                v = None
            elif k in f32 and v is not None:
                v = float(str(np.float32(v)))
            clean[k] = v
        lines.append(json.dumps(clean, default=_json_default, allow_nan=False) + "\n")
    return "".join(lines), dropped


def serve(stream: StreamingForecaster, lines, out, err, fmt: str = "auto", state: str | None = None,
          snapshot_every: float = 10.0, metrics=None, watcher=None) -> dict:
    """The stream command's loop with its signal handling and snapshots: restore nothing (the
    caller has), process ``lines`` until their end or SIGTERM/SIGINT, snapshot to ``state`` on
    time and at the end, then release the state file's lock. Returns the counts of
    :func:`run_loop` plus ``"signal"`` (its number, or None), ``"series"``, ``"snapshots"``
    (written), ``"snapshot_failures"`` and ``"state_saved"`` (whether the last snapshot was
    written; None without ``state``)."""
    snap = _Snapshotter(stream, state, snapshot_every, err)
    with stop_on_signals() as stop:
        try:
            counts = run_loop(stream, lines, out, err, fmt, snap, stop, metrics, watcher)
        finally:
            try:
                saved = snap.maybe(force=True)
            finally:
                stream.close()  # the state file's lock (and a compaction): released whatever happened
    return {**counts, "signal": stop.signal, "series": len(stream), "snapshots": snap.written,
            "snapshot_failures": snap.failed_total, "state_saved": saved if state else None}


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


def _max_series(v: str) -> int | None:
    if v.lower() == "none":
        return None
    try:
        n = int(v.replace(",", "").replace("_", ""))
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{v!r}: give a number of series >= 1, or none (no limit)")
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
    p.add_argument("--max_series", type=_max_series, default=MAX_SERIES, metavar="N",
                   help=f"keep at most N series (default {MAX_SERIES:,}; none: no limit); beyond it the least "
                        "recently seen are evicted and reported")
    p.add_argument("--device", default="cpu")
    p.add_argument("--source", metavar="nats://HOST:PORT/SUBJECT",
                   help="read observations from a NATS JetStream subject (a durable consumer) instead of --input; "
                        "needs --state; acknowledged after each snapshot (docs/streaming.md, the service)")
    p.add_argument("--sink", metavar="nats://HOST:PORT/SUBJECT", help="with --source: publish the forecasts there "
                                                                     "(default: stdout)")
    p.add_argument("--partition", metavar="K/N", help="with --source: be worker K of N, consuming SUBJECT.K "
                                                      "(series by CRC-32 of the id; python -m forecaster publish)")
    p.add_argument("--new_series", default="pooled", choices=["pooled", "reject"])
    p.add_argument("--replay", metavar="DATA", help="replay the test part of this dataset and report online errors")
    p.add_argument("--max_steps", type=int, help="with --replay: only the first N test timestamps")
    p.add_argument("--compare_window", action="store_true",
                   help="with --replay: also score re-running the look-back window at every origin (mae_window)")
    p.add_argument("--report", help="with --replay: write the error-over-time table to this CSV")
    p.add_argument("--plot", help="with --replay: draw online error over time against the baseline (PNG)")
    p.add_argument("--watch", metavar="PATH",
                   help="swap to each new valid, compatible checkpoint written at PATH without a restart (carried "
                        "states re-warmed from each series' look-back; see docs/streaming.md)")
    p.add_argument("--watch_every", type=_seconds, default=5.0, metavar="S",
                   help="with --watch: seconds between two looks at PATH (default 5)")
    p.add_argument("--swap", action="append", default=[], metavar="CKPT@TIME",
                   help="with --replay: swap to CKPT before the first test timestamp at or after TIME (repeatable); "
                        "the report then gives the online error of each model")
    p.add_argument("--metrics_port", type=int, metavar="N",
                   help="serve Prometheus metrics at http://127.0.0.1:N/metrics (needs prometheus-client: "
                        "pip install -e '.[service]')")
    p.add_argument("--metrics_label", default="0", metavar="NAME", help="this worker's label in the metrics")
    p.add_argument("--drift_window", type=_count, default=1000, metavar="K",
                   help="scored values of the windowed online MAE and of the drift rule (default 1000)")
    p.add_argument("--drift_margin", type=float, default=0.1, metavar="R",
                   help="drift: the windowed online MAE exceeds the better baseline's by more than this fraction (0.1)")
    return p


def _count(v: str) -> int:
    n = _max_series(v) if v.lower() != "none" else None
    if n is None:
        raise argparse.ArgumentTypeError(f"{v!r}: give a whole number >= 1")
    return n


def _seconds(v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        x = 0.0
    if not (x > 0 and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"{v!r}: give a number of seconds > 0")
    return x


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from forecaster.service.cli import check_args

    problem = check_args(args)  # the broker options, before the checkpoint is loaded
    if problem:
        print(f"error: {problem[1]}", file=sys.stderr)
        return problem[0]
    from forecaster.lightning_module import load_checkpoint  # here: --help needs neither Lightning nor torch

    try:
        model, ckpt = load_checkpoint(args.ckpt_path, map_location=args.device)
        # the replay reads a dataset the data module has validated: its gaps are real, never typos, and
        # its series are all kept
        max_gap = None if args.replay else args.max_gap
        stream = StreamingForecaster(model.net, model.data_spec, device=args.device, new_series=args.new_series,
                                     max_gap=max_gap, history=args.history,
                                     max_series=None if args.replay else args.max_series,
                                     swappable=bool(args.watch or args.swap))
        if args.state:
            stream.lock_state(args.state)  # one writer per state file: a second stream stops here
            if Path(args.state).exists():
                _restore(stream, args)
                print(f"restored {len(stream)} series from {args.state}", file=sys.stderr, flush=True)
                for note in stream.state_notes:
                    print(f"note: {note}", file=sys.stderr, flush=True)
    except ValueError as e:  # CheckpointError and SnapshotError (StateLockedError) are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.swap and not args.replay:
        print("error: --swap is for --replay; a live stream swaps with --watch PATH", file=sys.stderr)
        return 2
    if args.replay:
        from forecaster.evaluation import replay

        split = ckpt.get("datamodule_hyper_parameters") or {}
        try:
            swaps = _scheduled_swaps(stream, args)
            result = replay(stream, args.replay, split, args.max_steps, compare_window=args.compare_window,
                            before_timestamp=swaps)
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
        _print_swaps(result, args)
        if args.report:
            result.over_time.write_csv(args.report)
        if args.plot:
            _plot_replay(result, args.plot)
        return 0

    try:
        f = None if args.source else sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    except OSError as e:
        print(f"error: --input {args.input!r}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        metrics, watcher, server = _service(stream, args)
    except (ValueError, ImportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.source:
        from forecaster.service.cli import run_worker

        try:
            return run_worker(stream, args, metrics=metrics, watcher=watcher)
        finally:
            if server is not None:
                server.shutdown()
    counts = serve(stream, LineReader(f), sys.stdout, sys.stderr, args.format, args.state, args.snapshot_every,
                   metrics, watcher)
    counts["metrics"] = metrics.summary()
    if server is not None:
        server.shutdown()
    if counts.get("output_closed"):  # no flush of the closed pipe at exit (Python would report it)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sig = counts.pop("signal")
    how = f"stopped by {signal.Signals(sig).name}" if sig is not None else "done"
    summary = {"event": "stopped" if sig is not None else "done", "signal": signal.Signals(sig).name if sig else None,
               **counts}
    _say(sys.stderr, f"{how}: {json.dumps(summary)}")
    if counts["state_saved"] is False:
        _say(sys.stderr, f"error: the last snapshot to {args.state} could not be written: the state since the last "
                         "good one is not saved (see the snapshot messages above)")
        return 3
    return 0


# ---- swaps and metrics (forecaster/streaming/swap.py, metrics.py) --------------------------------

def _restore(stream: StreamingForecaster, args) -> None:
    """Load ``--state``; with ``--watch``, a state written for the watched checkpoint's model (a
    swap before the stream stopped) makes the stream start on that model."""
    from forecaster.snapshot import SnapshotError

    try:
        stream.load_state(args.state)
    except SnapshotError as e:
        if not args.watch:
            raise
        from forecaster.streaming.swap import resume_on_watched

        report = resume_on_watched(stream, args.state, args.watch, e)
        print(f"{args.state} was written for the model at --watch {args.watch}: starting on it ({report.line()})",
              file=sys.stderr, flush=True)


def _service(stream: StreamingForecaster, args):
    """The metrics (always: the summary has them; Prometheus with --metrics_port), the watcher
    (with --watch) and the metrics' HTTP server (or None)."""
    from forecaster.streaming.metrics import StreamMetrics, serve_metrics
    from forecaster.streaming.swap import CheckpointWatcher

    registry = None
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise ValueError(f"--metrics_port {args.metrics_port}: give a port in [0, 65535]")
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise ImportError("--metrics_port needs prometheus-client: pip install -e '.[service]'") from None
        registry = "new"
    metrics = StreamMetrics(stream, worker=args.metrics_label, window=args.drift_window, margin=args.drift_margin,
                            registry=registry, err=sys.stderr)
    server = None
    if registry is not None:
        try:
            server = serve_metrics(metrics, args.metrics_port)
        except OSError as e:
            raise OSError(f"--metrics_port {args.metrics_port}: {e.strerror or e}") from None
        print(f"metrics at http://127.0.0.1:{server.server_port}/metrics", file=sys.stderr, flush=True)
    watcher = CheckpointWatcher(args.watch, args.watch_every, args.device, sys.stderr) if args.watch else None
    return metrics, watcher, server


def _scheduled_swaps(stream: StreamingForecaster, args):
    from forecaster.streaming.swap import ScheduledSwaps

    if not args.swap:
        return None
    items = []
    for item in args.swap:
        path, at, when = item.rpartition("@")
        if not at or not path or not when:
            raise ValueError(f"--swap {item!r}: give CKPT@TIME, e.g. new.ckpt@2017-10-01T00:00:00")
        items.append((path, when))
    return ScheduledSwaps(items, stream.spec, args.device, sys.stderr)


def _print_swaps(result, args) -> None:
    from forecaster.streaming.metrics import drift_points
    from forecaster.streaming.swap import by_model

    for row in by_model(result.errors) if "model" in result.errors.columns else []:
        print(f"model {row['model']} (origins {row['first_origin']} to {row['last_origin']}): online MAE "
              f"{row['mae']:.4f}  seasonal naive {row['mae_seasonal_naive']:.4f}  last value "
              f"{row['mae_last_value']:.4f}  ({row['n']} values)")
    fired = drift_points(result.errors, args.drift_window, args.drift_margin)
    when = (": " + ", ".join(map(str, fired[:10]))) if fired else ""
    print(f"drift rule (step-1 MAE over the last {args.drift_window} values > the better baseline's by "
          f"{args.drift_margin:.0%}): fired {len(fired)} time(s){when}")
