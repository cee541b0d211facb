"""The series table: one row per series (its id, recurrent state and per-series columns), grown
by doubling, with the bookkeeping snapshots and eviction need.

Rows are physical slots: eviction moves the last row into the freed one (O(1)), so a series' row
may change; its *order* is that of its first observation (the ``born`` column), which
:meth:`SeriesTable.ordered` gives and snapshots keep. ``seen`` is the number of the last
``observe`` call that touched the row: eviction removes the least recently seen. ``dirty`` marks
rows changed since the last snapshot, ``removed`` the ids evicted since then: a delta snapshot
holds just those.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SeriesTable", "Layout"]

Layout = dict[str, tuple[tuple, type, object]]  # name -> (shape after the row axis, dtype, initial value)


class SeriesTable:
    """Rows of per-series arrays plus an optional recurrent state tensor.

    Args:
        layout: the per-series columns (``born`` and ``seen`` are added).
        state_shape: ``(L, H)`` of each series' recurrent state.
        carries: whether the state is kept (False: the state tensor has no rows).
        device: where the state tensor lives.
        capacity: initial rows.

    Attributes:
        ids: id -> row. id_list: row -> id (rows ``[0, len)`` are in use).
        state: float32 (L, capacity, H) (``(L, 0, H)`` without a carried state).
        t: name -> numpy array (capacity, *shape).
    """

    def __init__(self, layout: Layout, state_shape: tuple[int, int], carries: bool, device: torch.device,
                 capacity: int = 64):
        self.layout: Layout = {**layout, "born": ((), np.int64, 0), "seen": ((), np.int64, 0)}
        self.carries = carries
        self.L, self.H = state_shape
        self.device = device
        self.clock = 0  # the number of the current observe call (``seen``)
        self.next_born = 0
        self.reset(max(1, int(capacity)))

    def reset(self, cap: int) -> None:
        """Empty the table (capacity ``cap``)."""
        self.ids: dict[str, int] = {}
        self.id_list: list[str] = []
        self.state = torch.zeros(self.L, cap if self.carries else 0, self.H, device=self.device)
        self.t = {k: np.full((cap, *shape), fill, dtype=dt) for k, (shape, dt, fill) in self.layout.items()}
        self.dirty = np.zeros(cap, dtype=bool)
        self.removed: set[str] = set()

    def __len__(self) -> int:
        return len(self.id_list)

    def bytes_per_row(self) -> int:
        """Bytes one series takes: its recurrent state and its columns."""
        return self.carries * self.L * self.H * 4 + sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                                         for shape, dt, _ in self.layout.values())

    def grow(self, need: int) -> None:
        cap = len(self.dirty)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        if self.carries:
            state = torch.zeros(self.L, new, self.H, device=self.device)
            state[:, :cap] = self.state
            self.state = state
        for k, (shape, dt, fill) in self.layout.items():
            self.t[k] = np.concatenate([self.t[k], np.full((new - cap, *shape), fill, dtype=dt)])
        self.dirty = np.concatenate([self.dirty, np.zeros(new - cap, dtype=bool)])

    def add(self, sid: str) -> int:
        """A new row for ``sid`` (its columns at their initial values); returns it."""
        row = len(self.id_list)
        self.grow(row + 1)
        self.ids[sid] = row
        self.id_list.append(sid)
        self.t["born"][row] = self.next_born
        self.t["seen"][row] = self.clock
        self.next_born += 1
        self.dirty[row] = True
        return row

    def touch(self, rows: np.ndarray) -> None:
        """Rows changed by the current observe call: seen now, and in the next delta."""
        self.t["seen"][rows] = self.clock
        self.dirty[rows] = True

    def ordered(self) -> np.ndarray:
        """Rows in use in the order of their series' first observation (int64 (len,))."""
        return np.argsort(self.t["born"][:len(self)], kind="stable")

    # ---- transactions ----

    def save_rows(self, rows: np.ndarray) -> tuple:
        """A copy of rows ``rows`` (state and every column), for :meth:`restore_rows`."""
        rows_t = torch.from_numpy(rows).to(self.device)
        state = self.state.index_select(1, rows_t) if self.carries else None
        return rows, rows_t, state, {k: v[rows].copy() for k, v in self.t.items()}

    def restore_rows(self, saved: tuple, which: np.ndarray | None = None) -> None:
        """Put rows saved by :meth:`save_rows` back (``which``: positions among them; None = all)."""
        rows, rows_t, state, tables = saved
        if which is not None:
            w = torch.from_numpy(np.asarray(which, dtype=np.int64)).to(self.device)
            rows, rows_t = rows[which], rows_t[w]
            state = None if state is None else state[:, w]
            tables = {k: v[which] for k, v in tables.items()}
        if state is not None:
            self.state[:, rows_t] = state
        for k, v in tables.items():
            self.t[k][rows] = v

    # ---- eviction ----

    def evict(self, keep: int) -> list[str]:
        """Remove the least recently seen series until at most ``keep`` remain; returns their ids,
        least recently seen first. O(evicted) moves plus one partial sort of ``seen``."""
        n = len(self)
        k = n - keep
        if k <= 0:
            return []
        seen, born = self.t["seen"][:n], self.t["born"][:n]
        if k < n:
            # the k least recently seen; among those seen in the same call as the k-th, the oldest
            # (ties by age, so a stream restored from a snapshot evicts exactly what the live one would)
            cut = seen[np.argpartition(seen, k - 1)[k - 1]]
            below = np.flatnonzero(seen < cut)
            tied = np.flatnonzero(seen == cut)
            need = k - len(below)
            tied = tied[np.argpartition(born[tied], need - 1)[:need]] if need < len(tied) else tied
            victims = np.concatenate([below, tied])
        else:
            victims = np.arange(n)
        victims = victims[np.lexsort((born[victims], seen[victims]))]  # least recently seen first, ties by age
        gone = [self.id_list[r] for r in victims]
        for r in np.sort(victims)[::-1]:  # from the highest row: the last row is never a pending victim
            self._remove_row(int(r))
        self.removed.update(gone)
        return gone

    def drop(self, ids: list[str]) -> None:
        """Remove rows that were added in this call and never stepped (their records were all
        rejected): they are not evictions and were never in a snapshot."""
        for r in sorted((self.ids[sid] for sid in ids if sid in self.ids), reverse=True):
            self._remove_row(int(r))

    def _remove_row(self, row: int) -> None:
        last = len(self.id_list) - 1
        sid = self.id_list[row]
        del self.ids[sid]
        if row != last:
            moved = self.id_list[last]
            if self.carries:
                self.state[:, row] = self.state[:, last]
            for k in self.t:
                self.t[k][row] = self.t[k][last]
            self.dirty[row] = self.dirty[last]
            self.id_list[row] = moved
            self.ids[moved] = row
        self.id_list.pop()
        if self.carries:
            self.state[:, last] = 0.0
        for k, (_, _, fill) in self.layout.items():
            self.t[k][last] = fill
        self.dirty[last] = False

    # ---- snapshot payloads ----

    def rows_payload(self, rows: np.ndarray) -> dict:
        """``ids``, ``state`` (L, M, H) and every column (M, ...) of ``rows``, as tensors."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        if n == len(self) and (n == 0 or (rows[0] == 0 and (np.diff(rows) == 1).all())):  # every row, in order:
            # numpy slices serialise as their own rows; a torch slice would carry its whole storage
            state = (self.state if self.state.shape[1] == n else self.state[:, :n].clone()) if self.carries \
                else self.state
            return {"ids": list(self.id_list), "state": state.cpu(),
                    **{k: torch.from_numpy(v[:n]) for k, v in self.t.items()}}
        rows_t = torch.from_numpy(rows).to(self.device)
        state = self.state.index_select(1, rows_t).cpu() if self.carries else self.state.cpu()
        return {"ids": [self.id_list[r] for r in rows], "state": state,
                **{k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in self.t.items()}}

    def base_payload(self) -> dict:
        """Every series, in :meth:`ordered` order."""
        return {"kind": "base", "removed": [], **self.rows_payload(self.ordered())}

    def delta_payload(self) -> dict:
        """The series changed and the ids removed since :meth:`clean`."""
        rows = np.flatnonzero(self.dirty[:len(self)])
        return {"kind": "delta", "removed": sorted(self.removed - {self.id_list[r] for r in rows}),
                **self.rows_payload(rows)}

    def changes(self) -> int:
        """Series changed or removed since :meth:`clean`."""
        return int(self.dirty[:len(self)].sum()) + len(self.removed)

    def clean(self) -> None:
        """Everything is in the snapshot now."""
        self.dirty[:] = False
        self.removed.clear()

    def install(self, ids: list[str], state: torch.Tensor, tables: dict[str, np.ndarray]) -> None:
        """Replace the contents by checked arrays (a snapshot's): ``state`` (L, n, H), ``tables``
        name -> (n, ...). The clocks continue after the highest ``seen`` / ``born``."""
        n = len(ids)
        self.reset(1)
        if n:  # the snapshot's arrays become the table's (capacity n; the next new series grows it)
            if self.carries:
                self.state = state.to(self.device).contiguous()
            for k in self.layout:
                self.t[k] = np.ascontiguousarray(tables[k])
            self.dirty = np.zeros(n, dtype=bool)
        self.ids = {sid: i for i, sid in enumerate(ids)}
        self.id_list = list(ids)
        self.clock = int(self.t["seen"][:n].max(initial=0))
        self.next_born = int(self.t["born"][:n].max(initial=-1)) + 1
