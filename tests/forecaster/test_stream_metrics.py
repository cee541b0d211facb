"""The stream's metrics: the online MAE of forecasts against later observations (beside the
baselines), rejections by reason, lag, bounded memory, the drift rule, and Prometheus over a real
HTTP scrape."""

import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import polars as pl
import pytest
import torch

from forecaster.stream_cli import run_loop
from forecaster.streaming import StreamingForecaster
from forecaster.streaming.metrics import StreamMetrics, drift_points, reason_of, serve_metrics
from tests.forecaster.test_stream_swap import HORIZON, T0, frame, make_checkpoints, net_of, spec_of

prometheus_client = pytest.importorskip("prometheus_client")  # in the test extra; skipped only without it
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def lines_of(df: pl.DataFrame) -> list[str]:
    return [json.dumps({**r, "time": r["time"].isoformat()}) for r in df.to_dicts()]


@pytest.fixture(scope="module")
def data():
    df = frame(n=50)
    # s1 misses hours 20-21 (a gap: its next record is scored at step 3) and a value of b at hour 30
    df = df.filter(~((pl.col("id") == "s1") & pl.col("time").is_in([T0 + dt.timedelta(hours=h) for h in (20, 21)])))
    df = df.with_columns(pl.when((pl.col("id") == "s1") & (pl.col("time") == T0 + dt.timedelta(hours=30)))
                         .then(None).otherwise(pl.col("b")).alias("b"))
    return df, spec_of(frame())


def expected_errors(df: pl.DataFrame, out_lines: list[str], m: int) -> np.ndarray:
    """Brute force: every record scored against the forecast its series issued at its previous
    record (step k = the periods between them, k <= horizon), and the two baselines from that
    origin: (values, 3) absolute errors, in the order of the records and targets."""
    fc = {}
    for line in out_lines:
        r = json.loads(line)
        fc[(r["series"], r["origin"], r["step"], r["target"])] = r["value"]
    hist: dict[str, dict] = {}
    errors = []
    for rec in df.to_dicts():
        sid, t = rec["id"], rec["time"]
        h = hist.setdefault(sid, {})
        prev = max(h) if h else None
        if prev is not None:
            k = int((t - prev) / dt.timedelta(hours=1))
            if 1 <= k <= HORIZON:
                for c in ("a", "b"):
                    y = rec[c]
                    if y is None:
                        continue
                    last = next(h[s][c] for s in sorted(h, reverse=True) if h[s][c] is not None)
                    back = t - dt.timedelta(hours=m * -(-k // m))
                    sn = h[back][c] if back in h and h[back][c] is not None else last
                    f = fc[(sid, prev.isoformat(), k, c)]
                    errors.append([abs(f - y), abs(sn - y), abs(last - y)])
        h[t] = rec
    return np.array(errors)


def test_online_mae_scores_each_forecast_against_the_observation_that_arrives_later(data):
    df, spec = data
    stream = StreamingForecaster(net_of(spec, 0), spec)
    metrics = StreamMetrics(stream, window=50)
    out = io.StringIO()
    counts = run_loop(stream, lines_of(df), out, io.StringIO(), metrics=metrics)
    assert counts["records"] == df.height
    expected = expected_errors(df, out.getvalue().splitlines(), spec.season_length)
    s = metrics.summary()
    assert s["scored"] == len(expected) > 100
    result = [s["online_mae"][k] for k in ("network", "seasonal_naive", "last_value")]
    np.testing.assert_allclose(result, expected.mean(axis=0), rtol=1e-6)
    window = [s["online_mae_last_50"][k] for k in ("network", "seasonal_naive", "last_value")]
    np.testing.assert_allclose(window, expected[-50:].mean(axis=0), rtol=1e-6)
    assert s["models"][0]["scored"] == len(expected) and s["records"] == df.height
    assert s["records_per_second"] > 0


def test_rejections_are_counted_by_reason(data):
    df, spec = data
    stream = StreamingForecaster(net_of(spec, 0), spec)
    metrics = StreamMetrics(stream)
    good = lines_of(df.head(6))
    bad = [good[-1],  # a duplicate
           good[0],  # out of order
           json.dumps({"id": "s1", "time": "2024-03-01T01:30:00", "a": 1, "b": 2, "p": 0}),  # off the grid
           json.dumps({"id": "s1", "time": "2024-03-01T09:00:00", "a": "x", "b": 2, "p": 0}),  # not a number
           json.dumps({"id": "s9", "time": "yesterday", "a": 1, "b": 2, "p": 0}),  # unreadable time
           "{not json", "[1, 2]"]
    run_loop(stream, good + bad, io.StringIO(), io.StringIO(), metrics=metrics)
    assert metrics.summary()["rejected_by_reason"] == {"bad_time": 1, "bad_value": 1, "duplicate": 1, "malformed": 2,
                                                       "off_grid": 1, "out_of_order": 1}
    assert reason_of("out-of-order timestamp: the series is already at 2024") == "out_of_order"
    assert reason_of("something new") == "other"


def test_memory_is_bounded_by_the_streams_max_series(data):
    df, spec = data
    stream = StreamingForecaster(net_of(spec, 0), spec, max_series=2)
    metrics = StreamMetrics(stream)
    run_loop(stream, lines_of(df.head(30)), io.StringIO(), io.StringIO(), metrics=metrics)
    assert len(metrics.ids) == 2 and sorted(metrics.ids) == sorted(stream.series)
    assert sorted(metrics.row) == sorted(stream.series)
    assert all(metrics.ids[r] == sid for sid, r in metrics.row.items())


def test_the_drift_rule_fires_when_the_model_falls_behind_seasonal_naive(data):
    df, spec = data
    net = net_of(spec, 0)
    with torch.no_grad():
        net.head[-1].bias.fill_(5.0)  # forecasts five standard deviations off
    stream = StreamingForecaster(net, spec)
    err = io.StringIO()
    metrics = StreamMetrics(stream, window=20, margin=0.1, err=err)
    run_loop(stream, lines_of(df), io.StringIO(), io.StringIO(), metrics=metrics)
    s = metrics.summary()
    assert s["drifting"] and s["drift_events"] == 1
    assert err.getvalue().count("drift: online MAE") == 1 and "retrain" in err.getvalue()
    calm = StreamingForecaster(net_of(spec, 0), spec)
    good = StreamMetrics(calm, window=20, margin=10.0, err=err)  # a margin no forecast here exceeds
    run_loop(calm, lines_of(df), io.StringIO(), io.StringIO(), metrics=good)
    assert not good.summary()["drifting"] and good.summary()["drift_events"] == 0


def test_drift_points_of_a_replay():
    n = 40
    t0 = dt.datetime(2024, 1, 1)
    origins = [t0 + dt.timedelta(hours=i) for i in range(n)]
    actual = np.zeros(n)
    forecast = np.where(np.arange(n) >= 20, 3.0, 0.5)  # the network: 0.5 off, then 3 off from origin 20 on
    errors = pl.DataFrame({"series": ["s"] * n, "origin": origins, "step": [1] * n, "target": ["y"] * n,
                           "actual": actual, "forecast": forecast, "seasonal_naive": np.ones(n),
                           "last_value": np.ones(n)})
    result = drift_points(errors, window=10, margin=0.1)
    # the MAE of the last 10 exceeds 1.1 once (0.5 * 10 + 2.5 k) / 10 > 1.1: k >= 3 values from origin 20 on
    assert result == [origins[22]]
    assert drift_points(errors, window=100) == []


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_metrics_over_a_real_http_scrape(data):
    df, spec = data
    stream = StreamingForecaster(net_of(spec, 0), spec)
    metrics = StreamMetrics(stream, worker="w1", window=30, registry="new")
    server = serve_metrics(metrics, 0)
    try:
        lines = lines_of(df.head(60)) + [lines_of(df.head(60))[-1], "{bad"]
        run_loop(stream, lines, io.StringIO(), io.StringIO(), metrics=metrics)
        metrics.set_lag(2.5)
        metrics.set_pending(7)
        got = scrape(server.server_port)
    finally:
        server.shutdown()
    s = metrics.summary()
    w = (("worker", "w1"),)
    assert got[("forecaster_records_total", w)] == s["records"] == 60
    assert got[("forecaster_scored_values_total", w)] == s["scored"]
    assert got[("forecaster_rejected_total", (("reason", "duplicate"), ("worker", "w1")))] == 1
    assert got[("forecaster_rejected_total", (("reason", "malformed"), ("worker", "w1")))] == 1
    for model in ("network", "seasonal_naive", "last_value"):
        key = (("model", model), ("worker", "w1"))
        assert got[("forecaster_online_mae", key)] == pytest.approx(s["online_mae_last_30"][model])
        assert got[("forecaster_absolute_error_total", key)] / s["scored"] == pytest.approx(s["online_mae"][model])
    assert got[("forecaster_lag_seconds", w)] == 2.5 and got[("forecaster_pending_records", w)] == 7
    assert got[("forecaster_retrain_advised", w)] == (1 if s["drifting"] else 0)
    assert got[("forecaster_records_per_second", w)] > 0
    assert got[("forecaster_model_swaps_total", w)] == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root, _ = make_checkpoints(tmp_path_factory.mktemp("metrics"))
    return root / "A.ckpt"


def test_cli_metrics_port_serves_while_the_stream_runs(ckpt):
    from forecaster.data import TimeSeriesDataModule

    records = TimeSeriesDataModule().frame().collect().sort("time", "station").head(40)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt), "--metrics_port",
                             str(port), "--metrics_label", "p3"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for _ in range(50):  # the first lines may be warnings of the libraries
            line = proc.stderr.readline()
            if not line or line.startswith("metrics at"):
                break
        assert line.startswith(f"metrics at http://127.0.0.1:{port}/metrics"), line
        proc.stdin.write("\n".join(lines_of(records)) + "\nnot json\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while True:
            got = scrape(port)
            if got.get(("forecaster_records_total", (("worker", "p3"),))) == 40 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got[("forecaster_records_total", (("worker", "p3"),))] == 40
        assert got[("forecaster_rejected_total", (("reason", "malformed"), ("worker", "p3")))] == 1
        assert got[("forecaster_lag_seconds", (("worker", "p3"),))] >= 0
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(err.split("done: ", 1)[1].splitlines()[0])
    assert summary["metrics"]["records"] == 40 and summary["metrics"]["rejected_by_reason"] == {"malformed": 1}
    assert summary["metrics"]["scored"] > 0 and summary["metrics"]["online_mae"]["network"] > 0
