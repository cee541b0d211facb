"""The stream's state file (``--state``): one writer, snapshots that cost what changed, a
checked load. The file format, the lock and the compaction are :mod:`forecaster.snapshot`'s.

A snapshot appends a delta (the series changed and the ids evicted since the last one) to the
log; the first snapshot of a stream, and one after the file was replaced, writes a base. When the
deltas outgrow the base, a background :class:`~forecaster.snapshot.Compactor` merges the log into
one base. Loading merges the base and its deltas, then checks everything against the stream's
layout before anything is replaced.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from forecaster.baseline import HISTORY_HARMONICS, widen_params
from forecaster.snapshot import (Compactor, LogInfo, LogReplacedError, SnapshotError, StateLock, append_delta,
                                 read_log, real_path, remove_stale, write_base)
from forecaster.streaming.records import MAX_ID_LENGTH, NO_TIME, TIME_MAX, id_problem, show
from forecaster.streaming.table import Layout

__all__ = ["StateFile", "merge_payloads", "check_base", "older_snapshot", "pack_ids", "unpack_ids",
           "STATE_FORMAT_VERSION", "COMPACT_MIN_BYTES"]

# 4: a log of segments (a base, then deltas) with the born / seen columns; 3: one payload without them
STATE_FORMAT_VERSION = 4
# Compact when the deltas exceed the base and at least this many bytes: below it a rewrite is cheap
# anyway and would run after every few snapshots of a small table.
COMPACT_MIN_BYTES = 16 << 20
_META = ("kind", "removed", "ids", "format_version", "fingerprint", "after", "log_id")


def pack_ids(ids: list[str]) -> torch.Tensor:
    """Ids as one uint8 tensor: their UTF-8 joined by newlines (which no id holds). A list of a
    million strings costs the weights-only unpickler seconds; one tensor costs nothing."""
    return torch.frombuffer(bytearray("\n".join(ids).encode("utf-8")), dtype=torch.uint8) if ids else \
        torch.zeros(0, dtype=torch.uint8)


def unpack_ids(packed) -> list[str]:
    """:func:`pack_ids` undone (a list of strings, format 3, is taken as it is)."""
    if isinstance(packed, list):
        if not all(isinstance(x, str) for x in packed):
            raise SnapshotError("is inconsistent (ids are not a list of strings)")
        return packed
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
        raise SnapshotError("is inconsistent (ids are not a list of strings)")
    if not packed.numel():
        return []
    try:
        return packed.numpy().tobytes().decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise SnapshotError("is inconsistent (ids are not UTF-8 text)") from None


def ids_ok(ids: list[str]) -> bool:
    """Whether every id passes the id rule (:func:`~forecaster.streaming.records.id_problem`),
    in a few C-level passes for the usual case of plain printable ids."""
    if not ids:
        return True
    if min(map(len, ids)) < 1 or max(map(len, ids)) > MAX_ID_LENGTH or any(map(str.isspace, ids)):
        return False
    return "".join(ids).isprintable() or not any(map(id_problem, ids))


def _plain(v, name: str, s: int, n: int, dim: int) -> None:
    """A row-aligned tensor of a payload as torch.save writes it: dense, contiguous, owning its
    bytes (a stride-0 tensor of a tiny storage would expand to gigabytes), ``n`` rows on ``dim``."""
    if not isinstance(v, torch.Tensor) or v.layout != torch.strided or not v.is_contiguous() \
            or v.untyped_storage().nbytes() < v.numel() * v.element_size() or v.dim() <= dim or v.shape[dim] != n:
        raise SnapshotError(f"is inconsistent (segment {s}: {name} is not a dense tensor of {n} rows)")


def merge_payloads(payloads: list[dict]) -> dict:
    """A base payload and the deltas after it -> one base payload: each id's latest row, ids
    removed after their last row left out, rows in ``born`` order (the order of first
    observation). The header (format version, fingerprint) is the base's; every delta must carry
    the same fingerprint. Ids packed (:func:`pack_ids`) in and out. The base's tensors are updated
    in place (the payloads are consumed): O(rows changed) beyond one pass over the base's ids."""
    base = payloads[0]
    keys = [k for k in base if k not in _META]
    # a stream that runs its window keeps no state rows: its "state" is (L, 0, H) in every segment
    rowless = isinstance(base.get("state"), torch.Tensor) and base["state"].dim() == 3 and base["state"].shape[1] == 0
    rows = [k for k in keys if not (k == "state" and rowless)]
    dim = {k: 1 if k == "state" else 0 for k in keys}
    all_ids = [unpack_ids(p["ids"]) for p in payloads]
    for s, p in enumerate(payloads):
        if s and p.get("fingerprint") != base.get("fingerprint"):
            raise SnapshotError(f"is inconsistent (segment {s} was written for another model than the base)")
        for k in rows:
            _plain(p.get(k), k, s, len(all_ids[s]), dim[k])
    if len(payloads) == 1 and not len(base.get("removed", [])):
        return base
    ids = all_ids[0]
    index = {sid: i for i, sid in enumerate(ids)}
    alive = np.ones(len(ids), dtype=bool)
    added: dict[str, tuple[int, int]] = {}  # ids not (or no longer) in the base -> (segment, position)
    for s, p in enumerate(payloads[1:], start=1):
        for sid in unpack_ids(p.get("removed", [])):
            i = index.get(sid)
            if i is not None:
                alive[i] = False
            added.pop(sid, None)
        into, take = [], []
        for pos, sid in enumerate(all_ids[s]):
            i = index.get(sid)
            if i is not None and alive[i]:
                into.append(i)
                take.append(pos)
            else:
                added[sid] = (s, pos)
        if into:
            into_t, take_t = torch.tensor(into, dtype=torch.int64), torch.tensor(take, dtype=torch.int64)
            for k in rows:
                base[k].index_copy_(dim[k], into_t, p[k].index_select(dim[k], take_t).to(base[k].dtype))
    out = {k: base[k] for k in rows}
    if not alive.all():
        keep = torch.from_numpy(np.flatnonzero(alive))
        out = {k: v.index_select(dim[k], keep) for k, v in out.items()}
        ids = [ids[i] for i in keep.tolist()]
    if added:
        seg = np.fromiter((v[0] for v in added.values()), dtype=np.int64, count=len(added))
        pos = np.fromiter((v[1] for v in added.values()), dtype=np.int64, count=len(added))
        new_ids = list(added)
        parts: dict[str, list] = {k: [out[k]] for k in rows}
        for s in np.unique(seg):
            sel = np.flatnonzero(seg == s)
            take = torch.from_numpy(pos[sel])
            for k in rows:
                parts[k].append(payloads[s][k].index_select(dim[k], take).to(out[k].dtype))
            ids += [new_ids[i] for i in sel]
        out = {k: torch.cat(v, dim=dim[k]) for k, v in parts.items()}
    if "born" in out and len(ids) > 1 and not bool((out["born"][1:] >= out["born"][:-1]).all()):
        order = torch.from_numpy(np.argsort(out["born"].numpy(), kind="stable"))
        out = {k: v.index_select(dim[k], order) for k, v in out.items()}
        ids = [ids[i] for i in order.tolist()]
    if rowless:
        out["state"] = base["state"]
    return {**{k: base[k] for k in ("format_version", "fingerprint") if k in base}, "kind": "base",
            "removed": pack_ids([]), "ids": pack_ids(ids), **out}


def _narrow_base(payload: dict, layout: Layout) -> int | None:
    """The layout's blend width where the payload's blends (a 3-d tensor) have another (an older
    layout: fewer weights), else None."""
    base, width = payload.get("base"), layout["base"][0][-1] if "base" in layout else None
    narrow = width is not None and isinstance(base, torch.Tensor) and base.ndim == 3 and base.shape[-1] != width
    return width if narrow else None


def older_snapshot(payload: dict, layout: Layout) -> bool:
    """Whether a (merged) payload was written before the baseline's drift (no first observations),
    its seasonal adjustment, its level or its history profile (blends narrower than the layout's)."""
    return "first_t" not in payload or _narrow_base(payload, layout) is not None


def _from_older(payload: dict, layout: Layout, n: int) -> dict:
    """A snapshot from before the baseline's drift (spec version 2 or 1), its seasonal adjustment
    (version 3), its level (version 4) or its history profile (version 5) (:func:`older_snapshot`):
    no first observations kept (each target's next observation becomes its anchor, unless the spec
    knows one) and blends without the drift, the adjustment weight, the level's alpha and q or the
    history profile, ``[w_s K, w_l K, (w_d, (w_a, (alpha, q,))) mu]`` or one weight for every step
    ``[w_s, w_l, (w_d,) mu]`` (brought to ``[w_s K, w_l K, w_d, w_a, alpha, q, 0, 0 ..., mu]``:
    the same forecast)."""
    add = {k: torch.from_numpy(np.full((n, *shape), fill, dtype=dt)) for k, (shape, dt, fill) in layout.items()
           if k in ("first_y", "first_t") and k not in payload}
    width = _narrow_base(payload, layout)
    if width is not None and payload["base"].is_floating_point():
        try:
            K = (width - 6 - 2 * HISTORY_HARMONICS) // 2
            add["base"] = torch.from_numpy(widen_params(payload["base"].numpy(), K).astype(np.float32))
        except ValueError:
            pass  # not a blend of this horizon: the shape check below refuses it
    return {**payload, **add} if add else payload


def check_base(payload: dict, layout: Layout, state_shape: tuple[int, int], carries: bool) -> tuple:
    """A merged base checked against the stream's layout: ``(ids, state (L, n, H), tables name ->
    numpy (n, ...))``, or :class:`SnapshotError` saying what does not fit (the caller adds the
    file's name). Format-3 payloads get ``born`` (their row order) and ``seen`` (0)."""
    ids = unpack_ids(payload["ids"])
    n = len(ids)
    if len(set(ids)) != n or not ids_ok(ids):
        raise SnapshotError("is inconsistent (an id is empty, not printable, longer than MAX_ID_LENGTH or repeated)")
    if payload.get("format_version") == 3:  # before born / seen and the future covariates kept ahead
        payload = {**payload, "born": torch.arange(n, dtype=torch.int64), "seen": torch.zeros(n, dtype=torch.int64),
                   **{k: torch.from_numpy(np.full((n, *shape), fill, dtype=dt)) for k, (shape, dt, fill) in layout.items()
                      if k.startswith("ahead_") and k not in payload}}
    payload = _from_older(payload, layout, n)
    arrays = {k: payload[k] for k in ("state", *layout)}
    floats = {"state", *(k for k, (_, dt, _) in layout.items() if np.dtype(dt).kind == "f")}
    wrong = [k for k, v in arrays.items() if not isinstance(v, torch.Tensor)
             or v.is_floating_point() != (k in floats) or v.is_complex()]
    if wrong:
        raise SnapshotError(f"is inconsistent ({wrong} are not tensors of the right kind)")
    L, H = state_shape
    shapes = {"state": (L, n if carries else 0, H), **{k: (n, *shape) for k, (shape, _, _) in layout.items()}}
    wrong = [f"{k} {tuple(arrays[k].shape)} (expected {shapes[k]})" for k in shapes
             if tuple(arrays[k].shape) != shapes[k]]
    if wrong:
        raise SnapshotError(f"is inconsistent (array shapes do not match its {n} series: {', '.join(wrong)})")
    state = arrays["state"].float()
    tables = {k: arrays[k].numpy().astype(dt, copy=False) for k, (_, dt, _) in layout.items()}
    if not (torch.isfinite(state).all() and all(np.isfinite(v).all() for k, v in tables.items() if k in floats)):
        raise SnapshotError("holds non-finite values")
    n_obs, n_steps, last = tables["n_obs"], tables["n_steps"], tables["last"]
    counters = (n_steps, tables["seen"], tables["born"])
    if not ((tables["params"][:, 1] > 0).all() and (n_obs >= 0).all() and (n_obs <= n_steps).all()
            and all(((c >= 0) & (c <= _COUNT_MAX)).all() for c in counters)
            and ((last == NO_TIME) | (np.abs(last) <= TIME_MAX)).all()
            and ((tables["first_t"] == NO_TIME) | (np.abs(tables["first_t"]) <= TIME_MAX)).all()):
        raise SnapshotError("is inconsistent (a scale <= 0, or counts or times out of range)")
    return ids, state, tables


# counters (steps, the observe clock, the order of first observation) and times far from int64's
# ends: a later step or forecast time must not overflow
_COUNT_MAX = 1 << 62


def _packed(payload: dict) -> dict:
    return {**payload, "ids": pack_ids(payload["ids"]), "removed": pack_ids(payload["removed"])}


class StateFile:
    """One state file as a stream writes it: its lock (taken by :meth:`acquire` or the first
    :meth:`save`, kept until :meth:`close`), where its log stands and its compaction."""

    def __init__(self, path: str | os.PathLike):
        self.path = real_path(path)  # through a symbolic link: the file it names (which stays a link's target)
        self.lock: StateLock | None = None
        self.info: LogInfo | None = None
        self.compactor: Compactor | None = None
        self.notes: list[str] = []  # what a load or a compaction found worth reporting

    def same(self, path: str | os.PathLike) -> bool:
        return real_path(path) == self.path

    def acquire(self) -> None:
        """Take the lock (:class:`~forecaster.snapshot.StateLockedError` naming the holder's pid)."""
        if self.lock is None or not self.lock.held:
            self.lock = StateLock(self.path)
            gone = remove_stale(self.path)  # temporaries of a writer or compaction killed before us
            if gone:
                self.notes.append(f"removed {len(gone)} temporary file(s) a killed writer left beside {self.path}")

    def read(self) -> tuple[list[dict], LogInfo]:
        payloads, info = read_log(self.path)
        self.notes.extend(info.notes)
        return payloads, info

    def adopt(self, info: LogInfo) -> None:
        """The stream now holds exactly what the file holds: the next snapshot may append to it."""
        self.info = info if info.appendable else None

    def rebase(self) -> None:
        """The next :meth:`save` writes every series (a base): the stream's model changed, and the
        deltas of a log all carry its base's fingerprint."""
        self.info = None

    def save(self, header: dict, table) -> dict:
        """Snapshot ``table`` (a :class:`~forecaster.streaming.table.SeriesTable`): a delta appended
        to the log, or a base; returns ``{"kind", "bytes", "series", "seconds"}``. On a disk fault
        :class:`SnapshotError` and nothing changed: the last good snapshot is as it was, and the
        table keeps its changes for the next try."""
        t0 = time.perf_counter()
        self.acquire()
        self._finish_compaction()
        kind, series = "delta", table.changes()
        before = self.info.size if self.info is not None else 0
        if self.info is not None:
            try:
                self.info = append_delta(self.info, _packed({**table.delta_payload(), "fingerprint": header["fingerprint"]}),
                                         self.lock)
            except LogReplacedError as e:
                self.notes.append(f"{e}; writing every series anew")
                self.info = None
        if self.info is None:
            if self.compactor is not None:  # it merged the file being replaced: drop it before writing
                self.compactor.cancel()
                self.compactor = None
            kind, series, before = "base", len(table), 0
            self.info = write_base(self.path, {**header, **_packed(table.base_payload())}, self.lock)
        table.clean()
        written = self.info.size - before
        if (self.compactor is None and self.info.delta_bytes > max(self.info.base_bytes, COMPACT_MIN_BYTES)):
            self.compactor = Compactor(self.info, self.lock, merge_payloads)
        return {"kind": kind, "bytes": written, "series": series, "seconds": time.perf_counter() - t0}

    def _finish_compaction(self) -> None:
        c = self.compactor
        if c is None or not c.done:
            return
        self.compactor = None
        try:
            self.info = c.finish(self.info)
        except SnapshotError as e:  # the log is untouched: go on appending, compact again later
            self.notes.append(str(e))

    def compact_now(self) -> None:
        """Wait for a running compaction and put it in place (for tests and the bench)."""
        if self.compactor is not None:
            self.compactor.wait()
            self._finish_compaction()

    def close(self) -> None:
        """Stop a compaction (its temporary file is removed) and release the lock."""
        if self.compactor is not None:
            self.compactor.cancel()
            self.compactor = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
