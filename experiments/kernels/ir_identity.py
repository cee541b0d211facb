"""Is a kernel refactor a no-op for the compiler? Triton IR signatures of every variant the
compile-only report enumerates, for a tree of the project (a checkout or ``git archive`` of a
commit), cheap enough for a busy CPU-only machine (no LLVM, no ptxas).

For each variant (the plans of ``plan.plan_sequence`` at the report's shapes, each path and
stepwise stage, the persistent probes with and without the tile loop, every step candidate with
and without the fused input; masks on/off, hints runtime/none, the archs and dtypes asked for)
the TTIR is built as ``triton.compile`` builds it (``ASTSource.make_ir``, then the backend's
``ttir`` stage: inlining, canonicalisation, CSE, unrolling) and hashed with locations removed
and SSA names renumbered in order of appearance (Triton names values after Python variables);
the hoisted constants keep their order (``--sort-constants`` sorts them by value: looser, and not
enough: their order alone moved ptxas' registers of one variant by 6). The TTIR is the input of
every later stage, so equal hashes mean the same cubin: registers, spills and shared memory as
before. Where they differ, ``--compile KEYS_FILE`` compiles the named variants with the
report's own ``compile_report.compile_job`` (Triton's ptxas and flags).

    python experiments/kernels/ir_identity.py TREE OUT.json [--archs 90,80] [--dtypes ...]
        [--kernels fwd,bwd,step] [--hints runtime,none] [--sort-constants] [--compile KEYS_FILE]

Keys: ``arch|dtype|RA/RB|m<mask>|hints|kernel|H|B (M)|path|...``. Used for issue 25
(``COMPILE_LOG.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile


def jobs(cr, P, archs, labels, hints) -> dict:
    """key -> compile_report.Job of every variant the report would compile (occupancy 1)."""
    out = {}
    try:
        from kernels.gru.fused_step import step_constexprs
    except ImportError:  # before the step kernel had its own module
        from kernels.gru.fused_recurrent import step_constexprs
    for arch in archs:
        dm = P.ARCH_MODELS[arch]
        for label in labels:
            dtype, prec = cr.DTYPES[label]
            for ra in (True, False):
                form = "RA" if ra else "RB"
                for mask in (False, True):
                    for hint in hints:
                        for (B, T, I, H) in cr.SHAPES:
                            for kernel in ("fwd", "bwd"):
                                for path in ("persistent", "stepwise", "batch"):
                                    try:
                                        plan = P.plan_sequence(kernel, B, H, dtype, path, dm=dm, dot_prec=prec)
                                    except ValueError:
                                        continue
                                    plans = [plan]
                                    if path == "persistent":
                                        plans += [P.SeqPlan(kernel, "persistent", H, B, dtype, plan.blocks, 1, 1, 1, t)
                                                  for t in (False, True)]
                                    for pl in plans:
                                        for stage, job in cr._seq_jobs(pl, ra, mask, prec, arch, hint):
                                            key = (f"{arch}|{label}|{form}|m{int(mask)}|{hint}|{kernel}|H{H}|B{B}|"
                                                   f"{pl.path}|tl{int(pl.tile_loop)}|s{stage}|bb{pl.blocks.block_b}")
                                            out[key] = job
                        if mask:
                            continue
                        for (M, I, H) in cr.STEP_SHAPES:
                            for sp in P.step_candidates(M, H, I, dtype, prec, "auto", dm):
                                for fi in {sp.fuse_input, False}:
                                    s2 = P.replace(sp, fuse_input=fi)
                                    ce = step_constexprs(s2, ra, False, prec, False)
                                    out[f"{arch}|{label}|{form}|m0|{hint}|step|H{H}|M{M}|{s2.path}|bb{s2.block_b}|"
                                        f"bn{s2.block_n}|fi{int(fi)}|w{s2.num_warps}"] = cr.Job(
                                        "step", arch, cr._wname(s2.dtype), tuple(sorted(ce.items())), s2.num_warps,
                                        s2.num_stages, (("M", s2.M), ("H", s2.H), ("I", s2.I)), hint, gi_fused=fi)
    return out


def _drop_locs(text: str) -> str:
    """Remove every ``loc(...)`` (balanced parentheses; quoted strings skipped)."""
    out, i, n = [], 0, len(text)
    while i < n:
        j = text.find("loc(", i)
        if j < 0:
            out.append(text[i:])
            break
        if j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_#"):
            out.append(text[i:j + 4])
            i = j + 4
            continue
        out.append(text[i:j].rstrip(" "))
        k, depth, quoted = j + 4, 1, False
        while k < n and depth:
            c = text[k]
            if c == '"':
                quoted = not quoted
            elif not quoted and c in "()":
                depth += 1 if c == "(" else -1
            k += 1
        i = k
    return "".join(out)


_NAME = re.compile(r"%[A-Za-z_][A-Za-z_0-9]*|%\d+(?:#\d+)?")


def normalise(ttir: str, sort_constants: bool = False) -> str:
    """The TTIR without locations, SSA names renumbered in order of appearance; with
    ``sort_constants`` also the hoisted constants sorted by value (too loose: the order of the
    constants alone changed ptxas' registers of a variant by 6, COMPILE_LOG.md)."""
    text = _drop_locs("\n".join(line for line in ttir.splitlines() if not line.startswith("#loc")))
    if not sort_constants:
        names0: dict[str, str] = {}
        return _NAME.sub(lambda m: names0.setdefault(m.group(0), f"%v{len(names0)}"), text)
    consts, body = {}, []
    for line in text.splitlines():
        m = re.match(r"\s*(%[A-Za-z_0-9]+) = arith\.constant (.*)$", line)
        if m:
            consts[m.group(1)] = m.group(2)
        else:
            body.append(line)
    order = sorted(set(consts.values()))
    cname = {name: f"%const{order.index(v)}" for name, v in consts.items()}
    text = "\n".join(f"  %const{i} = arith.constant {v}" for i, v in enumerate(order)) + "\n" + "\n".join(body)
    text = _NAME.sub(lambda m: cname.get(m.group(0), m.group(0)), text)
    names: dict[str, str] = {}
    return _NAME.sub(lambda m: m.group(0) if m.group(0).startswith("%const")
                     else names.setdefault(m.group(0), f"%v{len(names)}"), text)


def ttir_hash(cr, job, sort_constants: bool = False) -> str:
    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend

    fn, sig, ce, attrs = cr._signature(job)
    target = GPUTarget("cuda", job.arch, 32)
    backend = make_backend(target)
    src = ASTSource(fn=fn, signature=sig, constexprs=ce, attrs=attrs)
    options = backend.parse_options({"num_warps": job.num_warps, "num_stages": job.num_stages})
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    module = src.make_ir(target, options, backend.get_codegen_implementation(options), backend.get_module_map(),
                         context)
    stages: dict = {}
    backend.add_stages(stages, options, src.language)
    ttir = stages["ttir"](module, {"hash": "x", "target": target, **options.__dict__})
    return hashlib.sha256(normalise(str(ttir), sort_constants).encode()).hexdigest()[:16]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree")
    ap.add_argument("out")
    ap.add_argument("--archs", default="90,80")
    ap.add_argument("--dtypes", default="float32-ieee,bfloat16,float32")
    ap.add_argument("--kernels", default="fwd,bwd,step")
    ap.add_argument("--hints", default="runtime,none")
    ap.add_argument("--sort-constants", action="store_true",
                    help="hash with the hoisted constants sorted by value (looser than ptxas)")
    ap.add_argument("--compile", metavar="KEYS_FILE", help="compile these keys for real (registers, spills, shared)")
    a = ap.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="ir-identity-"))  # ptxas must really run
    tree = os.path.abspath(a.tree)
    sys.path.insert(0, tree)
    from kernels.bench import compile_report as cr
    from kernels.gru import plan as P

    assert os.path.abspath(cr.__file__).startswith(tree), cr.__file__
    todo = jobs(cr, P, [int(x) for x in a.archs.split(",")], a.dtypes.split(","), a.hints.split(","))
    if a.compile:
        keys = [k.strip() for k in open(a.compile) if k.strip()]
        res = {}
        for k in keys:
            r = cr.compile_job(todo[k])
            res[k] = {f: r.get(f) for f in ("registers", "spill_bytes", "spill_load_bytes", "stack_bytes",
                                             "shared_bytes", "error")}
            print(k, res[k], flush=True)
    else:
        by_job: dict = {}
        for k, j in todo.items():
            if j.kernel in a.kernels.split(","):
                by_job.setdefault(j, []).append(k)
        res = {}
        for i, (j, ks) in enumerate(by_job.items()):
            try:
                h = {"ttir": ttir_hash(cr, j, a.sort_constants)}
            except Exception as e:  # a variant that does not build is a row saying so
                h = {"error": repr(e)[:300]}
            for k in ks:
                res[k] = h
            if i % 50 == 0:
                print(f"{i}/{len(by_job)}", file=sys.stderr, flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=0, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
