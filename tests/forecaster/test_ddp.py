"""`--trainer.strategy ddp --trainer.devices 2` on the CPU (gloo): two processes train, validate and
test a tiny model through the CLI, in a subprocess so the test process itself is never forked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_cli_fit_with_ddp_on_two_cpu_processes(tmp_path):
    args = ["fit", "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--model.net.hidden_size", "8", "--model.net.d_model", "8",
            "--model.net.head_hidden", "16", "--data.context_length", "48", "--data.horizon", "12",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--verbose", "true"]  # Lightning's own lines say which processes ran
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "forecaster", *args], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=300)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log, log[-4000:]
    assert "GLOBAL_RANK: 1" in log or "Initializing distributed: GLOBAL_RANK: 1" in log, log[-4000:]
    assert r.stdout.count("test metrics") == 1  # printed by rank 0 only
    (ckpt,) = tmp_path.rglob("*.ckpt")
    ck = torch.load(ckpt, weights_only=False)
    from forecaster.lightning_module import FORMAT_VERSION

    assert ck["forecaster_format_version"] == FORMAT_VERSION and ck["global_step"] == 2
