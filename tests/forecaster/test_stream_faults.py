"""Faults and bad input in the stream (issue 16): values beyond float32, far-ahead times, signals at
any point, damaged snapshots, null times and ids, huge ids and values. Each test states the fault
and the behaviour it pins down."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import inspect
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import forecaster
import kernels
from forecaster import stream_cli
from forecaster.snapshot import LOG_MAGIC, MAGIC, LogReplacedError, SnapshotError, read_snapshot, write_snapshot
from forecaster.stream_cli import serve
from forecaster.streaming import MAX_ID_LENGTH, StreamingForecaster
from forecaster.streaming.history import CarriedState
from forecaster.streaming.steps import Stepper
from forecaster.streaming import statefile
from forecaster.streaming.table import SeriesTable
from tests.forecaster.test_streaming import CONTEXT, T0, make, stream_of

HOUR = dt.timedelta(hours=1)


def table(stream: StreamingForecaster) -> dict:
    """Everything a snapshot holds, for exact comparison."""
    ids, states = stream.hidden_state(stream.series) if len(stream) else ([], torch.empty(0))
    return {"ids": ids, "state": states, "info": stream.info()}


def same_tables(a: StreamingForecaster, b: StreamingForecaster) -> bool:
    """Every series' state and every column of the series table (rings, running sums, counts),
    row for row in the order of first observation."""
    ra, rb = a.table.ordered(), b.table.ordered()
    if a.series != b.series or (a.table.carries and not torch.equal(a.table.state[:, ra], b.table.state[:, rb])):
        return False
    return all(np.array_equal(a.table.t[k][ra], b.table.t[k][rb]) for k in a.table.t if k != "seen")


def assert_same(result: StreamingForecaster, expected: StreamingForecaster) -> None:
    a, b = table(result), table(expected)
    assert a["ids"] == b["ids"]
    assert torch.equal(a["state"], b["state"])
    assert a["info"].equals(b["info"])
    assert same_tables(result, expected)  # rings and running sums too


# ---- 1. values beyond float32 ---------------------------------------------------------------------

@pytest.mark.parametrize("col", ["a", "p"], ids=["target", "past_covariate"])
@pytest.mark.parametrize("value", [1e300, -1e300, 1e40], ids=["1e300", "-1e300", "1e40"])
def test_value_beyond_float32_is_rejected_and_the_state_stays_finite(col, value, tmp_path):
    df, dm, model = make()
    frame_fed, record_fed = stream_of(model), stream_of(model)
    first = df.filter(pl.col("time") == T0)
    frame_fed.observe(first)
    record_fed.observe(first.to_dicts())
    before = table(record_fed)
    nxt = df.filter(pl.col("time") == T0 + HOUR).with_columns(
        pl.when(pl.col("id") == "s1").then(value).otherwise(pl.col(col)).alias(col))
    for stream, report in ((frame_fed, frame_fed.observe(nxt)), (record_fed, record_fed.observe(nxt.to_dicts()))):
        assert report.accepted == 1 and [r.series for r in report.rejected] == ["s1"]
        assert f"column {col!r}" in report.rejected[0].reason and "overflows float32" in report.rejected[0].reason
        assert torch.isfinite(stream.hidden_state()[1]).all()
        assert torch.equal(stream.hidden_state("s1")[1], before["state"][:1])  # s1 untouched, s2 stepped
        stream.save_state(tmp_path / "state.pt")
        stream.close()  # one writer per state file: the next stream writes it next
        restored = stream_of(model)
        restored.load_state(tmp_path / "state.pt")  # a snapshot never holds NaN (load_state refuses it)
        assert_same(restored, stream)
    assert_same(frame_fed, record_fed)


def test_a_series_whose_state_would_turn_nonfinite_is_kept_as_before_the_call(monkeypatch):
    df, dm, model = make()
    stream = stream_of(model)
    stream.observe(df.filter(pl.col("time") <= T0 + HOUR))
    before = table(stream)
    step_rows = CarriedState.step_rows

    def poisoned(self, table, rows, *features):  # a model that blows up on s1's second step of the call
        step_rows(self, table, rows, *features)
        s1 = table.ids["s1"]
        if s1 in rows and table.t["n_steps"][s1] == 3:
            table.state[:, s1] = float("nan")

    monkeypatch.setattr(CarriedState, "step_rows", poisoned)
    recs = df.filter(pl.col("time").is_between(T0 + 2 * HOUR, T0 + 4 * HOUR)).sort("time").to_dicts()
    report = stream.observe(recs)  # s1, s2 at hours 2, 3, 4
    assert torch.isfinite(stream.hidden_state()[1]).all()
    rejected = {r.index: r.reason for r in report.rejected}
    assert sorted(rejected) == [0, 2, 4]  # every s1 record of the call
    assert "non-finite" in rejected[2] and "record 2" in rejected[0] and "record 2" in rejected[4]
    assert [r.time for r in report.rejected] == [recs[i]["time"] for i in (0, 2, 4)]
    assert report.accepted == 3 and report.steps == 3
    after = table(stream)
    assert torch.equal(after["state"][0], before["state"][0])  # s1 as before the call
    assert after["info"]["steps"].to_list() == [2, 5]


def test_observe_is_atomic_under_an_interrupt(monkeypatch):
    df, dm, model = make()
    stream = stream_of(model)
    stream.observe(df.filter(pl.col("time") <= T0 + HOUR))
    before = table(stream)
    calls = {"n": 0}
    step_rows = CarriedState.step_rows

    def interrupted(self, *args):
        step_rows(self, *args)  # the state is updated, then the interrupt lands before the bookkeeping
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(CarriedState, "step_rows", interrupted)
    recs = df.filter(pl.col("time") == T0 + 6 * HOUR).to_dicts()  # 4 gap steps + the record, per series
    with pytest.raises(KeyboardInterrupt):
        stream.observe(recs)
    after = table(stream)
    assert torch.equal(after["state"], before["state"])
    assert after["info"].equals(before["info"])


# ---- 2. far-ahead times: max_gap, and long gaps cost at most the context --------------------------

def test_a_record_beyond_max_gap_is_rejected_and_the_series_goes_on():
    df, dm, model = make()
    stream = stream_of(model)
    assert stream.max_gap == 2 * CONTEXT
    s2 = df.filter(pl.col("id") == "s2").sort("time").to_dicts()
    stream.observe(s2[:3])
    for ahead in (dt.timedelta(days=365), dt.timedelta(days=200 * 365)):  # a year typo; 200 years
        report = stream.observe([{**s2[3], "time": s2[3]["time"] + ahead}])
        assert report.accepted == 0 and report.steps == 0
        reason = report.rejected[0].reason
        assert f"more than max_gap={2 * CONTEXT}" in reason and "--max_gap" in reason and "max_gap=..." in reason
    assert stream.observe(s2[3:5]).accepted == 2  # the correct records are not out of order
    assert stream.info()["steps"].to_list() == [5]


def test_max_gap_bounds_and_options():
    df, dm, model = make()
    rec = df.row(0, named=True)
    stream = stream_of(model, max_gap=10)
    stream.observe([rec])
    assert "max_gap=10" in stream.observe([{**rec, "time": rec["time"] + 11 * HOUR}]).rejected[0].reason
    assert stream.observe([{**rec, "time": rec["time"] + 10 * HOUR}]).accepted == 1
    unlimited = stream_of(model, max_gap=None)
    unlimited.observe([rec])
    report = unlimited.observe([{**rec, "time": rec["time"] + dt.timedelta(days=200 * 365)}])
    assert report.accepted == 1 and report.steps == CONTEXT  # 200 years of gap cost one context
    for bad in (0, -3, True, "2", 1.5):
        with pytest.raises(ValueError, match="max_gap must be an int >= 1"):
            stream_of(model, max_gap=bad)


def test_a_gap_longer_than_the_context_restarts_the_series_from_zero():
    df, dm, model = make()
    s2 = df.filter(pl.col("id") == "s2").sort("time").to_dicts()
    rec0, rec1 = s2[0], s2[1]
    missing = {"a": None, "b": None, "p": None}
    # k = CONTEXT + 7 periods ahead: the zero state, the last CONTEXT - 1 missing periods, the record
    t1 = rec0["time"] + (CONTEXT + 7) * HOUR
    gapped = stream_of(model)
    gapped.observe([rec0])
    report = gapped.observe([{**rec1, "time": t1}])
    assert report.accepted == 1 and report.steps == CONTEXT
    fresh = stream_of(model)
    fresh.observe([{**rec1, **missing, "time": t1 - k * HOUR} for k in range(CONTEXT - 1, 0, -1)])
    fresh.observe([{**rec1, "time": t1}])
    torch.testing.assert_close(gapped.hidden_state()[1], fresh.hidden_state()[1], rtol=0, atol=0)
    assert gapped.info()["steps"].to_list() == [1 + CONTEXT]
    assert gapped.forecast().equals(fresh.forecast())
    # k = CONTEXT periods ahead (CONTEXT - 1 missing): no restart, the old state is stepped through
    t2 = rec0["time"] + CONTEXT * HOUR
    stepped, dense = stream_of(model), stream_of(model)
    for s in (stepped, dense):
        s.observe([rec0])
    assert stepped.observe([{**rec1, "time": t2}]).steps == CONTEXT
    dense.observe([{**rec1, **missing, "time": rec0["time"] + k * HOUR} for k in range(1, CONTEXT)])
    dense.observe([{**rec1, "time": t2}])
    torch.testing.assert_close(stepped.hidden_state()[1], dense.hidden_state()[1])
    restarted = stream_of(model)  # the same steps from the zero state: not what `stepped` did
    restarted.observe([{**rec1, **missing, "time": rec0["time"] + k * HOUR} for k in range(1, CONTEXT)])
    restarted.observe([{**rec1, "time": t2}])
    assert not torch.equal(stepped.hidden_state()[1], restarted.hidden_state()[1])


def test_restart_within_one_call_and_records_after_it():
    df, dm, model = make()
    s2 = df.filter(pl.col("id") == "s2").sort("time").to_dicts()
    t1 = s2[0]["time"] + (CONTEXT + 3) * HOUR
    one_call, two_calls = stream_of(model), stream_of(model)
    recs = [s2[0], {**s2[1], "time": t1}, {**s2[2], "time": t1 + 2 * HOUR}]
    report = one_call.observe(recs)
    assert report.accepted == 3 and report.steps == 1 + CONTEXT + 2
    for r in recs:
        two_calls.observe([r])
    torch.testing.assert_close(one_call.hidden_state()[1], two_calls.hidden_state()[1], rtol=0, atol=0)


# ---- 3. signals between the state update and the bookkeeping --------------------------------------

PREFIXES = (os.path.dirname(forecaster.__file__), os.path.dirname(kernels.__file__))
RUN_LOOP = stream_cli.run_loop.__code__


class SignalAt:
    """A trace function: counts the line events of forecaster/ and kernels/ code while ``run_loop``
    runs (its handlers are installed then), and sends this process SIGTERM at event ``at``. The
    handler runs right there, at any line of the loop, ``observe``, the kernels or the forecast."""

    def __init__(self, at: int | None = None, record: bool = False):
        self.at, self.n, self.armed = at, 0, False
        self.events: list[tuple[str, int]] | None = [] if record else None

    def __call__(self, frame, event, arg):
        if frame.f_code is RUN_LOOP:
            self.armed = True
            return self._loop
        if self.armed and frame.f_code.co_filename.startswith(PREFIXES):
            return self._line
        return None

    def _line(self, frame, event, arg):
        if event == "line":
            self.n += 1
            if self.events is not None:
                self.events.append((frame.f_code.co_name, frame.f_lineno))
            if self.n == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
        return self._line

    def _loop(self, frame, event, arg):
        if event == "return":
            self.armed = False
        return self._line(frame, event, arg)


def serve_traced(stream, lines, state, tracer=None) -> tuple[dict, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        counts = serve(stream, lines, out, err, state=str(state), snapshot_every=3600)
    finally:
        sys.settrace(old)
    return counts, out.getvalue()


def _line_of(text: str) -> int:
    """Line number in steps.py of the first line containing ``text`` inside ``Stepper.round``."""
    src, first = inspect.getsourcelines(Stepper.round)
    return first + next(i for i, line in enumerate(src) if text in line)


@pytest.fixture(scope="module")
def short_stream():
    """A model and 18 NDJSON records of two series (s1 skips hours 17-18: a gap in the plan)."""
    df, dm, model = make()
    part = df.filter(pl.col("time").is_between(T0 + 12 * HOUR, T0 + 21 * HOUR)).sort("time", "id")
    lines = [json.dumps({**r, "time": r["time"].isoformat()}) for r in part.to_dicts()]
    return model, lines


def interrupted_run(model, lines, state: Path, at: int, resend_all: bool) -> tuple[StreamingForecaster, str]:
    """Serve ``lines`` with SIGTERM at line event ``at``; start again from the snapshot and send the
    rest (or everything again); return the final stream and the forecasts of both runs."""
    if state.exists():
        state.unlink()
    first = stream_of(model)
    counts, out1 = serve_traced(first, lines, state, SignalAt(at))
    assert counts["signal"] == signal.SIGTERM
    restarted = stream_of(model)
    restarted.load_state(state)
    _, out2 = serve_traced(restarted, lines if resend_all else lines[counts["lines"]:], state)
    return restarted, out1 + out2


def test_sigterm_at_random_points_changes_nothing(short_stream, tmp_path):
    model, lines = short_stream
    reference = stream_of(model)
    calibrate = SignalAt(record=True)
    _, expected_out = serve_traced(reference, lines, tmp_path / "reference.pt", calibrate)
    # 100 line events drawn at random among all (~16,000: the loop, observe, the kernels, the forecast),
    # and 20 in the window between a round's state update and its bookkeeping (where 2 of 73 runs of
    # the old loop applied a record twice)
    window = [i + 1 for i, (name, line) in enumerate(calibrate.events)
              if name == "round" and line > _line_of("self.strategy.step(")]
    rng = np.random.default_rng(16)
    points = sorted(set(rng.integers(1, calibrate.n + 1, size=100).tolist())
                    | set(rng.choice(window, size=20, replace=False).tolist()))
    assert len(points) >= 110
    stopped = 0
    for k, at in enumerate(points):
        result, out = interrupted_run(model, lines, tmp_path / "state.pt", at, resend_all=bool(k % 2))
        assert_same(result, reference)
        assert out == expected_out, f"interrupt at line event {at}: forecasts differ"
        stopped += 1
    assert stopped == len(points)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_the_harness_catches_a_non_atomic_round(short_stream, tmp_path, monkeypatch):
    """Mutation check: with the old behaviour (a handler that raises, no rollback) an interrupt
    between a round's state update and its bookkeeping applies a record twice, and the harness
    above sees it."""
    model, lines = short_stream

    @contextlib.contextmanager
    def raising_handlers():
        def handler(signum, frame):
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGTERM, handler)
        try:
            yield stream_cli.StopFlag()
        finally:
            signal.signal(signal.SIGTERM, old)

    monkeypatch.setattr(stream_cli, "stop_on_signals", raising_handlers)
    monkeypatch.setattr(SeriesTable, "restore_rows", lambda self, saved, which=None: None)
    monkeypatch.setattr(SeriesTable, "drop", lambda self, ids: None)  # nor the removal of a new series' row

    def replaced(*a, **k):  # every snapshot a full one, as before deltas: the half-updated row is in it
        raise LogReplacedError("mutation: no deltas")

    monkeypatch.setattr(statefile, "append_delta", replaced)
    reference = stream_of(model)  # calibrated under the mutation: the same line events as the runs below
    calibrate = SignalAt(record=True)
    serve_traced(reference, lines, tmp_path / "reference.pt", calibrate)
    at_bookkeeping = [i + 1 for i, (name, line) in enumerate(calibrate.events)
                      if name == "round" and line == _line_of("t[\"last\"][rows] = times")]
    differ = 0
    for at in at_bookkeeping[:4]:
        state = tmp_path / "state.pt"
        first = stream_of(model)
        with pytest.raises(KeyboardInterrupt):
            serve_traced(first, lines, state, SignalAt(at))
        restarted = stream_of(model)
        restarted.load_state(state)
        serve_traced(restarted, lines, state)  # every line again: duplicates are rejected
        differ += not same_tables(restarted, reference)
    assert differ == len(at_bookkeeping[:4]) > 0


# ---- 7. snapshots ---------------------------------------------------------------------------------

def _pwn(path):
    Path(path).write_text("code ran")
    return {}


class Evil:
    """Unpickles as a call of ``_pwn(marker)``: a file that runs code when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_pwn, (str(self.marker),))


def snapshot_file(path: Path, payload: dict) -> None:
    """A file as write_snapshot writes it (magic, a valid checksum) around any pickle."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def test_a_snapshot_whose_pickle_would_run_code_is_refused_without_running_it(tmp_path):
    df, dm, model = make()
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    snapshot_file(path, {"format_version": 2, "ids": Evil(marker)})
    stream = stream_of(model)
    with pytest.raises(SnapshotError, match="not a readable snapshot: UnpicklingError"):
        stream.load_state(path)
    assert not marker.exists()
    # the file does run code for a plain torch.load: the refusal above is weights_only's doing
    torch.load(io.BytesIO(path.read_bytes()[len(MAGIC) + 65:]), weights_only=False)
    assert marker.exists()


@pytest.fixture()
def saved(tmp_path):
    df, dm, model = make()
    stream = stream_of(model)
    stream.observe(df.filter(pl.col("time") <= T0 + 5 * HOUR))
    path = tmp_path / "state.pt"
    stream.save_state(path)
    return model, stream, path


@pytest.mark.parametrize("where", ["magic", "marker", "length", "checksum", "payload_start", "payload_middle",
                                   "last_byte"])
def test_a_snapshot_with_a_flipped_bit_is_refused(saved, where):
    model, stream, path = saved
    raw = bytearray(path.read_bytes())
    head = len(LOG_MAGIC) + 4 + 8 + 32  # magic, then the base segment: marker, length, SHA-256, payload
    pos = {"magic": 3, "marker": len(LOG_MAGIC) + 1, "length": len(LOG_MAGIC) + 5, "checksum": head - 10,
           "payload_start": head + 2, "payload_middle": (head + len(raw)) // 2, "last_byte": len(raw) - 1}[where]
    raw[pos] ^= 0x10
    path.write_bytes(bytes(raw))
    target = stream_of(model)
    with pytest.raises(SnapshotError, match="damaged|not a readable snapshot") as e:
        target.load_state(path)
    assert "\n" not in str(e.value)
    assert len(target) == 0


@pytest.mark.parametrize("change, match", [
    (lambda p: p.update(last=p["last"][:-1]), "last"),
    (lambda p: p.update(state=p["state"][:, :, :3]), "state"),
    (lambda p: p.update(params=p["params"][:, :1]), "params"),
    (lambda p: p.update(n_obs=p["n_obs"].float()), "right kind"),
    (lambda p: p.update(state=p["state"].tolist()), "right kind|dense tensor"),
    (lambda p: p.update(state=p["state"] * float("nan")), "non-finite"),
    (lambda p: p.update(params=p["params"] * 0), "scale <= 0"),
    (lambda p: p.update(n_obs=p["n_steps"] + 1), "counts"),
    (lambda p: p.update(ids=[1, 2]), "list of strings"),
    (lambda p: p.update(ids="s1s2"), "list of strings"),
    (lambda p: p.update(ids=["s1", "s1"]), "repeated"),
    (lambda p: p.update(ids=["s1", "x" * (MAX_ID_LENGTH + 1)]), "MAX_ID_LENGTH"),
    (lambda p: p.pop("n_steps"), "KeyError"),
    (lambda p: p.update(format_version=99), "format version 99"),
    (lambda p: p.update(fingerprint=[1]), "another model"),
], ids=["short_last", "hidden_size", "params", "int_as_float", "list_state", "nan", "zero_scale", "counts",
        "int_ids", "str_ids", "repeated_ids", "long_id", "missing_key", "version", "fingerprint"])
def test_a_snapshot_that_does_not_fit_is_refused_in_one_line_and_changes_nothing(saved, tmp_path, change, match):
    model, stream, path = saved
    payload = read_snapshot(path)
    change(payload)
    bad = tmp_path / "bad.pt"
    write_snapshot(bad, payload)
    before = table(stream)
    with pytest.raises(SnapshotError, match=match) as e:
        stream.load_state(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    after = table(stream)
    assert after["ids"] == before["ids"] and torch.equal(after["state"], before["state"])
    assert after["info"].equals(before["info"])


def test_a_sigkill_inside_a_save_leaves_no_temp_file_after_the_next_save(saved, tmp_path):
    model, stream, path = saved
    good = path.read_bytes()
    stream.close()  # its lock: the writer below is the only one
    # a writer killed between writing its temporary file and renaming it over the snapshot
    code = ("import os, signal, torch; import forecaster.snapshot as s\n"
            "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"s.write_snapshot({str(path)!r}, {{'x': torch.zeros(3)}})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert path.read_bytes() == good  # the snapshot is whole
    assert len(list(tmp_path.glob("state.pt.*.tmp"))) == 1  # and the killed writer's file is left
    stream.save_state(path)
    assert list(tmp_path.glob("*.tmp")) == []
    restored = stream_of(model)
    restored.load_state(path)
    assert_same(restored, stream)


# ---- 8. null / empty / NaT times, bad ids, huge ids and values ------------------------------------

@pytest.mark.parametrize("time", [None, "", "NaT", np.datetime64("NaT"), float("nan"), "  "],
                         ids=["null", "empty", "NaT_text", "NaT", "nan", "blank"])
def test_null_empty_and_nat_times_are_rejected_and_create_no_series(time):
    df, dm, model = make()
    stream = stream_of(model)
    rec = df.row(0, named=True)
    report = stream.observe([{**rec, "time": time}])
    assert report.accepted == 0 and ("null time" in report.rejected[0].reason
                                     or "could not be read" in report.rejected[0].reason)
    assert stream.series == [] and stream.info().height == 0


def test_a_frame_with_a_null_time_or_id_rejects_those_rows_only():
    df, dm, model = make()
    stream = stream_of(model)
    frame = df.filter(pl.col("time") <= T0 + HOUR).sort("time", "id")  # s1, s2, s1, s2
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("time")).alias("time"),
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("id")).alias("id"))
    report = stream.observe(frame)
    assert {r.index: r.reason for r in report.rejected} == {2: "null time", 3: "null id (column 'id')"}
    assert report.accepted == 2 and stream.series == ["s1", "s2"]
    assert stream.info()["last_time"].null_count() == 0


def test_bad_ids_are_rejected_and_messages_echo_at_most_60_characters():
    df, dm, model = make()
    stream = stream_of(model)
    rec = df.row(0, named=True)
    huge = "x" * 10_000_000
    cases = {None: "null id", "": "empty id", huge: "MAX_ID_LENGTH = 256", "\udc80": "not valid text",
             True: "is a bool", ("a",): "is a tuple", float("nan"): "not a number that names"}
    for sid, why in cases.items():
        report = stream.observe([{**rec, "id": sid}])
        assert report.accepted == 0 and why in report.rejected[0].reason, (sid, report)
        assert len(report.rejected[0].reason) < 200 and len(report.rejected[0].series) < 70
    assert stream.series == []
    assert stream.observe([{**rec, "id": "y" * MAX_ID_LENGTH}]).accepted == 1
    assert stream.observe([{**rec, "id": 7}]).accepted == 1 and stream.series[-1] == "7"
    report = stream.observe([{**rec, "id": "s9", "a": huge}, {**rec, "id": "s9", "time": huge}])
    assert [len(r.reason) < 200 for r in report.rejected] == [True, True]
    assert "10000000 characters" in report.rejected[0].reason and "not a number" in report.rejected[0].reason

