"""StreamingForecaster: every series' GRU state kept between observations, so a new observation
costs one recurrent step whatever the length of the history.

Stream semantics (each tested in ``tests/forecaster/test_streaming.py`` and
``tests/forecaster/test_stream_faults.py``):

- Times are read by the one time rule of the data spec (:mod:`forecaster.timeaxis`): zone-aware
  times (aware ``datetime``, zoned columns, ISO strings with an offset) are converted to UTC, naive
  ones taken as given: the same instant lands on the same step as in training.
- The state of a series advances once per period of the data's frequency. A record whose
  time skips k periods first advances the k - 1 missing periods as steps with every target
  unobserved (observed mask 0, covariates 0, calendar features of the missing time), exactly as
  the data module encodes gaps for training; then the record's own step.
- Long gaps: a record more than ``context_length`` periods after its series' last time restarts
  the series from the zero state and steps only the last ``context_length - 1`` missing periods
  before it (see :meth:`StreamingForecaster.observe`), so no record costs more than
  ``context_length`` steps. A record more than ``max_gap`` periods after its series' last time
  (default ``2 * context_length``; ``None``: no limit) is rejected: a mistyped year would
  otherwise move the series a year ahead and every correct record after it would be out of order.
- A record at or before the series' last time (out of order, or a duplicate), off the frequency
  grid, with an unreadable, null or NaT time, or a null, empty, non-text or over-long id
  (``MAX_ID_LENGTH`` characters) is rejected with a reason; the series' state is unchanged; the
  other records are still processed. Records are applied in the order given.
- A null or NaN target or covariate is a missing observation (observed mask 0), not an error. A
  value that is infinite, or that is not finite in float32 after scaling (``1e300``), rejects the
  record. Should a record's values still drive the state to a non-finite value, that series is
  left as it was before the call and its records of the call are rejected: a state is never NaN.
- ``observe`` is atomic under exceptions: an interrupt (``KeyboardInterrupt``) or error while
  stepping puts every series it touched back as it was before the call.
- A series never seen before starts from the zero state (as every training window does). Its
  scaler is its own when the checkpoint was trained on it, otherwise (``new_series="pooled"``,
  the default) the spec's pooled scalers (the median over the training series);
  ``new_series="reject"`` rejects records of unknown series instead.
- Missing or non-numeric columns raise ``ValueError`` naming them (nothing is applied).
- Messages echo at most ``60`` characters of a bad value or id.

Lightning stays off the per-observation path: a list of dicts is parsed in plain Python, features
are numpy, the recurrence is ``StepForecastNet.step_`` on a state table under
``torch.inference_mode``.
"""

from __future__ import annotations

import hashlib
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import polars as pl
import torch

from forecaster.baseline import season_width
from forecaster.forecasts import empty_forecast_frame, forecast_frame
from forecaster.nets import GRUNetBase
from forecaster.snapshot import SnapshotError, read_snapshot, write_snapshot
from forecaster.spec import DataSpec

__all__ = ["StreamingForecaster", "ObserveReport", "Rejected", "STATE_FORMAT_VERSION", "MAX_ID_LENGTH"]

STATE_FORMAT_VERSION = 3
_NO_TIME = np.iinfo(np.int64).min
# Longest series id accepted, in characters. Ids are keys of the state table, repeated in every
# forecast row and in snapshots: a 10 MB id (a whole file pasted into the id field) would cost
# ~700 MB of output per record. Training ids are typically names or codes well under 100.
MAX_ID_LENGTH = 256
# a value above this (scaled units: standard deviations) leaving the look-back: its running sum is recomputed
HEAL_ABOVE = 1e6
# At most this many characters of a bad value or id are echoed in a rejection reason.
_SHOW = 60
# max_gap="auto" allows a record up to this many context lengths after its series' last time; see
# StreamingForecaster for why.
_AUTO_MAX_GAP_CONTEXTS = 2
_NONFINITE = ("its values drive the model's state to a non-finite value (too large for the model?); the series is "
              "kept as it was before the call")


def _show(value) -> str:
    """``repr`` of a value for a message, cut to ``_SHOW`` characters (a 10 MB value is not echoed)."""
    if isinstance(value, (str, bytes)) and len(value) > _SHOW:
        return f"{value[:_SHOW]!r}... ({len(value)} characters)"
    r = repr(value)
    return r if len(r) <= _SHOW else f"{r[:_SHOW]}... ({len(r)} characters)"
# Below this many rows a CPU step runs on one intra-op thread: ATen parallelises some pointwise ops
# (GELU) even for a (1, 32) tensor, and when the other cores are busy the OpenMP region waits for
# them. Measured on a 2-core CPU under load: GELU 1,968 us with 2 threads, 7 us with 1.
SMALL_BATCH = 256


@contextmanager
def _one_thread_if_small(device: torch.device, rows: int):
    n = torch.get_num_threads()
    if device.type != "cpu" or rows > SMALL_BATCH or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class Rejected:
    """A record that was not applied, and why. ``index`` is its position in the ``observe`` input."""

    index: int
    series: str
    time: object
    reason: str


@dataclass
class ObserveReport:
    """What ``observe`` did: records applied, steps run (including gap steps), records rejected."""

    accepted: int = 0
    steps: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def _weights_digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


class StreamingForecaster:
    """Online forecasting with a trained network and its data spec.

    Two kinds of model stream, with the same API:

    * the per-step model (:class:`forecaster.nets.StepForecastNet`) keeps each series' GRU state and
      advances it one recurrent step per observation (plus a ring of its look-back's targets, for its
      baseline, and running sums, for its relative inputs; with relative inputs a forecast reads
      the baseline from those sums and the last season of the ring, not the whole look-back); an
      ensemble of them (``members`` K > 1, :class:`forecaster.nets.EnsembleNet`) keeps every
      member's state (K times the state per series) and averages the members' forecasts;
    * the window model (:class:`forecaster.nets.WindowForecastNet`: segments, RevIN, channel
      independence, the PMF decoder) keeps a ring buffer of each series' last ``context_length``
      steps (O(1) per observation) and runs the window when a forecast is asked for: the forecast
      equals ``predict``'s at the same origin. The per-step model does the same with
      ``history="window"``.

    Args:
        net: the trained network (``model.net`` of a :class:`forecaster.GRUForecaster`).
        spec: the data spec (:class:`forecaster.spec.DataSpec` or its dict, ``model.data_spec``):
            columns, time axis, scalers.
        device: where the state table and the recurrence live ("cpu" or "cuda").
        new_series: "pooled" (default) or "reject"; see the module docstring.
        capacity: initial number of rows of the state table (it grows by doubling).
        max_gap: the most periods a record may lie after its series' last time (1 = the next
            period, no gap); a record further ahead is rejected with a reason. ``"auto"`` (default):
            ``2 * context_length``; ``None``: no limit.
        history: how the per-step model uses a series' past. ``"carry"`` (its default): the GRU
            state carries the whole history, one recurrent step per observation and no GRU run
            per forecast (its baseline reads the running look-back sums and the last season of the
            ring). ``"window"``: keep the look-back in a ring (as the window model does) and run
            the last ``context_length`` steps from the zero state at each forecast, which is what
            the model was trained on and what ``predict`` does: the forecast equals ``predict``'s
            at the same origin for any history, at O(context) per forecast.
            The window model always runs its window (``None`` or ``"window"``).

    Why ``2 * context_length``: a gap longer than the context already restarts the series from
    the zero state (see :meth:`observe`), so accepting a record further ahead buys nothing for the
    model, while a mistyped time that is accepted moves the series ahead and every correct record
    after it is rejected as out of order (a year typo blocks an hourly series for a year). Twice
    the context lets through any outage up to two context windows (two weeks of hourly data at
    context 168) and rejects the usual far-ahead typos of sub-daily and daily data (a year is 8,760
    hourly or 365 daily periods). On weekly or monthly data a year is within twice the context: set
    ``max_gap`` lower there if such typos are a risk, or higher for longer real outages.
    """

    def __init__(self, net: torch.nn.Module, spec: DataSpec | dict, device: str | torch.device = "cpu",
                 new_series: str = "pooled", capacity: int = 64, max_gap: int | str | None = "auto",
                 history: str | None = None) -> None:
        if new_series not in ("pooled", "reject"):
            raise ValueError(f"new_series must be 'pooled' or 'reject', got {new_series!r}")
        if not (max_gap is None or max_gap == "auto"
                or (isinstance(max_gap, (int, np.integer)) and not isinstance(max_gap, bool) and max_gap >= 1)):
            raise ValueError(f"max_gap must be an int >= 1 (periods), 'auto' or None (no limit), got {max_gap!r}")
        if spec is None:
            raise ValueError("the model has no data spec; train it with a TimeSeriesDataModule "
                             "(the CLI links it) so the checkpoint knows columns, frequency and scalers")
        if not isinstance(net, GRUNetBase):
            raise ValueError(f"net must be a forecasting network of forecaster.nets (model.net), got {type(net).__name__}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.spec = DataSpec.from_dict(spec)
        self.new_series = new_series
        s = self.spec
        self.id_col: str | None = s.id_col
        # wide data (no id column) is one series, named as the data module names it
        self.single_id: str = str(s.series_ids[0]) if s.series_ids else "0"
        self.time_col: str = s.time_col
        self.target_cols: list[str] = list(s.target_cols)
        self.past_cols: list[str] = list(s.past_covariate_cols)
        self.future_cols: list[str] = list(s.future_covariate_cols)
        self.horizon: int = int(s.horizon)
        self.context_length: int = max(1, int(s.context_length))
        self.max_gap: int | None = (_AUTO_MAX_GAP_CONTEXTS * self.context_length if max_gap == "auto"
                                    else None if max_gap is None else int(max_gap))
        # rows of the state table per series (an ensemble stacks its members' layers) and their width
        self.num_layers, self.hidden_size = self.net.state_shape
        window_net = not self.net.carries_state
        if history not in (None, "carry", "window"):
            raise ValueError(f"history must be 'carry' or 'window' (or None: the model's own), got {history!r}")
        if window_net and history == "carry":
            raise ValueError("history='carry' needs the per-step model: the window model keeps no state between "
                             "observations and always runs its window; leave history out or use 'window'")
        self.history: str = "window" if window_net else (history or "carry")
        # runs the look-back window at each forecast (the window model, or the per-step one by choice)
        self.windowed = self.history == "window"
        # a ring buffer of the look-back: every input column for the window model; the targets for the
        # per-step model's baseline (the season, the last value and the mean of the look-back) and its
        # relative inputs (the previous observation and the look-back's mean)
        self.ring = self.context_length if (self.windowed or self.net.baseline != "none"
                                            or self.net.inputs == "relative") else 0
        self._digest = _weights_digest(self.net)
        self._reset(max(1, int(capacity)))

    def _layout(self) -> dict[str, tuple[tuple, type, object]]:
        """The per-series tables: name -> (shape after the row axis, dtype, initial value)."""
        C, D = len(self.target_cols), len(self.spec.value_cols)
        t = {"last": ((), np.int64, _NO_TIME), "n_obs": ((), np.int64, 0), "n_steps": ((), np.int64, 0),
             "params": ((2, D), np.float32, 0.0), "base": ((C, self.spec.baseline_for([]).shape[-1]), np.float32, 0.0)}
        if self.ring:  # scaled targets and observed mask of the last `ring` steps (step n at n % ring)
            t.update(ring_y=((self.ring, C), np.float32, 0.0), ring_o=((self.ring, C), np.float32, 0.0))
        if self.windowed:  # the window model also reads past and user future covariates of every step
            t["ring_x"] = ((self.ring, D - C), np.float32, 0.0)
        elif self.net.inputs == "relative":
            # the look-back's running sum and count of observed values, and the last observation (its
            # value and step number; -1: none): the relative inputs in O(1) per observation
            t.update(sum_y=((C,), np.float64, 0.0), cnt=((C,), np.int64, 0), last_y=((C,), np.float32, 0.0),
                     last_n=((C,), np.int64, -1))
        return t

    def memory_per_series(self) -> int:
        """Bytes each series takes: its recurrent state and its tables."""
        state = 0 if self.windowed else self.num_layers * self.hidden_size * 4
        return state + sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                           for shape, dt, _ in self._layout().values())

    def _reset(self, cap: int) -> None:
        self._ids: dict[str, int] = {}
        self._id_list: list[str] = []
        self._state = torch.zeros(self.num_layers, 0 if self.windowed else cap, self.hidden_size, device=self.device)
        self._t = {k: np.full((cap, *shape), fill, dtype=dt) for k, (shape, dt, fill) in self._layout().items()}

    @property
    def _last(self) -> np.ndarray:
        return self._t["last"]

    @property
    def _n_steps(self) -> np.ndarray:
        return self._t["n_steps"]

    # -------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs):
        """Load a checkpoint written by ``python -m forecaster fit`` (or any Lightning checkpoint of
        a :class:`forecaster.GRUForecaster`); needs no training data."""
        from forecaster.lightning_module import load_checkpoint

        model, _ = load_checkpoint(path, map_location=torch.device(device))
        return cls(model.net, model.data_spec, device=device, **kwargs)

    # -------------------------------------------------------------------------------------------
    # series table

    @property
    def series(self) -> list[str]:
        """Ids of every series seen so far, in the order of the state table's rows."""
        return list(self._id_list)

    def __len__(self) -> int:
        return len(self._id_list)

    def _grow(self, need: int) -> None:
        cap = self._last.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap)
        if not self.windowed:
            state = torch.zeros(self.num_layers, new, self.hidden_size, device=self.device)
            state[:, :cap] = self._state
            self._state = state
        for k, (shape, dt, fill) in self._layout().items():
            self._t[k] = np.concatenate([self._t[k], np.full((new - cap, *shape), fill, dtype=dt)])

    def _row(self, sid: str, create: bool) -> int | None:
        row = self._ids.get(sid)
        if row is not None or not create:
            return row
        row = len(self._id_list)
        self._grow(row + 1)
        self._ids[sid] = row
        self._id_list.append(sid)
        loc, sc, _ = self.spec.scalers_for([sid])
        self._t["params"][row] = np.stack([loc[0], sc[0]])
        self._t["base"][row] = self.spec.baseline_for([sid])[0]
        return row

    # -------------------------------------------------------------------------------------------
    # input parsing

    @property
    def required_columns(self) -> list[str]:
        """The columns every record needs: the id column (when the model has one), the time column,
        the targets and the past covariates (future covariates are optional)."""
        return self._required()

    def _required(self) -> list[str]:
        return ([self.id_col] if self.id_col else []) + [self.time_col] + self.target_cols + self.past_cols

    def _columns(self, data) -> dict[str, list]:
        """Records (a Polars DataFrame, or a list of dicts) -> column lists (the time column as given),
        checked for missing columns."""
        need = self._required()
        if isinstance(data, pl.DataFrame):
            cols = {c: data[c] if c == self.time_col else data[c].to_list() for c in need}
            for c in self.future_cols:  # optional: absent = missing values
                cols[c] = data[c].to_list() if c in data.columns else [None] * data.height
            return cols
        if isinstance(data, dict):
            data = [data]
        records = list(data)
        cols: dict[str, list] = {c: [] for c in need + self.future_cols}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f"record {i} is a {type(rec).__name__}, expected a dict of column -> value")
            missing = [c for c in need if c not in rec]
            if missing:
                raise ValueError(f"record {i} lacks column(s) {missing}; expected {need} "
                                 f"(future covariates {self.future_cols} optional)")
            for c in need:
                cols[c].append(rec[c])
            for c in self.future_cols:
                cols[c].append(rec.get(c))
        return cols

    def _check_frame(self, df: pl.DataFrame) -> None:
        need = self._required()
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"observations lack column(s) {missing}; expected {need} "
                             f"(future covariates {self.future_cols} optional)")
        bad = [c for c in self.target_cols + self.past_cols + [c for c in self.future_cols if c in df.columns]
               if not (df.schema[c].is_numeric() or df.schema[c] == pl.Null)]
        if bad:
            raise ValueError(f"column(s) {bad} must be numeric, got {[str(df.schema[c]) for c in bad]}")

    def _times(self, raw) -> tuple[np.ndarray, list[str | None]]:
        """Raw times -> (int64 axis (n,), per record None or the reason it cannot be read)."""
        try:
            t, null = self.spec.parse_times(raw, strict=False)
        except ValueError:  # a format that cannot be inferred: read each record on its own
            vals = raw.to_list() if isinstance(raw, pl.Series) else list(raw)
            t, null = np.zeros(len(vals), dtype=np.int64), np.ones(len(vals), dtype=bool)
            for i, v in enumerate(vals):
                try:
                    ti, ni = self.spec.parse_times([v], strict=False)
                    t[i], null[i] = ti[0], ni[0]
                except ValueError:
                    pass
        null = null | (t == _NO_TIME)  # NaT as an int64 is the state table's "no time yet"
        vals = raw.to_list() if isinstance(raw, pl.Series) else list(raw)
        why = [None if not n else ("null time" if v is None else f"time {_show(v)} could not be read")
               for v, n in zip(vals, null)]
        return t, why

    def _series_id(self, value) -> tuple[str, str | None]:
        """A record's id -> ``(id, None)``, or ``(what to show, why it is refused)``."""
        if type(value) is str and value in self._ids:  # the common case: a series of the table
            return value, None
        where = f"(column {self.id_col!r})"
        if value is None:
            return "", f"null id {where}"
        if isinstance(value, str):
            if not value:
                return "", f"empty id {where}"
            if len(value) > MAX_ID_LENGTH:
                return value[:_SHOW] + "...", (f"id of {len(value)} characters {where}: ids are at most "
                                               f"MAX_ID_LENGTH = {MAX_ID_LENGTH}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates (e.g. a "\udc80" JSON escape): not text
                return _show(value), f"id {_show(value)} {where} is not valid text (not encodable as UTF-8)"
            # an all-digit id in text ("007" from a CSV line) names the series training read as a number
            if value not in self._ids and int(self.spec.series_index([value])[0]) < 0 \
                    and value.lstrip("-").isdigit() and int(self.spec.series_index([str(int(value))])[0]) >= 0:
                return str(int(value)), None
            return value, None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return _show(value), f"id {_show(value)} {where} is a {type(value).__name__}; ids are text or integers"
        if not math.isfinite(value):
            return str(value), f"id {value!r} {where} is not a number that names a series"
        return str(value), None

    @staticmethod
    def _number(value, col: str) -> float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"value {_show(value)} in column {col!r} is not a number")
        try:
            return float(value)
        except OverflowError:  # an int beyond float64
            raise ValueError(f"value {_show(value)} in column {col!r} is too large for a float") from None

    @staticmethod
    def _scale(vals: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """``(vals - loc) / scale`` in float32, the model's precision (NaN stays NaN, overflow -> inf)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return ((vals - loc) / scale).astype(np.float32)

    def _scaled_record(self, vals: np.ndarray, params: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        """A record's values (float64 (D,), NaN = missing) -> (scaled float32 (D,), None) or
        (None, why they cannot be stepped). The finite check is on the scaled float32 values: 1e300
        is finite in float64 but overflows to inf in float32 and would make the state NaN."""
        scaled = self._scale(vals, params[0], params[1])
        if not np.isinf(scaled).any():
            return scaled, None
        cols = self.spec.value_cols
        if np.isinf(vals).any():
            return None, f"infinite value in {[c for c, v in zip(cols, vals) if np.isinf(v)]}"
        j = int(np.flatnonzero(np.isinf(scaled))[0])
        return None, (f"value {vals[j]:.6g} in column {cols[j]!r} is out of range: scaled by the series' scaler "
                      f"((value - {params[0, j]:.6g}) / {params[1, j]:.6g}) it overflows float32, the model's "
                      "precision")

    def _observe_frame_fast(self, df: pl.DataFrame) -> ObserveReport | None:
        """Vectorised path for the common case: every record of a known series, each series once,
        exactly one period after its last time, values finite in float32 after scaling. None when
        any of that fails (the general path then handles the batch record by record)."""
        n = df.height
        if n == 0:
            return ObserveReport()
        if self.id_col:
            id_s = df[self.id_col].cast(pl.String)
            if id_s.null_count():
                return None
            sids = id_s.to_list()
        else:
            sids = [self.single_id] * n
        if len(set(sids)) != n:
            return None
        rows = [self._ids.get(sid) for sid in sids]  # known ids only: each passed _series_id
        if any(r is None for r in rows):
            return None
        rows = np.array(rows, dtype=np.int64)
        try:
            times, null = self.spec.parse_times(df[self.time_col], strict=False)
        except ValueError:
            return None
        if null.any() or np.any(times == _NO_TIME):
            return None
        last = self._last[rows]
        if np.any(last == _NO_TIME) or np.any(self.spec.grid_times(last, 1) != times):
            return None
        value_cols = self.spec.value_cols
        vals = df.select([pl.col(c).cast(pl.Float64) if c in df.columns else pl.lit(None, pl.Float64).alias(c)
                          for c in value_cols]).to_numpy()
        scaled = self._scale(vals, self._t["params"][rows, 0], self._t["params"][rows, 1])
        if np.isinf(scaled).any():  # an infinite value, or one that overflows float32 once scaled
            return None
        report = ObserveReport()
        with _one_thread_if_small(self.device, n):
            saved = self._save_rows(rows)
            try:
                failed = self._round(rows, times, scaled)
            except BaseException:
                self._restore_rows(saved)
                raise
            if failed.any():
                self._restore_rows(saved, np.flatnonzero(failed))
        for i in np.flatnonzero(failed):
            report.rejected.append(Rejected(int(i), sids[i], df[self.time_col][int(i)], _NONFINITE))
        report.accepted = report.steps = n - len(report.rejected)
        return report

    # -------------------------------------------------------------------------------------------
    # the online step

    @torch.inference_mode()
    def observe(self, data) -> ObserveReport:
        """Apply new observations.

        Args:
            data: a ``polars.DataFrame`` or a list of dicts (one per record) with the id column
                (when the model has one), the time column, every target column (null/NaN =
                missing) and every past covariate column; future covariate columns optional.

        Returns:
            :class:`ObserveReport`: records accepted, recurrent steps run, records rejected with
            their reasons (their series' state untouched).

        Raises:
            ValueError: missing or non-numeric columns (nothing applied).

        A record k periods after its series' last time is stepped after the k - 1 missing periods
        (unobserved steps, as training encodes gaps). When k > ``context_length`` the series
        restarts: its state is set to zero and only the last ``context_length - 1`` missing
        periods are stepped before the record. That is exact for the model as trained: every
        training window (and ``predict``'s) starts from the zero state and reads ``context_length``
        steps, so the state after the restart is the one the model computes from a context window
        that ends at the record and holds nothing older; stepping the whole gap from the old state
        would instead feed the model a longer run of missing steps than it ever saw in training, at
        a cost that grows with the gap (8,760 steps for a year typo on hourly data). So no record
        costs more than ``context_length`` steps. A record more than ``max_gap`` periods ahead is
        rejected.
        """
        if isinstance(data, (pl.DataFrame, pl.LazyFrame)):
            data = data.collect() if isinstance(data, pl.LazyFrame) else data
            self._check_frame(data)
            fast = self._observe_frame_fast(data)
            if fast is not None:
                return fast
        cols = self._columns(data)
        raw_times = cols[self.time_col]
        n = len(raw_times)
        report = ObserveReport()
        if n == 0:
            return report
        times, why = self._times(raw_times)
        raw_list = raw_times.to_list() if isinstance(raw_times, pl.Series) else raw_times
        value_cols = self.spec.value_cols
        freq = self.spec.freq
        C = self.context_length
        # per series: the steps to run, in order: (time, scaled values or None for a gap step,
        # reset the state to zero first, the record's index or None for a gap step)
        plan: dict[str, list[tuple[int, np.ndarray | None, bool, int | None]]] = {}
        last_planned: dict[str, int] = {}
        new_params: dict[str, np.ndarray] = {}  # scalers of series not in the table yet
        for i in range(n):
            raw_t = raw_list[i]
            sid, bad_id = self._series_id(cols[self.id_col][i]) if self.id_col else (self.single_id, None)
            if bad_id is not None:
                report.rejected.append(Rejected(i, sid, raw_t, bad_id))
                continue
            if why[i] is not None:
                report.rejected.append(Rejected(i, sid, raw_t, why[i]))
                continue
            t = int(times[i])
            try:
                vals = np.array([self._number(cols[c][i], c) for c in value_cols], dtype=np.float64)
            except ValueError as e:
                report.rejected.append(Rejected(i, sid, raw_t, str(e)))
                continue
            row = self._ids.get(sid)
            if row is None:
                params = new_params.get(sid)
                if params is None:
                    loc, sc, known = self.spec.scalers_for([sid])
                    if not known[0] and self.new_series == "reject":
                        report.rejected.append(Rejected(i, sid, raw_t, "unknown series (new_series='reject')"))
                        continue
                    params = new_params[sid] = np.stack([loc[0], sc[0]]).astype(np.float32)
            else:
                params = self._t["params"][row]
            scaled, bad = self._scaled_record(vals, params)
            if bad is not None:
                report.rejected.append(Rejected(i, sid, raw_t, bad))
                continue
            last = last_planned.get(sid, _NO_TIME if row is None else int(self._last[row]))
            reset = False
            gap = np.empty(0, dtype=np.int64)
            if last == _NO_TIME:  # the series' first record sets its grid: it must be a grid time
                why_not = self.spec.off_grid(sid, t)
                if why_not is not None:
                    report.rejected.append(Rejected(i, sid, raw_t, why_not))
                    continue
            else:
                if t <= last:
                    what = "duplicate" if t == last else "out-of-order"
                    report.rejected.append(Rejected(i, sid, raw_t, f"{what} timestamp: the series is already at "
                                                                   f"{self.spec.format_time(last)}"))
                    continue
                k, on = freq.index(last, t)
                if not on:
                    report.rejected.append(Rejected(i, sid, raw_t, f"timestamp is off the {freq} grid of the series "
                                                                   f"(last {self.spec.format_time(last)})"))
                    continue
                k = int(k)
                if k < 1 or (self.max_gap is not None and k > self.max_gap):  # k < 1: int64 overflow
                    report.rejected.append(Rejected(i, sid, raw_t, self._gap_reason(k, last)))
                    continue
                if k > C:  # restart from zero: the last C - 1 missing periods, then the record
                    reset = True
                    gap = self.spec.grid_times(last, np.arange(k - C + 1, k, dtype=np.int64))
                else:
                    gap = self.spec.grid_times(last, np.arange(1, k, dtype=np.int64))
            steps = plan.setdefault(sid, [])
            steps.extend((int(g), None, reset and q == 0, None) for q, g in enumerate(gap))
            steps.append((t, scaled, reset and gap.size == 0, i))
            last_planned[sid] = t
            report.accepted += 1
        if plan:
            self._advance(plan, report, raw_list)
            report.rejected.sort(key=lambda r: r.index)
        return report

    def _gap_reason(self, k: int, last: int) -> str:
        since = f"after the series' last time {self.spec.format_time(last)}"
        if k < 1:  # the distance overflowed int64 nanoseconds (some 292 years)
            return f"timestamp is too far {since}: a mistyped time?"
        return (f"timestamp is {k} periods ({self.spec.freq}) {since}, more than max_gap={self.max_gap}: a mistyped "
                "time? If the gap is real, raise the limit (StreamingForecaster(max_gap=...), or --max_gap N / none "
                "on the command line)")

    def _advance(self, plan: dict[str, list[tuple]], report: ObserveReport, raw_times: Sequence) -> None:
        """Run the planned steps in rounds: round j advances every series with a j-th step, in one
        batched ``step_`` call. A series whose state turns non-finite is put back as it was before
        the call and its records of the call are rejected; any exception puts every series back."""
        sids = list(plan)
        rows_all = np.array([self._row(sid, create=True) for sid in sids], dtype=np.int64)
        steps = list(plan.values())
        lengths = np.array([len(s) for s in steps])
        n_values = self._t["params"].shape[2]
        alive = np.ones(len(sids), dtype=bool)
        run = np.zeros(len(sids), dtype=np.int64)
        with _one_thread_if_small(self.device, len(rows_all)):
            saved = self._save_rows(rows_all)
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
                    failed = self._round(rows_all[idx], times, vals, reset)
                    run[idx] += 1
                    if failed.any():
                        bad = idx[failed]
                        alive[bad] = False
                        self._restore_rows(saved, bad)
                        for m in bad:
                            self._reject_series(report, sids[m], steps[m], j, raw_times)
            except BaseException:
                self._restore_rows(saved)
                raise
        report.steps = int(run[alive].sum())

    @staticmethod
    def _reject_series(report: ObserveReport, sid: str, steps: list[tuple], j: int, raw_times: Sequence) -> None:
        """Reject every record of a series in this call after its step j made the state non-finite."""
        culprit = next(s[3] for s in steps[j:] if s[3] is not None)
        for _, _, _, i in steps:
            if i is None:
                continue
            report.accepted -= 1
            why = _NONFINITE if i == culprit else (f"not applied: record {culprit} of series in this call made the "
                                                   "state non-finite; the series is kept as before the call")
            report.rejected.append(Rejected(i, sid, raw_times[i], why))

    def _save_rows(self, rows: np.ndarray) -> tuple:
        """A copy of table rows ``rows`` (state and every per-series table), for :meth:`_restore_rows`."""
        rows_t = torch.from_numpy(rows).to(self.device)
        state = None if self.windowed else self._state.index_select(1, rows_t)
        return rows, rows_t, state, {k: v[rows].copy() for k, v in self._t.items()}

    def _restore_rows(self, saved: tuple, which: np.ndarray | None = None) -> None:
        """Put rows saved by :meth:`_save_rows` back (``which``: positions among them; None = all)."""
        rows, rows_t, state, tables = saved
        if which is not None:
            w = torch.from_numpy(np.asarray(which, dtype=np.int64)).to(self.device)
            rows, rows_t = rows[which], rows_t[w]
            state = None if state is None else state[:, w]
            tables = {k: v[which] for k, v in tables.items()}
        if state is not None:
            self._state[:, rows_t] = state
        for k, v in tables.items():
            self._t[k][rows] = v

    def _round(self, rows: np.ndarray, times: np.ndarray, scaled: np.ndarray,
               reset: np.ndarray | None = None) -> np.ndarray:
        """One recurrent step for distinct table rows ``rows`` at ``times`` (M,) from scaled float32
        values (M, targets + past + future covariates), NaN = missing; rows with ``reset`` start
        from the zero state. Encode, step, bookkeep. Returns the rows (bool (M,)) whose state is not
        finite after the step (the caller restores them)."""
        C, P = len(self.target_cols), len(self.past_cols)
        t = self._t
        observed = ~np.isnan(scaled)
        scaled = np.where(observed, scaled, np.float32(0.0))
        future = np.concatenate([scaled[:, C + P:], self.spec.calendar_features(times)], axis=1)
        obs_t = observed[:, :C]
        rows_t = torch.from_numpy(rows).to(self.device)
        if reset is not None and reset.any():  # a restart: the zero state and an empty look-back
            r = rows[reset]
            if not self.windowed:
                self._state[:, rows_t[torch.from_numpy(reset).to(self.device)]] = 0.0
            for k in ("ring_y", "ring_o", "ring_x", "sum_y", "cnt", "last_y"):
                if k in t:
                    t[k][r] = 0
            if "last_n" in t:
                t["last_n"][r] = -1
        finite = np.ones(len(rows), dtype=bool)
        if not self.windowed:
            values = scaled[:, :C]
            if self.net.inputs == "relative":
                values = self._relative_values(rows, values, obs_t)
            self._step_rows(rows, values, obs_t.astype(np.float32), scaled[:, C:C + P], future)
            if self._state.device.type == "cpu":  # numpy: 2.5 us for one row, torch's op dispatch 17 us (2-core CPU)
                finite = np.isfinite(self._state.numpy()[:, rows]).all(axis=(0, 2))
            else:
                finite = torch.isfinite(self._state.index_select(1, rows_t)).all(dim=2).all(dim=0).cpu().numpy()
        t["last"][rows] = times
        t["n_steps"][rows] += 1
        t["n_obs"][rows] += obs_t.any(axis=1)
        if self.ring:
            slot = (t["n_steps"][rows] - 1) % self.ring
            t["ring_y"][rows, slot] = scaled[:, :C]
            t["ring_o"][rows, slot] = obs_t
            if self.windowed:
                t["ring_x"][rows, slot] = scaled[:, C:]
        return ~finite

    def _relative_values(self, rows: np.ndarray, value: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """The per-step model's relative inputs of this step (M, 2C) from the step's scaled values and
        mask (M, C), in O(1): the look-back's running sum and count (the step ``T`` steps back leaves
        it, this one joins) and the last observation: what
        :func:`~forecaster.nets.common.relative_features` computes for it in a window. Updates that
        bookkeeping (part of the round: rolled back with it). A series' sum is recomputed from its
        ring every ``T`` steps (amortised O(1)) and when a value above ``HEAL_ABOVE`` (scaled)
        leaves it, so neither rounding nor one huge value lingers in it."""
        t, T = self._t, self.context_length
        n = t["n_steps"][rows]  # this step's number
        leaving = n >= T
        heal = (n > 0) & (n % T == 0)  # once per look-back, and where a huge value leaves
        if leaving.any():  # its slot still holds step n - T
            r, slot = rows[leaving], n[leaving] % T
            o_old = t["ring_o"][r, slot]
            old = t["ring_y"][r, slot] * o_old
            t["sum_y"][r] -= old
            t["cnt"][r] -= o_old.astype(np.int64)
            heal[leaving] |= (np.abs(old) > HEAL_ABOVE).any(axis=1)
        t["sum_y"][rows] += np.where(observed, value, 0.0)
        t["cnt"][rows] += observed
        if heal.any():  # the sum from the ring: subtracting what leaves is not exact, and a huge value
            r, slot = rows[heal], n[heal] % T  # would linger in the sum; slot n % T is step n - T's
            o = t["ring_o"][r].astype(np.float64)  # (M', T, C)
            o[np.arange(len(r)), slot] = 0.0
            t["sum_y"][r] = (t["ring_y"][r] * o).sum(axis=1) + np.where(observed[heal], value[heal], 0.0)
            t["cnt"][r] = o.sum(axis=1).astype(np.int64) + observed[heal]
        mean = t["sum_y"][rows] / np.maximum(t["cnt"][rows], 1)
        last_n = t["last_n"][rows]
        has_prev = self._in_look_back(last_n, n)
        change = np.where(observed & has_prev, value - t["last_y"][rows], 0.0)
        dev = np.where(observed, value - mean, 0.0)
        t["last_y"][rows] = np.where(observed, value, t["last_y"][rows])
        t["last_n"][rows] = np.where(observed, n[:, None], last_n)
        return np.concatenate([change, dev], axis=1).astype(np.float32)

    def _step_rows(self, rows: np.ndarray, target, observed, past, future) -> None:
        """One recurrent step for table rows ``rows`` (all distinct) from one step's features."""
        dev = self.device
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dev)  # noqa: E731
        self.net.step_(self._state, torch.from_numpy(rows).to(dev), as_t(target), as_t(observed), as_t(past),
                       as_t(future))

    # -------------------------------------------------------------------------------------------
    # forecasts and state

    def _select(self, series: Sequence[str] | str | None) -> tuple[list[str], np.ndarray]:
        if series is None:
            ids = [s for s in self._id_list if self._n_steps[self._ids[s]] > 0]
        else:
            ids = [series] if isinstance(series, str) else [str(s) for s in series]
            unknown = [s for s in ids if s not in self._ids or self._n_steps[self._ids[s]] == 0]
            if unknown:
                raise ValueError(f"series {unknown[:5]} have no observations yet; observe() them first")
        return ids, np.array([self._ids[s] for s in ids], dtype=np.int64)

    @torch.inference_mode()
    def forecast_values(self, series: Sequence[str] | str | None = None, future: pl.DataFrame | None = None
                        ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The forecasts as arrays: ``(ids, origins int64 (M,), values float32 (M, horizon, C, Q))``
        in original units (what :meth:`forecast` puts in a table)."""
        ids, rows = self._select(series)
        H, C = self.horizon, len(self.target_cols)
        if not ids:
            return ids, np.empty(0, np.int64), np.empty((0, H, C, self.net.n_quantiles), np.float32)
        steps = np.arange(1, H + 1, dtype=np.int64)
        times = self.spec.grid_times(self._last[rows][:, None], steps[None, :])  # (M, H)
        cal = self.spec.calendar_features(times.reshape(-1)).reshape(len(rows), H, -1)
        ahead = np.concatenate([self._future_values(ids, rows, times, future), cal], axis=2) if self.future_cols \
            else cal
        if self.windowed:
            y = self._window_forecast(rows, ahead)
        else:
            y = self._state_forecast(rows, ahead)
        loc = self._t["params"][rows, 0, :C][:, None, :, None]
        scl = self._t["params"][rows, 1, :C][:, None, :, None]
        return ids, self._last[rows].copy(), (y * scl + loc).astype(np.float32)

    def _state_forecast(self, rows: np.ndarray, ahead: np.ndarray) -> np.ndarray:
        """Per-step model: decode each series' state (and add its baseline): (M, H, C, Q) scaled."""
        h = self.net.output_state(self._state, torch.from_numpy(rows).to(self.device))
        fut_t = torch.from_numpy(np.ascontiguousarray(ahead, dtype=np.float32)).to(self.device)
        with _one_thread_if_small(self.device, len(rows)):
            y = self.net.decode(h, fut_t.reshape(len(rows), -1))
            if self.net.baseline != "none":
                params = torch.from_numpy(self._t["base"][rows]).to(self.device)
                if "sum_y" in self._t:  # the running look-back summary: O(season) per forecast
                    as_t = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
                    y = self.net.add_baseline_from_summary(y, tuple(as_t(a) for a in self._summary(rows)), params)
                else:
                    win_y, win_o, _ = self._window(rows)
                    y = self.net.add_baseline(y, torch.from_numpy(win_y).to(self.device),
                                              torch.from_numpy(win_o).to(self.device), params)
            return y.float().cpu().numpy()  # (M, H, C, Q)

    def _in_look_back(self, last_n: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Whether each last observation (step numbers (M, C); -1: none) lies in the look-back of
        step ``step`` (M,), ``[step - T + 1, step]``: (M, C) bool."""
        return (last_n >= 0) & (step[:, None] - last_n <= self.context_length - 1)

    def _summary(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """What the baseline reads of each series' look-back, from the running bookkeeping of the
        relative inputs and the last ``season_width(m, T)`` slots of the ring: last observed value
        (M, C) and whether there is one, the look-back's mean (M, C) and whether there is one, and
        the last season's values and mask (M, W, C), oldest first (see
        :func:`~forecaster.baseline.baseline_from_summary`)."""
        t, T = self._t, self.context_length
        cur = t["n_steps"][rows] - 1  # the last step's number
        has_last = self._in_look_back(t["last_n"][rows], cur)
        cnt = t["cnt"][rows]
        mean = (t["sum_y"][rows] / np.maximum(cnt, 1)).astype(np.float32)
        season, season_obs, _ = self._window(rows, season_width(self.net.season_length, T))
        return t["last_y"][rows], has_last, mean, cnt > 0, season, season_obs

    def _window(self, rows: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``width`` (default ``context_length``, at most that) steps of each series from its
        ring, oldest first: scaled targets (M, W, C), observed (M, W, C) and the other inputs
        (M, W, P + F_user; the window model only, else None); steps before a series' first
        observation are unobserved zeros, as ``predict`` pads them."""
        t, T = self._t, self.context_length
        W = T if width is None else width
        n = t["n_steps"][rows]
        j = np.arange(W)
        step = n[:, None] - W + j[None, :]  # the step number at window position j
        ok = step >= 0
        slot = np.where(ok, step, 0) % T
        r = rows[:, None]
        y = np.where(ok[..., None], t["ring_y"][r, slot], 0.0)
        o = np.where(ok[..., None], t["ring_o"][r, slot], 0.0)
        x = np.where(ok[..., None], t["ring_x"][r, slot], 0.0) if "ring_x" in t else None
        return y.astype(np.float32), o.astype(np.float32), x

    def _window_forecast(self, rows: np.ndarray, ahead: np.ndarray) -> np.ndarray:
        """Window model: run the window of each series (the forecast ``predict`` makes from the same
        origin): (M, H, C, Q) scaled."""
        T, H, C, P = self.context_length, self.horizon, len(self.target_cols), len(self.past_cols)
        M = len(rows)
        y, o, x = self._window(rows)
        times = self.spec.grid_times(self._last[rows][:, None], np.arange(-T + 1, 1)[None, :])  # (M, T)
        cal = self.spec.calendar_features(times.reshape(-1)).reshape(M, T, -1)
        future_ctx = np.concatenate([x[..., P:], cal], axis=2)  # user future covariates, then calendar
        z = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)  # noqa: E731
        target = as_t(np.concatenate([y, z(M, H, C)], axis=1))
        observed = as_t(np.concatenate([o, z(M, H, C)], axis=1))
        past = as_t(np.concatenate([x[..., :P], z(M, H, P)], axis=1))
        fut = as_t(np.concatenate([future_ctx, ahead], axis=1))
        base = torch.from_numpy(self._t["base"][rows]).to(self.device)
        with _one_thread_if_small(self.device, M):
            return self.net.forecast_last(target, observed, past, fut, T, base).float().cpu().numpy()

    def forecast(self, series: Sequence[str] | str | None = None, future: pl.DataFrame | None = None) -> pl.DataFrame:
        """Forecast the next ``horizon`` periods from each series' current state, without changing it.

        Args:
            series: ids (default: every series observed so far).
            future: when the model has user future covariates, their values for the forecast
                periods: a DataFrame with the id column, the time column and those columns.

        Returns:
            The forecast table of :mod:`forecaster.forecasts` (``series``, ``origin`` (the last
            observed time), ``time``, ``step``, ``target``, ``value``, ``q<level>``...), original
            units.
        """
        ids, origins, y = self.forecast_values(series, future)
        if not ids:
            return empty_forecast_frame(self.spec, self.net.quantiles)
        return forecast_frame(self.spec, ids, origins, y, self.net.quantiles, self.net.anchor)

    def _future_values(self, ids, rows, times, future: pl.DataFrame | None) -> np.ndarray:
        if future is None:
            raise ValueError(f"the model uses future covariates {self.future_cols}: pass their values for the "
                             f"next {self.horizon} periods as forecast(future=DataFrame)")
        key = [self.id_col] if self.id_col else []
        missing = [c for c in key + [self.time_col] + self.future_cols if c not in future.columns]
        if missing:
            raise ValueError(f"future lacks column(s) {missing}")
        t, null = self.spec.parse_times(future[self.time_col], what="future's time column")
        want = pl.DataFrame({"__sid": np.repeat(np.array(ids, dtype=object), times.shape[1]).astype(str),
                             "__t": times.reshape(-1)})
        f = future.select(
            (pl.col(self.id_col).cast(pl.String) if self.id_col else pl.lit(self.single_id)).alias("__sid"),
            *[pl.col(c).cast(pl.Float64) for c in self.future_cols],
        ).with_columns(pl.Series("__t", t))
        joined = want.join(f, on=["__sid", "__t"], how="left", maintain_order="left")
        vals = joined.select(self.future_cols).to_numpy().reshape(len(ids), times.shape[1], -1)
        if np.isnan(vals).any():
            raise ValueError(f"future covariates {self.future_cols} are missing for some of the next "
                             f"{self.horizon} periods of series {ids[:5]}")
        k = len(self.target_cols) + len(self.past_cols)
        loc = self._t["params"][rows, 0, k:][:, None, :]
        scl = self._t["params"][rows, 1, k:][:, None, :]
        scaled = self._scale(vals, loc, scl)
        if not np.isfinite(scaled).all():
            raise ValueError(f"future covariates {self.future_cols} hold a value that is infinite or overflows float32 "
                             "once scaled")
        return scaled

    def hidden_state(self, series: Sequence[str] | str | None = None) -> tuple[list[str], torch.Tensor]:
        """Each series' GRU state (per-step model), e.g. for embeddings or monitoring.

        Returns:
            (ids, states): states is a float32 tensor (len(ids), num_layers, H), a copy; for an
            ensemble of K networks (len(ids), K * num_layers, H), member by member.
        """
        if self.windowed:
            raise ValueError("this stream keeps no state between observations (it runs each window: the window "
                             "model, or history='window'); hidden_state() is for the per-step model's carried state")
        ids, rows = self._select(series)
        return ids, self._state[:, torch.from_numpy(rows).to(self.device)].transpose(0, 1).cpu().clone()

    def info(self) -> pl.DataFrame:
        """One row per series: id, last time, observations seen, steps run (gap steps included), and
        the bytes its state and buffers take."""
        n = len(self._id_list)
        return pl.DataFrame([pl.Series("series", self._id_list, dtype=pl.String),
                             self.spec.times_series(self._last[:n], "last_time"),
                             pl.Series("observations", self._t["n_obs"][:n]), pl.Series("steps", self._n_steps[:n]),
                             pl.Series("memory_bytes", np.full(n, self.memory_per_series(), dtype=np.int64))])

    # -------------------------------------------------------------------------------------------
    # snapshots

    def _fingerprint(self) -> dict:
        fp = {"num_layers": self.num_layers, "hidden_size": self.hidden_size, "target_cols": self.target_cols,
              "freq": str(self.spec.freq), "time_kind": self.spec.time_kind, "weights": self._digest}
        if self.windowed and self.net.carries_state:  # its snapshot holds windows, not states
            fp["history"] = "window"
        return fp

    def save_state(self, path: str | os.PathLike) -> None:
        """Write every series' state, last time, counts, scalers and baseline buffers to ``path``
        atomically (:mod:`forecaster.snapshot`): a crash mid-write leaves the previous snapshot whole."""
        n = len(self._id_list)
        write_snapshot(path, {
            "format_version": STATE_FORMAT_VERSION,
            "fingerprint": self._fingerprint(),
            "ids": list(self._id_list),
            "state": self._state[:, :n].cpu().clone(),
            **{k: torch.from_numpy(v[:n].copy()) for k, v in self._t.items()},
        })

    def load_state(self, path: str | os.PathLike) -> None:
        """Restore a snapshot written by :meth:`save_state`, replacing the current state. All or
        nothing: a file that does not fit leaves the current state as it was and raises
        ``ValueError`` (one line)."""
        payload = read_snapshot(path)
        where = f"state file {str(path)!r}"
        version = payload.get("format_version")
        if version != STATE_FORMAT_VERSION:
            raise SnapshotError(f"{where} has format version {_show(version)}, expected {STATE_FORMAT_VERSION}")
        fp = payload.get("fingerprint")
        mine = self._fingerprint()
        if isinstance(fp, dict) and fp.get("history") != mine.get("history") and \
                {k: v for k, v in fp.items() if k != "history"} == {k: v for k, v in mine.items() if k != "history"}:
            theirs = fp.get("history") or "carry"
            raise SnapshotError(f"{where} was written with history={theirs!r}, this stream uses "
                                f"history={self.history!r}; start it with history={theirs!r} (--history {theirs}) "
                                "to continue from it")
        if not isinstance(fp, dict) or fp != mine:
            raise SnapshotError(f"{where} was written for another model ({_show(fp)}), this one is "
                                f"{mine}; delete it to start the series from zero")
        try:
            ids, state, tables = self._snapshot_arrays(payload)
        except SnapshotError as e:
            raise SnapshotError(f"{where} {e}") from None
        except Exception as e:  # noqa: BLE001 - whatever a foreign structure raises: one line, no traceback
            raise SnapshotError(f"{where} is not a snapshot of this format ({type(e).__name__}: "
                                f"{_show(str(e))})") from None
        n = len(ids)
        rows = 0 if self.windowed else n
        old = (self._ids, self._id_list, self._state, self._t)
        try:
            self._reset(max(n, 1))
            self._state[:, :rows] = state.to(self.device)
            for k, v in tables.items():
                self._t[k][:n] = v
            self._ids = {sid: i for i, sid in enumerate(ids)}
            self._id_list = ids
        except BaseException:
            (self._ids, self._id_list, self._state, self._t) = old
            raise

    def _snapshot_arrays(self, payload: dict) -> tuple:
        """A snapshot's contents, checked: ids, the GRU state and the per-series tables; a
        :class:`SnapshotError` saying what does not fit (the caller adds the file's name)."""
        ids = payload["ids"]
        if not isinstance(ids, (list, tuple)) or not all(isinstance(s, str) for s in ids):
            raise SnapshotError("is inconsistent (ids are not a list of strings)")
        ids = list(ids)
        n = len(ids)
        bad_id = next((s for s in ids if not s or len(s) > MAX_ID_LENGTH), None)
        if bad_id is not None or len(set(ids)) != n:
            raise SnapshotError("is inconsistent (an id is empty, longer than MAX_ID_LENGTH or repeated)")
        layout = self._layout()
        arrays = {k: payload[k] for k in ("state", *layout)}
        floats = {"state", *(k for k, (_, dt, _) in layout.items() if np.dtype(dt).kind == "f")}
        wrong = [k for k, v in arrays.items() if not isinstance(v, torch.Tensor)
                 or v.is_floating_point() != (k in floats) or v.is_complex()]
        if wrong:
            raise SnapshotError(f"is inconsistent ({wrong} are not tensors of the right kind)")
        shapes = {"state": (self.num_layers, 0 if self.windowed else n, self.hidden_size),
                  **{k: (n, *shape) for k, (shape, _, _) in layout.items()}}
        wrong = [f"{k} {tuple(arrays[k].shape)} (expected {shapes[k]})" for k in shapes
                 if tuple(arrays[k].shape) != shapes[k]]
        if wrong:
            raise SnapshotError(f"is inconsistent (array shapes do not match its {n} series: {', '.join(wrong)})")
        state = arrays["state"].float()
        tables = {k: arrays[k].numpy().astype(dt) for k, (_, dt, _) in layout.items()}
        if not (torch.isfinite(state).all() and all(np.isfinite(v).all() for k, v in tables.items() if k in floats)):
            raise SnapshotError("holds non-finite values")
        n_obs, n_steps = tables["n_obs"], tables["n_steps"]
        if not ((tables["params"][:, 1] > 0).all() and (n_obs >= 0).all() and (n_obs <= n_steps).all()):
            raise SnapshotError("is inconsistent (a scale <= 0 or counts out of range)")
        return ids, state, tables
