"""Snapshot files of the streaming state: written atomically, read safely.

A snapshot is a dict of tensors and plain data (str, int, float, bool, None, lists and dicts of
them), serialised with ``torch.save`` and read back with ``torch.load(weights_only=True)``, so a
crafted file cannot run code. The file is ``MAGIC``, the SHA-256 of the payload (hex, one line),
then the payload: a flipped bit or a truncated file is refused, never loaded.

Writing goes to a temporary file in the same folder, flushed to disk, then renamed over the target
(and the folder synced), so a crash mid-write leaves the previous snapshot whole; temporary files
that a killed writer left behind are removed by the next write.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["write_snapshot", "read_snapshot", "SnapshotError", "MAGIC"]

MAGIC = b"gru-forecaster-snapshot\n"


class SnapshotError(ValueError):
    """A snapshot file that cannot be read (missing, damaged, foreign); the message is one line."""


def _tmp_prefix(path: Path) -> str:
    return path.name + "."


def write_snapshot(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` (tensors and plain data only) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest().encode() + b"\n"
    for stale in path.parent.glob(_tmp_prefix(path) + "*.tmp"):  # left by a writer killed mid-save
        try:
            stale.unlink()
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(digest)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_snapshot(path: str | os.PathLike) -> dict:
    """Read a snapshot written by :func:`write_snapshot`; :class:`SnapshotError` (one line) for a
    missing, truncated, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"state file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        if raw.startswith(b"PK"):  # a plain torch.save zip: the snapshots of gru-forecaster before 2026-11-27
            raise SnapshotError(f"state file {str(path)!r} is a snapshot of an older gru-forecaster (no checksum); "
                                "delete it to start the series from zero (or restore them from their history)")
        raise SnapshotError(f"state file {str(path)!r} is not a readable snapshot (not written by save_state)")
    rest = raw[len(MAGIC):]
    nl = rest.find(b"\n")
    digest, data = rest[:nl], rest[nl + 1:]
    if nl != 64 or hashlib.sha256(data).hexdigest().encode() != digest:
        raise SnapshotError(f"state file {str(path)!r} is damaged (checksum mismatch): restore a backup or delete it "
                            "to start the series from zero")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything the unpickler refuses is a foreign file
        raise SnapshotError(f"state file {str(path)!r} is not a readable snapshot: {type(e).__name__}") from None
    if not isinstance(payload, dict):
        raise SnapshotError(f"state file {str(path)!r} is not a readable snapshot (not a dict)")
    return payload
