"""``python -m kernels.bench``: the GRU kernels' benchmark and compile-only report.

Needs only torch, triton and numpy (no forecasting code, no polars).

- Timed (default): FusedGRU vs ``torch.nn.GRU`` (cuDNN on GPU, ATen on CPU) at the four issue-17
  shapes, forward and forward+backward, float32 (TF32 on both sides) and bfloat16, both
  formulations, the two contenders timed alternately, median and spread, the ratio; then the step
  (100,000 series, H=128) vs ``nn.GRUCell`` with index_select/index_copy_. ``--quick``: small
  shapes for a CPU look.
- ``--compile-only``: no GPU needed. Compiles every kernel variant the bench shapes launch for
  sm_80 and sm_90 (float32 with TF32 and IEEE dots, bfloat16) and reports registers, spills, shared
  memory, whether each fits its arch's per-block limits, CTAs per launch, persistence and the
  step's W_hh L2 traffic (``kernels.bench.compile_report``); exit 1 where a variant fails to
  compile, or one that ``auto`` would launch does not fit or (at the bench shapes, mask off, runtime
  hints) spills more than ``plan.SPILL_BUDGET``.

``--json PATH`` writes the header and every row. Examples::

    python -m kernels.bench --device cuda --json out.json
    python -m kernels.bench --quick
    python -m kernels.bench --compile-only --json compile.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import torch


def print_table(rows: list[dict], out=sys.stdout) -> None:
    """Print rows (dicts) grouped by their keys as aligned text tables."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for keys, group in groups.items():
        cells = [[str(r.get(k, "")) for k in keys] for r in group]
        widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
        print("  ".join(k.ljust(w) for k, w in zip(keys, widths)), file=out)
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths)), file=out)
        print(file=out)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _shapes(value: str) -> list[tuple[int, ...]]:
    try:
        shapes = [tuple(int(x) for x in s.split(",")) for s in value.split(";") if s.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 4 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"shapes must be 'B,T,I,H;B,T,I,H;...' of positive integers, got {value!r}")
    return shapes


def _formulations(names: list[str]) -> tuple[bool, ...]:
    table = {"reset_after": True, "reset_before": False}
    bad = [n for n in names if n not in table]
    if bad:
        raise SystemExit(f"--formulations takes reset_after and/or reset_before, got {bad}")
    return tuple(table[n] for n in names)


def header(device: str) -> dict:
    """Device, date, commit and versions: what every table must name."""
    from kernels.bench.compile_report import _commit
    from kernels.bench.timing import device_name

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return {
        "device": device_name(device), "date": datetime.date.today().isoformat(), "commit": _commit(),
        "torch": torch.__version__, "triton": triton_version,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes, for a fast look on a CPU")
    parser.add_argument("--json", help="write the header and every row to this JSON file")
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated; float32 runs TF32 (default: float32,bfloat16; with --compile-only "
                             "also float32-ieee, the IEEE dots of torch's default)")
    parser.add_argument("--formulations", default="reset_after,reset_before")
    parser.add_argument("--shapes", type=_shapes, default=None, help="'B,T,I,H;...' (default: the four issue-17 shapes)")
    parser.add_argument("--modes", default="forward,forward+backward")
    parser.add_argument("--backend", default="auto", choices=["auto", "triton", "torch"])
    parser.add_argument("--path", default="auto", help="FusedGRU path: auto, batch, persistent, stepwise")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-step", action="store_true", help="skip the step bench")
    parser.add_argument("--no-sequence", action="store_true", help="skip the sequence bench")
    parser.add_argument("--loaded-report", action="store_true",
                        help="also report registers/spills of every kernel loaded on the GPU during the run")
    cg = parser.add_argument_group("--compile-only (no GPU)")
    cg.add_argument("--compile-only", action="store_true")
    cg.add_argument("--archs", default="80,90")
    cg.add_argument("--kernels", default="fwd,bwd,step")
    cg.add_argument("--masks", default="off,on", help="HAS_MASK variants: off, on")
    cg.add_argument("--hints", default="runtime,none",
                    help="runtime: the variant the JIT builds at the bench shapes; none: no divisibility hints")
    cg.add_argument("--paths", default="persistent,stepwise,batch")
    cg.add_argument("--step-shapes", default=None,
                    help="'M,I,H;...' of the step (default: 100000,8,128 and 1000,8,512)")
    cg.add_argument("--workers", type=int, default=None)
    cg.add_argument("--full", action="store_true", help="print every compiled row, not the summary")
    cg.add_argument("--markdown", action="store_true", help="print the markdown tables (kernels/README.md) last")
    args = parser.parse_args(argv)

    if args.dtypes is None:
        from kernels.bench.compile_report import REPORT_DTYPES

        args.dtypes = ",".join(REPORT_DTYPES) if args.compile_only else "float32,bfloat16"
    dtypes = _csv(args.dtypes)
    formulations = _formulations(_csv(args.formulations))
    if args.compile_only:
        return _compile_only(args, dtypes, formulations)

    from kernels.bench import speed

    bad = [d for d in dtypes if d not in speed.DTYPES]
    if bad:
        parser.error(f"unknown dtype(s) {bad}; choose from {list(speed.DTYPES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible; use --device cpu (or --compile-only)")
    head = header(args.device)
    print("  ".join(f"{k}: {v}" for k, v in head.items()), flush=True)
    rows = speed.run(
        device=args.device, dtypes=dtypes, quick=args.quick, repeats=args.repeats, backend=args.backend,
        path=args.path, formulations=formulations, shapes=args.shapes, modes=tuple(_csv(args.modes)),
        step=not args.no_step, sequence=not args.no_sequence,
        progress=lambda s: print(f"  ... {s}", file=sys.stderr, flush=True),
    )
    print()
    print_table(rows)
    result = {"header": head, "rows": rows}
    if args.loaded_report or args.json:
        from kernels.gru import fused_recurrent

        result["loaded_kernels"] = list(fused_recurrent.LOADED.values()) if not args.device == "cpu" else []
        if args.loaded_report and result["loaded_kernels"]:
            print_table(result["loaded_kernels"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


def _compile_only(args, dtypes, formulations) -> int:
    from kernels.bench import compile_report as cr

    missing = [a for a in _csv(args.archs) if cr.ptxas_path(int(a)) is None]
    if missing:
        print(f"compile-only needs the ptxas binary Triton runs for sm_{missing[0]} (bundled with the triton "
              f"wheel); none found", file=sys.stderr)
        return 2
    bad = [d for d in dtypes if d not in cr.DTYPES]
    if bad:
        raise SystemExit(f"unknown dtype(s) {bad}; choose from {list(cr.DTYPES)}")
    masks = tuple({"off": False, "on": True}[m] for m in _csv(args.masks))
    head = cr.header()
    print("  ".join(f"{k}: {v}" for k, v in head.items() if k != "device_models"), flush=True)
    rows = cr.run(
        shapes=args.shapes or cr.SHAPES, dtypes=dtypes, formulations=formulations,
        kernels=tuple(_csv(args.kernels)), archs=tuple(int(a) for a in _csv(args.archs)), masks=masks,
        hints=tuple(_csv(args.hints)), paths=tuple(_csv(args.paths)), workers=args.workers,
        step_shapes=[tuple(int(v) for v in s.split(",")) for s in args.step_shapes.split(";")] if args.step_shapes
        else cr.STEP_SHAPES,
        progress=lambda i, n: (i == n or i % max(1, n // 20) == 0) and print(
            f"  compiled {i}/{n}", file=sys.stderr, flush=True),
    )
    summary = cr.summarize(rows)
    print_table(rows if args.full else summary)
    spills = [r for r in rows if r.get("spill_bytes")]
    errors = [r for r in rows if r.get("error")]
    misfits = [r for r in rows if r.get("problem") and not r.get("error")]
    auto_misfits = [r for r in misfits if r["auto"]]
    print(f"{len(rows)} variants: {len(spills)} spill, {len(errors)} failed to compile, {len(misfits)} do not fit "
          f"their arch's per-block limits ({len(auto_misfits)} of them where 'auto' would launch them) "
          f"(path* = the one 'auto' takes at that shape)")
    for r in auto_misfits:
        print(f"  does not fit: sm_{r['arch']} {r['kernel']} {r['dtype']} {r['formulation']} H={r['H']} {r['path']}: "
              f"{r['problem']}")
    from kernels.gru.plan import SPILL_BUDGET

    bench_shapes = {tuple(s) for s in cr.SHAPES} | {(M, I, H) for M, I, H in cr.STEP_SHAPES[:1]}
    over = [r for r in rows if r["auto"] and not r["mask"] and r["hints"] == "runtime" and tuple(r["shape"]) in
            bench_shapes and (r.get("spill_bytes") or 0) > SPILL_BUDGET[r["arch"]].get(r["dtype"], 0)]
    for r in over:
        print(f"  over the spill budget ({SPILL_BUDGET[r['arch']].get(r['dtype'], 0)} B): sm_{r['arch']} {r['kernel']} {r['dtype']} "
              f"{r['formulation']} H={r['H']} {r['path']} stage {r['stage']}: {r['spill_bytes']} B")
    if args.markdown:
        print()
        print(cr.markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": head, "summary": summary, "rows": rows}, f, indent=1, default=str)
    return 1 if errors or auto_misfits or over else 0
