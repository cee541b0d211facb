"""The stream's snapshots: ``save_state`` / ``load_state`` / ``lock_state`` / ``close`` of
:class:`~forecaster.streaming.StreamingForecaster`, with the fingerprint that ties a state file to
the model that wrote it (its weights digest, layers, width, targets, frequency, history strategy
and kept look-back). The file format itself is :mod:`.statefile`."""

from __future__ import annotations

import os

import numpy as np

from forecaster.snapshot import SnapshotError
from forecaster.streaming.records import NO_TIME, show
from forecaster.streaming.statefile import STATE_FORMAT_VERSION, StateFile, check_base, merge_payloads, older_snapshot

__all__ = ["StatePersistence"]


class StatePersistence:
    """Mixin of :class:`~forecaster.streaming.StreamingForecaster`: its state file. Uses the stream's
    ``table`` (:class:`~forecaster.streaming.table.SeriesTable`), ``net``, ``spec``, ``windowed``,
    ``history``, ``max_series`` and weights digest; holds the open :class:`.statefile.StateFile`
    (and its lock) in ``_file``."""

    _file: StateFile | None = None

    def _fingerprint(self) -> dict:
        fp = {"num_layers": self.num_layers, "hidden_size": self.hidden_size, "target_cols": self.target_cols,
              "freq": str(self.spec.freq), "time_kind": self.spec.time_kind, "weights": self._digest}
        if self.windowed and self.net.carries_state:  # its snapshot holds windows, not states
            fp["history"] = "window"
        if self._swap_ring:  # its snapshot also holds the look-back of every input (swappable=True)
            fp["look_back"] = "inputs"
        return fp

    def _state_file(self, path: str | os.PathLike) -> StateFile:
        if self._file is None or not self._file.same(path):
            if self._file is not None:
                self._file.close()
            self._file = StateFile(path)
        return self._file

    def lock_state(self, path: str | os.PathLike) -> None:
        """Take the lock of state file ``path`` now (``save_state`` takes it otherwise): a second
        writer is refused with :class:`~forecaster.snapshot.StateLockedError` naming its pid."""
        self._state_file(path).acquire()

    def save_state(self, path: str | os.PathLike) -> dict:
        """Snapshot every series (state, last time, counts, scalers, look-back) to ``path``: the
        series changed since the last snapshot to this file, appended to it, or every series
        (:mod:`forecaster.streaming.statefile`); crash-safe either way. Takes ``path``'s lock and
        keeps it until :meth:`close`.

        Returns:
            ``{"kind": "base" | "delta", "bytes", "series", "seconds"}``.

        Raises:
            SnapshotError: another stream holds the lock (naming its pid), or the disk refused; the
                last good snapshot is untouched and the next call writes what this one could not.
        """
        header = {"format_version": STATE_FORMAT_VERSION, "fingerprint": self._fingerprint()}
        return self._state_file(path).save(header, self.table)

    def load_state(self, path: str | os.PathLike) -> None:
        """Restore a snapshot written by :meth:`save_state`, replacing the current state. All or
        nothing: a file that does not fit leaves the current state as it was and raises
        :class:`~forecaster.snapshot.SnapshotError` (a ``ValueError``, one line)."""
        file = self._state_file(path)
        payloads, info = file.read()
        where = f"state file {str(path)!r}"
        try:
            self._check_header(payloads[0], where)
            merged = merge_payloads(payloads)
            migrated = older_snapshot(merged, self.table.layout)
            ids, state, tables = check_base(merged, self.table.layout, self.net.state_shape, not self.windowed)
        except SnapshotError as e:
            raise SnapshotError(str(e) if str(e).startswith(where) else f"{where} {e}") from None
        except Exception as e:  # noqa: BLE001 - whatever a foreign structure raises: one line, no traceback
            raise SnapshotError(f"{where} is not a snapshot of this format ({type(e).__name__}: "
                                f"{show(str(e))})") from None
        self.table.install(ids, state, tables)
        file.adopt(info)
        if migrated:  # a snapshot from before the drift or the adjustment: the anchors the spec knows (as a new row gets them),
            t = self.table.t  # and the next snapshot is a whole base, not a delta on the old one
            fy, ft = self.spec.anchors_for(ids)
            none = t["first_t"][:len(ids)] == NO_TIME
            t["first_y"][:len(ids)] = np.where(none, fy, t["first_y"][:len(ids)])
            t["first_t"][:len(ids)] = np.where(none, ft, t["first_t"][:len(ids)])
            file.rebase()
        if self.max_series is not None and len(self.table) > self.max_series:
            gone = self.table.evict(self.max_series)  # one note, not a line per series
            file.notes.append(f"{where} holds {len(ids):,} series, more than max_series={self.max_series:,}: the "
                              f"{len(gone):,} least recently seen were evicted at load")

    def _check_header(self, base: dict, where: str) -> None:
        """The base's format version and fingerprint against this stream's (one-line refusals)."""
        version = base.get("format_version")
        if type(version) is not int or version not in (3, STATE_FORMAT_VERSION):
            raise SnapshotError(f"{where} has format version {show(version)}, expected {STATE_FORMAT_VERSION}")
        fp, mine = base.get("fingerprint"), self._fingerprint()
        plain = lambda v: type(v) in (str, int) or (type(v) is list and all(type(x) is str for x in v))  # noqa: E731
        if not (isinstance(fp, dict) and all(type(k) is str and plain(v) for k, v in fp.items())):
            raise SnapshotError(f"{where} was written for another model ({show(fp)}), this one is "
                                f"{mine}; delete it to start the series from zero")
        if fp.get("history") != mine.get("history") and \
                {k: v for k, v in fp.items() if k != "history"} == {k: v for k, v in mine.items() if k != "history"}:
            theirs = fp.get("history") or "carry"
            raise SnapshotError(f"{where} was written with history={theirs!r}, this stream uses "
                                f"history={self.history!r}; start it with history={theirs!r} (--history {theirs}) "
                                "to continue from it")
        but = lambda d: {k: v for k, v in d.items() if k != "look_back"}  # noqa: E731
        if fp.get("look_back") != mine.get("look_back") and but(fp) == but(mine):
            how = ("with", "without") if fp.get("look_back") else ("without", "with")
            raise SnapshotError(f"{where} was written by a stream {how[0]} swappable=True (--watch), this one is "
                                f"{how[1]}: the look-back it keeps differs; start it {how[0]} it to continue from it")
        if fp != mine:
            raise SnapshotError(f"{where} was written for another model ({show(fp)}), this one is "
                                f"{mine}; delete it to start the series from zero")

    @property
    def state_notes(self) -> list[str]:
        """What loading or writing the state file found worth reporting (an interrupted write
        ignored, a compaction that failed); emptied by reading."""
        notes = self._file.notes[:] if self._file is not None else []
        if self._file is not None:
            self._file.notes.clear()
        return notes

    def close(self) -> None:
        """Release the state file's lock (and stop a background compaction). The stream itself
        stays usable; the next ``save_state`` takes the lock again."""
        if self._file is not None:
            self._file.close()
            self._file = None

