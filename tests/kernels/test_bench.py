"""``python -m kernels.bench``: it runs with torch, triton and numpy alone, its quick CPU run writes
JSON, and a subset of the compile-only report (the real Triton compiler and ptxas, no GPU) shows
the persistent kernels compiled without spills."""

import json
import os
import subprocess
import sys

import pytest

from tests.kernels.conftest import requires_triton

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(*args, interpret=None, timeout=240):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if interpret is not None:
        env["TRITON_INTERPRET"] = interpret
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


def test_kernels_import_without_forecasting_dependencies():
    code = ("import sys, kernels, kernels.bench, kernels.bench.speed, kernels.bench.compile_report; "
            "bad = [m for m in ('polars', 'lightning', 'forecaster') if m in sys.modules]; "
            "assert not bad, bad")
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def test_quick_cpu_bench_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_python("-m", "kernels.bench", "--device", "cpu", "--quick", "--repeats", "1",
                        "--dtypes", "float32", "--formulations", "reset_after", "--shapes", "4,6,3,16",
                        "--no-step", "--json", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["header"]["device"].startswith("CPU")
    modes = [r["mode"] for r in data["rows"]]
    assert modes == ["forward", "forward+backward"]
    assert all(r["speedup"] > 0 and r["ours"] for r in data["rows"])


@requires_triton
def test_compile_only_persistent_kernels_do_not_spill(tmp_path):
    from kernels.bench.compile_report import ptxas_path

    if ptxas_path() is None:
        pytest.skip("the triton wheel's ptxas binary is missing; compile-only needs it")
    out = tmp_path / "compile.json"
    result = run_python("-m", "kernels.bench", "--compile-only", "--shapes", "32,336,1,512",
                        "--dtypes", "float32", "--formulations", "reset_after", "--kernels", "fwd,bwd",
                        "--archs", "90", "--masks", "off", "--hints", "runtime", "--paths", "persistent",
                        "--workers", "2", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["kernel"], r["path"]) for r in rows] == [("fwd", "persistent"), ("bwd", "persistent")]
    for r in rows:
        assert r["spill_bytes"] == 0, r
        assert r["registers"] <= 255 and r["shared_bytes"] > 0, r
        assert r["persistent"] and r["auto"] and r["ctas"] >= 32, r
