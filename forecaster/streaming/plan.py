"""What one ``observe`` call will do: each record checked (id, time, values, order, gaps) and turned
into the steps of its series, or rejected with a reason. Nothing is changed until the steps run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from forecaster.spec import DataSpec
from forecaster.streaming.records import NO_TIME, RecordReader, show

__all__ = ["Rejected", "ObserveReport", "Planner", "Step", "Ahead"]

# One planned step of a series: (time, scaled values or None for a gap step, reset the state to
# zero first, the record's index or None for a gap step).
Step = tuple[int, "np.ndarray | None", bool, "int | None"]
# Future covariate values of a record ahead: (index, series, time, scaled values (F,), which are given (F,), raw time).
Ahead = tuple[int, str, int, "np.ndarray", "np.ndarray", object]


@dataclass
class Rejected:
    """A record that was not applied, and why. ``index`` is its position in the ``observe`` input."""

    index: int
    series: str
    time: object
    reason: str


@dataclass
class ObserveReport:
    """What ``observe`` did: records applied, steps run (including gap steps), records rejected,
    the ids of the series it advanced (in the order of their first record) and of the series it
    evicted to stay within ``max_series`` (least recently seen first), and how many of the records
    were future covariate values (kept for the forecasts, no step)."""

    accepted: int = 0
    steps: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    ahead: int = 0  # records of future covariate values kept for the forecasts (counted in ``accepted``)


class Planner:
    """Plans the steps of a batch of records against the series table (read only).

    Args:
        spec: the data spec. reader: its :class:`RecordReader`. table: the series table.
        max_gap: the most periods a record may lie after its series' last time (None: no limit).
        new_series: "pooled" or "reject" (records of series the spec does not know).
    """

    def __init__(self, spec: DataSpec, reader: RecordReader, table, max_gap: int | None, new_series: str):
        self.spec, self.reader, self.table = spec, reader, table
        self.T = max(1, int(spec.context_length))
        self.max_gap, self.new_series = max_gap, new_series

    def plan(self, cols: dict, problems: list, raw_times: list, report: ObserveReport,
             aheads: list | None = None) -> tuple[dict[str, list[Step]], list[Ahead]]:
        """Per series, the steps to run in order, and the future covariate values to keep (records
        rejected go to ``report``). ``aheads``: per record whether it carries future covariates
        ahead rather than an observation."""
        times, why = self.reader.times(cols[self.spec.time_col])
        plan: dict[str, list[Step]] = {}
        last_planned: dict[str, int] = {}
        new_params: dict[str, np.ndarray] = {}  # scalers of series not in the table yet
        ahead: list[Ahead] = []
        for i in range(len(raw_times)):
            try:
                if aheads is not None and aheads[i]:
                    self._ahead(i, cols, raw_times[i], times, why, plan, new_params, ahead, report)
                else:
                    self._record(i, cols, problems[i], raw_times[i], times, why, plan, last_planned, new_params,
                                 report)
            except Exception as e:  # noqa: BLE001 - a record nothing here foresaw: rejected, never raised
                sid = cols[self.spec.id_col][i] if self.spec.id_col else ""
                report.rejected.append(Rejected(i, show(sid), raw_times[i], f"could not be read "
                                                                            f"({type(e).__name__}: {show(str(e))})"))
        return plan, ahead

    def _ahead(self, i, cols, raw_t, times, why, plan, new_params, ahead, report) -> None:
        """A record of future covariate values (no observation): checked and kept for after the
        steps, when it is placed relative to its series' last time."""
        spec = self.spec
        sid, bad_id = self.reader.series_id(cols[spec.id_col][i], self.table.ids) if spec.id_col else \
            (self.single_id, None)

        def reject(reason: str) -> None:
            report.rejected.append(Rejected(i, sid, raw_t, reason))

        if bad_id is not None:
            return reject(bad_id)
        if why[i] is not None:
            return reject(why[i])
        row = self.table.ids.get(sid)
        params = self.table.t["params"][row] if row is not None else new_params.get(sid)
        if params is None:
            return reject("future covariates of a series with no observation yet: send an observation of it first")
        k = len(self.reader.value_cols) - len(self.reader.future_cols)
        try:
            vals = np.array([self.reader.number(cols[c][i], c) for c in self.reader.future_cols], dtype=np.float64)
        except ValueError as e:
            return reject(str(e))
        if np.isnan(vals).all():
            return reject(f"no value for any future covariate {self.reader.future_cols}")
        scaled = self.reader.scale(vals, params[0, k:], params[1, k:])
        if self.reader.out_of_range(vals, scaled).any():
            return reject(f"a future covariate value is infinite or overflows float32 (as given or once scaled)")
        ahead.append((i, sid, int(times[i]), scaled, ~np.isnan(vals), raw_t))

    def _record(self, i, cols, problem, raw_t, times, why, plan, last_planned, new_params, report) -> None:
        spec, table, freq, T = self.spec, self.table, self.spec.freq, self.T
        if problem is not None:
            report.rejected.append(Rejected(i, "", raw_t, problem))
            return
        sid, bad_id = self.reader.series_id(cols[spec.id_col][i], table.ids) if spec.id_col else \
            (self.single_id, None)

        def reject(reason: str) -> None:
            report.rejected.append(Rejected(i, sid, raw_t, reason))

        if bad_id is not None:
            return reject(bad_id)
        if why[i] is not None:
            return reject(why[i])
        t = int(times[i])
        try:
            vals = np.array([self.reader.number(cols[c][i], c) for c in self.reader.value_cols], dtype=np.float64)
        except ValueError as e:
            return reject(str(e))
        row = table.ids.get(sid)
        if row is None:
            params = new_params.get(sid)
            if params is None:
                loc, sc, known = spec.scalers_for([sid])
                if not known[0] and self.new_series == "reject":
                    return reject("unknown series (new_series='reject')")
                params = new_params[sid] = np.stack([loc[0], sc[0]]).astype(np.float32)
        else:
            params = table.t["params"][row]
        scaled, bad = self.reader.scaled_record(vals, params)
        if bad is not None:
            return reject(bad)
        last = last_planned.get(sid, NO_TIME if row is None else int(table.t["last"][row]))
        reset = False
        gap = np.empty(0, dtype=np.int64)
        if last == NO_TIME:  # the series' first record sets its grid: it must be a grid time
            why_not = spec.off_grid(sid, t)
            if why_not is not None:
                return reject(why_not)
        else:
            if t <= last:
                what = "duplicate" if t == last else "out-of-order"
                return reject(f"{what} timestamp: the series is already at {spec.format_time(last)}")
            k, on = freq.index(last, t)
            if not on:
                return reject(f"timestamp is off the {freq} grid of the series (last {spec.format_time(last)})")
            k = int(k)
            if k < 1 or (self.max_gap is not None and k > self.max_gap):  # k < 1: int64 overflow
                return reject(self.gap_reason(k, last))
            if k > T:  # restart from zero: the last T - 1 missing periods, then the record
                reset = True
                gap = spec.grid_times(last, np.arange(k - T + 1, k, dtype=np.int64))
            else:
                gap = spec.grid_times(last, np.arange(1, k, dtype=np.int64))
        steps = plan.setdefault(sid, [])
        steps.extend((int(g), None, reset and q == 0, None) for q, g in enumerate(gap))
        steps.append((t, scaled, reset and gap.size == 0, i))
        last_planned[sid] = t
        report.accepted += 1

    @staticmethod
    def single_id_of(spec: DataSpec) -> str:
        """The id of the one series of wide data (no id column), as the data module names it."""
        return str(spec.series_ids[0]) if spec.series_ids else "0"

    @property
    def single_id(self) -> str:
        return self.single_id_of(self.spec)

    def gap_reason(self, k: int, last: int) -> str:
        since = f"after the series' last time {self.spec.format_time(last)}"
        if k < 1:  # the distance overflowed int64 nanoseconds (some 292 years)
            return f"timestamp is too far {since}: a mistyped time?"
        return (f"timestamp is {k} periods ({self.spec.freq}) {since}, more than max_gap={self.max_gap}: a mistyped "
                "time? If the gap is real, raise the limit (StreamingForecaster(max_gap=...), or --max_gap N / none "
                "on the command line)")
