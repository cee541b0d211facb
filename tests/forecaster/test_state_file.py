"""Issue 24, cases 3, 4 and 7: one writer per state file, disk faults, bounded memory, snapshots
that cost what changed.

- Two writers: a second stream (another process, or another stream of this process) is refused
  in one line naming the holder's pid; a stale temporary file is removed only by the lock's holder.
- A full or read-only disk (a real tmpfs where this machine lets tests mount one, and injected
  ENOSPC everywhere): the failure is reported once, the stream goes on, the last good snapshot
  stays byte for byte as it was, the retry writes everything, the exit status says when the end
  could not be saved.
- ``max_series`` evicts the least recently seen series and reports each one.
- A snapshot appends what changed (a delta) to a checksummed log; a torn last segment is ignored
  and cut off, a damaged middle one refused; the log is compacted in the background.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from forecaster import stream_cli
from forecaster.baseline import HISTORY_SLOTS, blend_knots
from forecaster.nets import StepNet
from forecaster.snapshot import (LOG_MAGIC, Compactor, SnapshotError, StateLock, StateLockedError, append_delta,
                                 read_log)
from forecaster.stream_cli import serve
from forecaster.streaming import StreamingForecaster, statefile
from forecaster.streaming.records import NO_TIME
from forecaster.streaming.statefile import merge_payloads
from tests.forecaster.test_stream_faults import assert_same
from tests.forecaster.test_streaming import T0, make, stream_of

HOUR = dt.timedelta(hours=1)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup():
    df, dm, model = make()
    lines = [json.dumps({**r, "time": r["time"].isoformat()}) for r in df.sort("time", "id").to_dicts()]
    return df, model, lines


def reference(model, lines) -> StreamingForecaster:
    stream = stream_of(model)
    serve(stream, lines, io.StringIO(), io.StringIO())
    return stream


def loaded(model, path) -> StreamingForecaster:
    stream = stream_of(model)
    stream.load_state(path)
    return stream


# ---- 3. one writer --------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from forecaster.snapshot import StateLock
    path = Path(sys.argv[1])
    lock = StateLock(path)
    Path(str(path) + ".x1.tmp").write_text("a temporary file of this writer's")
    print("locked", flush=True)
    sys.stdin.readline()
""")


@pytest.fixture()
def holder(tmp_path):
    """Another process holding the lock of tmp_path/state.pt (and a temporary file of its own)."""
    path = tmp_path / "state.pt"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    yield path, proc
    proc.communicate("\n", timeout=30)


def test_a_second_writer_is_refused_naming_the_holders_pid(setup, holder):
    df, model, lines = setup
    path, proc = holder
    stream = stream_of(model)
    stream.observe(df.head(4))
    with pytest.raises(StateLockedError, match=f"in use by another stream \\(pid {proc.pid}") as e:
        stream.save_state(path)
    assert "\n" not in str(e.value)
    assert (path.parent / "state.pt.x1.tmp").exists()  # the holder's temporary file is left alone
    assert not path.exists()


def test_a_second_stream_of_this_process_is_refused_until_the_first_closes(setup, tmp_path):
    df, model, lines = setup
    path = tmp_path / "state.pt"
    first, second = stream_of(model), stream_of(model)
    first.observe(df.head(4))
    second.observe(df.head(6))
    first.save_state(path)
    with pytest.raises(StateLockedError, match="another stream of this process"):
        second.save_state(path)
    first.close()
    second.save_state(path)
    assert len(loaded(model, path).info()) == len(second.info())


def test_two_stream_commands_on_one_state_file(setup, tmp_path):
    """The probe's case: two `stream` processes on one --state. The second stops at once with the
    first's pid; the first's series are all in the snapshot."""
    df, model, lines = setup
    ckpt = _trained_checkpoint(tmp_path)
    state = tmp_path / "state.pt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt), "--state", str(state)]
    first = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=REPO)
    records = _embedded_records(8)
    first.stdin.write(records[0] + "\n")
    first.stdin.flush()
    first.stdout.readline()  # its first forecast: the stream is running and holds the lock
    second = subprocess.run(args, input="\n".join(records) + "\n", capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=300)
    assert second.returncode == 2
    assert f"pid {first.pid}" in second.stderr and "in use by another stream" in second.stderr
    assert len([ln for ln in second.stderr.splitlines() if ln.startswith("error:")]) == 1 and second.stdout == ""
    assert "Traceback" not in second.stderr
    out, err = first.communicate("\n".join(records[1:]) + "\n", timeout=300)
    assert first.returncode == 0, err
    stream = StreamingForecaster.from_checkpoint(ckpt)
    stream.load_state(state)
    assert sorted(stream.info()["observations"].to_list()) == [4, 4]


def _trained_checkpoint(tmp_path) -> Path:
    import lightning as L

    from forecaster import GRUForecaster
    from forecaster.data import TimeSeriesDataModule

    dm = TimeSeriesDataModule(context_length=48, horizon=6, batch_size=32)
    model = GRUForecaster(n_targets=dm.n_targets, n_past_covariates=dm.n_past_covariates,
                          n_future_covariates=dm.n_future_covariates, context_length=48, horizon=6,
                          seasonal_period=dm.season_length, members=1,
                          data_spec=dm.spec.to_dict(), net=StepNet(hidden_size=8, d_model=8, head_hidden=8))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def _embedded_records(n: int) -> list[str]:
    from forecaster.data import TimeSeriesDataModule

    frame = TimeSeriesDataModule().frame().collect().sort("time", "station").head(n)
    return [json.dumps({**r, "time": r["time"].isoformat()}) for r in frame.to_dicts()]


# ---- 4. disk faults -------------------------------------------------------------------------------

def _fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.fixture()
def small_disk(tmp_path):
    """A real 4 MiB tmpfs (skipped where this machine does not let tests mount one)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()[:80]}); the injected-fault test covers the logic")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def serve_with(stream, lines, state, actions: dict, every=0.0):
    """serve() with ``actions[i]()`` run just before line i is read; returns (counts, err text)."""
    def feed():
        for i, line in enumerate(lines):
            if i in actions:
                actions[i]()
            yield line

    err = io.StringIO()
    counts = serve(stream, feed(), io.StringIO(), err, state=str(state), snapshot_every=every)
    return counts, err.getvalue()


def test_a_full_disk_is_reported_once_and_nothing_is_lost(setup, small_disk, monkeypatch):
    df, model, lines = setup
    monkeypatch.setattr(stream_cli, "RETRY_MAX_SECONDS", 0.0)  # retry at every line: many failed attempts
    state = small_disk / "state.pt"
    seen = {}

    def break_disk():
        seen["good"] = state.read_bytes()
        seen["filler"] = _fill(small_disk)

    def still_good():
        assert state.read_bytes() == seen["good"]  # the last good snapshot, byte for byte
        assert_same(loaded(model, state), reference(model, lines[:20]))

    def mend_disk():
        seen["filler"].unlink()

    stream = stream_of(model)
    counts, err = serve_with(stream, lines, state, {20: break_disk, 60: still_good, 61: mend_disk})
    assert counts["records"] == len(lines) and counts["state_saved"] is True
    failed = [ln for ln in err.splitlines() if " failed: " in ln]
    assert len(failed) == 1 and "No space left" in failed[0], err
    assert counts["snapshot_failures"] > 1  # retried, reported once
    assert "written again after" in err
    assert_same(loaded(model, state), reference(model, lines))


def test_the_exit_status_says_when_the_end_could_not_be_saved(setup, small_disk, tmp_path):
    df, model, lines = setup
    from forecaster.stream_cli import main

    ckpt = _trained_checkpoint(tmp_path)
    records = tmp_path / "in.ndjson"
    records.write_text("\n".join(_embedded_records(6)) + "\n")
    state = small_disk / "state.pt"
    _fill(small_disk)
    err = io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        code = main(["--ckpt_path", str(ckpt), "--input", str(records), "--state", str(state)])
    finally:
        sys.stderr = old
    text = err.getvalue()
    assert code == 3, text
    assert "could not be written" in text and "Traceback" not in text
    assert not state.exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["full", "read_only"])
def test_injected_disk_faults_keep_the_last_good_snapshot(setup, tmp_path, monkeypatch, code):
    """The same guarantees without a tmpfs, and for a read-only disk (a mounted filesystem cannot
    be made read-only while the stream holds its lock file open): the error from every write."""
    df, model, lines = setup
    monkeypatch.setattr(stream_cli, "RETRY_MAX_SECONDS", 0.0)
    state = tmp_path / "state.pt"
    real = {"pwrite": os.pwrite, "replace": os.replace}
    seen = {}

    def no_space(*a, **k):
        raise OSError(code, os.strerror(code))

    def break_disk():
        seen["good"] = state.read_bytes()
        monkeypatch.setattr(os, "pwrite", no_space)
        monkeypatch.setattr(os, "replace", no_space)

    def mend_disk():
        assert state.read_bytes() == seen["good"]
        monkeypatch.setattr(os, "pwrite", real["pwrite"])
        monkeypatch.setattr(os, "replace", real["replace"])

    stream = stream_of(model)
    counts, err = serve_with(stream, lines, state, {20: break_disk, 70: mend_disk})
    assert counts["state_saved"] is True and counts["snapshot_failures"] > 1
    (failed,) = [ln for ln in err.splitlines() if " failed: " in ln]
    assert os.strerror(code) in failed
    assert_same(loaded(model, state), reference(model, lines))
    assert list(tmp_path.glob("*.tmp")) == []


# ---- 7. bounded memory ----------------------------------------------------------------------------

def rec(sid: str, hour: int) -> dict:
    return {"id": sid, "time": T0 + hour * HOUR, "a": 1.0, "b": 2.0, "p": 0.0}


def test_max_series_evicts_the_least_recently_seen_and_reports_them(setup, tmp_path):
    df, model, lines = setup
    stream = stream_of(model, max_series=2)
    assert stream.observe([rec("s1", 0), rec("s2", 0)]).evicted == []
    report = stream.observe([rec("x", 0)])
    assert report.evicted == ["s1"] and stream.series == ["s2", "x"]  # s1 and s2 tie: the older goes
    stream.observe([rec("s2", 1)])
    report = stream.observe([rec("s1", 3)])  # back, from zero: x is now the least recently seen
    assert report.evicted == ["x"] and stream.series == ["s2", "s1"] and report.series == ["s1"]
    assert stream.info().filter(pl.col("series") == "s1")["observations"].item() == 1
    path = tmp_path / "state.pt"
    stream.save_state(path)
    stream.observe([rec("y", 0)])  # evicts s2
    stream.save_state(path)  # a delta: y in, s2 out
    assert loaded(model, path).series == ["s1", "y"]
    assert_same(loaded(model, path), stream)


def test_an_id_flood_stays_within_max_series(setup):
    df, model, lines = setup
    stream = stream_of(model, max_series=100)
    evicted = 0
    for i in range(3_000):
        evicted += len(stream.observe([rec(f"id{i}", 0)]).evicted)
    assert len(stream) == 100 and evicted == 2_900
    assert len(stream.table.dirty) <= 256  # rows allocated: bounded too
    assert stream.series == [f"id{i}" for i in range(2_900, 3_000)]


def test_the_stream_command_reports_each_evicted_series(setup):
    df, model, lines = setup
    stream = stream_of(model, max_series=1)
    out, err = io.StringIO(), io.StringIO()
    stream_cli.run_loop(stream, lines[:4], out, err)
    evicted = [ln for ln in err.getvalue().splitlines() if "evicted" in ln]
    assert len(evicted) == 3 and "max_series=1" in evicted[0]
    with pytest.raises(SystemExit):
        stream_cli.build_parser().parse_args(["--ckpt_path", "x", "--max_series", "0"])
    assert stream_cli.build_parser().parse_args(["--ckpt_path", "x", "--max_series", "none"]).max_series is None


# ---- snapshots cost what changed -------------------------------------------------------------------

def many(model, n: int) -> StreamingForecaster:
    stream = stream_of(model, max_series=None)
    stream.observe([rec(f"k{i}", 0) for i in range(n)])
    return stream


def test_a_snapshot_appends_only_what_changed(setup, tmp_path):
    df, model, lines = setup
    stream = many(model, 1_000)
    path = tmp_path / "state.pt"
    base = stream.save_state(path)
    assert base["kind"] == "base" and base["series"] == 1_000
    stream.observe([rec(f"k{i}", 1) for i in range(10)])
    delta = stream.save_state(path)
    assert delta["kind"] == "delta" and delta["series"] == 10
    assert delta["bytes"] < base["bytes"] / 20
    assert path.stat().st_size == base["bytes"] + delta["bytes"]
    nothing = stream.save_state(path)
    assert nothing["series"] == 0 and nothing["bytes"] < 4_500  # the headers of its empty columns
    assert_same(loaded(model, path), stream)


def test_a_torn_last_segment_is_ignored_and_cut_off_a_damaged_middle_one_refused(setup, tmp_path):
    df, model, lines = setup
    stream = many(model, 20)
    path = tmp_path / "state.pt"
    stream.save_state(path)
    stream.observe([rec("k1", 1)])
    first_delta = stream.save_state(path)
    good = path.read_bytes()
    stream.close()
    expected = loaded(model, path)
    with open(path, "ab") as f:  # a crash in the middle of an append
        f.write(b"SEG\x01" + (10 ** 6).to_bytes(8, "little") + b"\x07" * 50)
    restored = loaded(model, path)
    assert_same(restored, expected)
    (note,) = restored.state_notes
    assert "interrupted write, ignored" in note
    restored.observe([rec("k2", 1)])
    restored.save_state(path)  # cuts the torn tail off before its own segment
    payloads, info = read_log(path)
    assert len(payloads) == 3 and info.torn_bytes == 0 and path.read_bytes().startswith(good)
    raw = bytearray(path.read_bytes())
    raw[len(good) - first_delta["bytes"] // 2] ^= 0x01  # inside the first delta, with a good one after it
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match="damaged at byte"):
        loaded(model, path)


def test_the_log_is_compacted_in_the_background_and_keeps_every_later_delta(setup, tmp_path, monkeypatch):
    df, model, lines = setup
    monkeypatch.setattr(statefile, "COMPACT_MIN_BYTES", 0)
    stream = many(model, 50)
    path = tmp_path / "state.pt"
    stream.save_state(path)
    hour = 1
    while stream._file.compactor is None:  # deltas until they outgrow the base: a compaction starts
        stream.observe([rec(f"k{i}", hour) for i in range(50)])
        stream.save_state(path)
        hour += 1
    compactor = stream._file.compactor
    compactor.wait()
    for _ in range(2):  # deltas appended after the compaction read the file: copied after the new base
        stream.observe([rec(f"k{i}", hour) for i in range(5)])
        hour += 1
        stream.save_state(path)  # the first of these puts the compacted file in place
    payloads, info = read_log(path)
    assert stream._file.compactor is None and len(payloads) <= 3 and info.delta_bytes < info.base_bytes
    assert_same(loaded(model, path), stream)
    assert list(tmp_path.glob("*.tmp")) == []


def test_a_compaction_merges_a_log_into_the_same_state(setup, tmp_path):
    df, model, lines = setup
    stream = stream_of(model, max_series=30)
    path = tmp_path / "state.pt"
    rng = np.random.default_rng(0)
    for hour in range(12):  # 40 ids over 30 rows: evictions, returns, deltas with removals
        stream.observe([rec(f"k{i}", hour) for i in rng.choice(40, size=12, replace=False)])
        stream.save_state(path)
    payloads, info = read_log(path)
    assert len(payloads) == 12 and any(p["removed"].numel() for p in payloads[1:])
    lock = stream._file.lock
    c = Compactor(info, lock, merge_payloads)
    c.wait()
    stream.observe([rec("k1", 20)])
    info = append_delta(info, statefile._packed({"kind": "delta", "removed": [], "fingerprint": stream._fingerprint(),
                                                 **stream.table.rows_payload(np.array([stream.table.ids["k1"]]))}), lock)
    stream.table.clean()
    info = c.finish(info)
    payloads, _ = read_log(path)
    assert len(payloads) == 2 and info.segments == 2
    assert_same(loaded(model, path), stream)


def test_reads_format_3_snapshots_and_rewrites_them(setup, tmp_path):
    df, model, lines = setup
    import hashlib

    from forecaster.snapshot import MAGIC, encode

    stream = many(model, 3)
    t = stream.table
    old = {"format_version": 3, "fingerprint": stream._fingerprint(), "ids": list(t.id_list),
           "state": t.state[:, :3].clone(), **{k: torch.from_numpy(v[:3].copy()) for k, v in t.t.items()
                                                if k not in ("born", "seen")}}
    data = encode(old)
    path = tmp_path / "old.pt"
    path.write_bytes(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    restored = loaded(model, path)
    assert_same(restored, stream)
    assert restored.save_state(path)["kind"] == "base"  # no deltas after a format-3 payload
    assert path.read_bytes().startswith(LOG_MAGIC)
    assert_same(loaded(model, path), stream)


@pytest.mark.parametrize("blend", ["knots", "one weight", "drift", "adjustment", "level"])
def test_reads_snapshots_from_before_the_drift(setup, tmp_path, blend):
    """A format-4 snapshot written before the baseline's drift (spec version 2, or 1: one weight
    for every step): no first observations, blends without the drift weight. It loads as the same
    blend with the weight 0 inserted, the anchors the spec knows (none for series it does not),
    each target's next observation the anchor of the others; the next snapshot is a whole base
    (a delta on the old one would not merge), which loads again. One from before the seasonal
    adjustment (version 3: ``[w_s K, w_l K, w_d, mu]``) loads with ``w_a = 0`` and its anchors, one
    from before the level (version 4: ``[w_s K, w_l K, w_d, w_a, mu]``) with ``alpha = q = 0``
    (the plain mean of the whole look-back it had), one from before the history profile (version
    5: ``[w_s K, w_l K, w_d, w_a, alpha, q, mu]``) with ``r = s = 0`` and no profile. A first
    observation's time out of range is refused."""
    df, model, lines = setup
    stream = many(model, 3)
    t = stream.table
    payload = {**statefile._packed(t.base_payload()), "format_version": 4, "fingerprint": stream._fingerprint()}
    if blend not in ("drift", "adjustment"):
        for k in ("first_y", "first_t"):
            del payload[k]
    K = len(blend_knots(stream.spec.horizon))
    hist = list(range(2 * K + 4, 2 * K + 4 + HISTORY_SLOTS))  # r, s, the history profile's coefficients
    base = torch.cat([payload["base"][..., :2 * K + 4], payload["base"][..., -1:]], dim=-1)  # without them
    if blend == "level":  # [w_s K, w_l K, w_d, w_a, alpha, q, mu]: before the history profile
        base[..., 2 * K + 1], base[..., 2 * K + 2], base[..., 2 * K + 3] = 1.0, 0.3, 1.0
        payload["base"] = base.contiguous()
    elif blend == "adjustment":  # [w_s K, w_l K, w_d, w_a, mu], seasonally adjusted
        base = torch.cat([base[..., :2 * K + 1], torch.ones_like(base[..., :1]), base[..., -1:]], dim=-1)
        payload["base"] = base.contiguous()
    else:
        base = torch.cat([base[..., :2 * K + 1], base[..., -1:]], dim=-1)  # [w_s K, w_l K, w_d, mu]
        if blend == "knots":  # [w_s K, w_l K, mu]
            payload["base"] = torch.cat([base[..., :2 * K], base[..., -1:]], dim=-1).contiguous()
        elif blend == "one weight":  # [w_s, w_l, mu]: the same weight at every knot
            base = torch.cat([base[..., :1].expand(-1, -1, K), base[..., K:K + 1].expand(-1, -1, K),
                              torch.zeros_like(base[..., :1]), base[..., -1:]], dim=-1)
            payload["base"] = torch.cat([base[..., :1], base[..., K:K + 1], base[..., -1:]], dim=-1).contiguous()
        else:
            payload["base"] = base.contiguous()
    from forecaster.snapshot import write_snapshot
    path = tmp_path / "old.pt"
    write_snapshot(path, payload)
    restored = stream_of(model)
    restored.load_state(path)
    r = restored.table.t

    def saved_whole_and_reloaded():  # the next snapshot is a whole base, which loads as the same stream
        assert restored.save_state(path)["kind"] == "base"
        again = stream_of(model)
        again.load_state(path)
        assert again.forecast().equals(restored.forecast())

    assert (r["base"][:3, :, hist] == 0).all()  # no history profile: the look-back's, as it was
    if blend == "level":
        np.testing.assert_array_equal(np.delete(r["base"][:3], hist, axis=-1), base.numpy())
        saved_whole_and_reloaded()
        return
    if blend == "adjustment":
        np.testing.assert_array_equal(r["base"][:3, :, :2 * K + 2], base[..., :2 * K + 2].numpy())
        assert (r["base"][:3, :, 2 * K + 2:2 * K + 4] == 0).all()  # alpha, q: the plain mean of the look-back
        np.testing.assert_array_equal(r["base"][:3, :, -1], base[..., -1].numpy())
        saved_whole_and_reloaded()
        return
    new = [2 * K + 1, 2 * K + 2, 2 * K + 3, *hist]  # w_a, alpha, q, the history profile
    assert (r["base"][:3, :, new] == 0).all()  # no seasonal adjustment, the plain mean of the whole look-back
    if blend == "drift":
        np.testing.assert_array_equal(r["first_t"][:3], t.t["first_t"][:3])
        np.testing.assert_array_equal(np.delete(r["base"][:3], new, axis=-1), base.numpy())
        saved_whole_and_reloaded()
        return
    assert (r["first_t"][:3] == NO_TIME).all() and (r["base"][:3, :, 2 * K] == 0).all()  # k0.. are new to the spec
    np.testing.assert_array_equal(np.delete(r["base"][:3], [2 * K, *new], axis=-1),
                                  np.delete(base.numpy(), 2 * K, axis=-1) if blend != "knots"
                                  else np.delete(t.t["base"][:3], [2 * K, *new], axis=-1))
    restored.observe([rec(f"k{i}", 1) for i in range(3)])
    assert (restored.table.t["first_t"][:3] != NO_TIME).all()  # anchored at the next observation
    saved_whole_and_reloaded()
    bad = {**statefile._packed(t.base_payload()), "format_version": 4, "fingerprint": stream._fingerprint()}
    bad["first_t"] = torch.full_like(bad["first_t"], np.iinfo(np.int64).max)
    write_snapshot(tmp_path / "bad.pt", bad)
    with pytest.raises(SnapshotError, match="out of range"):
        stream_of(model).load_state(tmp_path / "bad.pt")


# ---- the review's probes (each failed before its fix) ------------------------------------------------

def test_a_window_history_stream_restarts_from_a_log_with_deltas(setup, tmp_path, monkeypatch):
    df, model, lines = setup
    monkeypatch.setattr(statefile, "COMPACT_MIN_BYTES", 0)
    stream = stream_of(model, history="window")
    path = tmp_path / "w.pt"
    serve(stream, lines[:30], io.StringIO(), io.StringIO(), state=str(path), snapshot_every=0)  # a base, deltas,
    payloads, _ = read_log(path)  # and compactions (every snapshot)
    assert len(payloads) > 1
    restored = stream_of(model, history="window")
    restored.load_state(path)
    expected = stream_of(model, history="window")
    serve(expected, lines[:30], io.StringIO(), io.StringIO())
    assert_same_window(restored, expected)


def assert_same_window(a, b):
    from tests.forecaster.test_stream_faults import same_tables

    assert a.series == b.series and same_tables(a, b) and a.forecast().equals(b.forecast())


def test_a_compaction_of_a_file_replaced_meanwhile_is_dropped(setup, tmp_path, monkeypatch):
    df, model, lines = setup
    import threading

    release = threading.Event()

    def slow_merge(payloads):
        release.wait(30)
        return merge_payloads(payloads)

    stream = many(model, 30)
    path = tmp_path / "state.pt"
    stream.save_state(path)
    stream.observe([rec(f"k{i}", 1) for i in range(30)])
    stream.save_state(path)
    file = stream._file
    file.compactor = compactor = Compactor(file.info, file.lock, slow_merge)  # a compaction slow to finish
    copy = tmp_path / "copy.pt"
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)  # an operator restores a copy: another inode
    stream.observe([rec("k0", 2)])
    assert stream.save_state(path)["kind"] == "base"  # the file was replaced: every series anew, compaction dropped
    release.set()
    compactor.wait()  # done (or dropped): the next snapshot would put it in place
    stream.observe([rec("k1", 2)])
    assert stream.save_state(path)["kind"] == "delta"
    stream.close()
    assert_same(loaded(model, path), stream)


def test_stale_temporaries_of_one_state_file_are_not_another_ones(tmp_path):
    from forecaster.snapshot import remove_stale

    mine, theirs = tmp_path / "shop.abc12345.tmp", tmp_path / "shop.eu.abc12345.tmp"
    mine.write_text("x")
    theirs.write_text("y")
    (tmp_path / "shop.abc12345.tmp.keep").write_text("z")
    assert remove_stale(tmp_path / "shop") == ["shop.abc12345.tmp"]
    assert theirs.exists() and not mine.exists()


def test_a_compactions_temporary_file_left_by_a_kill_goes_at_the_next_start(setup, tmp_path):
    df, model, lines = setup
    stream = many(model, 3)
    path = tmp_path / "state.pt"
    stream.save_state(path)
    stream.close()
    (tmp_path / "state.pt.k1ll3d00.tmp").write_bytes(b"half a compaction")
    restarted = stream_of(model)
    restarted.lock_state(path)
    assert not (tmp_path / "state.pt.k1ll3d00.tmp").exists()
    assert any("temporary file" in n for n in restarted.state_notes)


class FullFile(io.StringIO):
    def write(self, s):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_under_stderr_or_stdout_does_not_stop_the_stream(setup, tmp_path):
    df, model, lines = setup
    bad = ["{not json", *lines[:10]]
    stream = stream_of(model)
    counts = serve(stream, bad, io.StringIO(), FullFile(), state=str(tmp_path / "a.pt"))  # messages lost, loop on
    assert counts["records"] == 10 and counts["malformed"] == 1 and counts["state_saved"]
    stream = stream_of(model)
    counts = serve(stream, lines[:10], FullFile(), io.StringIO(), state=str(tmp_path / "b.pt"))
    assert counts["records"] == 10 and counts["unwritten"] == 10  # the state is right; the forecasts are counted


class ClosedPipe(io.StringIO):
    def write(self, s):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_a_closed_output_pipe_stops_the_stream_after_a_snapshot(setup, tmp_path):
    df, model, lines = setup
    stream = stream_of(model)
    err = io.StringIO()
    counts = serve(stream, lines[:10], ClosedPipe(), err, state=str(tmp_path / "c.pt"))
    assert counts.get("output_closed") and counts["lines"] == 1 and counts["state_saved"]
    assert "output was closed" in err.getvalue()
    assert len(loaded(model, tmp_path / "c.pt")) == 1


def test_the_lock_file_is_never_written_through_a_link_or_into_a_folder(setup, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data")
    (tmp_path / "s.pt.lock").symlink_to(victim)
    with pytest.raises(SnapshotError, match="a symbolic link, refused") as e:
        StateLock(tmp_path / "s.pt")
    assert victim.read_text() == "precious data" and "\n" not in str(e.value)
    (tmp_path / "d.pt.lock").mkdir()
    with pytest.raises(SnapshotError, match="cannot lock state file"):
        StateLock(tmp_path / "d.pt")
    (tmp_path / "afile").write_text("")
    with pytest.raises(SnapshotError, match="cannot lock state file"):
        StateLock(tmp_path / "afile" / "s.pt")


def test_a_link_to_the_state_file_is_the_same_file_to_the_lock(setup, tmp_path):
    df, model, lines = setup
    a, b = many(model, 2), many(model, 3)
    real = tmp_path / "real.pt"
    a.save_state(real)
    (tmp_path / "link.pt").symlink_to(real)
    with pytest.raises(StateLockedError):
        b.save_state(tmp_path / "link.pt")
    a.close()
    b.save_state(tmp_path / "link.pt")  # writes the file the link names; the link stays a link
    assert (tmp_path / "link.pt").is_symlink() and len(loaded(model, real)) == 3


def _deflated(data: bytes) -> bytes:
    import zipfile

    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def test_compressed_or_expanded_tensors_are_refused_before_they_inflate(setup, tmp_path):
    import hashlib

    from forecaster.checkpoint import CheckpointError, read_checkpoint
    from forecaster.snapshot import MAGIC, encode

    df, model, lines = setup
    stream = many(model, 2)
    big = {"format_version": 3, "fingerprint": stream._fingerprint(), "ids": ["a", "b"],
           "state": torch.zeros(stream.num_layers, 2, stream.hidden_size), "zeros": torch.zeros(50_000_000)}
    data = _deflated(encode(big))  # 200 MB of zeros in well under 1 MB
    assert len(data) < 1_000_000
    path = tmp_path / "bomb.pt"
    path.write_bytes(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    with pytest.raises(SnapshotError, match="compressed or oversized"):
        stream_of(model).load_state(path)
    ckpt = tmp_path / "bomb.ckpt"
    ckpt.write_bytes(_deflated(encode({"state_dict": {"w": torch.zeros(50_000_000)}})))
    with pytest.raises(CheckpointError, match="compressed or oversized"):
        read_checkpoint(ckpt)
    # a tensor whose rows all share one tiny storage (stride 0) would expand on install
    t = stream.table
    payload = {**statefile._packed(t.base_payload()), "format_version": 4, "fingerprint": stream._fingerprint()}
    payload["params"] = payload["params"][:1].expand(2, *payload["params"].shape[1:])
    from forecaster.snapshot import write_snapshot
    write_snapshot(tmp_path / "stride0.pt", payload)
    with pytest.raises(SnapshotError, match="not a dense tensor"):
        stream_of(model).load_state(tmp_path / "stride0.pt")


def test_a_crafted_tail_of_many_headers_is_refused_in_linear_time(setup, tmp_path):
    df, model, lines = setup
    stream = many(model, 2)
    path = tmp_path / "state.pt"
    stream.save_state(path)
    stream.close()
    size = path.stat().st_size
    n = (512 << 10) // 44
    tail = b"".join(b"SEG\x01" + (n * 44 - i * 44 - 44).to_bytes(8, "little") + b"\x00" * 32 for i in range(n))
    with open(path, "ab") as f:
        f.write(tail)
    t0 = time.perf_counter()
    try:
        loaded(model, path)
    except SnapshotError:
        pass
    assert time.perf_counter() - t0 < 5, "quadratic"
    assert path.stat().st_size == size + len(tail)


def test_header_values_of_the_wrong_type_are_one_line_refusals(setup, tmp_path):
    from forecaster.snapshot import read_snapshot, write_snapshot

    df, model, lines = setup
    stream = many(model, 2)
    stream.save_state(tmp_path / "ok.pt")
    stream.close()
    for change in ({"format_version": torch.tensor([4, 4])}, {"fingerprint": {"weights": torch.ones(2)}},
                   {"fingerprint": {"target_cols": [torch.ones(2)]}}):
        payload = {**read_snapshot(tmp_path / "ok.pt"), **change}
        write_snapshot(tmp_path / "bad.pt", payload)
        with pytest.raises(SnapshotError) as e:
            stream_of(model).load_state(tmp_path / "bad.pt")
        assert "\n" not in str(e.value)


def test_counters_and_times_near_int64s_ends_are_refused(setup, tmp_path):
    from forecaster.snapshot import read_snapshot, write_snapshot

    df, model, lines = setup
    stream = many(model, 2)
    stream.save_state(tmp_path / "ok.pt")
    stream.close()
    big = np.iinfo(np.int64).max
    for key in ("seen", "born", "last", "n_steps"):
        payload = read_snapshot(tmp_path / "ok.pt")
        payload[key] = torch.full_like(payload[key], big)
        write_snapshot(tmp_path / "bad.pt", payload)
        with pytest.raises(SnapshotError, match="out of range|counts"):
            stream_of(model).load_state(tmp_path / "bad.pt")
    report = stream_of(model).observe([rec("x", 0), {**rec("y", 0), "time": dt.datetime(2250, 1, 1)}])
    assert report.accepted == 1 and "out of range" in report.rejected[0].reason


def test_a_delta_of_another_model_or_file_is_refused(setup, tmp_path):
    from forecaster.snapshot import read_log, write_snapshot

    df, model, lines = setup
    a = many(model, 3)
    path = tmp_path / "a.pt"
    a.save_state(path)
    a.observe([rec("k1", 1)])
    a.save_state(path)
    a.close()
    other = tmp_path / "b.pt"
    b = many(model, 3)
    b.save_state(other)
    b.observe([rec("k2", 1)])
    b.save_state(other)
    b.close()
    raw_a, raw_b = path.read_bytes(), other.read_bytes()
    _, info_a = read_log(path)
    spliced = raw_a[:info_a.base_bytes] + raw_b[read_log(other)[1].base_bytes:]  # b's delta after a's base
    path.write_bytes(spliced)
    with pytest.raises(SnapshotError, match="does not follow"):
        loaded(model, path)


def test_rejected_new_series_leave_no_rows(setup, monkeypatch):
    from forecaster.streaming.history import CarriedState

    df, model, lines = setup
    step_rows = CarriedState.step_rows

    def poisoned(self, table, rows, *features):
        step_rows(self, table, rows, *features)
        table.state[:, rows] = float("nan")

    monkeypatch.setattr(CarriedState, "step_rows", poisoned)
    stream = stream_of(model)
    report = stream.observe([rec("n1", 0), rec("n2", 0)])
    assert report.accepted == 0 and len(report.rejected) == 2
    assert len(stream) == 0 and stream.series == []


def test_eviction_follows_least_recently_seen_then_age_through_saves_and_reloads(setup, tmp_path):
    """Calls of one to three of 30 ids over 7 rows, snapshots and reloads at random: every call
    evicts what a plain model of the rule (least recently seen, ties by first observation) does,
    in the live stream and in one restored from its snapshots again and again."""
    import random

    df, model, lines = setup
    rng = random.Random(0)
    path = tmp_path / "state.pt"
    live, restored = stream_of(model, max_series=7), stream_of(model, max_series=7)
    seen, born, hour, clock = {}, {}, {}, 0
    for _ in range(150):
        batch = [f"id{i}" for i in rng.sample(range(30), rng.choice([1, 1, 2, 3]))]
        recs = [rec(sid, hour.setdefault(sid, 0)) for sid in batch]
        clock += 1
        for sid in batch:
            born.setdefault(sid, len(born) + 100_000 * clock)  # order of first observation
            seen[sid] = clock
            hour[sid] += 1
        expected = []
        while len(seen) > 7:
            victim = min(seen, key=lambda sid: (seen[sid], born[sid]))
            expected.append(victim)
            del seen[victim], born[victim], hour[victim]
        assert live.observe(recs).evicted == restored.observe(recs).evicted == expected
        if rng.random() < 0.5:
            restored.save_state(path)
            if rng.random() < 0.3:
                restored.close()
                restored = stream_of(model, max_series=7)
                restored.load_state(path)
    assert live.series == restored.series


def test_a_file_with_more_series_than_max_series_is_trimmed_at_load(setup, tmp_path):
    df, model, lines = setup
    stream = many(model, 50)
    path = tmp_path / "state.pt"
    stream.save_state(path)
    stream.close()
    small = stream_of(model, max_series=10)
    small.load_state(path)
    (note,) = small.state_notes
    assert len(small) == 10 and "evicted at load" in note and small.series == [f"k{i}" for i in range(40, 50)]


def test_csv_fields_keep_their_spaces_and_numbers_are_ascii(setup):
    df, model, lines = setup
    stream = stream_of(model)
    t = (T0 + HOUR).isoformat()
    counts, out, err = _loop(stream, ["id,time,a,b,p", f" s1,{t},1,2,3", f"s2,{t},\u0661\u0662,2,3",
                                      f"s2,{t},1_000,2,3", f"s2,{t}, 5 ,2,3"])
    assert stream.series == [" s1", "s2"] and counts["records"] == 2 and counts["rejected"] == 2
    assert all("not a number" in e for e in err)


def _loop(stream, lines):
    out, err = io.StringIO(), io.StringIO()
    counts = stream_cli.run_loop(stream, lines, out, err)
    return counts, out.getvalue().splitlines(), err.getvalue().splitlines()
