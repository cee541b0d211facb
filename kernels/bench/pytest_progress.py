"""A pytest plugin for the GPU check: one JSON line per test as it finishes, so that a test part
killed at its deadline still leaves what it ran (``-p kernels.bench.pytest_progress``; the file is
``$GPU_CHECK_TESTS_JSONL``). Plain pytest, no other plugin needed."""

from __future__ import annotations

import json
import os
import time


def _write(record: dict) -> None:
    path = os.environ.get("GPU_CHECK_TESTS_JSONL")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def pytest_runtest_logreport(report) -> None:
    # one line per test: its call phase, or the setup phase where that failed or skipped it
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed") or \
            (report.when == "teardown" and report.outcome == "failed"):
        outcome = report.outcome if report.when != "teardown" else "error"
        if report.when == "setup" and report.outcome == "failed":
            outcome = "error"
        _write({"nodeid": report.nodeid, "when": report.when, "outcome": outcome,
                "seconds": round(getattr(report, "duration", 0.0), 3), "time": round(time.time(), 1),
                "message": str(report.longrepr)[-2000:] if report.outcome != "passed" else ""})
