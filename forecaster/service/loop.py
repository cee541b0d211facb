"""The stream loop over a broker: messages in, forecasts out, acknowledgements after snapshots.

Each message is one observation line and goes through the stdin loop's own handling
(:func:`forecaster.stream_cli._process`: parse, observe, forecast, every problem one line), one
record per ``observe`` call as on stdin, so a series' state is the same bits whatever the
batching. After each batch of messages the forecasts are synced to the sink; when a snapshot is
due (``--snapshot_every``) it is written, and then, only then, the batch's last message is
acknowledged (covering every message before it). So:

- a worker killed at any moment loses nothing: what it had not acknowledged is delivered again;
- nothing is applied twice: a redelivered record that the snapshot already holds is at or before
  its series' last time and is rejected by the duplicate rule; such rejections of messages the
  broker marks as delivered before are counted as ``redelivered``, not reported one by one;
- every applied record's forecast reached the sink before its message was acknowledged.
"""

from __future__ import annotations

import time

from forecaster.service.io import BrokerError, Message, Sink, Source
from forecaster.stream_cli import (WAKE_SECONDS, _LineParser, _process, _say, _Snapshotter, OutputClosed,
                                   stop_on_signals)
from forecaster.streaming import StreamingForecaster, show

__all__ = ["serve_source", "PartitionedParser"]


class _Where(int):
    """A message's number in this run (what ``_process`` counts lines by), written as the number and
    the broker's name of the message: ``line 12 (obs.1 seq 3456): ...``."""

    def __new__(cls, n: int, where: str):
        obj = super().__new__(cls, n)
        obj.where = where
        return obj

    def __format__(self, spec: str) -> str:
        return f"{int(self)} ({self.where})"


class PartitionedParser(_LineParser):
    """The line parser of partition ``k`` of ``n``: a record of another partition's series is
    refused (a producer publishing to the wrong subject would split a series over two workers)."""

    def __init__(self, fmt: str, required: list[str], keys: tuple, id_col: str, k: int, n: int):
        super().__init__(fmt, required, keys)
        self.id_col, self.k, self.n = id_col, k, n

    def parse(self, text: str):
        from forecaster.service.io import partition_of

        rec = super().parse(text)
        if rec is not None and self.id_col in rec and isinstance(rec[self.id_col], (str, int)) \
                and not isinstance(rec[self.id_col], bool):
            j = partition_of(rec[self.id_col], self.n)
            if j != self.k:
                raise ValueError(f"series {show(rec[self.id_col])} belongs to partition {j} of {self.n}, not "
                                 f"{self.k}: publish it to that partition's subject (python -m forecaster publish "
                                 "does)")
        return rec


def serve_source(stream: StreamingForecaster, source: Source, sink: Sink, err, state: str, fmt: str = "auto",
                 snapshot_every: float = 10.0, parser: _LineParser | None = None, metrics=None,
                 watcher=None) -> dict:
    """Process ``source``'s messages until SIGTERM/SIGINT, snapshotting to ``state`` and acknowledging
    after each snapshot (module docstring); at the end a last snapshot and acknowledgement, then the
    state file's lock and the connections are released.

    Returns the counts of the stdin loop (``lines`` = messages processed, ``records``,
    ``rejected``, ``malformed``) plus ``redelivered`` (messages delivered again and skipped as
    already applied), ``acks`` (acknowledgements sent), ``signal``, ``series``, ``snapshots``,
    ``snapshot_failures``, ``state_saved`` and ``acked`` (whether everything processed was
    acknowledged at the end), and ``swaps`` with a ``watcher``. ``metrics``
    (:class:`~forecaster.streaming.metrics.StreamMetrics`) is told of every message, its lag being
    the seconds from the poll that delivered it; ``watcher``
    (:class:`~forecaster.streaming.swap.CheckpointWatcher`) is polled between batches, and a swap
    makes the next snapshot hold every series under the new model (nothing is acknowledged before)."""
    from forecaster.stream_cli import _watch

    snap = _Snapshotter(stream, state, snapshot_every, err)
    if parser is None:
        parser = _LineParser(fmt, stream.required_columns, tuple(c for c in (stream.id_col, stream.time_col) if c))
    counts = {"lines": 0, "records": 0, "rejected": 0, "malformed": 0, "redelivered": 0, "acks": 0}
    if watcher is not None:
        counts["swaps"] = 0
    c = _Committer(snap, source, sink, err, counts)
    with stop_on_signals() as stop:
        try:
            while not stop:
                if source.rewind_wanted:
                    if c.commit(force=True):
                        try:
                            source.rewind()
                        except BrokerError as e:
                            c.report("rewind", e)
                            time.sleep(WAKE_SECONDS)
                    else:
                        time.sleep(WAKE_SECONDS)
                    continue
                if watcher is not None and _watch(stream, watcher, metrics, snap):
                    counts["swaps"] += 1
                batch = source.poll(WAKE_SECONDS)
                arrived = time.monotonic()
                for msg in batch:
                    if metrics is not None:
                        metrics.set_lag(time.monotonic() - arrived)
                    if not _handle(stream, parser, msg, sink, err, counts, snap, metrics):
                        stop.signal = stop.signal or -1  # the output is gone: stop after a last snapshot
                        break
                    c.pending = msg.token
                    if stop:
                        break
                c.commit()
        finally:
            try:
                acked = c.commit(force=True)
            finally:
                stream.close()
                source.close()
                sink.close()
    sig = stop.signal if stop.signal != -1 else None
    return {**counts, "signal": sig, "series": len(stream), "snapshots": snap.written,
            "snapshot_failures": snap.failed_total, "state_saved": not snap.dirty, "acked": acked}


def _handle(stream, parser, msg: Message, sink, err, counts, snap, metrics=None) -> bool:
    """One message; False when the sink is closed."""
    if msg.seen:  # processed by this worker already (the broker redelivered it)
        counts["redelivered"] += 1
        return True
    counts["lines"] += 1
    n = _Where(counts["lines"], msg.where)
    before = counts["rejected"]
    quiet = _QuietDuplicates(err) if msg.maybe_applied else err
    try:
        _process(stream, parser, msg.data, n, sink, quiet, counts, snap, metrics)
    except OutputClosed:
        _say(err, f"line {n}: the output was closed; stopping")
        return False
    if msg.maybe_applied and counts["rejected"] > before and quiet.duplicate:
        counts["rejected"] -= 1
        counts["redelivered"] += 1
    return True


class _QuietDuplicates:
    """``err`` for a message an earlier worker may have applied: its duplicate / out-of-order
    rejection is what the snapshot holding it causes, so it is kept back (and counted as
    redelivered); any other line goes through."""

    def __init__(self, err):
        self.err, self.duplicate, self.held = err, False, ""

    def write(self, text: str) -> int:
        if ("rejected: duplicate timestamp" in text or "rejected: out-of-order timestamp" in text) and not self.held:
            self.duplicate, self.held = True, text.rstrip("\n")
            return len(text)
        if text.strip() or not self.held:
            self.err.write(text)
        return len(text)

    def flush(self) -> None:
        self.err.flush()


class _Committer:
    """Sync the sink, snapshot when due, then acknowledge: in that order, each step only after the
    one before it succeeded. A failure is reported once per kind and retried at the next batch."""

    def __init__(self, snap: _Snapshotter, source: Source, sink: Sink, err, counts: dict):
        self.snap, self.source, self.sink, self.err, self.counts = snap, source, sink, err, counts
        self.pending = None  # the token of the last message processed and not acknowledged
        self.failing: dict[str, str] = {}

    def report(self, what: str, e: Exception) -> None:
        text = str(e)
        if self.failing.get(what) != text:
            self.failing[what] = text
            _say(self.err, f"{what} failed: {text}; retrying (nothing is acknowledged before it succeeds)")

    def _ok(self, what: str) -> None:
        if self.failing.pop(what, None) is not None:
            _say(self.err, f"{what} succeeded again")

    def commit(self, force: bool = False) -> bool:
        """True when everything processed is in a snapshot and acknowledged."""
        if self.pending is None and not self.snap.dirty:
            return True
        try:
            self.sink.sync()
            self._ok("forecast delivery")
        except BrokerError as e:
            self.report("forecast delivery", e)
            return False
        self.snap.maybe(force=force and self.snap.dirty)
        if self.snap.dirty:  # not due yet, or the write failed (reported by the snapshotter)
            return False
        if self.pending is not None:
            try:
                self.source.ack(self.pending)
                self._ok("acknowledgement")
            except BrokerError as e:
                self.report("acknowledgement", e)
                return False
            self.pending = None
            self.counts["acks"] += 1
        return True
