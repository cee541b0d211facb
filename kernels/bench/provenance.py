"""Which commit a result belongs to, also where the tree was copied without its ``.git``.

The GPU machine gets a copy of the working tree and no ``.git`` (the device tool copies tracked and
untracked-not-ignored files, and ignored ones only when ``carry`` names them), so ``git rev-parse``
cannot answer there. In order:

1. ``GPU_CHECK_COMMIT`` in the environment, taken as it is;
2. ``git`` where the tree is a checkout (``+dirty`` when tracked files differ from HEAD);
3. the stamp file ``.gpu_check_commit`` at the repository root, written here just before the copy
   by ``python -m kernels.bench.provenance stamp`` (``scripts/gpu_check.sh stamp``): the commit and
   the git blob hash of every file the check runs; the copy's files are hashed again and any that
   differ are counted (``+N modified``), so a stale stamp cannot pass for the tree it describes.
   The file is gitignored: carry it (``carry=[".gpu_check_commit"]``).
4. ``unknown``.

Needs only the standard library: ``python3 kernels/bench/provenance.py stamp`` works with a Python
that has no torch (``-m kernels.bench.provenance`` imports the ``kernels`` package, which does).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAMP = ".gpu_check_commit"
ENV = "GPU_CHECK_COMMIT"
#: the files whose content the check's numbers depend on
WATCHED = ("kernels/", "scripts/", "tests/conftest.py", "tests/kernels/", "pyproject.toml")


def blob_hash(path: str) -> str:
    """Git's blob id of a file (``git hash-object``), computed without git."""
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git(*args: str, root: str = ROOT) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=root).stdout


def _is_checkout(root: str) -> bool:
    try:
        return _git("rev-parse", "--is-inside-work-tree", root=root).strip() == "true" and \
            os.path.exists(os.path.join(root, ".git"))
    except (OSError, subprocess.CalledProcessError):
        return False


def stamp(root: str = ROOT) -> dict:
    """Write ``.gpu_check_commit`` for the tree at ``root`` (a git checkout) and return it."""
    head = _git("rev-parse", "HEAD", root=root).strip()
    dirty = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no", root=root).splitlines()]
    files = [f for f in _git("ls-files", "-z", root=root).split("\0") if f and f.startswith(WATCHED)]
    blobs = {f: blob_hash(os.path.join(root, f)) for f in files if os.path.isfile(os.path.join(root, f))}
    data = {"commit": head, "short": head[:7], "dirty": dirty,
            "stamped": datetime.datetime.now().isoformat(timespec="seconds"), "blobs": blobs}
    with open(os.path.join(root, STAMP), "w") as f:
        json.dump(data, f, indent=0)
    return data


def describe(root: str = ROOT) -> dict:
    """{"commit": str, "source": where it came from, "modified": files that differ, or None}."""
    value = os.environ.get(ENV, "").strip()
    if value:
        return {"commit": value, "source": f"${ENV}", "modified": None}
    if _is_checkout(root):
        head = _git("rev-parse", "--short", "HEAD", root=root).strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no", root=root).strip()
        return {"commit": head + ("+dirty" if dirty else ""), "source": "git", "modified": None}
    path = os.path.join(root, STAMP)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {"commit": "unknown", "source": f"no ${ENV}, no .git, no {STAMP} (run `scripts/gpu_check.sh "
                f"stamp` before copying the tree and carry {STAMP})", "modified": None}
    modified = sorted(f for f, h in data.get("blobs", {}).items()
                      if not os.path.isfile(os.path.join(root, f)) or blob_hash(os.path.join(root, f)) != h)
    commit = data.get("short", data.get("commit", "unknown")[:7])
    if data.get("dirty"):
        commit += "+dirty"
    if modified:
        commit += f"+{len(modified)} modified"
    return {"commit": commit, "source": f"{STAMP} of {data.get('stamped', '?')}", "modified": modified}


def commit(root: str = ROOT) -> str:
    """The short commit (see the module doc), e.g. ``81ce97a``, ``81ce97a+dirty`` or ``unknown``."""
    return describe(root)["commit"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["stamp"]:
        data = stamp()
        print(f"wrote {STAMP}: {data['short']}{' (dirty: ' + ', '.join(data['dirty']) + ')' if data['dirty'] else ''}, "
              f"{len(data['blobs'])} files; carry it to the GPU machine: carry=[\"{STAMP}\"]")
        return 0
    print(json.dumps(describe(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
