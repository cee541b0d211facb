"""Running the planned steps of one ``observe`` call on the series table, atomically: every
series touched is saved first and put back on any exception, and a series whose state would turn
non-finite is put back alone and its records rejected."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl
import torch

from forecaster.spec import DataSpec
from forecaster.streaming.history import one_thread_if_small
from forecaster.streaming.lookback import LookBack
from forecaster.streaming.plan import ObserveReport, Rejected
from forecaster.streaming.records import NO_TIME, RecordReader
from forecaster.streaming.table import SeriesTable

__all__ = ["Stepper"]

_NONFINITE = ("its values drive the model's state to a non-finite value (too large for the model?); the series is "
              "kept as it was before the call")


class Stepper:
    """Applies steps to the series table: one round of many series at once (:meth:`round`), the
    rounds of a plan (:meth:`advance`), and the vectorised path of a DataFrame whose every record
    is its series' next period (:meth:`observe_frame_fast`)."""

    def __init__(self, spec: DataSpec, reader: RecordReader, table: SeriesTable, lookback: LookBack, strategy,
                 device: torch.device, single_id: str):
        self.spec, self.reader, self.table, self.lookback = spec, reader, table, lookback
        self.strategy, self.device, self.single_id = strategy, device, single_id

    def observe_frame_fast(self, df: pl.DataFrame) -> ObserveReport | None:
        """Vectorised path for the common case: every record of a known series, each series once,
        exactly one period after its last time, values finite in float32 as given and after
        scaling. None when any of that fails (the general path then handles the batch record by
        record)."""
        n, table = df.height, self.table
        if n == 0:
            return ObserveReport()
        if self.spec.id_col:
            id_s = df[self.spec.id_col].cast(pl.String)
            if id_s.null_count():
                return None
            sids = id_s.to_list()
        else:
            sids = [self.single_id] * n
        if len(set(sids)) != n:
            return None
        rows = [table.ids.get(sid) for sid in sids]  # known ids only: each passed the id rule
        if any(r is None for r in rows):
            return None
        rows = np.array(rows, dtype=np.int64)
        try:
            times, null = self.spec.parse_times(df[self.spec.time_col], strict=False)
        except Exception:  # noqa: BLE001 - the general path reads each time on its own
            return None
        if null.any() or np.any(times == NO_TIME):
            return None
        last = table.t["last"][rows]
        if np.any(last == NO_TIME) or np.any(self.spec.grid_times(last, 1) != times):
            return None
        vals = df.select([pl.col(c).cast(pl.Float64) if c in df.columns else pl.lit(None, pl.Float64).alias(c)
                          for c in self.spec.value_cols]).to_numpy()
        scaled = self.reader.scale(vals, table.t["params"][rows, 0], table.t["params"][rows, 1])
        if self.reader.out_of_range(vals, scaled).any():
            return None
        report = ObserveReport()
        with one_thread_if_small(self.device, n):
            saved = table.save_rows(rows)
            try:
                failed = self.round(rows, times, scaled)
            except BaseException:
                table.restore_rows(saved)
                raise
            if failed.any():
                table.restore_rows(saved, np.flatnonzero(failed))
        table.touch(rows)
        for i in np.flatnonzero(failed):
            report.rejected.append(Rejected(int(i), sids[i], df[self.spec.time_col][int(i)], _NONFINITE))
        report.accepted = report.steps = n - len(report.rejected)
        report.series = [sids[i] for i in np.flatnonzero(~failed)]
        return report

    def advance(self, plan: dict[str, list[tuple]], report: ObserveReport, raw_times: Sequence) -> None:
        """Run the planned steps in rounds: round j advances every series with a j-th step, in one
        batched step. A series whose state turns non-finite is put back as it was before the call
        and its records of the call are rejected; any exception puts every series back."""
        table = self.table
        sids = list(plan)
        new = [sid for sid in sids if sid not in table.ids]
        rows_all = np.array([self.row(sid) for sid in sids], dtype=np.int64)
        steps = list(plan.values())
        lengths = np.array([len(s) for s in steps])
        n_values = table.t["params"].shape[2]
        alive = np.ones(len(sids), dtype=bool)
        run = np.zeros(len(sids), dtype=np.int64)
        with one_thread_if_small(self.device, len(rows_all)):
            saved = table.save_rows(rows_all)
            try:
                for j in range(int(lengths.max())):
                    idx = np.flatnonzero(alive & (lengths > j))
                    if not idx.size:
                        break
                    times = np.array([steps[m][j][0] for m in idx], dtype=np.int64)
                    vals = np.full((idx.size, n_values), np.nan, dtype=np.float32)
                    reset = np.zeros(idx.size, dtype=bool)
                    for q, m in enumerate(idx):
                        _, v, reset[q], _ = steps[m][j]
                        if v is not None:
                            vals[q] = v
                    failed = self.round(rows_all[idx], times, vals, reset)
                    run[idx] += 1
                    if failed.any():
                        bad = idx[failed]
                        alive[bad] = False
                        table.restore_rows(saved, bad)
                        for m in bad:
                            self.reject_series(report, sids[m], steps[m], j, raw_times)
            except BaseException:
                table.restore_rows(saved)
                table.drop(new)
                raise
        table.touch(rows_all[alive])
        table.drop([sids[m] for m in np.flatnonzero(~alive) if sids[m] in new])  # never stepped: no phantom rows
        report.steps = int(run[alive].sum())

    def row(self, sid: str) -> int:
        """The table row of ``sid``, added (with its scalers and baseline weights) when new."""
        row = self.table.ids.get(sid)
        if row is None:
            row = self.table.add(sid)
            loc, sc, _ = self.spec.scalers_for([sid])
            self.table.t["params"][row] = np.stack([loc[0], sc[0]])
            self.table.t["base"][row] = self.spec.baseline_for([sid])[0]
            first_y, first_t = self.spec.anchors_for([sid])  # the fitted table's first observations
            self.table.t["first_y"][row], self.table.t["first_t"][row] = first_y[0], first_t[0]
        return row

    @staticmethod
    def reject_series(report: ObserveReport, sid: str, steps: list[tuple], j: int, raw_times: Sequence) -> None:
        """Reject every record of a series in this call after its step j made the state non-finite."""
        culprit = next(s[3] for s in steps[j:] if s[3] is not None)
        for _, _, _, i in steps:
            if i is None:
                continue
            report.accepted -= 1
            why = _NONFINITE if i == culprit else (f"not applied: record {culprit} of series in this call made the "
                                                   "state non-finite; the series is kept as before the call")
            report.rejected.append(Rejected(i, sid, raw_times[i], why))

    def round(self, rows: np.ndarray, times: np.ndarray, scaled: np.ndarray,
               reset: np.ndarray | None = None) -> np.ndarray:
        """One step for distinct table rows ``rows`` at ``times`` (M,) from scaled float32 values
        (M, targets + past + future covariates), NaN = missing; rows with ``reset`` start from the
        zero state and an empty look-back. Encode, step, bookkeep. Returns the rows (bool (M,))
        whose state is not finite after the step (the caller restores them)."""
        C, P = len(self.spec.target_cols), len(self.spec.past_covariate_cols)
        t = self.table.t
        if "ahead_x" in t:  # future covariates sent ahead: this step's fill what the record left out
            scaled = self._take_ahead(rows, times, scaled, C + P)
        observed = ~np.isnan(scaled)
        scaled = np.where(observed, scaled, np.float32(0.0))
        future = np.concatenate([scaled[:, C + P:], self.spec.calendar_features(times)], axis=1)
        obs_t = observed[:, :C]
        if reset is not None and reset.any():  # a restart: the zero state and an empty look-back
            self.strategy.reset(self.table, rows[reset])
            self.lookback.reset(t, rows[reset])
        finite = self.strategy.step(self.table, rows, scaled, obs_t, future)
        t["last"][rows] = times
        first = t["first_t"][rows]  # a target's first observation (or one before the spec's): the drift's anchor
        new = obs_t & ((first == NO_TIME) | (times[:, None] < first))
        if new.any():
            t["first_y"][rows] = np.where(new, scaled[:, :C], t["first_y"][rows])
            t["first_t"][rows] = np.where(new, times[:, None], t["first_t"][rows])
        t["n_steps"][rows] += 1
        t["n_obs"][rows] += obs_t.any(axis=1)
        self.lookback.record(t, rows, scaled, obs_t, C)
        return ~finite

    def _take_ahead(self, rows: np.ndarray, times: np.ndarray, scaled: np.ndarray, k: int) -> np.ndarray:
        """The step's future covariates (columns ``k:`` of ``scaled``, NaN where the record has
        none) filled from the values kept ahead for its time, and each row's kept window moved on
        to start after this step (part of the round: rolled back with it)."""
        t = self.table.t
        last = t["last"][rows]
        has = last != NO_TIME
        if not has.any():
            return scaled
        shift = np.ones(len(rows), dtype=np.int64)
        shift[has] = self.spec.freq.index(last[has], times[has])[0]
        A = t["ahead_x"].shape[1]
        use = np.flatnonzero(has & (shift >= 1) & (shift <= A))
        scaled = scaled.copy()
        if use.size:
            r, slot = rows[use], shift[use] - 1
            kept, ok = t["ahead_x"][r, slot], t["ahead_ok"][r, slot]
            fut = scaled[use, k:]
            scaled[use, k:] = np.where(np.isnan(fut) & ok, kept, fut)
        one = has & (shift == 1)
        for name, fill in (("ahead_x", 0.0), ("ahead_ok", False)):
            col = t[name]
            if one.any():  # the usual step: the window moves by one period
                r = rows[one]
                col[r, :-1] = col[r, 1:]
                col[r, -1] = fill
            for q in np.flatnonzero(has & (shift != 1)):  # a restart after a long gap: moved by its length
                s_ = int(shift[q])
                row = col[rows[q]]
                if 1 <= s_ < A:
                    row[:-s_] = row[s_:].copy()
                    row[-s_:] = fill
                else:
                    row[:] = fill
        return scaled

    def keep_ahead(self, ahead: list, report: ObserveReport) -> None:
        """Keep future covariate values sent ahead (:data:`~forecaster.streaming.plan.Ahead`), each
        at its time relative to its series' last time (after this call's steps): 1 to
        ``ahead_x.shape[1]`` periods ahead, on the grid; others are rejected with a reason."""
        t, freq = self.table.t, self.spec.freq
        A = t["ahead_x"].shape[1]
        for i, sid, time_, scaled, given, raw_t in ahead:
            row = self.table.ids.get(sid)
            last = NO_TIME if row is None else int(t["last"][row])
            if last == NO_TIME:
                report.rejected.append(Rejected(i, sid, raw_t, "future covariates of a series with no observation "
                                                               "yet: send an observation of it first"))
                continue
            k, on = freq.index(last, time_)
            k = int(k)
            why = None if on else f"time is off the {freq} grid of the series (last {self.spec.format_time(last)})"
            if why is None and k < 1:
                why = (f"future covariates for a time at or before the series' last time "
                       f"{self.spec.format_time(last)}: they are kept for the times ahead")
            if why is None and k > A:
                why = f"future covariates {k} periods ahead: they are kept for the next {A} periods"
            if why is not None:
                report.rejected.append(Rejected(i, sid, raw_t, why))
                continue
            t["ahead_x"][row, k - 1] = np.where(given, scaled, t["ahead_x"][row, k - 1])
            t["ahead_ok"][row, k - 1] |= given
            self.table.touch(np.array([row]))
            report.accepted += 1
            report.ahead += 1

