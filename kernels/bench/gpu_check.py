"""The prepared GPU check (``scripts/gpu_check.sh``): everything a session lent a GPU should run,
in one call of under 8 minutes, needing only torch, triton, numpy and pytest.

Parts, each in its own subprocess with a timeout (a hung grid barrier must not eat the session's
GPU time; the kernels' own spin limit should end it first), in this order:

1. ``env``: GPU, driver, versions, device properties.
2. ``tests``: ``pytest -m gpu tests/kernels`` (``-n 4`` when pytest-xdist is there).
3. ``warm``: every bench variant once at T=2, four at a time, so that Triton's compile cache is
   warm before anything is timed.
4. ``loaded``: every kernel variant the bench shapes can launch (each path), loaded on the GPU;
   registers and spills read from the loaded binaries (``n_regs``, ``n_spills``).
5. ``bench``: FusedGRU vs cuDNN ``nn.GRU`` at the four shapes, forward and forward+backward,
   float32 (TF32 both sides) and bfloat16, both formulations, one subprocess per
   (shape, dtype, formulation); then the batch path at (1024, 96, 16, 64) and the stepwise path at
   (32, 336, 1, 512), for comparison with what auto picks.
6. ``step``: the step at 100,000 x 128 vs nn.GRUCell with index_select/index_copy_.

Everything lands under ``$OUT`` (default ``./gpu_out``): one JSON and one log per part,
``summary.json``, and a short table printed last. Parts past the deadline are skipped, not run.

    OUT=/path python -m kernels.bench.gpu_check            # all parts
    python -m kernels.bench.gpu_check summary              # re-print the table from $OUT
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPES = [(256, 168, 8, 128), (64, 720, 7, 256), (1024, 96, 16, 64), (32, 336, 1, 512)]
DTYPES = ("float32", "bfloat16")
FORMS = ("reset_after", "reset_before")
EXTRA = [  # (name, shape, dtype, formulation, path): the paths auto does not take, for comparison
    ("batch", (1024, 96, 16, 64), "float32", "reset_after", "batch"),
    ("batch", (1024, 96, 16, 64), "bfloat16", "reset_after", "batch"),
    ("stepwise", (32, 336, 1, 512), "float32", "reset_after", "stepwise"),
]
DEADLINE_S = 450  # leave room under the 8-minute call for the summary and the copy back


def _out() -> str:
    out = os.environ.get("OUT") or os.path.join(os.getcwd(), "gpu_out")
    os.makedirs(out, exist_ok=True)
    return out


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("TRITON_INTERPRET", None)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return env


def _run(name: str, cmd: list[str], timeout: float, out: str, status: dict) -> int | None:
    """Run one part in its own process group; kill the group at the timeout. Log under $OUT."""
    log = os.path.join(out, f"{name}.log")
    t0 = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(), start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = None
    status[name] = {"rc": rc, "seconds": round(time.time() - t0, 1), "timeout": rc is None, "log": log}
    print(f"[{name}] {'TIMEOUT' if rc is None else 'rc=' + str(rc)} in {status[name]['seconds']} s", flush=True)
    return rc


def _shape_arg(shape) -> str:
    return ",".join(map(str, shape))


def run_all(parts: list[str]) -> int:
    out = _out()
    start = time.time()
    status: dict = {}
    py = sys.executable

    def left() -> float:
        return DEADLINE_S - (time.time() - start)

    def step(name, cmd, timeout):
        if left() < 10:
            status[name] = {"rc": None, "skipped": "deadline"}
            print(f"[{name}] skipped: past the deadline", flush=True)
            return None
        return _run(name, cmd, min(timeout, left()), out, status)

    if "env" in parts:
        step("env", [py, "-m", "kernels.bench.gpu_check", "env", "--json", os.path.join(out, "env.json")], 60)
    if "tests" in parts:
        xdist = subprocess.run([py, "-c", "import xdist"], capture_output=True).returncode == 0
        cmd = [py, "-m", "pytest", "-m", "gpu", "tests/kernels", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={os.path.join(out, 'tests.xml')}"] + (["-n", "4"] if xdist else [])
        step("tests", cmd, 200)
    variants = [(s, d, f) for s in SHAPES for d in DTYPES for f in FORMS]
    if "warm" in parts:
        # compile every variant the timed runs will launch, four processes at once, T = 2
        t0 = time.time()
        procs = []
        for shape, dtype, form in variants:
            B, T, I, H = shape
            cmd = [py, "-m", "kernels.bench", "--device", "cuda", "--shapes", _shape_arg((B, 2, I, H)),
                   "--dtypes", dtype, "--formulations", form, "--repeats", "1", "--no-step"]
            procs.append(cmd)
        for name, shape, dtype, form, path in EXTRA:
            B, T, I, H = shape
            procs.append([py, "-m", "kernels.bench", "--device", "cuda", "--shapes", _shape_arg((B, 2, I, H)),
                          "--dtypes", dtype, "--formulations", form, "--path", path, "--backend", "triton",
                          "--repeats", "1", "--no-step"])
        procs += [[py, "-m", "kernels.bench", "--device", "cuda", "--dtypes", d, "--repeats", "1", "--no-sequence"]
                  for d in DTYPES]
        running, failed = [], 0
        with open(os.path.join(out, "warm.log"), "w") as f:
            while procs or running:
                while procs and len(running) < 4:
                    cmd = procs.pop(0)
                    running.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(),
                                                    start_new_session=True))
                for p in list(running):
                    if p.poll() is not None:
                        failed += p.returncode != 0
                        running.remove(p)
                if time.time() - t0 > min(150, left()):
                    for p in running:
                        os.killpg(p.pid, signal.SIGKILL)
                    procs.clear()
                    running.clear()
                    status["warm_timeout"] = True
                time.sleep(0.2)
        status["warm"] = {"rc": failed, "seconds": round(time.time() - t0, 1)}
        print(f"[warm] {failed} failed in {status['warm']['seconds']} s", flush=True)
    if "loaded" in parts:
        step("loaded", [py, "-m", "kernels.bench.gpu_check", "loaded", "--json", os.path.join(out, "loaded.json")], 120)
    if "bench" in parts:
        os.makedirs(os.path.join(out, "bench"), exist_ok=True)
        for shape, dtype, form in variants:
            name = f"bench_{'x'.join(map(str, shape))}_{dtype}_{form}"
            step(name, [py, "-m", "kernels.bench", "--device", "cuda", "--shapes", _shape_arg(shape),
                        "--dtypes", dtype, "--formulations", form, "--no-step", "--repeats", "10",
                        "--json", os.path.join(out, "bench", name + ".json")], 60)
        for label, shape, dtype, form, path in EXTRA:
            name = f"bench_{'x'.join(map(str, shape))}_{dtype}_{form}_{label}"
            step(name, [py, "-m", "kernels.bench", "--device", "cuda", "--shapes", _shape_arg(shape),
                        "--dtypes", dtype, "--formulations", form, "--path", path, "--backend", "triton",
                        "--no-step", "--repeats", "10", "--json", os.path.join(out, "bench", name + ".json")], 60)
    if "step" in parts:
        os.makedirs(os.path.join(out, "bench"), exist_ok=True)
        for dtype in DTYPES:
            name = f"step_{dtype}"
            step(name, [py, "-m", "kernels.bench", "--device", "cuda", "--dtypes", dtype, "--no-sequence",
                        "--repeats", "20", "--json", os.path.join(out, "bench", name + ".json")], 60)
    status["total_seconds"] = round(time.time() - start, 1)
    with open(os.path.join(out, "status.json"), "w") as f:
        json.dump(status, f, indent=1)
    return summary(out)


# ---- parts that run in their own process ---------------------------------------------------------

def part_env(path: str) -> int:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["device"] = {k: getattr(p, k) for k in dir(p) if not k.startswith("_") and
                          isinstance(getattr(p, k), (int, float, str, bool))}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu",
                              "--format=csv"], capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        info["nvidia_smi"] = f"not available: {e}"
    from kernels.bench.compile_report import _commit

    info["commit"] = _commit()
    print(json.dumps(info, indent=1, default=str))
    with open(path, "w") as f:
        json.dump(info, f, indent=1, default=str)
    return 0


def part_loaded(path: str) -> int:
    """Launch every variant once at T=2 on every path that applies at the bench shapes; report what
    the loaded binaries say (registers, spills, shared memory)."""
    import torch

    from kernels.gru import fused_recurrent as fr
    from kernels.gru import plan as P
    from kernels.gru.common import input_projection

    dev = torch.device("cuda")
    dm = P.device_model(dev)
    rows = []
    for (B, _T, I, H) in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for ra in (True, False):
                for mask in (False, True):
                    for path in ("persistent", "stepwise", "batch"):
                        try:
                            P.plan_sequence("fwd", B, H, dtype, path, dm=dm)
                        except ValueError:
                            continue
                        T = 2
                        x = torch.randn(T, B, I, device=dev, dtype=dtype)
                        w_ih = torch.randn(3 * H, I, device=dev, dtype=dtype) / math.sqrt(H)
                        w_hh = (torch.randn(3 * H, H, device=dev) / math.sqrt(H)).to(dtype)
                        m = torch.rand(T, B, device=dev) > 0.2 if mask else None
                        with torch.no_grad():
                            gi, b_hn = input_projection(x, w_ih, None, None, ra)
                            h0 = torch.zeros(B, H, device=dev)
                            try:
                                with _tf32(dtype == torch.float32):
                                    hs, gates, pf = fr.fused_gru_fwd(gi, h0, w_hh, b_hn, m, ra, path)
                                    _, _, pb, _ = fr.fused_gru_bwd(torch.randn(T, B, H, device=dev), torch.randn(B, H, device=dev),
                                                                   hs, gates, w_hh, m, ra, path)
                                torch.cuda.synchronize()
                                rows.append({"shape": (B, _T, I, H), "dtype": str(dtype)[6:], "reset_after": ra,
                                             "mask": mask, "path": path, "fwd_ctas": pf.ctas, "bwd_ctas": pb.ctas})
                            except Exception as e:  # report it, carry on with the others
                                rows.append({"shape": (B, _T, I, H), "dtype": str(dtype)[6:], "reset_after": ra,
                                             "mask": mask, "path": path, "error": f"{type(e).__name__}: {e}"[:300]})
    state = torch.randn(100_000, 128, device=dev)
    idx = torch.randperm(100_000, device=dev)
    for dtype in (torch.float32, torch.bfloat16):
        for ra in (True, False):
            from kernels import gru_step_

            x = torch.randn(100_000, 8, device=dev, dtype=dtype)
            w = [torch.randn(384, 8, device=dev, dtype=dtype), torch.randn(384, 128, device=dev, dtype=dtype) / 12,
                 torch.randn(384, device=dev, dtype=dtype), torch.randn(384, device=dev, dtype=dtype)]
            with _tf32(dtype == torch.float32):
                gru_step_(state, idx, x, *w, reset_after=ra, impl="triton", assume_unique=True)
    torch.cuda.synchronize()
    loaded = list(fr.LOADED.values())
    with open(path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "device_model": str(dm), "launches": rows,
                   "loaded": loaded}, f, indent=1, default=str)
    spills = [r for r in loaded if r.get("n_spills")]
    errors = [r for r in rows if "error" in r]
    print(f"{len(loaded)} kernel variants loaded; {len(spills)} spill; {len(errors)} launches failed")
    for r in spills + errors:
        print(r)
    return 1 if errors else 0


class _tf32:
    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        import torch

        self.prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.on

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = self.prev


# ---- summary ---------------------------------------------------------------------------------------

def summary(out: str) -> int:
    """Collect $OUT into summary.json and print the short table (the last thing the call shows)."""
    from kernels.bench import print_table

    rows, step_rows = [], []
    bench_dir = os.path.join(out, "bench")
    for name in sorted(os.listdir(bench_dir)) if os.path.isdir(bench_dir) else []:
        with open(os.path.join(bench_dir, name)) as f:
            data = json.load(f)
        # the batch/stepwise rows compare paths auto does not take; the targets are about auto
        compare = name.endswith(("_batch.json", "_stepwise.json"))
        for r in data.get("rows", []):
            if r.get("bench") == "step":
                step_rows.append({"dtype": r["dtype"], "ours_us": r["ours_us"],
                                  "GRUCell_us": r["GRUCell+gather/scatter_us"], "ratio": r["speedup"],
                                  "ours": r.get("ours")})
            else:
                rows.append({"shape": f"({r['B']},{r['T']},{r['I']},{r['H']})", "dtype": {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(r["dtype"], r["dtype"]),
                             "form": "RA" if r["formulation"] == "reset_after" else "RB",
                             "mode": "fwd" if r["mode"] == "forward" else "fwd+bwd", "ours": r["ours"],
                             "ours_ms": r["ours_ms"], "cuDNN_ms": r["nn.GRU_ms"], "ratio": r["speedup"],
                             "iqr_ms": f"{r['ours_iqr_ms']}/{r['nn.GRU_iqr_ms']}",
                             "err": r.get("rel_err_vs_nn.GRU", ""), "auto": "" if compare else "yes"})
    status = _load(os.path.join(out, "status.json")) or {}
    env = _load(os.path.join(out, "env.json")) or {}
    loaded = _load(os.path.join(out, "loaded.json")) or {}
    fb = [r["ratio"] for r in rows if r["mode"] == "fwd+bwd" and r["ratio"] and r["auto"]]
    result = {
        "env": env, "status": status, "sequence": rows, "step": step_rows,
        "fwd_bwd_geomean_ratio": round(math.exp(sum(map(math.log, fb)) / len(fb)), 3) if fb else None,
        "fwd_bwd_min_ratio": min(fb) if fb else None,
        "loaded_kernels_spilling": [r for r in loaded.get("loaded", []) if r.get("n_spills")],
        "loaded_kernels": len(loaded.get("loaded", [])),
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    print()
    print(f"device: {env.get('device', {}).get('name', '?')}  commit: {env.get('commit', '?')}  "
          f"torch {env.get('torch', '?')}  triton {env.get('triton', '?')}  cuda {env.get('cuda', '?')}")
    failed = {k: v for k, v in status.items() if isinstance(v, dict) and (v.get("rc") or v.get("timeout") or v.get("skipped"))}
    print(f"parts: {len([v for v in status.values() if isinstance(v, dict)])} run, problems: "
          f"{ {k: (v.get('skipped') or ('timeout' if v.get('timeout') else v.get('rc'))) for k, v in failed.items()} }")
    print(f"loaded kernels: {result['loaded_kernels']}, spilling: {len(result['loaded_kernels_spilling'])}")
    if rows:
        print_table(rows)
    if step_rows:
        print_table(step_rows)
    if fb:
        print(f"fwd+bwd ratio (cuDNN time / ours) over {len(fb)} rows: geomean {result['fwd_bwd_geomean_ratio']}, "
              f"min {result['fwd_bwd_min_ratio']}  (targets: geomean >= 1.5, none < 1.0)")
    return 0 if not failed else 1


def _load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="all",
                        choices=["all", "env", "loaded", "summary", "tests", "warm", "bench", "step"],
                        help="all parts (default), one part, or the summary of $OUT")
    parser.add_argument("--json", help="(env, loaded) where to write")
    args = parser.parse_args(argv)
    if args.what == "env":
        return part_env(args.json or os.path.join(_out(), "env.json"))
    if args.what == "loaded":
        return part_loaded(args.json or os.path.join(_out(), "loaded.json"))
    if args.what == "summary":
        return summary(_out())
    parts = ["env", "tests", "warm", "loaded", "bench", "step"] if args.what == "all" else [args.what]
    return run_all(parts)


if __name__ == "__main__":
    sys.exit(main())
