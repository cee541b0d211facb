"""``python -m kernels.bench``: it runs with torch, triton and numpy alone, its quick CPU run writes
JSON, and a subset of the compile-only report (the real Triton compiler and ptxas, no GPU) shows
the persistent kernels compiled without spills."""

import hashlib
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

    if ptxas_path(90) is None:
        pytest.skip("the triton wheel's ptxas binary is missing; compile-only needs it")
    out = tmp_path / "compile.json"
    # float32 with TF32 and with IEEE dots (8 warps: with 4 the IEEE forward spilled 292 B here)
    result = run_python("-m", "kernels.bench", "--compile-only", "--shapes", "32,336,1,512",
                        "--dtypes", "float32,float32-ieee", "--formulations", "reset_after", "--kernels", "fwd,bwd",
                        "--archs", "90", "--masks", "off", "--hints", "runtime", "--paths", "persistent",
                        "--workers", "2", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [(r["kernel"], r["dtype"], r["path"]) for r in rows] == [
        ("fwd", "float32", "persistent"), ("bwd", "float32", "persistent"),
        ("fwd", "float32-ieee", "persistent"), ("bwd", "float32-ieee", "persistent")]
    for r in rows:
        assert r["spill_bytes"] == 0, r
        assert r["registers"] <= 255 and 0 < r["shared_bytes"] <= 232_448 and r["problem"] is None, r
        assert r["persistent"] and r["auto"] and r["ctas"] >= 32, r
        assert r["ptxas"].startswith("ptxas") and "-v" in r["ptxas"], r  # Triton's own binary and flags
    assert r["num_warps"] == 8  # the IEEE backward
    assert set(data["header"]["ptxas"]) == {"sm_80", "sm_90"}


@requires_triton
def test_compile_only_step_picks_the_first_variant_that_fits(tmp_path):
    from kernels.bench.compile_report import ptxas_path

    if ptxas_path(90) is None:
        pytest.skip("the triton wheel's ptxas binary is missing; compile-only needs it")
    out = tmp_path / "step.json"
    result = run_python("-m", "kernels.bench", "--compile-only", "--kernels", "step", "--dtypes", "bfloat16",
                        "--formulations", "reset_after", "--archs", "90", "--masks", "off", "--hints", "runtime",
                        "--step-shapes", "100000,8,128", "--workers", "2", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["path"] for r in rows][0] == "step-resident-fused-input" and len(rows) >= 2
    resident, streaming = rows[0], rows[1]
    assert resident["auto"] and not streaming["auto"]
    assert resident["problem"] is None and resident["spill_bytes"] == 0 and resident["tile_loop"]
    # W_hh read once per program (SMs x CTAs per SM) against once per 128-row tile
    assert resident["ctas"] % 132 == 0 and resident["ctas"] < streaming["ctas"]
    assert resident["w_l2_bytes"] * 4 < streaming["w_l2_bytes"]
    assert resident["dram_bytes"] == streaming["dram_bytes"] > 150e6


def test_provenance_without_git(tmp_path, monkeypatch):
    # the GPU machine gets the tree without .git: the stamp written here says the commit, and a
    # file changed after it is counted
    from kernels.bench import provenance

    monkeypatch.delenv(provenance.ENV, raising=False)
    tree = tmp_path / "copy"
    (tree / "kernels").mkdir(parents=True)
    (tree / "kernels" / "a.py").write_text("x = 1\n")
    assert provenance.describe(str(tree))["commit"] == "unknown"
    blob = provenance.blob_hash(str(tree / "kernels" / "a.py"))
    assert blob == hashlib.sha1(b"blob 6\0x = 1\n").hexdigest()
    (tree / provenance.STAMP).write_text(json.dumps({"commit": "0123456789abcdef", "short": "0123456",
                                                     "dirty": [], "stamped": "now", "blobs": {"kernels/a.py": blob}}))
    assert provenance.describe(str(tree))["commit"] == "0123456"
    (tree / "kernels" / "a.py").write_text("x = 2\n")
    described = provenance.describe(str(tree))
    assert described["commit"] == "0123456+1 modified" and described["modified"] == ["kernels/a.py"]
    monkeypatch.setenv(provenance.ENV, "feedbee")
    assert provenance.describe(str(tree))["commit"] == "feedbee"


def test_provenance_blob_hash_is_gits():
    from kernels.bench import provenance

    path = os.path.join(ROOT, "pyproject.toml")
    expected = subprocess.run(["git", "hash-object", path], capture_output=True, text=True, cwd=ROOT)
    if expected.returncode != 0:
        pytest.skip("not a git checkout")
    assert provenance.blob_hash(path) == expected.stdout.strip()


def test_provenance_runs_without_torch():
    # `scripts/gpu_check.sh stamp` runs it by path with whatever python3 is there
    code = ("import sys; import importlib.util as u; "
            "s = u.spec_from_file_location('p', 'kernels/bench/provenance.py'); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); d = m.describe(); "
            "assert 'torch' not in sys.modules and d['commit'], d")
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
