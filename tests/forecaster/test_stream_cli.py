"""`python -m forecaster stream`: the online loop end to end, on a small checkpoint."""

import json
import os
import signal
import subprocess
import sys

import lightning as L
import polars as pl
import pytest

from forecaster.data import TimeSeriesDataModule
from forecaster.lightning_module import GRUForecaster
from forecaster.streaming import StreamingForecaster

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny model trained for a few batches on the embedded dataset, saved as a checkpoint."""
    root = tmp_path_factory.mktemp("ckpt")
    dm = TimeSeriesDataModule(context_length=48, horizon=6, batch_size=32)
    model = GRUForecaster(n_targets=dm.n_targets, n_past_covariates=dm.n_past_covariates,
                          n_future_covariates=dm.n_future_covariates, context_length=48, horizon=6,
                          seasonal_period=dm.season_length, hidden_size=16, d_model=8, head_hidden=16,
                          min_origin=4, data_spec=dm.spec.to_dict())
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
