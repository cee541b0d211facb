"""The prepared GPU check (``scripts/gpu_check.sh``): what a session lent a GPU runs first, in one
call, needing only Python, torch, triton, numpy and pytest (no Polars, no network).

Parts, ordered by what their numbers are worth, each in its own processes with a timeout cut from
one total budget (default 300 s, ``--budget`` / ``GPU_CHECK_BUDGET_S``: a machine start, the check
and a rerun fit the 15 minutes of a session's device time):

1. ``env``: GPU, driver, versions, device properties, the commit (``provenance``). Without a
   CUDA device the check stops here, in seconds, and exits 2.
2. ``warm``: every kernel variant the bench and the step launch, compiled and launched once at
   T=2 in parallel processes (Triton's on-disk cache is shared), so that nothing is compiled
   while timing.
3. ``bench``: FusedGRU vs cuDNN ``nn.GRU`` at the four shapes, forward and forward+backward,
   float32 (TF32 both sides) and bfloat16, both formulations; then the paths auto does not take
   there (batch, stepwise) for comparison. One process; a case that kills it is recorded and the
   rest go on in a new one.
4. ``step``: the step at 100,000 x 128 vs ``nn.GRUCell`` with index_select/index_copy_, float32
   (TF32) and bfloat16, the variant auto picks and each alternative (resident, streaming).
5. ``loaded``: every kernel variant the bench shapes can launch (each path, float32 TF32 and IEEE,
   bfloat16, mask on and off, and the step's), registers, spills and shared memory read from the
   loaded binaries; in parallel processes.
6. ``tests``: ``pytest -m gpu tests/kernels``, the test ids split over several processes.

Every part writes its JSON (or JSON lines) into a work folder as it goes, so a part cut at its
deadline leaves what it did; ``status.json`` is rewritten after each part; ``summary.json`` and a
short table come last. ``$OUT`` (what the device tool brings back: at most 8 files) gets the work
folder as one archive, ``gpu_check.tar.gz``, rewritten every 10 s and after each part, and copies
of ``summary.json``, ``status.json`` and ``env.json``. Exit 0 only when every part ran and passed (tests: at least one passed,
none failed).

    OUT=/path python -m kernels.bench.gpu_check            # all parts
    python -m kernels.bench.gpu_check summary              # re-print the table from $OUT
    python -m kernels.bench.gpu_check --rehearse --quick   # the whole check on a CPU stack

``--rehearse`` runs every part on the CPU (Triton's interpreter at small shapes; the warm part
compiles the bench variants for sm_90 with this Triton's compiler and checks the H100's limits),
to show here what a version drift would break there (``scripts/cpu_stack_check.sh``).
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
EXTRA = [  # (label, shape, dtype, formulation, path): the paths auto does not take, for comparison
    ("batch", (1024, 96, 16, 64), "float32", "reset_after", "batch"),
    ("batch", (1024, 96, 16, 64), "bfloat16", "reset_after", "batch"),
    ("stepwise", (32, 336, 1, 512), "float32", "reset_after", "stepwise"),
]
STEP = (100_000, 100_000, 8, 128)  # N, M, I, H
STEP_PATHS = ("auto", "resident", "streaming")
PARTS = ("env", "warm", "bench", "step", "loaded", "tests")
DEFAULT_BUDGET_S = 300
#: part -> (the most seconds it may take, the fewest worth starting it with)
CAPS = {"env": (45, 5), "warm": (100, 10), "bench": (100, 15), "step": (45, 10), "loaded": (60, 15),
        "tests": (150, 30)}
RESERVE_S = 8  # for the summary after the last part
PACK_EVERY_S = 10
CASE_TIMEOUT_S = 45  # one bench or step case (its compiles were warmed; a hung barrier gives up in ~2 s)
#: what comes back from the GPU machine: at most 8 files under $OUT, so the parts' many files go
#: into one archive there, rewritten every PACK_EVERY_S while a part runs and after each part
ARCHIVE = "gpu_check.tar.gz"
COPIED = ("summary.json", "status.json", "env.json")
#: rehearsal (CPU, interpreter): small shapes of the same kinds
REHEARSE_SHAPES = [(4, 3, 2, 16), (3, 2, 1, 17)]
REHEARSE_STEP = (600, 300, 8, 32)


def _out() -> str:
    out = os.environ.get("OUT") or os.path.join(os.getcwd(), "gpu_out")
    os.makedirs(out, exist_ok=True)
    return out


def _env(rehearse: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("TRITON_INTERPRET", None)
    if rehearse:
        env["TRITON_INTERPRET"] = "1"
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)  # a reader (or a kill) never sees half a file


def _append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut by a kill
    except OSError:
        pass
    return rows


def _load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---- the runner ------------------------------------------------------------------------------------

def _launch(cmd: list[str], log: str, env: dict) -> subprocess.Popen:
    f = open(log, "a")
    f.write("$ " + " ".join(cmd) + "\n")
    f.flush()
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
    p._log = f  # closed by _wait
    return p


def _wait(procs: list[subprocess.Popen], deadline: float, every=None, stop=None) -> list[int | None]:
    """Wait for every process until ``deadline`` (time.time()) or until ``stop()`` says so; kill
    the process groups left; ``every()`` is called every PACK_EVERY_S meanwhile. Returns each
    return code, None for a killed one."""
    rcs: list[int | None] = [None] * len(procs)
    last = time.time()
    while True:
        if every is not None and time.time() - last >= PACK_EVERY_S:
            every()
            last = time.time()
        if stop is not None and stop():
            break
        for i, p in enumerate(procs):
            if rcs[i] is None and p.poll() is not None:
                rcs[i] = p.returncode
        if all(p.poll() is not None for p in procs) or time.time() >= deadline:
            break
        time.sleep(0.1)
    for i, p in enumerate(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            rcs[i] = None
        else:
            rcs[i] = p.returncode
        p._log.close()
    return rcs


def pack(work: str, dest: str) -> None:
    """$OUT gets the work folder as one archive (written aside, then renamed: a kill leaves the
    last whole one) and copies of the summary, status and env JSON."""
    import shutil
    import tarfile

    if os.path.abspath(work) == os.path.abspath(dest):
        return
    tmp = os.path.join(dest, ARCHIVE + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        for name in sorted(os.listdir(work)):
            if not name.endswith(".tmp"):
                tar.add(os.path.join(work, name), arcname=os.path.join("gpu_check", name))
    os.replace(tmp, os.path.join(dest, ARCHIVE))
    for name in COPIED:
        if os.path.exists(os.path.join(work, name)):
            shutil.copyfile(os.path.join(work, name), os.path.join(dest, name + ".part"))
            os.replace(os.path.join(dest, name + ".part"), os.path.join(dest, name))


class Runner:
    """Runs the parts in order within one budget, in the work folder ``out``; status.json after
    each; ``dest`` ($OUT) gets the archive of it (:func:`pack`)."""

    def __init__(self, out: str, budget: float, rehearse: bool, quick: bool, workers: int, dest: str | None = None):
        self.out, self.budget, self.rehearse, self.quick, self.workers = out, budget, rehearse, quick, workers
        self.dest = dest or out
        self.start = time.time()
        self.status: dict = {"budget_s": budget, "rehearse": rehearse, "quick": quick, "parts": {}}
        self.py = sys.executable

    def left(self) -> float:
        return self.budget - (time.time() - self.start)

    def cmd(self, part: str, *extra: str) -> list[str]:
        return [self.py, "-m", "kernels.bench.gpu_check", "part", part, "--out", self.out,
                *(["--rehearse"] if self.rehearse else []), *(["--quick"] if self.quick else []), *extra]

    def slot(self, part: str) -> float | None:
        """Seconds this part may take now, or None: skip it (too little left)."""
        cap, least = CAPS[part]
        if self.rehearse:
            cap = self.budget  # the interpreter's times are not the GPU's: only the total holds
        have = self.left() - RESERVE_S
        return min(cap, have) if have >= least else None

    def record(self, part: str, **facts) -> None:
        self.status["parts"][part] = facts
        self.status["elapsed_s"] = round(time.time() - self.start, 1)
        _write_json(os.path.join(self.out, "status.json"), self.status)
        self.pack()
        rc = facts.get("rc")
        what = facts.get("skipped") or ("TIMEOUT" if facts.get("timeout") else f"rc={rc}")
        print(f"[{part}] {what} in {facts.get('seconds', 0)} s{(': ' + facts['note']) if facts.get('note') else ''}",
              flush=True)

    def pack(self) -> None:
        try:
            pack(self.out, self.dest)
        except OSError as e:  # a full disk must not stop the check
            print(f"could not write {ARCHIVE} to {self.dest}: {e}", flush=True)

    def run_parallel(self, part: str, cmds: list[list[str]], timeout: float, stop=None) -> list[int | None]:
        env = _env(self.rehearse)
        log = os.path.join(self.out, f"{part}.log")
        procs = [_launch(c, log, env) for c in cmds]
        return _wait(procs, time.time() + timeout, every=self.pack, stop=stop)

    def part(self, name: str) -> bool:
        """Run one part; False: stop the check (env found no usable device)."""
        timeout = self.slot(name)
        if timeout is None:
            self.record(name, rc=None, skipped=f"budget: {max(0.0, self.left()):.0f} s left")
            return True
        t0 = time.time()
        go_on = True
        if name == "env":
            rcs = self.run_parallel(name, [self.cmd("env")], timeout)
            env = _load(os.path.join(self.out, "env.json")) or {}
            note = ""
            if not self.rehearse and not env.get("cuda_available"):
                go_on, note = False, "no CUDA device: the check stops here (use --rehearse for a CPU run)"
            elif not env.get("triton"):
                go_on, note = False, "no triton: the check stops here"
            elif env.get("problems"):
                note = "; ".join(env["problems"])
            self.record(name, rc=rcs[0] if go_on else 2, timeout=rcs[0] is None, seconds=round(time.time() - t0, 1),
                        ok=rcs[0] == 0 and go_on, note=note)
            return go_on
        if name in ("warm", "loaded", "tests"):
            n = max(1, min(self.workers, 8)) if name == "tests" else self.workers
            cmds = [self.cmd(name, "--shard", f"{k}/{n}") for k in range(n)]
            rcs = self.run_parallel(name, cmds, timeout)
            facts = _part_facts(name, self.out)
            facts["ok"] = all(rc == 0 for rc in rcs) and facts.get("ok", True)
            killed = any(rc is None for rc in rcs)
            self.record(name, rc=None if killed else max(rcs), timeout=killed, seconds=round(time.time() - t0, 1),
                        processes=n, **facts)
            return go_on
        # bench, step: one process at a time (timing alone on the GPU); a case that kills the
        # process, or runs past CASE_TIMEOUT_S, is recorded as failed and the rest go on in a new
        # process
        deadline = t0 + timeout
        restarts = 0
        rc = None
        current_path = os.path.join(self.out, f"{name}_current.json")

        def case_too_long() -> bool:
            current = _load(current_path)
            return bool(current) and time.time() - current.get("started", time.time()) > CASE_TIMEOUT_S

        while True:
            rcs = self.run_parallel(name, [self.cmd(name)], max(1.0, deadline - time.time()), stop=case_too_long)
            rc = rcs[0]
            if rc == 0 or time.time() >= deadline - 2:
                break
            current = _load(current_path)
            if not current:
                break
            why = f"ran past {CASE_TIMEOUT_S} s" if rc is None else f"the process died in this case (rc={rc})"
            _append_jsonl(os.path.join(self.out, f"{name}.jsonl"), {"case": current["case"], "error": why})
            os.remove(current_path)
            restarts += 1
        facts = _part_facts(name, self.out)
        facts["ok"] = rc == 0 and facts.get("ok", True)
        self.record(name, rc=rc, timeout=rc is None, seconds=round(time.time() - t0, 1), restarts=restarts, **facts)
        return go_on

    def run(self, parts: list[str]) -> int:
        for name in PARTS:
            if name in parts and not self.part(name):
                break
        self.status["elapsed_s"] = round(time.time() - self.start, 1)
        _write_json(os.path.join(self.out, "status.json"), self.status)
        rc = summary(self.out)
        self.pack()
        env_part = self.status["parts"].get("env", {})
        return 2 if env_part.get("rc") == 2 else rc


def _part_facts(name: str, out: str) -> dict:
    """What a part left under $OUT, in a few numbers for status.json."""
    if name == "warm":
        rows = [r for k in _shards(out, "warm") for r in _read_jsonl(k)]
        bad = [r for r in rows if r.get("error")]
        return {"variants": len(rows), "failed": len(bad), "ok": not bad and bool(rows)}
    if name in ("bench", "step"):
        rows = _read_jsonl(os.path.join(out, f"{name}.jsonl"))
        bad = [r for r in rows if r.get("error")]
        return {"cases": len(rows), "failed": len(bad), "ok": not bad and bool(rows)}
    if name == "loaded":
        data = _merge_loaded(out)
        return {"variants": len(data["loaded"]), "spilling": len(data["spilling"]),
                "launch_errors": len(data["errors"]), "ok": not data["errors"] and bool(data["launches"])}
    if name == "tests":
        counts = _test_counts(out)
        return {**counts, "ok": counts["passed"] > 0 and not counts["failed"] and not counts["error"]}
    return {}


def _shards(out: str, prefix: str) -> list[str]:
    return sorted(os.path.join(out, f) for f in os.listdir(out) if f.startswith(prefix + "_") and f.endswith(".jsonl"))


def _test_counts(out: str) -> dict:
    rows = [r for k in _shards(out, "tests") for r in _read_jsonl(k)]
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    for r in rows:
        counts[r.get("outcome", "error")] = counts.get(r.get("outcome", "error"), 0) + 1
    counts["failures"] = [r["nodeid"] for r in rows if r.get("outcome") in ("failed", "error")][:30]
    collected = _load(os.path.join(out, "tests_collected.json")) or {}
    counts["collected"] = collected.get("n", None)
    return counts


# ---- the parts, each in its own process -------------------------------------------------------------

def _shard_of(items: list, shard: str | None) -> list:
    if not shard:
        return items
    k, n = map(int, shard.split("/"))
    return items[k::n]


def part_env(out: str, rehearse: bool) -> int:
    import platform

    import torch

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "rehearse": rehearse,
            "problems": []}
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        info["numpy"] = None
        info["problems"].append("numpy is not installed")
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
        info["problems"].append("triton is not installed")
    from kernels.bench import provenance

    info["commit"] = provenance.describe()
    if info["commit"]["commit"] == "unknown":
        info["problems"].append(f"commit unknown: {info['commit']['source']}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["device"] = {k: getattr(p, k) for k in dir(p) if not k.startswith("_") and
                          isinstance(getattr(p, k), (int, float, str, bool))}
        from kernels.gru import plan as P

        info["device_model"] = str(P.device_model(torch.device("cuda")))
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.mem,"
                                  "temperature.gpu,utilization.gpu,memory.used", "--format=csv"],
                                 capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            info["nvidia_smi"] = f"not available: {e}"
    if info["triton"] and rehearse:
        # the interpreter's NumPy requirement (Triton < 3.9 needs NumPy < 2.4): fail here, once
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            from kernels.gru.fused_recurrent import _check_interpreter

            _check_interpreter()
        except RuntimeError as e:
            info["problems"].append(str(e))
    _write_json(os.path.join(out, "env.json"), info)
    print(json.dumps(info, indent=1, default=str))
    return 1 if info["problems"] and (rehearse or info["triton"] is None) else 0


def _bench_cases(rehearse: bool, quick: bool) -> list[dict]:
    shapes = REHEARSE_SHAPES[:1] if rehearse and quick else REHEARSE_SHAPES if rehearse else SHAPES
    cases = [{"shape": s, "dtype": d, "form": f, "path": "auto", "label": ""}
             for s in shapes for d in DTYPES for f in FORMS]
    if not rehearse:
        cases += [{"shape": s, "dtype": d, "form": f, "path": p, "label": label} for label, s, d, f, p in EXTRA]
    return cases


def _step_cases(rehearse: bool, quick: bool) -> list[dict]:
    N, M, I, H = REHEARSE_STEP if rehearse else STEP
    return [{"table": (N, M, I, H), "dtype": d, "step_path": sp} for d in DTYPES for sp in STEP_PATHS]


def _case_name(case: dict) -> str:
    if "table" in case:
        return f"step {case['dtype']} {case['step_path']}"
    B, T, I, H = case["shape"]
    return f"{B}x{T}x{I}x{H} {case['dtype']} {case['form']} {case['path']}"


def part_timed(name: str, out: str, rehearse: bool, quick: bool) -> int:
    """bench or step: each case once, its rows appended to $OUT/<name>.jsonl as it finishes; cases
    already there (done, or recorded as killing an earlier process) are skipped."""
    import torch

    from kernels.bench import speed
    from kernels.bench.timing import device_name

    device = "cpu" if rehearse else "cuda"
    backend = "triton" if rehearse else "auto"
    repeats = 2 if rehearse else 10
    path = os.path.join(out, f"{name}.jsonl")
    seen = {json.dumps(r["case"], sort_keys=True) for r in _read_jsonl(path)}
    cases = _bench_cases(rehearse, quick) if name == "bench" else _step_cases(rehearse, quick)
    failed = 0
    for case in cases:
        if json.dumps(case, sort_keys=True) in seen:
            continue
        _write_json(os.path.join(out, f"{name}_current.json"), {"case": case, "started": time.time()})
        t0 = time.time()
        dt = speed.DTYPES[case["dtype"]]
        try:
            with speed.tf32(dt == torch.float32):
                if name == "bench":
                    B, T, I, H = case["shape"]
                    rows = speed.sequence_rows(B, T, I, H, device, dt, case["form"] == "reset_after",
                                               backend if case["path"] == "auto" else "triton", case["path"], repeats)
                else:
                    N, M, I, H = case["table"]
                    from kernels.gru import plan as P

                    if case["step_path"] == "resident" and not P.step_resident_ok(H, I, dt, "tf32"):
                        _append_jsonl(path, {"case": case, "rows": [], "note": "no resident variant at this "
                                             "dtype and H (W_hh does not fit on chip)"})
                        continue
                    rows = speed.step_rows(N, M, I, H, device, dt, "triton" if rehearse else backend, repeats,
                                           case["step_path"])
            if not rehearse:
                from kernels.gru import check_barriers

                check_barriers()
            _append_jsonl(path, {"case": case, "rows": rows, "device": device_name(device),
                                 "seconds": round(time.time() - t0, 1)})
        except Exception as e:  # recorded, and the other cases go on
            failed += 1
            _append_jsonl(path, {"case": case, "error": f"{type(e).__name__}: {str(e)[:1500]}",
                                 "seconds": round(time.time() - t0, 1)})
        print(f"  {name}: {_case_name(case)} in {time.time() - t0:.1f} s", flush=True)
    try:
        os.remove(os.path.join(out, f"{name}_current.json"))
    except OSError:
        pass
    return 1 if failed else 0


def _launch_cases(rehearse: bool, quick: bool) -> list[dict]:
    """Every (shape, dtype label, formulation, mask, path) the bench shapes can launch, and the
    step's variants, for the warm and loaded parts."""
    shapes = REHEARSE_SHAPES[:1] if rehearse and quick else REHEARSE_SHAPES if rehearse else SHAPES
    cases = []
    for shape in shapes:
        for label in ("float32", "float32-ieee", "bfloat16"):
            for form in FORMS:
                for mask in (False, True):
                    for path in ("persistent", "stepwise", "batch"):
                        cases.append({"kind": "sequence", "shape": shape, "dtype": label, "form": form,
                                      "mask": mask, "path": path})
    N, M, I, H = REHEARSE_STEP if rehearse else STEP
    for label in ("float32", "float32-ieee", "bfloat16"):
        for form in FORMS:
            cases.append({"kind": "step", "table": (N, M, I, H), "dtype": label, "form": form})
    return cases


def _warm_cases(rehearse: bool, quick: bool) -> list[dict]:
    """What the bench and step parts launch: each bench case with its own path ("auto" resolves
    as it will there: same shapes, same device), mask off; the step's variants in float32 (TF32)
    and bfloat16."""
    out = [{"kind": "sequence", "shape": c["shape"], "dtype": c["dtype"], "form": c["form"], "mask": False,
            "path": c["path"]} for c in _bench_cases(rehearse, quick)]
    out += [c for c in _launch_cases(rehearse, quick) if c["kind"] == "step" and c["dtype"] != "float32-ieee"]
    return out


def _run_launch_case(case: dict, device: str, loaded: bool) -> list[dict]:
    """Launch one case at T=2 (fwd and bwd; the step: every candidate that fits, or with
    ``loaded`` False the one auto takes and the alternatives the step part times)."""
    import torch

    from kernels import gru_step_
    from kernels.bench import speed
    from kernels.gru import fused_recurrent as fr
    from kernels.gru import fused_step
    from kernels.gru import plan as P
    from kernels.gru.common import folded_bias, input_projection

    dev = torch.device(device)
    label = case["dtype"]
    dtype = torch.float32 if label.startswith("float32") else speed.DTYPES[label]
    tf32 = label == "float32"
    ra = case["form"] == "reset_after"
    g = torch.Generator(device="cpu").manual_seed(0)
    rows = []
    with speed.tf32(tf32):
        prec = fr._dot_precision(dtype)
        if case["kind"] == "step":
            N, M, I, H = case["table"]
            state = torch.randn(N, H, generator=g).to(dev)
            idx = torch.randperm(N, generator=g)[:M].to(dev)
            x = torch.randn(M, I, generator=g).to(dev, dtype)
            w = [(torch.randn(3 * H, I, generator=g) / math.sqrt(I)).to(dev, dtype),
                 (torch.randn(3 * H, H, generator=g) / math.sqrt(H)).to(dev, dtype),
                 torch.randn(3 * H, generator=g).to(dev, dtype), torch.randn(3 * H, generator=g).to(dev, dtype)]
            paths = ["resident", "streaming"] if P.step_resident_ok(H, I, dtype, prec) else ["streaming"]
            for sp in paths:
                info = {}
                with torch.no_grad():
                    gru_step_(state, idx, x, *w, reset_after=ra, impl="triton", assume_unique=True, info=info,
                              path=sp)
                plan = info["step_plan"]
                rows.append({**case, "step_path": sp, "ran": info["step"], "block_b": plan.block_b,
                             "block_n": plan.block_n, "ctas": plan.ctas,
                             "w_l2_MB": round(plan.weight_bytes_per_call() / 1e6, 1)})
            if loaded:  # every other candidate too, as the planner lists them
                bias, b_hn = folded_bias(w[2], w[3], H, ra, torch.float32, dev)
                for cand in P.step_candidates(M, H, I, dtype, prec, "auto", P.device_model(dev)):
                    if cand.resident:
                        continue  # launched above with the grid the launcher sizes
                    try:
                        fused_step.fused_gru_step(state, idx, x, w[0], bias, None, w[1], b_hn, None, ra, plan=cand)
                        rows.append({**case, "candidate": f"{cand.block_b}x{cand.block_n}", "ran": cand.path})
                    except Exception as e:
                        rows.append({**case, "candidate": f"{cand.block_b}x{cand.block_n}",
                                     "error": f"{type(e).__name__}: {str(e)[:300]}"})
            return rows
        B, _T, I, H = case["shape"]
        try:
            P.plan_sequence("fwd", B, H, dtype, case["path"], dm=P.device_model(dev),
                            can_persist=dev.type == "cuda", dot_prec=prec)
        except ValueError as e:
            return [{**case, "skipped": str(e)[:200]}]
        T = 2
        x = torch.randn(T, B, I, generator=g).to(dev, dtype)
        w_ih = (torch.randn(3 * H, I, generator=g) / math.sqrt(I)).to(dev, dtype)
        w_hh = (torch.randn(3 * H, H, generator=g) / math.sqrt(H)).to(dev, dtype)
        m = (torch.rand(T, B, generator=g) > 0.2).to(dev) if case["mask"] else None
        with torch.no_grad():
            gi, b_hn = input_projection(x, w_ih, None, None, ra)
            h0 = torch.zeros(B, H, device=dev)
            hs, gates, pf = fr.fused_gru_fwd(gi, h0, w_hh, b_hn, m, ra, case["path"])
            _, _, pb, _ = fr.fused_gru_bwd(torch.randn(T, B, H, generator=g).to(dev),
                                           torch.randn(B, H, generator=g).to(dev), hs, gates, w_hh, m, ra, case["path"])
        rows.append({**case, "fwd": f"triton-{pf.path}", "bwd": f"triton-{pb.path}", "fwd_ctas": pf.ctas,
                     "bwd_ctas": pb.ctas})
    return rows


def part_launches(name: str, out: str, shard: str | None, rehearse: bool, quick: bool) -> int:
    """warm or loaded: launch this shard's cases, one JSON line each as it finishes; loaded also
    rewrites loaded_<k>.json with what the loaded binaries say after every case."""
    import torch

    from kernels.gru import check_barriers
    from kernels.gru import fused_recurrent as fr

    device = "cpu" if rehearse else "cuda"
    k = (shard or "0/1").split("/")[0]
    cases = _shard_of(_warm_cases(rehearse, quick) if name == "warm" else _launch_cases(rehearse, quick), shard)
    path = os.path.join(out, f"{name}_{k}.jsonl")
    failed = 0
    if name == "warm" and rehearse:
        failed += _warm_compile_only(out, k, shard, quick)
    for case in cases:
        t0 = time.time()
        try:
            rows = _run_launch_case(case, device, loaded=name == "loaded")
            if device == "cuda":
                torch.cuda.synchronize()
                check_barriers()
            for r in rows:
                _append_jsonl(path, {**r, "seconds": round(time.time() - t0, 2)})
            failed += sum(1 for r in rows if r.get("error"))
        except Exception as e:
            failed += 1
            _append_jsonl(path, {**case, "error": f"{type(e).__name__}: {str(e)[:1500]}",
                                 "seconds": round(time.time() - t0, 2)})
        if name == "loaded":
            _write_json(os.path.join(out, f"loaded_{k}.json"), {"loaded": list(fr.LOADED.values())})
    return 1 if failed else 0


def _warm_compile_only(out: str, k: str, shard: str | None, quick: bool) -> int:
    """Rehearsal: compile the variants the bench launches for sm_90 with this Triton (its own
    ptxas), checked against the H100's per-block limits (this shard's share of them)."""
    from kernels.bench import compile_report as cr

    shapes = _shard_of(list(cr.SHAPES), shard)
    if quick:
        shapes = shapes[:1]
    if not shapes:
        return 0
    rows = cr.run(shapes=shapes, dtypes=("float32", "bfloat16"), formulations=(True,), kernels=("fwd", "bwd"),
                  archs=(90,), masks=(False,), hints=("runtime",), paths=("persistent",), workers=1)
    bad = 0
    for r in rows:
        rec = {"compile_only": "sm_90", "kernel": r["kernel"], "shape": r["shape"], "dtype": r["dtype"],
               "path": r["path"], "registers": r.get("registers"), "spill_bytes": r.get("spill_bytes"),
               "shared_bytes": r.get("shared_bytes"), "ptxas": r.get("ptxas"), "problem": r.get("problem")}
        if r.get("error") or r.get("problem"):
            rec["error"] = r.get("error") or r.get("problem")
            bad += 1
        _append_jsonl(os.path.join(out, f"warm_{k}.jsonl"), rec)
    return bad


def part_tests(out: str, shard: str | None, rehearse: bool, quick: bool) -> int:
    """pytest over this shard of the collected test ids; one JSON line per test as it finishes."""
    k = (shard or "0/1").split("/")[0]
    marker = "not gpu" if rehearse else "gpu"
    select = ["-k", "step or plan or persistent_body"] if rehearse and quick else []
    base = [sys.executable, "-m", "pytest", "tests/kernels", "-m", marker, *select, "-p", "no:cacheprovider"]
    listing = os.path.join(out, f"tests_ids_{k}.txt")
    collected = subprocess.run([*base, "--collect-only", "-q"], capture_output=True, text=True, cwd=ROOT)
    ids = [line.strip() for line in collected.stdout.splitlines() if "::" in line]
    if k == "0":
        _write_json(os.path.join(out, "tests_collected.json"), {"n": len(ids), "marker": marker})
    mine = _shard_of(ids, shard)
    with open(listing, "w") as f:
        f.write("\n".join(mine) + "\n")
    if not mine:
        return 0 if ids else 1
    env = dict(os.environ)
    env["GPU_CHECK_TESTS_JSONL"] = os.path.join(out, f"tests_{k}.jsonl")
    res = subprocess.run([*base, "-q", "-rfE", "-p", "kernels.bench.pytest_progress",
                          f"--junitxml={os.path.join(out, f'tests_{k}.xml')}", *mine], cwd=ROOT, env=env)
    return res.returncode


# ---- summary ---------------------------------------------------------------------------------------

def _merge_loaded(out: str) -> dict:
    loaded, seen = [], set()
    for f in sorted(os.listdir(out)):
        if f.startswith("loaded_") and f.endswith(".json"):
            for r in (_load(os.path.join(out, f)) or {}).get("loaded", []):
                key = json.dumps(r, sort_keys=True, default=str)
                if key not in seen:
                    seen.add(key)
                    loaded.append(r)
    launches = [r for k in _shards(out, "loaded") for r in _read_jsonl(k)]
    return {"loaded": loaded, "spilling": [r for r in loaded if r.get("n_spills")],
            "errors": [r for r in launches if r.get("error")], "launches": launches}


def summary(out: str) -> int:
    """Collect $OUT into summary.json and print the short table (the last thing the call shows)."""
    from kernels.bench import print_table

    rows, step_rows, failures = [], [], []
    for rec in _read_jsonl(os.path.join(out, "bench.jsonl")):
        if rec.get("error"):
            failures.append(f"bench {_case_name(rec['case'])}: {rec['error'][:200]}")
        compare = rec.get("case", {}).get("path", "auto") != "auto"
        for r in rec.get("rows", []):
            rows.append({"shape": f"({r['B']},{r['T']},{r['I']},{r['H']})",
                         "dtype": {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(r["dtype"], r["dtype"]),
                         "form": "RA" if r["formulation"] == "reset_after" else "RB",
                         "mode": "fwd" if r["mode"] == "forward" else "fwd+bwd", "ours": r["ours"],
                         "ours_ms": r["ours_ms"], "cuDNN_ms": r["nn.GRU_ms"], "ratio": r["speedup"],
                         "iqr_ms": f"{r['ours_iqr_ms']}/{r['nn.GRU_iqr_ms']}",
                         "err": r.get("rel_err_vs_nn.GRU", ""), "auto": "" if compare else "yes"})
    for rec in _read_jsonl(os.path.join(out, "step.jsonl")):
        if rec.get("error"):
            failures.append(f"step {_case_name(rec['case'])}: {rec['error'][:200]}")
        for r in rec.get("rows", []):
            step_rows.append({"dtype": r["dtype"], "step_path": r.get("step_path", "auto"), "ours": r["ours"],
                              "ours_us": r["ours_us"], "GRUCell_us": r["GRUCell+gather/scatter_us"],
                              "ratio": r["speedup"], "err": r.get("rel_err_vs_GRUCell", "")})
    status = _load(os.path.join(out, "status.json")) or {}
    env = _load(os.path.join(out, "env.json")) or {}
    loaded = _merge_loaded(out)
    tests = _test_counts(out)
    fb = [r["ratio"] for r in rows if r["mode"] == "fwd+bwd" and r["ratio"] and r["auto"]]
    parts = status.get("parts", {})
    problems = {k: v.get("skipped") or ("timeout" if v.get("timeout") else f"rc={v.get('rc')}")
                for k, v in parts.items() if not v.get("ok")}
    result = {
        "env": env, "status": status, "sequence": rows, "step": step_rows, "failures": failures,
        "tests": tests, "fwd_bwd_geomean_ratio": round(math.exp(sum(map(math.log, fb)) / len(fb)), 3) if fb else None,
        "fwd_bwd_min_ratio": min(fb) if fb else None,
        "loaded_kernels": len(loaded["loaded"]), "loaded_kernels_spilling": loaded["spilling"],
        "launch_errors": loaded["errors"][:20],
    }
    _write_json(os.path.join(out, "summary.json"), result)
    print()
    dev = env.get("device", {}).get("name") or ("CPU rehearsal" if env.get("rehearse") else "no CUDA device")
    commit = env.get("commit", {})
    print(f"device: {dev}  commit: {commit.get('commit', '?')} ({commit.get('source', '?')})  python {env.get('python', '?')}  "
          f"torch {env.get('torch', '?')}  triton {env.get('triton', '?')}  numpy {env.get('numpy', '?')}  "
          f"cuda {env.get('cuda', '?')}")
    for p in env.get("problems", []):
        print(f"env problem: {p}")
    times = ", ".join(f"{k} {v.get('seconds', 0)} s" for k, v in parts.items())
    print(f"parts: {times}; total {status.get('elapsed_s', '?')} s of {status.get('budget_s', '?')}; "
          f"problems: {problems or 'none'}")
    print(f"tests: {tests['passed']} passed, {tests['failed']} failed, {tests['error']} errors, {tests['skipped']} skipped"
          f" (of {tests['collected']} collected)")
    for f in tests["failures"][:10]:
        print(f"  failed: {f}")
    print(f"loaded kernels: {result['loaded_kernels']}, spilling: {len(loaded['spilling'])}, "
          f"launch errors: {len(loaded['errors'])}")
    for r in loaded["spilling"][:10]:
        print(f"  spills: {r}")
    for r in loaded["errors"][:5]:
        print(f"  launch error: {r}")
    for f in failures[:10]:
        print(f"  {f}")
    if rows:
        print_table(rows)
    if step_rows:
        print_table(step_rows)
    if fb:
        print(f"fwd+bwd ratio (cuDNN time / ours) over {len(fb)} rows: geomean {result['fwd_bwd_geomean_ratio']}, "
              f"min {result['fwd_bwd_min_ratio']}  (targets: geomean >= 1.5, none < 1.0)")
    return 0 if parts and not problems else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="all", choices=["all", "summary", "part", *PARTS],
                        help="all parts (default), one part, the summary of $OUT, or (internal) part NAME")
    parser.add_argument("name", nargs="?", help="(with 'part') the part to run in this process")
    parser.add_argument("--out", default=None, help="results folder (default $OUT, else ./gpu_out)")
    parser.add_argument("--budget", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET_S", DEFAULT_BUDGET_S)),
                        help=f"total seconds (default {DEFAULT_BUDGET_S}, or $GPU_CHECK_BUDGET_S)")
    parser.add_argument("--workers", type=int, default=None, help="processes for warm, loaded and tests")
    parser.add_argument("--rehearse", action="store_true", help="run every part on the CPU (interpreter)")
    parser.add_argument("--quick", action="store_true", help="with --rehearse: the smallest set of each part")
    parser.add_argument("--shard", default=None, help="(internal) k/n")
    parser.add_argument("--work", default=os.environ.get("GPU_CHECK_WORK"),
                        help="where the parts write (default: a folder in the temp dir; $OUT gets its archive)")
    args = parser.parse_args(argv)
    if args.out:
        os.environ["OUT"] = args.out
    out = _out()
    if args.what == "summary":
        return summary(_unpacked(out))
    if args.what == "part":
        name = args.name
        if name == "env":
            return part_env(out, args.rehearse)
        if name in ("bench", "step"):
            return part_timed(name, out, args.rehearse, args.quick)
        if name in ("warm", "loaded"):
            return part_launches(name, out, args.shard, args.rehearse, args.quick)
        if name == "tests":
            return part_tests(out, args.shard, args.rehearse, args.quick)
        parser.error(f"unknown part {name!r}")
    import tempfile

    work = args.work or tempfile.mkdtemp(prefix="gpu_check_work_")
    os.makedirs(work, exist_ok=True)
    for folder in {work, out}:  # a fresh run: results of an earlier one would mix in
        for stale in os.listdir(folder):
            if stale.endswith((".json", ".jsonl", ".log", ".xml", ".txt", ".tmp", ".part")) or stale == ARCHIVE:
                os.remove(os.path.join(folder, stale))
    workers = args.workers or max(1, min(12, (os.cpu_count() or 2) - 2))
    parts = list(PARTS) if args.what == "all" else ["env", args.what]
    print(f"GPU check: parts {', '.join(parts)}; budget {args.budget:.0f} s; work folder {work}; "
          f"$OUT {out} gets {ARCHIVE} and {', '.join(COPIED)}", flush=True)
    return Runner(work, args.budget, args.rehearse, args.quick, workers, dest=out).run(parts)


def _unpacked(out: str) -> str:
    """The folder to summarise: $OUT itself where it holds the parts' files, else its archive
    unpacked into a temporary folder (results fetched from the GPU machine)."""
    import tarfile
    import tempfile

    archive = os.path.join(out, ARCHIVE)
    if os.path.exists(os.path.join(out, "bench.jsonl")) or not os.path.exists(archive):
        return out
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(tmp, filter="data")
        except TypeError:  # a Python without extraction filters
            tar.extractall(tmp)
    return os.path.join(tmp, "gpu_check")


if __name__ == "__main__":
    sys.exit(main())
