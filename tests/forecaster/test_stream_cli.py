"""`python -m forecaster stream`: the online loop end to end, on a small checkpoint."""

import datetime as dt
import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import lightning as L
import polars as pl
import pytest
import torch

from forecaster.data import TimeSeriesDataModule
from forecaster.lightning_module import GRUForecaster
from forecaster.nets import StepNet
from forecaster.stream_cli import LineReader, build_parser, main, run_loop
from forecaster.streaming import StreamingForecaster

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny model trained for a few batches on the embedded dataset, saved as a checkpoint."""
    root = tmp_path_factory.mktemp("ckpt")
    dm = TimeSeriesDataModule(context_length=48, horizon=6, batch_size=32)
    model = GRUForecaster(n_targets=dm.n_targets, n_past_covariates=dm.n_past_covariates,
                          n_future_covariates=dm.n_future_covariates, context_length=48, horizon=6,
                          seasonal_period=dm.season_length, min_origin=4, data_spec=dm.spec.to_dict(),
                          net=StepNet(hidden_size=16, d_model=8, head_hidden=16))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=str(root))
    trainer.fit(model, datamodule=dm)
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def records():
    dm = TimeSeriesDataModule()
    frame = dm.frame().collect().sort("time", "station")
    return frame.head(40)


def ndjson_lines(frame: pl.DataFrame) -> list[str]:
    return [json.dumps({**r, "time": r["time"].isoformat()}) for r in frame.to_dicts()]


def run_stream(args, stdin: str, timeout=120):
    return subprocess.run([sys.executable, "-m", "forecaster", "stream", *args], input=stdin, text=True,
                          capture_output=True, timeout=timeout, env=ENV)


def test_stream_ndjson_writes_forecasts_and_reports_bad_lines(ckpt, records):
    lines = ndjson_lines(records.head(6))
    lines.insert(2, "{not json")
    lines.append(lines[0])  # out of order by now: rejected, reported, skipped
    result = run_stream(["--ckpt_path", str(ckpt)], "\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    spec_targets = 3
    assert len(out) == 6 * 6 * spec_targets  # 6 records x horizon 6 x 3 targets
    assert list(out[0]) == ["series", "origin", "time", "step", "target", "value", "q0.1", "q0.5", "q0.9"]
    assert "line 3: malformed" in result.stderr
    assert "out-of-order timestamp" in result.stderr


def test_stream_csv_input(ckpt, records, tmp_path):
    path = tmp_path / "obs.csv"
    records.head(4).write_csv(path)
    result = subprocess.run([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt),
                             "--input", str(path)], capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4 * 6 * 3


def test_stream_state_survives_restart(ckpt, records, tmp_path):
    state = tmp_path / "state.pt"
    lines = ndjson_lines(records.head(20))
    first = run_stream(["--ckpt_path", str(ckpt), "--state", str(state)], "\n".join(lines[:10]) + "\n")
    assert first.returncode == 0, first.stderr
    assert state.exists()
    # the restarted process knows where each series stopped: re-sent records are duplicates
    second = run_stream(["--ckpt_path", str(ckpt), "--state", str(state)], "\n".join(lines[8:20]) + "\n")
    assert second.returncode == 0, second.stderr
    assert "restored 2 series" in second.stderr
    assert second.stderr.count("duplicate timestamp") == 2
    assert len(second.stdout.splitlines()) == 10 * 6 * 3
    # the same as one uninterrupted run
    straight = run_stream(["--ckpt_path", str(ckpt)], "\n".join(lines) + "\n")
    assert second.stdout.splitlines() == straight.stdout.splitlines()[-len(second.stdout.splitlines()):]


def test_stream_snapshots_on_sigterm(ckpt, records, tmp_path):
    state = tmp_path / "state.pt"
    proc = subprocess.Popen([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt),
                             "--state", str(state), "--snapshot_every", "3600"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    for line in ndjson_lines(records.head(4)):
        proc.stdin.write(line + "\n")
    proc.stdin.flush()
    got = 0
    while got < 4 * 6 * 3:  # wait until all four records were applied
        assert proc.stdout.readline(), proc.stderr.read()
        got += 1
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 0
    restored = StreamingForecaster.from_checkpoint(ckpt)
    restored.load_state(state)
    assert sorted(restored.info()["observations"].to_list()) == [2, 2]


def test_stream_bad_checkpoint_is_one_clear_line(tmp_path):
    result = run_stream(["--ckpt_path", str(tmp_path / "missing.ckpt")], "")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: checkpoint")
    assert "Traceback" not in result.stderr


def test_stream_replay_reports_online_errors_beside_seasonal_naive(ckpt, tmp_path):
    from forecaster.data import DEFAULT_DATASET

    report, plot = tmp_path / "report.csv", tmp_path / "online.png"
    result = subprocess.run([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt),
                             "--replay", str(DEFAULT_DATASET), "--max_steps", "30", "--report", str(report),
                             "--plot", str(plot)], capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "online MAE" in result.stdout and "seasonal naive" in result.stdout
    table = pl.read_csv(report)
    assert table.columns == ["period", "mae", "mae_seasonal_naive", "mae_last_value", "n"]
    assert table["n"].sum() > 0
    assert plot.stat().st_size > 1000


# ---- issue 16: faults and bad input -----------------------------------------------------------------

def final_state(ckpt, state):
    stream = StreamingForecaster.from_checkpoint(ckpt)
    stream.load_state(state)
    return stream


def reference_stream(ckpt, lines) -> StreamingForecaster:
    """The uninterrupted run, in process."""
    stream = StreamingForecaster.from_checkpoint(ckpt)
    run_loop(stream, lines, io.StringIO(), io.StringIO())
    return stream


def assert_same_state(result: StreamingForecaster, expected: StreamingForecaster) -> None:
    assert result.series == expected.series
    assert torch.equal(result.hidden_state()[1], expected.hidden_state()[1])
    assert result.info().equals(expected.info())


def test_stream_restarts_after_random_sigterms_equal_one_uninterrupted_run(ckpt, records, tmp_path):
    """Real SIGTERMs at random moments of a real process (the in-process harness in
    test_stream_faults.py covers 120 points); every restart re-sends the whole input."""
    state = tmp_path / "state.pt"
    lines = ndjson_lines(records)
    text = "\n".join(lines) + "\n"
    rng = random.Random(16)
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt),
                                 "--state", str(state), "--snapshot_every", "3600"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        proc.stdin.write(text)
        proc.stdin.flush()  # stdin stays open: the process waits for more
        assert proc.stdout.readline(), proc.stderr.read()  # processing has begun
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped by SIGTERM" in err and "Traceback" not in err
    last = run_stream(["--ckpt_path", str(ckpt), "--state", str(state)], text)
    assert last.returncode == 0, last.stderr
    assert_same_state(final_state(ckpt, state), reference_stream(ckpt, lines))


def test_stream_snapshots_on_time_while_the_input_is_idle(ckpt, records, tmp_path):
    state = tmp_path / "state.pt"
    proc = subprocess.Popen([sys.executable, "-m", "forecaster", "stream", "--ckpt_path", str(ckpt),
                             "--state", str(state), "--snapshot_every", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    lines = ndjson_lines(records)
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    for _ in range(len(lines) * 6 * 3):  # every record applied and forecast
        assert proc.stdout.readline(), proc.stderr.read()
    time.sleep(2.5)  # idle for longer than --snapshot_every, stdin still open
    proc.kill()
    proc.wait(timeout=60)
    assert_same_state(final_state(ckpt, state), reference_stream(ckpt, lines))


@pytest.fixture(scope="module")
def stream(ckpt):
    return StreamingForecaster.from_checkpoint(ckpt)


def fresh(stream: StreamingForecaster) -> StreamingForecaster:
    return StreamingForecaster(stream.net, stream.spec)


def loop(stream, lines, fmt="auto"):
    out, err = io.StringIO(), io.StringIO()
    counts = run_loop(stream, lines, out, err, fmt)
    return counts, out.getvalue().splitlines(), err.getvalue().splitlines()


@pytest.mark.parametrize("first", ["garbage", "a,b,c", "{not json", "[1, 2]", ""], ids=repr)
def test_lines_before_the_first_valid_one_do_not_fix_the_format(stream, records, first):
    for fmt in ("ndjson", "csv"):
        body = ndjson_lines(records.head(4)) if fmt == "ndjson" else records.head(4).write_csv().splitlines()
        counts, out, err = loop(fresh(stream), [first, first, *body])
        assert counts["records"] == 4 and len(out) == 4 * 6 * 3, err
        if first:
            assert counts["malformed"] == 2 and err[0].startswith("line 1: malformed, skipped:")
        if first in ("garbage", "a,b,c"):
            assert "neither a JSON object nor a CSV header naming the columns" in err[0]


def test_an_explicit_format_skips_lines_that_do_not_fit_it(stream, records):
    body = records.head(2).write_csv().splitlines()
    counts, out, err = loop(fresh(stream), ["not,a,header", *body, ndjson_lines(records.head(1))[0]], fmt="csv")
    assert counts["records"] == 2 and counts["malformed"] == 1 and counts["rejected"] == 1
    assert "not a CSV header naming the columns" in err[0]
    assert err[1].startswith("line 5: record for series") and "could not be read" in err[1]  # JSON read as CSV
    counts, out, err = loop(fresh(stream), [body[0], *ndjson_lines(records.head(2))], fmt="ndjson")
    assert counts["records"] == 2 and err[0].startswith("line 1: malformed")


def test_non_utf8_lines_are_reported_and_the_stream_goes_on(ckpt, records, tmp_path):
    good = [line.encode() for line in ndjson_lines(records.head(6))]
    assert b"greensboro_nc" in good[0] and b"sand_point_ak" in good[1]
    lines = [good[0], good[0].replace(b"greensboro_nc", b"greensboro_\xff\xfe"),  # not UTF-8 at all
             good[1], good[1].replace(b"sand_point_ak", b"caf\xe9"),                # Latin-1
             good[2], good[0].replace(b'"greensboro_nc"', b'"\\udc80"'),          # a JSON-escaped lone surrogate
             *good[3:]]
    path = tmp_path / "obs.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = run_stream(["--ckpt_path", str(ckpt), "--input", str(path)], "")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 6 * 6 * 3  # the six good records
    assert "line 2: malformed, skipped: not UTF-8 text (byte 0xff at position" in result.stderr
    assert "line 4: malformed, skipped: not UTF-8 text (byte 0xe9" in result.stderr
    assert "line 6: record for series" in result.stderr and "not valid text" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_line_reader_skips_overlong_lines_and_keeps_the_rest():
    short = [f'{{"n": {i}, "pad": "{"x" * 90}"}}'.encode() for i in range(3000)]  # ~300 KB: many read chunks
    huge = b'{"station": "' + b"x" * 10_000_000 + b'"}'
    data = b"\n".join(short[:1500] + [huge] + short[1500:])  # the last line has no newline
    got = list(LineReader(io.BytesIO(data), wake=5))
    bad = [i for i, g in enumerate(got) if not isinstance(g, bytes)]
    assert bad == [1500] and f"line of {len(huge)} bytes, longer than MAX_LINE_BYTES" in got[1500].why
    assert [g.rstrip(b"\n") for i, g in enumerate(got) if i != 1500] == short


def test_messages_echo_at_most_60_characters_of_a_huge_value(stream, records):
    rec = {**records.head(1).to_dicts()[0], "time": "2 Jan" + "0" * 100_000}
    rec2 = {**records.head(1).to_dicts()[0], "time": "1990-01-01T01:00:00", "temp_air": "9" * 100_000 + "x"}
    counts, out, err = loop(fresh(stream), [json.dumps(rec, default=str), json.dumps(rec2)])
    assert counts["rejected"] == 2 and len(err) == 2
    assert all(len(line) < 400 for line in err), [len(line) for line in err]
    assert "(100005 characters)" in err[0] and "could not be read" in err[0]
    assert "(100001 characters)" in err[1] and "not a number" in err[1]


def test_max_gap_flag(ckpt, records, tmp_path, capsys):
    recs = records.filter(pl.col("station") == records["station"][0]).head(3).to_dicts()
    recs[2]["time"] = recs[1]["time"] + dt.timedelta(hours=5)
    path = tmp_path / "obs.ndjson"
    path.write_text("\n".join(json.dumps({**r, "time": r["time"].isoformat()}) for r in recs) + "\n")
    assert main(["--ckpt_path", str(ckpt), "--input", str(path), "--max_gap", "3"]) == 0
    err = capsys.readouterr().err
    assert "line 3: record for series" in err and "5 periods (1h)" in err and "more than max_gap=3" in err
    assert main(["--ckpt_path", str(ckpt), "--input", str(path), "--max_gap", "none"]) == 0
    assert "max_gap" not in capsys.readouterr().err
    assert build_parser().parse_args(["--ckpt_path", "x"]).max_gap == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ckpt_path", "x", "--max_gap", "0"])
    assert "number of periods >= 1" in capsys.readouterr().err


def test_a_pipe_like_stdin_with_non_utf8_bytes_goes_on(stream, records):
    """The stdin path: the reader thread reads a pipe's descriptor; a non-UTF-8 id never reaches the
    state (before, it was accepted, saved, and crashed the forecast with UnicodeEncodeError)."""
    good = [line.encode() for line in ndjson_lines(records.head(4))]
    data = b"\n".join([good[0], good[1].replace(b"sand_point_ak", b"sand_\xc3\x28"), *good[1:]]) + b"\n"
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    s = fresh(stream)
    with os.fdopen(read_fd, "rb") as f:
        counts, out, err = loop(s, LineReader(f))
    assert counts == {"lines": 5, "records": 4, "rejected": 0, "malformed": 1}
    assert err == ["line 2: malformed, skipped: not UTF-8 text (byte 0xc3 at position 18)"]
    assert sorted(s.series) == ["greensboro_nc", "sand_point_ak"] and len(out) == 4 * 6 * 3


def test_history_flag_and_its_snapshots(ckpt, records, tmp_path, capsys):
    """--history window: the per-step model runs each forecast from its look-back; its snapshot
    is refused by a carried-state stream in one line, and restores under --history window."""
    path, state = tmp_path / "obs.ndjson", tmp_path / "state.pt"
    path.write_text("\n".join(ndjson_lines(records.head(10))) + "\n")
    assert main(["--ckpt_path", str(ckpt), "--input", str(path), "--history", "window", "--state", str(state)]) == 0
    windowed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(windowed) == 10 * 6 * 3
    assert main(["--ckpt_path", str(ckpt), "--input", str(path), "--state", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: state file") and "--history window" in err and "Traceback" not in err
    assert main(["--ckpt_path", str(ckpt), "--input", str(path), "--history", "window", "--state", str(state)]) == 0
    assert "restored 2 series" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ckpt_path", "x", "--history", "state"])
