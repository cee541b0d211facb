"""StreamingForecaster: the online contract (``observe`` new records, ``forecast`` from each
series' current state, ``save_state`` / ``load_state``), built from the parts of this package:
records (:mod:`.records`), the plan of one call (:mod:`.plan`), the series table (:mod:`.table`),
the look-back (:mod:`.lookback`), the two history strategies (:mod:`.history`) and the state
file (:mod:`.statefile`). The stream's semantics are in the package docstring.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np
import polars as pl
import torch

from forecaster.forecasts import empty_forecast_frame, forecast_frame
from forecaster.nets import GRUNetBase
from forecaster.spec import DataSpec
from forecaster.streaming.history import CarriedState, RunWindow
from forecaster.streaming.lookback import LookBack
from forecaster.streaming.plan import ObserveReport, Planner
from forecaster.streaming.records import NO_TIME, RecordReader, show
from forecaster.streaming.persist import StatePersistence
from forecaster.streaming.steps import Stepper
from forecaster.streaming.table import SeriesTable

__all__ = ["StreamingForecaster", "MAX_SERIES"]

# max_gap="auto" allows a record up to this many context lengths after its series' last time; see
# StreamingForecaster for why.
_AUTO_MAX_GAP_CONTEXTS = 2
# Future covariate values are kept for up to this many horizons ahead of a series' last time, so
# that the values of the next origin's horizon may arrive before the observation that moves it.
AHEAD_HORIZONS = 2
# Default max_series: a bound on memory that any id flood (a bug upstream, random ids) hits long
# before the machine does. memory_per_series() of fit's default model is 968 bytes for one target
# (the bench's model) and 2,320 for the embedded data's three targets and four covariates: 100,000
# series take 100 to 250 MB.
MAX_SERIES = 100_000


def _weights_digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


class StreamingForecaster(StatePersistence):
    """Online forecasting with a trained network and its data spec.

    Two kinds of model stream, with the same API:

    * the per-step model (:class:`forecaster.nets.StepForecastNet`) keeps each series' GRU state and
      advances it one recurrent step per observation (plus a ring of its look-back's targets, for its
      baseline, and running sums, for its relative inputs); an ensemble of them (``members`` K > 1,
      :class:`forecaster.nets.EnsembleNet`) keeps every member's state (K times the state per
      series) and averages the members' forecasts;
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
        new_series: "pooled" (default) or "reject"; see the package docstring.
        capacity: initial number of rows of the state table (it grows by doubling).
        max_gap: the most periods a record may lie after its series' last time (1 = the next
            period, no gap); a record further ahead is rejected with a reason. ``"auto"`` (default):
            ``2 * context_length``; ``None``: no limit.
        history: how the per-step model uses a series' past: ``"carry"`` (its default) or
            ``"window"`` (:mod:`forecaster.streaming.history`). The window model always runs its
            window (``None`` or ``"window"``).
        max_series: the most series kept (default :data:`MAX_SERIES`, 100,000; ``None``: no
            limit). When an ``observe`` call would leave more, the least recently seen series are
            evicted after it (their state is gone; a later record starts them from zero) and
            listed in :attr:`ObserveReport.evicted`.
        swappable: keep what :meth:`swap` needs to re-warm the per-step model's carried states (the
            look-back ring of every input: ``context_length`` steps of the targets and covariates);
            a stream that runs its window already keeps it. Costs that ring's memory per series.

    Why ``2 * context_length``: a gap longer than the context already restarts the series from
    the zero state (see :meth:`observe`), so accepting a record further ahead buys nothing for the
    model, while a mistyped time that is accepted moves the series ahead and every correct record
    after it is rejected as out of order (a year typo blocks an hourly series for a year). Twice
    the context lets through any outage up to two context windows (two weeks of hourly data at
    context 168) and rejects the usual far-ahead typos of sub-daily and daily data (a year is 8,760
    hourly or 365 daily periods). On weekly or monthly data a year is within twice the context: set
    ``max_gap`` lower there if such typos are a risk, or higher for longer real outages.

    A stream that writes a state file holds its lock until :meth:`close` (or the end of a ``with``
    block, or the object's collection).
    """

    def __init__(self, net: torch.nn.Module, spec: DataSpec | dict, device: str | torch.device = "cpu",
                 new_series: str = "pooled", capacity: int = 64, max_gap: int | str | None = "auto",
                 history: str | None = None, max_series: int | None = MAX_SERIES,
                 swappable: bool = False) -> None:
        if new_series not in ("pooled", "reject"):
            raise ValueError(f"new_series must be 'pooled' or 'reject', got {new_series!r}")
        if not (max_gap is None or max_gap == "auto" or _positive_int(max_gap)):
            raise ValueError(f"max_gap must be an int >= 1 (periods), 'auto' or None (no limit), got {max_gap!r}")
        if not (max_series is None or _positive_int(max_series)):
            raise ValueError(f"max_series must be an int >= 1 or None (no limit), got {max_series!r}")
        if spec is None:
            raise ValueError("the model has no data spec; train it with a TimeSeriesDataModule "
                             "(the CLI links it) so the checkpoint knows columns, frequency and scalers")
        if not isinstance(net, GRUNetBase):
            raise ValueError(f"net must be a forecasting network of forecaster.nets (model.net), got {type(net).__name__}")
        if history not in (None, "carry", "window"):
            raise ValueError(f"history must be 'carry' or 'window' (or None: the model's own), got {history!r}")
        if not net.carries_state and history == "carry":
            raise ValueError("history='carry' needs the per-step model: the window model keeps no state between "
                             "observations and always runs its window; leave history out or use 'window'")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.spec = s = DataSpec.from_dict(spec)
        self.new_series = new_series
        self.id_col: str | None = s.id_col
        self.time_col: str = s.time_col
        self.target_cols: list[str] = list(s.target_cols)
        self.past_cols: list[str] = list(s.past_covariate_cols)
        self.future_cols: list[str] = list(s.future_covariate_cols)
        self.horizon: int = int(s.horizon)
        self.context_length: int = max(1, int(s.context_length))
        self.max_gap: int | None = (_AUTO_MAX_GAP_CONTEXTS * self.context_length if max_gap == "auto"
                                    else None if max_gap is None else int(max_gap))
        self.max_series: int | None = None if max_series is None else int(max_series)
        self.history: str = "window" if not net.carries_state else (history or "carry")
        windowed = self.history == "window"
        # the look-back ring: every input column when the window runs; the targets for the per-step
        # model's baseline (season, last value, mean of the look-back) and relative inputs; with
        # swappable, every input column, for re-warming the carried states after a swap
        needed = self.context_length if (windowed or net.baseline != "none" or net.inputs == "relative") else 0
        ring = self.context_length if swappable else needed
        inputs = windowed or (swappable and len(s.value_cols) > len(s.target_cols))
        self.lookback = LookBack(self.context_length, ring, with_inputs=inputs,
                                 relative=not windowed and net.inputs == "relative")
        self._swap_ring = ring != needed or (inputs and not windowed)  # a layout of its own: snapshots tell it
        self._options = {"device": self.device, "new_series": new_series, "max_gap": self.max_gap, "history": history,
                         "max_series": self.max_series, "swappable": bool(swappable)}
        self.strategy = (RunWindow if windowed else CarriedState)(self.net, s, self.lookback, self.device)
        self.num_layers, self.hidden_size = self.net.state_shape
        self.reader = RecordReader(s)
        self.table = SeriesTable(self._layout(), self.net.state_shape, not windowed, self.device, capacity)
        self.single_id: str = Planner.single_id_of(s)
        self.planner = Planner(s, self.reader, self.table, self.max_gap, new_series)
        self.stepper = Stepper(s, self.reader, self.table, self.lookback, self.strategy, self.device, self.single_id)
        self._digest = _weights_digest(self.net)
        self._file = None  # the open state file (StatePersistence)

    def _layout(self) -> dict:
        """The per-series columns: name -> (shape after the row axis, dtype, initial value)."""
        C, D, F = len(self.target_cols), len(self.spec.value_cols), len(self.future_cols)
        ahead = {}
        if F:  # future covariate values known for the next AHEAD periods (scaled; slot j: last + j + 1)
            A = AHEAD_HORIZONS * self.horizon
            ahead = {"ahead_x": ((A, F), np.float32, 0.0), "ahead_ok": ((A, F), np.bool_, False)}
        return {"last": ((), np.int64, NO_TIME), "n_obs": ((), np.int64, 0), "n_steps": ((), np.int64, 0),
                "params": ((2, D), np.float32, 0.0),
                "base": ((C, self.spec.baseline_for([]).shape[-1]), np.float32, 0.0),
                # each target's first observation (scaled value, time): the anchor of the baseline's drift
                "first_y": ((C,), np.float32, 0.0), "first_t": ((C,), np.int64, NO_TIME),
                **self.lookback.layout(C, D), **ahead}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs):
        """Load a checkpoint written by ``python -m forecaster fit`` (tensors and plain data only:
        :func:`forecaster.checkpoint.read_checkpoint`); needs no training data."""
        from forecaster.lightning_module import load_checkpoint

        model, _ = load_checkpoint(path, map_location=torch.device(device))
        return cls(model.net, model.data_spec, device=device, **kwargs)

    # ---- the series ----

    @property
    def windowed(self) -> bool:
        """Whether the stream runs the look-back window at each forecast (``history="window"``)."""
        return self.strategy.name == "window"

    @property
    def series(self) -> list[str]:
        """Ids of every series kept, in the order of their first observation."""
        return [self.table.id_list[r] for r in self.table.ordered()]

    def __len__(self) -> int:
        return len(self.table)

    @property
    def required_columns(self) -> list[str]:
        """The columns every record needs: the id column (when the model has one), the time column,
        the targets and the past covariates (future covariates are optional)."""
        return list(self.reader.required)

    def memory_per_series(self) -> int:
        """Bytes each series takes: its recurrent state and its columns."""
        return self.table.bytes_per_row()

    def info(self) -> pl.DataFrame:
        """One row per series (order of first observation): id, last time, observations seen,
        steps run (gap steps included), and the bytes its state and buffers take."""
        rows, t = self.table.ordered(), self.table.t
        return pl.DataFrame([pl.Series("series", [self.table.id_list[r] for r in rows], dtype=pl.String),
                             self.spec.times_series(t["last"][rows], "last_time"),
                             pl.Series("observations", t["n_obs"][rows]), pl.Series("steps", t["n_steps"][rows]),
                             pl.Series("memory_bytes", np.full(len(rows), self.memory_per_series(), dtype=np.int64))])

    # ---- the online step ----

    @torch.inference_mode()
    def observe(self, data) -> ObserveReport:
        """Apply new observations.

        Args:
            data: a ``polars.DataFrame`` or a list of dicts (one per record) with the id column
                (when the model has one), the time column, every target column (null/NaN =
                missing) and every past covariate column; future covariate columns optional.

        Returns:
            :class:`ObserveReport`: records accepted, recurrent steps run, records rejected with
            their reasons (their series' state untouched), the series advanced and evicted.

        Raises:
            ValueError: a DataFrame with missing or non-numeric columns (nothing applied). A record
                of a list is rejected on its own, whatever it holds.

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
        self.table.clock += 1
        if isinstance(data, (pl.DataFrame, pl.LazyFrame)):
            data = data.collect() if isinstance(data, pl.LazyFrame) else data
            self.reader.check_frame(data)
            fast = self.stepper.observe_frame_fast(data)
            if fast is not None:
                return fast
        cols, problems, aheads = self.reader.columns(data)
        raw = cols[self.time_col]
        raw_list = raw.to_list() if isinstance(raw, pl.Series) else raw
        report = ObserveReport()
        if not raw_list:
            return report
        plan, ahead = self.planner.plan(cols, problems, raw_list, report, aheads)
        if plan:
            self.stepper.advance(plan, report, raw_list)
            report.series = [sid for sid, steps in plan.items() if any(st[3] is not None for st in steps)
                             and sid in self.table.ids]
        if ahead:
            self.stepper.keep_ahead(ahead, report)
        report.rejected.sort(key=lambda r: r.index)
        if self.max_series is not None and len(self.table) > self.max_series:
            report.evicted = self.table.evict(self.max_series)
            gone = set(report.evicted)
            report.series = [sid for sid in report.series if sid not in gone]
        return report

    # ---- forecasts and state ----

    def _select(self, series: Sequence[str] | str | None) -> tuple[list[str], np.ndarray]:
        table = self.table
        if series is None:
            rows = table.ordered()
            rows = rows[table.t["n_steps"][rows] > 0]
            return [table.id_list[r] for r in rows], rows.astype(np.int64)
        ids = [series] if isinstance(series, str) else [str(s) for s in series]
        unknown = [s for s in ids if s not in table.ids or table.t["n_steps"][table.ids[s]] == 0]
        if unknown:
            short = [s if len(s) <= 60 else s[:60] + "..." for s in unknown[:5]]
            raise ValueError(f"series {short} have no observations yet; observe() them first")
        return ids, np.array([table.ids[s] for s in ids], dtype=np.int64)

    @torch.inference_mode()
    def forecast_values(self, series: Sequence[str] | str | None = None, future: pl.DataFrame | None = None
                        ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The forecasts as arrays: ``(ids, origins int64 (M,), values float32 (M, horizon, C, Q))``
        in original units (what :meth:`forecast` puts in a table)."""
        ids, rows = self._select(series)
        H, C, t = self.horizon, len(self.target_cols), self.table.t
        if not ids:
            return ids, np.empty(0, np.int64), np.empty((0, H, C, self.net.n_quantiles), np.float32)
        steps = np.arange(1, H + 1, dtype=np.int64)
        times = self.spec.grid_times(t["last"][rows][:, None], steps[None, :])  # (M, H)
        cal = self.spec.calendar_features(times.reshape(-1)).reshape(len(rows), H, -1)
        if self.future_cols:
            known = self._future_values(ids, rows, times, future) if future is not None else self._kept_ahead(ids, rows)
            ahead = np.concatenate([known, cal], axis=2)
        else:
            ahead = cal
        y = self.strategy.forecast(self.table, rows, ahead)
        loc = t["params"][rows, 0, :C][:, None, :, None]
        scl = t["params"][rows, 1, :C][:, None, :, None]
        with np.errstate(over="ignore"):
            return ids, t["last"][rows].copy(), (y * scl + loc).astype(np.float32)

    def forecast(self, series: Sequence[str] | str | None = None, future: pl.DataFrame | None = None) -> pl.DataFrame:
        """Forecast the next ``horizon`` periods from each series' current state, without changing it.

        Args:
            series: ids (default: every series observed so far).
            future: when the model has user future covariates, their values for the forecast
                periods: a DataFrame with the id column, the time column and those columns. None
                (default): the values observed ahead (records of the id, a future time and those
                columns, :meth:`observe`).

        Returns:
            The forecast table of :mod:`forecaster.forecasts` (``series``, ``origin`` (the last
            observed time), ``time``, ``step``, ``target``, ``value``, ``q<level>``...), original
            units.
        """
        ids, origins, y = self.forecast_values(series, future)
        if not ids:
            return empty_forecast_frame(self.spec, self.net.quantiles)
        return forecast_frame(self.spec, ids, origins, y, self.net.quantiles, self.net.anchor)

    def _kept_ahead(self, ids, rows) -> np.ndarray:
        """The future covariates observed ahead (records with the id, a future time and those
        columns) for the next ``horizon`` periods: (M, horizon, F) scaled, or a ``ValueError``
        naming what is missing."""
        H, t = self.horizon, self.table.t
        ok = t["ahead_ok"][rows, :H]  # (M, H, F)
        if not ok.all():
            m = int(np.flatnonzero(~ok.all(axis=(1, 2)))[0])
            steps = (np.flatnonzero(~ok[m].all(axis=1)) + 1).tolist()
            raise ValueError(f"the model uses future covariates {self.future_cols}: series {show(ids[m])} lacks their "
                             f"values for step(s) {steps[:8]} of the next {H} periods; send records with the id, "
                             "the time and those columns (no targets) before the observation, or pass "
                             "forecast(future=DataFrame)")
        return t["ahead_x"][rows, :H].copy()

    def _future_values(self, ids, rows, times, future: pl.DataFrame | None) -> np.ndarray:
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
        loc = self.table.t["params"][rows, 0, k:][:, None, :]
        scl = self.table.t["params"][rows, 1, k:][:, None, :]
        scaled = self.reader.scale(vals, loc, scl)
        if self.reader.out_of_range(vals, scaled).any():
            raise ValueError(f"future covariates {self.future_cols} hold a value that is infinite or overflows float32 "
                             "(as given or once scaled)")
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
        return ids, self.table.state[:, torch.from_numpy(rows).to(self.device)].transpose(0, 1).cpu().clone()

    def swap(self, net: torch.nn.Module, spec: DataSpec | dict | None = None, batch_size: int = 4096):
        """Serve network ``net`` (with data spec ``spec``, default this stream's) from now on, each
        carried state re-warmed over its series' look-back ring, ``batch_size`` series at a time;
        atomic. Returns a :class:`~forecaster.streaming.swap.SwapReport`; raises ``SwapError``
        (one line, the stream unchanged) for an incompatible model. See :mod:`forecaster.streaming.swap`."""
        from forecaster.streaming.swap import swap_model

        return swap_model(self, net, self.spec if spec is None else spec, batch_size)

    # ---- the state file ----

    def __enter__(self) -> "StreamingForecaster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _positive_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
