"""StreamingForecaster: every series' GRU state kept between observations, so a new observation
costs one recurrent step whatever the length of the history.

Stream semantics (each tested in ``tests/forecaster/test_streaming.py``):

- Times are read by the one time rule of the data spec (:mod:`forecaster.timeaxis`): zone-aware
  times (aware ``datetime``, zoned columns, ISO strings with an offset) are converted to UTC, naive
  ones taken as given: the same instant lands on the same step as in training.
- The state of a series advances once per period of the data's frequency. A record whose
  time skips k periods first advances the k - 1 missing periods as steps with every target
  unobserved (observed mask 0, covariates 0, calendar features of the missing time), exactly as
  the data module encodes gaps for training; then the record's own step.
- A record at or before the series' last time (out of order, or a duplicate), off the frequency
  grid, or with an unreadable time is rejected with a reason; the series' state is unchanged; the
  other records are still processed. Records are applied in the order given.
- A null or NaN target is a missing observation (observed mask 0), not an error. An infinite
  value rejects the record.
- A series never seen before starts from the zero state (as every training window does). Its
  scaler is its own when the checkpoint was trained on it, otherwise (``new_series="pooled"``,
  the default) the spec's pooled scalers (the median over the training series);
  ``new_series="reject"`` rejects records of unknown series instead.
- Missing or non-numeric columns raise ``ValueError`` naming them (nothing is applied).

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

from forecaster.forecasts import empty_forecast_frame, forecast_frame
from forecaster.nets import StepForecastNet, WindowForecastNet
from forecaster.snapshot import SnapshotError, read_snapshot, write_snapshot
from forecaster.spec import DataSpec

__all__ = ["StreamingForecaster", "ObserveReport", "Rejected", "STATE_FORMAT_VERSION"]

STATE_FORMAT_VERSION = 3
_NO_TIME = np.iinfo(np.int64).min
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
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


class StreamingForecaster:
    """Online forecasting with a trained network and its data spec.

    Two kinds of model stream, with the same API:

    * the per-step model (:class:`forecaster.nets.StepForecastNet`) keeps each series' GRU state and
      advances it one recurrent step per observation (plus a ring of the last season of targets and
      the last observed value, for its baseline);
    * the window model (:class:`forecaster.nets.WindowForecastNet`: segments, RevIN, channel
      independence, the PMF decoder) keeps a ring buffer of each series' last ``context_length``
      steps (O(1) per observation) and runs the window when a forecast is asked for: the forecast
      equals ``predict``'s at the same origin.

    Args:
        net: the trained network (``model.net`` of a :class:`forecaster.GRUForecaster`).
        spec: the data spec (:class:`forecaster.spec.DataSpec` or its dict, ``model.data_spec``):
            columns, time axis, scalers.
        device: where the state table and the recurrence live ("cpu" or "cuda").
        new_series: "pooled" (default) or "reject"; see the module docstring.
        capacity: initial number of rows of the state table (it grows by doubling).
    """

    def __init__(self, net: torch.nn.Module, spec: DataSpec | dict, device: str | torch.device = "cpu",
                 new_series: str = "pooled", capacity: int = 64) -> None:
        if new_series not in ("pooled", "reject"):
            raise ValueError(f"new_series must be 'pooled' or 'reject', got {new_series!r}")
        if spec is None:
            raise ValueError("the model has no data spec; train it with a TimeSeriesDataModule "
                             "(the CLI links it) so the checkpoint knows columns, frequency and scalers")
        if not isinstance(net, (StepForecastNet, WindowForecastNet)):
            raise ValueError(f"net must be a StepForecastNet or WindowForecastNet (model.net), got {type(net).__name__}")
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
        gru = self.net.gru
        self.num_layers, self.hidden_size = gru.num_layers, gru.hidden_size
        self.context_length = int(s.context_length)
        self.windowed = isinstance(self.net, WindowForecastNet)
        # a ring buffer of the look-back: every input column for the window model; the targets for the
        # per-step model's baseline (the season, the last value and the mean of the look-back)
        self.ring = self.context_length if self.windowed or self.net.baseline != "none" else 0
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

    def _required(self) -> list[str]:
        return ([self.id_col] if self.id_col else []) + [self.time_col] + self.target_cols + self.past_cols

    def _columns(self, data) -> dict[str, list]:
        """Records (a Polars DataFrame, or a list of dicts) -> column lists (the time column as given),
        checked for missing columns."""
        need = self._required()
        if isinstance(data, pl.DataFrame):
            return {c: data[c] if c == self.time_col else data[c].to_list()
                    for c in need + [c for c in self.future_cols if c in data.columns]}
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
        vals = raw.to_list() if isinstance(raw, pl.Series) else list(raw)
        why = [None if not n else ("null time" if v is None else f"time {v!r} could not be read")
               for v, n in zip(vals, null)]
        return t, why

    @staticmethod
    def _number(value) -> float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"value {value!r} is not a number")
        return float(value)

    def _observe_frame_fast(self, df: pl.DataFrame) -> ObserveReport | None:
        """Vectorised path for the common case: every record of a known series, each series once,
        exactly one period after its last time, finite values. None when any of that fails (the
        general path then handles the batch record by record)."""
        n = df.height
        if n == 0:
            return ObserveReport()
        sids = df[self.id_col].cast(pl.String).to_list() if self.id_col else [self.single_id] * n
        if len(set(sids)) != n:
            return None
        rows = [self._ids.get(sid) for sid in sids]
        if any(r is None for r in rows):
            return None
        rows = np.array(rows, dtype=np.int64)
        try:
            times, null = self.spec.parse_times(df[self.time_col], strict=False)
        except ValueError:
            return None
        if null.any():
            return None
        last = self._last[rows]
        if np.any(last == _NO_TIME) or np.any(self.spec.grid_times(last, 1) != times):
            return None
        value_cols = self.spec.value_cols
        vals = df.select([pl.col(c).cast(pl.Float64) if c in df.columns else pl.lit(None, pl.Float64).alias(c)
                          for c in value_cols]).to_numpy()
        if np.isinf(vals).any():
            return None
        self._round(rows, times, vals)
        return ObserveReport(accepted=n, steps=n)

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
        # per series: the steps to run, in order: (time, values or None for a gap step)
        plan: dict[int, list[tuple[int, np.ndarray | None]]] = {}
        last_planned: dict[int, int] = {}
        for i in range(n):
            sid = str(cols[self.id_col][i]) if self.id_col else self.single_id
            raw_t = raw_list[i]
            if why[i] is not None:
                report.rejected.append(Rejected(i, sid, raw_t, why[i]))
                continue
            t = int(times[i])
            try:
                vals = np.array([self._number(cols[c][i]) for c in value_cols], dtype=np.float64)
                if np.isinf(vals).any():
                    bad = [c for c, v in zip(value_cols, vals) if np.isinf(v)]
                    raise ValueError(f"infinite value in {bad}")
            except (ValueError, TypeError) as e:
                report.rejected.append(Rejected(i, sid, raw_t, str(e)))
                continue
            known = sid in self._ids
            if not known and self.new_series == "reject" and int(self.spec.series_index([sid])[0]) < 0:
                report.rejected.append(Rejected(i, sid, raw_t, "unknown series (new_series='reject')"))
                continue
            row = self._row(sid, create=True)
            last = last_planned.get(row, self._last[row])
            if last != _NO_TIME:
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
                gap = self.spec.grid_times(last, np.arange(1, k, dtype=np.int64))
            else:
                gap = np.empty(0, dtype=np.int64)
            steps = plan.setdefault(row, [])
            steps.extend((int(g), None) for g in gap)
            steps.append((t, vals))
            last_planned[row] = t
            report.accepted += 1
        if plan:
            report.steps = self._advance(plan)
        return report

    def _advance(self, plan: dict[int, list[tuple[int, np.ndarray | None]]]) -> int:
        """Run the planned steps in rounds: round j advances every series with a j-th step, in one
        batched ``step_`` call."""
        rows_all = np.fromiter(plan.keys(), dtype=np.int64)
        lengths = np.array([len(plan[r]) for r in rows_all])
        n_values = self._t["params"].shape[2]
        total = 0
        for j in range(int(lengths.max())):
            sel = rows_all[lengths > j]
            times = np.array([plan[r][j][0] for r in sel], dtype=np.int64)
            vals = np.full((len(sel), n_values), np.nan)
            for m, r in enumerate(sel):
                v = plan[r][j][1]
                if v is not None:
                    vals[m] = v
            self._round(sel, times, vals)
            total += len(sel)
        return total

    def _round(self, rows: np.ndarray, times: np.ndarray, vals: np.ndarray) -> None:
        """One recurrent step for distinct table rows ``rows`` at ``times`` (M,) from raw values
        (M, targets + past + future covariates), NaN = missing: scale, encode, step, bookkeep."""
        C, P = len(self.target_cols), len(self.past_cols)
        t = self._t
        scaled = (vals - t["params"][rows, 0]) / t["params"][rows, 1]
        observed = ~np.isnan(scaled)
        scaled = np.where(observed, scaled, 0.0).astype(np.float32)
        future = np.concatenate([scaled[:, C + P:], self.spec.calendar_features(times)], axis=1)
        obs_t = observed[:, :C]
        if not self.windowed:
            with _one_thread_if_small(self.device, len(rows)):
                self._step_rows(rows, scaled[:, :C], obs_t.astype(np.float32), scaled[:, C:C + P], future)
        t["last"][rows] = times
        t["n_steps"][rows] += 1
        t["n_obs"][rows] += obs_t.any(axis=1)
        if self.ring:
            slot = (t["n_steps"][rows] - 1) % self.ring
            t["ring_y"][rows, slot] = scaled[:, :C]
            t["ring_o"][rows, slot] = obs_t
            if self.windowed:
                t["ring_x"][rows, slot] = scaled[:, C:]

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
            unknown = [s for s in ids if s not in self._ids]
            if unknown:
                raise ValueError(f"series {unknown} have no observations yet; observe() them first")
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
        h = self._state[-1, torch.from_numpy(rows).to(self.device)]
        fut_t = torch.from_numpy(np.ascontiguousarray(ahead, dtype=np.float32)).to(self.device)
        with _one_thread_if_small(self.device, len(rows)):
            y = self.net.decode(h, fut_t.reshape(len(rows), -1))
            if self.net.baseline != "none":
                win_y, win_o, _ = self._window(rows)
                y = self.net.add_baseline(y, torch.from_numpy(win_y).to(self.device),
                                          torch.from_numpy(win_o).to(self.device),
                                          torch.from_numpy(self._t["base"][rows]).to(self.device))
            return y.float().cpu().numpy()  # (M, H, C, Q)

    def _window(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``context_length`` steps of each series from its ring, oldest first: scaled targets
        (M, T, C), observed (M, T, C) and the other inputs (M, T, P + F_user); steps before a series'
        first observation are unobserved zeros, as ``predict`` pads them."""
        t, T = self._t, self.context_length
        n = t["n_steps"][rows]
        j = np.arange(T)
        step = n[:, None] - T + j[None, :]  # the step number at window position j
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

    def _window(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``context_length`` steps of each series from its ring, oldest first: scaled targets
        (M, T, C), observed (M, T, C) and the other inputs (M, T, P + F_user); steps before a series'
        first observation are unobserved zeros, as ``predict`` pads them."""
        t, T = self._t, self.context_length
        n = t["n_steps"][rows]
        j = np.arange(T)
        step = n[:, None] - T + j[None, :]  # the step number at window position j
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

    def _baseline_window(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The (M, T, C) scaled targets and observed mask the baseline reads, as ``predict`` would
        build them for the same origin: the last season from the ring buffer, the last observed value
        at its place when it is older, everything else unobserved."""
        t, R, T, C = self._t, self.ring, self.context_length, len(self.target_cols)
        M = len(rows)
        y = np.zeros((M, T, C), dtype=np.float32)
        o = np.zeros((M, T, C), dtype=np.float32)
        n = t["n_steps"][rows]  # steps seen; the newest is at window position T - 1
        back = t["n_steps"][rows][:, None] - t["last_n"][rows]  # (M, C): steps since the last observation
        old = (t["last_n"][rows] > 0) & (back >= R) & (back < T)
        m_i, c_i = np.nonzero(old)
        y[m_i, T - 1 - back[m_i, c_i], c_i] = t["last_y"][rows][m_i, c_i]
        o[m_i, T - 1 - back[m_i, c_i], c_i] = 1.0
        for j in range(min(R, T)):  # window position T-1-j holds step n-1-j, at slot (n-1-j) % R
            ok = n - 1 - j >= 0
            slot = (n - 1 - j) % R
            y[ok, T - 1 - j] = t["ring_y"][rows[ok], slot[ok]]
            o[ok, T - 1 - j] = t["ring_o"][rows[ok], slot[ok]]
        dev = self.device
        return torch.from_numpy(y).to(dev), torch.from_numpy(o).to(dev)

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
        return ((vals - loc) / scl).astype(np.float32)

    def hidden_state(self, series: Sequence[str] | str | None = None) -> tuple[list[str], torch.Tensor]:
        """Each series' GRU state (per-step model), e.g. for embeddings or monitoring.

        Returns:
            (ids, states): states is a float32 tensor (len(ids), num_layers, H), a copy.
        """
        if self.windowed:
            raise ValueError("the window model keeps no state between observations (it runs each window); "
                             "hidden_state() is for the per-step model")
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
        return {"num_layers": self.num_layers, "hidden_size": self.hidden_size, "target_cols": self.target_cols,
                "freq": str(self.spec.freq), "time_kind": self.spec.time_kind, "weights": self._digest}

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
        if payload.get("format_version") != STATE_FORMAT_VERSION:
            raise SnapshotError(f"{where} has format version {payload.get('format_version')}, expected "
                                f"{STATE_FORMAT_VERSION}")
        if payload.get("fingerprint") != self._fingerprint():
            raise SnapshotError(f"{where} was written for another model ({payload.get('fingerprint')}), this one is "
                                f"{self._fingerprint()}; delete it to start the series from zero")
        layout = self._layout()
        try:
            ids = [str(s) for s in payload["ids"]]
            n = len(ids)
            state = payload["state"]
            tables = {k: payload[k].numpy().astype(dt) for k, (shape, dt, _) in layout.items()}
            rows = 0 if self.windowed else n
            shapes_ok = (tuple(state.shape) == (self.num_layers, rows, self.hidden_size) and len(set(ids)) == n
                         and all(tables[k].shape == (n, *shape) for k, (shape, _, _) in layout.items()))
        except (KeyError, AttributeError, TypeError) as e:
            raise SnapshotError(f"{where} is not a snapshot of this format ({type(e).__name__}: {e})") from None
        if not shapes_ok:
            raise SnapshotError(f"{where} is inconsistent (array shapes do not match {n} series)")
        if not (torch.isfinite(state).all() and all(np.isfinite(v).all() for v in tables.values()
                                                   if v.dtype.kind == "f")):
            raise SnapshotError(f"{where} holds non-finite values")
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
