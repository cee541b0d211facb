"""The GPU check's own machinery, on the CPU: it stops at once without CUDA, a test part that ran
nothing fails, the budget skips what does not fit, every part leaves JSON as it goes, and its
bench part runs end to end on the CPU stack (``--rehearse``)."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from kernels.bench import gpu_check as gc
from tests.kernels.conftest import requires_triton
from tests.kernels.test_bench import ROOT, run_python


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without a CUDA device")
def test_without_cuda_the_check_stops_after_the_environment(tmp_path):
    t0 = time.time()
    result = run_python("-m", "kernels.bench.gpu_check", "--out", str(tmp_path), "--work", str(tmp_path / "work"),
                        timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.time() - t0 < 60
    status = json.loads((tmp_path / "status.json").read_text())
    assert list(status["parts"]) == ["env"] and not status["parts"]["env"]["ok"]
    assert "no CUDA device" in status["parts"]["env"]["note"]
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["cuda_available"] is False and env["commit"]["commit"] != "unknown"
    assert "no CUDA device" in result.stdout


def _tests_out(tmp_path, outcomes):
    with open(tmp_path / "tests_0.jsonl", "w") as f:
        for i, o in enumerate(outcomes):
            f.write(json.dumps({"nodeid": f"t::{i}", "outcome": o}) + "\n")
        f.write('{"nodeid": "cut by a kill", "outc')  # a half line is ignored
    return gc._part_facts("tests", str(tmp_path))


def test_a_test_part_that_passed_nothing_fails(tmp_path):
    assert not _tests_out(tmp_path, ["skipped"] * 5)["ok"]  # all skipped: was reported rc=0
    assert not _tests_out(tmp_path, [])["ok"]
    assert not _tests_out(tmp_path, ["passed", "failed"])["ok"]
    facts = _tests_out(tmp_path, ["passed", "passed", "skipped"])
    assert facts["ok"] and (facts["passed"], facts["skipped"], facts["failed"]) == (2, 1, 0)


def test_budget_skips_the_parts_that_do_not_fit(tmp_path):
    runner = gc.Runner(str(tmp_path), budget=60, rehearse=False, quick=False, workers=2)
    assert runner.slot("env") == gc.CAPS["env"][0]
    assert runner.slot("tests") == pytest.approx(60 - gc.RESERVE_S, abs=1)  # all that is left, under its cap
    runner.start -= 40  # 40 s spent: 12 s left for the tests part, under its 30 s minimum
    assert runner.slot("tests") is None and runner.slot("env") is not None
    runner.part("tests")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["parts"]["tests"]["skipped"].startswith("budget")


def test_the_default_budget_leaves_time_for_a_rerun():
    # a session has 15 minutes of device time, the machine's start included (a minute or two)
    assert 2 * gc.DEFAULT_BUDGET_S + 2 * 120 <= 15 * 60
    assert gc.PARTS == ("env", "warm", "bench", "step", "loaded", "tests")


def test_pytest_progress_writes_one_line_per_test(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert False\n"
        "@pytest.mark.skip(reason='no')\ndef test_skip():\n    pass\n")
    out = tmp_path / "progress.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["GPU_CHECK_TESTS_JSONL"] = str(out)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "kernels.bench.pytest_progress",
                    str(tmp_path / "test_x.py")], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["nodeid"].split("::")[-1]: r["outcome"] for r in rows} == \
        {"test_ok": "passed", "test_bad": "failed", "test_skip": "skipped"}


@requires_triton
def test_rehearsal_of_the_bench_part_writes_rows_as_it_goes(tmp_path):
    # env and bench on the CPU stack: Triton's interpreter at one small shape
    out, work = tmp_path / "out", tmp_path / "work"
    result = run_python("-m", "kernels.bench.gpu_check", "bench", "--rehearse", "--quick", "--out", str(out),
                        "--work", str(work), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # what comes back from the GPU machine: at most 8 files under $OUT
    assert sorted(os.listdir(out)) == ["env.json", "gpu_check.tar.gz", "status.json", "summary.json"]
    records = gc._read_jsonl(str(work / "bench.jsonl"))
    assert len(records) == len(gc._bench_cases(True, True)) == 4
    rows = [r for rec in records for r in rec["rows"]]
    assert all(r["ours"].startswith("triton-") and r["speedup"] > 0 for r in rows)
    assert all(float(r["rel_err_vs_nn.GRU"]) < 1e-2 for r in rows if r["rel_err_vs_nn.GRU"])
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["sequence"]) == 8 and not summary["failures"]
    assert "fwd+bwd ratio" in result.stdout
    # and the table again, from the archive alone
    again = run_python("-m", "kernels.bench.gpu_check", "summary", "--out", str(out))
    assert again.returncode == 0 and "fwd+bwd ratio" in again.stdout, again.stdout + again.stderr
