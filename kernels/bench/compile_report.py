"""Compile-only report: every kernel variant the bench shapes launch, compiled for sm_80 and sm_90
on a machine with no GPU, with the registers, spills and shared memory ptxas reports and the CTAs
each launch puts on the GPU.

Method (see the project's KERNEL_NOTES): ``triton.compile(ASTSource(...), target=GPUTarget("cuda",
arch, 32))`` builds PTX and runs ptxas exactly as Triton does at run time: the binary and flags
are Triton's own (``triton.backends.nvidia.compiler.get_ptxas(arch)``: Triton 3.6 takes the legacy
bundled ``ptxas`` for sm_80 and sm_90, 3.9 ``ptxas-blackwell`` for sm_90), and the registers, stack
frame and spill bytes are read from that run's log; the compiled kernel's ``metadata.shared`` is its
shared memory. Each variant is checked against the arch's per-block limits
(``plan.resource_problem``: shared memory, registers), as the launchers do before a launch. CTAs
per launch come from ``kernels.gru.plan`` with a device model (H100: 132 SMs for sm_90; A100: 108
SMs for sm_80) and, for the persistent path and the resident step, the occupancy those registers
and that shared memory allow; the step rows add the bytes of W_hh (and W_ih) read from L2 per call.

Dtypes: ``float32`` is TF32 (what cuDNN runs under nn.GRU and the bench switches on),
``float32-ieee`` the IEEE float32 dots of torch's default (``allow_tf32`` off: other block sizes,
FMA dots), ``bfloat16``, ``float16``.

Specialisation hints: at run time Triton's JIT compiles a variant per divisibility of its integer
arguments and pointers (16-byte-aligned pointers, B and H multiples of 16 get ``tt.divisibility``).
``hints="runtime"`` compiles exactly the variant the bench shapes launch; ``hints="none"`` the
variant an H or B that is not a multiple of 16 gets (no vectorisation hints: more registers).

Compiles run in worker processes (spawned with the interpreter off), so the report also works from
a process where ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import torch

from kernels.gru import plan as P

SHAPES = [(256, 168, 8, 128), (64, 720, 7, 256), (1024, 96, 16, 64), (32, 336, 1, 512)]
#: (rows M, I, H) of the step: the bench's 100,000 x 128 and the GPU test's H=512 (1,000 rows)
STEP_SHAPES = [(100_000, 8, 128), (1_000, 8, 512)]
REPORT_DTYPES = ("float32", "float32-ieee", "bfloat16")
#: dtype label -> (weight dtype, dot precision); float32 runs TF32 as cuDNN does under nn.GRU
DTYPES = {
    "float32": (torch.float32, "tf32"),
    "float32-ieee": (torch.float32, "ieee"),
    "bfloat16": (torch.bfloat16, "ieee"),
    "float16": (torch.float16, "ieee"),
}
_PTR = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}


def ptxas_tool(arch: int):
    """Triton's own ptxas for ``arch`` (``NvidiaTool``: ``.path``, ``.version``), or None."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(arch)
    except Exception:  # no triton, or a Triton without the NVIDIA backend
        return None


def ptxas_path(arch: int = 90) -> str | None:
    """The ptxas binary Triton runs for ``arch`` (bundled with the triton wheel), or None."""
    tool = ptxas_tool(arch)
    path = getattr(tool, "path", None)
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


@dataclass(frozen=True)
class Job:
    """One compilation: a kernel, its constexprs and launch options, an arch, the hints."""

    kernel: str  # "fwd", "bwd", "step"
    arch: int
    wdtype: str  # "*fp32", "*bf16", "*fp16"
    constexprs: tuple
    num_warps: int
    num_stages: int
    ints: tuple  # (name, value) of the integer arguments the JIT may specialise on
    hints: str  # "runtime" or "none"
    gi_fused: bool = False  # step: GI is a 1-byte dummy when the kernel fuses the input projection
    maxnreg: int | None = None


def _signature(job: Job):
    from kernels.gru import fused_recurrent as fr

    w = job.wdtype
    if job.kernel == "fwd":
        fn = fr._gru_fwd_kernel
        ptrs = {"GI": "*fp32", "HS": "*fp32", "W": w, "BHN": "*fp32", "MASK": "*u8", "GATES": "*fp32",
                "RH": "*fp32", "SYNC": "*i64", "STATUS": "*i64"}
    elif job.kernel == "bwd":
        fn = fr._gru_bwd_kernel
        ptrs = {"DOUT": "*fp32", "HS": "*fp32", "GATES": "*fp32", "W": w, "MASK": "*u8", "DG": "*fp32", "DGHN": "*fp32",
                "DH": "*fp32", "CARRY": "*fp32", "SYNC": "*i64",
                "STATUS": "*i64"}
    else:
        from kernels.gru import fused_step

        fn = fused_step._gru_step_kernel
        ptrs = {"X": w, "WIH": w, "BIAS": "*fp32", "GI": "*u8" if job.gi_fused else "*fp32", "S": "*fp32",
                "IDX": "*i64", "W": w, "BHN": "*fp32", "MASK": "*u8", "OUT": "*fp32", "RH": "*fp32"}
    ce = dict(job.constexprs)
    ints = dict(job.ints)
    no_spec = set(getattr(fn, "do_not_specialize", ()) or ())
    no_spec |= {fn.arg_names[i] for i in no_spec if isinstance(i, int)}
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in ce:
            sig[name] = "constexpr"
        elif name in ptrs:
            sig[name] = ptrs[name]
            if job.hints == "runtime":
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            v = ints.get(name)
            if job.hints == "runtime" and name not in no_spec and v is not None and v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return fn, sig, ce, attrs


def compile_job(job: Job) -> dict:
    """Compile one job and read the resources of the cubin Triton itself built. Runs in a worker
    process (whose Triton cache is a fresh directory, so that ptxas really runs).

    Triton runs ptxas with its own binary and flags (Triton 3.9: ``-lineinfo -v
    --regAllocOptLevel=2``, ``ptxas-blackwell`` for sm_90; 3.6: ``-lineinfo -v``, the legacy
    ``ptxas`` 12.8 for both archs), and the flags change the register allocation: a plain
    ``ptxas -v`` on the same PTX reported 12 B of spills where Triton's binary has 48 B. So the
    command and its log are taken from Triton's own call (``subprocess.run`` watched while it
    compiles), and the row names the binary and flags."""
    import subprocess as sp

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, sig, ce, attrs = _signature(job)
    calls = []
    run = sp.run

    def watched(cmd, *args, **kwargs):
        result = run(cmd, *args, **kwargs)
        if isinstance(cmd, (list, tuple)) and cmd and os.path.basename(str(cmd[0])).startswith("ptxas"):
            err = kwargs.get("stderr")
            text = ""
            if hasattr(err, "name"):
                with open(err.name) as f:
                    text = f.read()
            calls.append((list(map(str, cmd)), text))
        return result

    sp.run = watched
    try:
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=ce, attrs=attrs),
                           target=GPUTarget("cuda", job.arch, 32),
                           options={"num_warps": job.num_warps, "num_stages": job.num_stages,
                                    **({"maxnreg": job.maxnreg} if job.maxnreg else {})})
    finally:
        sp.run = run
    out = {"shared_bytes": int(k.metadata.shared), "registers": None, "spill_bytes": None,
           "spill_load_bytes": None, "stack_bytes": None}
    if not calls:
        out["error"] = "Triton ran no ptxas (its cache answered?): no register report"
        return out
    cmd, text = calls[-1]
    flags = [c for c in cmd[1:] if c.startswith("-") and not c.startswith("--gpu-name") and c != "-o"]
    out["ptxas"] = os.path.basename(cmd[0]) + " " + " ".join(flags)
    m = re.search(r"Used (\d+) registers", text)
    if m is None:
        out["error"] = f"no ptxas report: {text.strip()[-300:]}"
        return out
    out["registers"] = int(m.group(1))
    spills = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if spills:
        out["stack_bytes"], out["spill_bytes"], out["spill_load_bytes"] = map(int, spills.groups())
    return out


def _worker_init() -> None:
    import atexit

    d = tempfile.mkdtemp(prefix="kernels-compile-report-")
    os.environ["TRITON_CACHE_DIR"] = d
    atexit.register(shutil.rmtree, d, True)


def _wname(dtype: torch.dtype) -> str:
    return _PTR[dtype]


def _seq_jobs(plan: P.SeqPlan, reset_after: bool, has_mask: bool, dot_prec: str, arch: int, hints: str):
    """(stage, Job) for each launch of a plan: stage 0 for batch/persistent, the stages otherwise."""
    from kernels.gru.fused_recurrent import seq_constexprs

    for stage in P.launch_stages(plan, reset_after):
        ce = seq_constexprs(plan, reset_after, has_mask, stage, dot_prec, False)
        yield stage, Job(plan.kernel, arch, _wname(plan.dtype), tuple(sorted(ce.items())), plan.blocks.num_warps,
                         plan.blocks.num_stages, (("B", plan.B), ("H", plan.H)), hints)


def _pool(workers: int):
    # spawn: fresh processes (fork after torch is risky), and with the interpreter off so that the
    # kernels are real @triton.jit functions there
    prev = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        ex = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_worker_init)
        ex.submit(int, 0).result()  # start the workers while the variable is off
    finally:
        if prev is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = prev
    return ex


def run(
    shapes=SHAPES,
    dtypes=REPORT_DTYPES,
    formulations=(True, False),
    kernels=("fwd", "bwd", "step"),
    archs=(80, 90),
    masks=(False, True),
    hints=("runtime", "none"),
    paths=("persistent", "stepwise", "batch"),
    step_shapes=STEP_SHAPES,
    workers: int | None = None,
    progress=None,
) -> list[dict]:
    """Compile every variant and return one row per (variant, shape).

    Args:
        shapes: (B, T, I, H) of the sequence launches. dtypes: keys of :data:`DTYPES`.
        formulations: reset_after values. kernels: of "fwd", "bwd", "step". archs: of 80, 90.
        masks: HAS_MASK values (the bench launches none; masked training does).
        hints: "runtime" (the variant the JIT builds at these shapes) and/or "none".
        paths: which sequence paths to compile where they apply (``auto`` marks the one auto takes).
        step_shapes: (M, I, H) of the step launches; every candidate of ``plan.step_candidates``
            is compiled, ``auto`` marks the first that fits the arch (what the launcher takes).
        workers: compile processes (default: CPU count).
        progress: optional callable(done, total).

    The persistent grid and the resident step's grid are sized as at run time, from the occupancy
    of the compiled variant, so that variant is compiled before its row is planned.

    Rows: kernel, arch, dtype, formulation, mask, hints, shape, H, path, auto (bool: the path
    "auto" takes there), stage, block_b, block_n, block_k, nchunk, resident, tile_loop,
    num_warps, num_stages, registers, spill_bytes, spill_load_bytes, stack_bytes, shared_bytes,
    ptxas (binary and flags), problem (why it cannot launch on the arch's model, or None),
    occupancy (CTAs/SM), ctas (per launch, on the arch's device model), persistent; step rows also
    w_l2_bytes (W_hh and W_ih read per call) and dram_bytes (state, output, input, indices).
    """
    from kernels.gru.fused_step import step_constexprs

    futures: dict[Job, cf.Future] = {}
    done = [0]

    def submit(job: Job) -> cf.Future:
        if job not in futures:
            futures[job] = ex.submit(compile_job, job)
        return futures[job]

    def result(job: Job) -> dict:
        try:
            r = submit(job).result()
        except Exception as e:  # a failed compile is a row saying so, not a crash
            r = {"error": f"{type(e).__name__}: {str(e)[:500]}", "registers": None, "spill_bytes": None,
                 "shared_bytes": None}
        return r

    def fit(r: dict, num_warps: int, dm: P.DeviceModel) -> tuple[str | None, int]:
        """(problem, CTAs per SM) of a compiled row on ``dm``."""
        if r.get("registers") is None:
            return r.get("error") or "not compiled", 0
        problem = P.resource_problem(r["registers"], r["shared_bytes"], num_warps, dm)
        return problem, 0 if problem else max(1, P.occupancy(r["registers"], r["shared_bytes"], num_warps, dm))

    def occupancy_of(job_of, dm):
        def occ(blocks: P.Blocks, tile_loop: bool) -> int:
            return fit(result(job_of(blocks, tile_loop)), blocks.num_warps, dm)[1]
        return occ

    def step_job(sp: P.StepPlan, ra, prec, arch, hint) -> Job:
        ce = step_constexprs(sp, ra, False, prec, False)
        return Job("step", arch, _wname(sp.dtype), tuple(sorted(ce.items())), sp.num_warps, sp.num_stages,
                   (("M", sp.M), ("H", sp.H), ("I", sp.I)), hint, gi_fused=sp.fuse_input)

    cases = []  # (row base, spec, ...): spec a sequence planning tuple or a list of step candidates
    with _pool(workers or os.cpu_count() or 1) as ex:
        for arch in archs:
            dm = P.ARCH_MODELS[arch]
            for label in dtypes:
                dtype, prec = DTYPES[label]
                for ra in formulations:
                    form = "reset_after" if ra else "reset_before"
                    for mask in masks:
                        for hint in hints:
                            base = {"arch": arch, "dtype": label, "formulation": form, "mask": mask, "hints": hint}
                            for (B, T, I, H) in shapes:
                                for kernel in ("fwd", "bwd"):
                                    if kernel not in kernels:
                                        continue

                                    def job_of(blocks, tile_loop, kernel=kernel, B=B, H=H, dtype=dtype, ra=ra,
                                               mask=mask, prec=prec, arch=arch, hint=hint):
                                        probe = P.SeqPlan(kernel, "persistent", H, B, dtype, blocks, 1, 1, 1, tile_loop)
                                        return next(_seq_jobs(probe, ra, mask, prec, arch, hint))[1]

                                    for path in paths:
                                        try:
                                            plan = P.plan_sequence(kernel, B, H, dtype, path, dm=dm, dot_prec=prec)
                                        except ValueError:
                                            continue  # e.g. batch at a large H
                                        if plan.persistent:
                                            submit(job_of(plan.blocks, False))  # prefetch, in parallel
                                        cases.append(({**base, "kernel": kernel, "shape": (B, T, I, H), "H": H},
                                                      (kernel, B, H, dtype, path, dm, job_of), ra, mask, prec, arch, hint))
                            if "step" in kernels and not mask:
                                for M, I, H in step_shapes:
                                    cands = P.step_candidates(M, H, I, dtype, prec, "auto", dm)
                                    for sp in cands:
                                        submit(step_job(sp, ra, prec, arch, hint))
                                    cases.append(({**base, "kernel": "step", "shape": (M, I, H), "H": H}, cands,
                                                  ra, mask, prec, arch, hint))
        # plan (the persistent sizing waits for its variant's compile), then compile the rest
        rows_jobs = []
        for row, spec, ra, mask, prec, arch, hint in cases:
            dm = P.ARCH_MODELS[arch]
            if isinstance(spec, list):  # the step: candidates in order, the first that fits runs
                chosen = False
                for sp in spec:
                    job = step_job(sp, ra, prec, arch, hint)
                    problem, occ = fit(result(job), sp.num_warps, dm)
                    if sp.resident and not problem:
                        sp = P.replace(sp, n_programs=dm.n_sm * occ)
                    auto = not chosen and problem is None
                    chosen = chosen or auto
                    rows_jobs.append(({**row, "path": sp.path, "auto": auto, "stage": 0, "block_b": sp.block_b,
                                       "block_n": sp.block_n, "block_k": sp.block_k, "nchunk": 1,
                                       "resident": sp.resident, "tile_loop": sp.row_loop, "num_warps": sp.num_warps,
                                       "num_stages": sp.num_stages, "ctas": sp.ctas, "persistent": sp.resident,
                                       "w_l2_bytes": sp.weight_bytes_per_call(),
                                       "dram_bytes": sp.state_bytes_per_call()}, job))
                continue
            kernel, B, H, dtype, path, dm, job_of = spec
            plan = P.plan_sequence(kernel, B, H, dtype, path, dm=dm, occupancy_of=occupancy_of(job_of, dm),
                                   dot_prec=prec)
            auto = P.plan_sequence(kernel, B, H, dtype, "auto", dm=dm, occupancy_of=occupancy_of(job_of, dm),
                                   dot_prec=prec)
            b = plan.blocks
            for stage, job in _seq_jobs(plan, ra, mask, prec, arch, hint):
                submit(job)
                rows_jobs.append(({**row, "path": plan.path, "auto": plan.path == auto.path, "stage": stage,
                                   "block_b": b.block_b, "block_n": b.block_n, "block_k": b.block_k,
                                   "nchunk": b.nchunk, "resident": b.resident, "tile_loop": plan.tile_loop,
                                   "num_warps": b.num_warps, "num_stages": b.num_stages, "ctas": plan.ctas,
                                   "persistent": plan.persistent}, job))
        rows = []
        pending = {futures[job] for _, job in rows_jobs}
        total = len(pending)
        for fut in cf.as_completed(pending):
            done[0] += 1
            if progress:
                progress(done[0], total)
        for row, job in rows_jobs:
            r = {**row, **result(job)}
            r["problem"], occ = fit(r, r["num_warps"], P.ARCH_MODELS[r["arch"]])
            if r.get("registers") is not None:
                r["occupancy"] = occ
            rows.append(r)
    return rows


def header() -> dict:
    import triton

    versions = {}
    for arch in (80, 90):
        tool = ptxas_tool(arch)
        if tool is not None:
            versions[f"sm_{arch}"] = f"{os.path.basename(tool.path)} {tool.version}"
    return {"date": datetime.date.today().isoformat(), "commit": _commit(), "triton": triton.__version__,
            "torch": torch.__version__, "ptxas": versions,
            "device_models": {str(a): dataclasses.asdict(m) for a, m in P.ARCH_MODELS.items()}}


def _commit() -> str:
    from kernels.bench.provenance import commit

    return commit()


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (arch, kernel, dtype, formulation, H, path): the worst registers and spills
    over masks, hints and stages; CTAs and persistence of that path at its shape."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["arch"], r["kernel"], r["dtype"], r["formulation"], r["H"], r["path"])
        groups.setdefault(key, []).append(r)
    out = []
    for (arch, kernel, dtype, form, H, path), rs in groups.items():
        regs = [r["registers"] for r in rs if r.get("registers") is not None]
        spills = [r["spill_bytes"] for r in rs if r.get("spill_bytes") is not None]
        shared = [r["shared_bytes"] for r in rs if r.get("shared_bytes") is not None]
        errors = [r["error"] for r in rs if r.get("error")]
        problems = [r["problem"] for r in rs if r.get("problem") and not r.get("error")]
        r0 = rs[0]
        out.append({
            "arch": f"sm_{arch}", "kernel": kernel, "dtype": dtype, "form": "RA" if form == "reset_after" else "RB",
            "H": H, "path": path + ("*" if r0["auto"] else ""),
            "blocks": f"{r0['block_b']}/{r0['block_n']}/{r0['block_k']}x{r0['nchunk']}",
            "warps": r0["num_warps"], "stages": r0["num_stages"],
            "regs": max(regs) if regs else "?", "spill_B": max(spills) if spills else "?",
            "smem_KB": round(max(shared) / 1024, 1) if shared else "?",
            "occ": min((r.get("occupancy") or 0) for r in rs),
            "ctas": max(r["ctas"] for r in rs), "persistent": r0["persistent"],
            **({"w_l2_MB": round(r0["w_l2_bytes"] / 1e6, 1)} if "w_l2_bytes" in r0 else {}),
            "variants": len(rs), **({"error": errors[0][:80]} if errors else {}),
            **({"does_not_fit": problems[0][:80]} if problems else {}),
        })
    return out


def markdown(rows: list[dict]) -> str:
    """The report as markdown, one table per arch: a row per (kernel, dtype, formulation), a column
    per H, each cell ``registers / spill bytes / shared KB / CTAs`` of the path "auto" takes
    (worst over masks and hints; ``P`` = persistent, for the step: resident); the spill column
    counts every path compiled. Step rows name the variant auto takes and its W_hh L2 traffic."""
    out = []
    for arch in sorted({r["arch"] for r in rows}):
        rs = [r for r in rows if r["arch"] == arch]
        Hs = sorted({r["H"] for r in rs if r["kernel"] != "step"})
        out.append(f"**sm_{arch}** ({P.ARCH_MODELS[arch].name}); cell: registers / spill B / shared KB / CTAs "
                   f"(P: persistent), worst over {len({(r['mask'], r['hints']) for r in rs})} mask x hint variants")
        out.append("")
        out.append("| kernel | dtype | form | " + " | ".join(f"H={h}" for h in Hs) + " | spill B, all paths |")
        out.append("|---|---|---|" + "---|" * (len(Hs) + 1))
        keys = sorted({(r["kernel"], r["dtype"], r["formulation"]) for r in rs if r["kernel"] != "step"},
                      key=lambda k: (k[0] != "fwd", k[1] != "float32", k[2] != "reset_after"))
        for kernel, dtype, form in keys:
            cells = []
            group = [r for r in rs if (r["kernel"], r["dtype"], r["formulation"]) == (kernel, dtype, form)]
            for h in Hs:
                auto = [r for r in group if r["H"] == h and r["auto"]]
                if not auto:
                    cells.append("")
                    continue
                regs = max(r["registers"] or 0 for r in auto)
                spill = max(r["spill_bytes"] or 0 for r in auto)
                smem = max(r["shared_bytes"] or 0 for r in auto) / 1024
                ctas = max(r["ctas"] for r in auto)
                cells.append(f"{regs} / {spill} / {smem:.0f} / {ctas}{' P' if auto[0]['persistent'] else ''}")
            total = max((r["spill_bytes"] or 0) for r in group)
            out.append(f"| {kernel} | {dtype} | {'RA' if form == 'reset_after' else 'RB'} | " + " | ".join(cells)
                       + f" | {total} |")
        steps = [r for r in rs if r["kernel"] == "step"]
        for shape in sorted({r["shape"] for r in steps}, key=lambda sh: -sh[0]):
            for dtype in sorted({r["dtype"] for r in steps}):
                for form in ("reset_after", "reset_before"):
                    g = [r for r in steps if r["dtype"] == dtype and r["formulation"] == form and r["shape"] == shape]
                    auto = [r for r in g if r["auto"]]
                    if not g:
                        continue
                    if auto:
                        a = auto[0]
                        cell = (f"H={a['H']} {a['path']} {a['block_b']}x{a['block_n']}: {max(r['registers'] for r in auto)} / "
                                f"{max(r['spill_bytes'] for r in auto)} / {max(r['shared_bytes'] for r in auto) / 1024:.0f} / "
                                f"{a['ctas']}{' P' if a['resident'] else ''}; W from L2 {a['w_l2_bytes'] / 1e6:.1f} MB/call")
                    else:
                        cell = f"H={g[0]['H']}: no variant fits ({g[0].get('problem') or g[0].get('error')})"
                    out.append(f"| step (M={shape[0]}) | {dtype} | {'RA' if form == 'reset_after' else 'RB'} | {cell}"
                               + " |" * (len(Hs) - 1)
                               + f" | {max((r['spill_bytes'] or 0) for r in g)} |")
        out.append("")
    return "\n".join(out)
