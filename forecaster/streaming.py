"""StreamingForecaster: every series' GRU state kept between observations, so a new observation
costs one recurrent step whatever the length of the history.

Stream semantics (each tested in ``tests/forecaster/test_streaming.py``):

- The state of a series advances once per period of the data's frequency. A record whose
  timestamp skips k periods first advances the k - 1 missing periods as steps with every target
  unobserved (observed mask 0, covariates 0, calendar features of the missing time), exactly as
  the data module encodes gaps for training; then the record's own step.
- A record at or before the series' last timestamp (out of order, or a duplicate), or off the
  frequency grid, is rejected with a reason; the series' state is unchanged; the other records
  are still processed. Records are applied in the order given.
- A null or NaN target is a missing observation (observed mask 0), not an error. An infinite
  value rejects the record.
- A series never seen before starts from the zero state (as every training window does). Its
  scaler is its own when the checkpoint was trained on it, otherwise (``new_series="pooled"``,
  the default) the median over the training series of each column's location and scale;
  ``new_series="reject"`` rejects records of unknown series instead.
- Missing or non-numeric columns raise ``ValueError`` naming them (nothing is applied).

Lightning and Polars stay off the per-observation path: a list of dicts is parsed in plain Python,
features are numpy, the recurrence is ``FusedGRU.step_`` on a state table under
``torch.inference_mode``.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import torch

from forecaster.data import calendar_features

STATE_FORMAT_VERSION = 1
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


class StreamingForecaster:
    """Online forecasting from a trained :class:`forecaster.GRUForecaster`.

    Args:
        model: the trained LightningModule (its ``data_spec`` and network are used).
        device: where the state table and the recurrence live ("cpu" or "cuda").
        new_series: "pooled" (default) or "reject"; see the module docstring.
        capacity: initial number of rows of the state table (it grows by doubling).
    """

    def __init__(self, model, device: str | torch.device = "cpu", new_series: str = "pooled",
                 capacity: int = 64) -> None:
        if new_series not in ("pooled", "reject"):
            raise ValueError(f"new_series must be 'pooled' or 'reject', got {new_series!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.net = model.net
        self.spec: dict = model.data_spec
        if not self.spec:
            raise ValueError("the model has no data spec; train it with a TimeSeriesDataModule "
                             "(the CLI links it) so the checkpoint knows columns, frequency and scalers")
        if not self.net.streamable:
            n = self.net
            raise ValueError(
                "this model forecasts from whole windows, not one observation at a time (channel_independent="
                f"{n.channel_independent}, revin={n.revin!r}, segment_length={n.segment_length}, decoder={n.decoder!r}); "
                "streaming needs the per-step defaults (False, 'none', 1, 'forking'): train such a model for "
                "streaming, or forecast this one with `python -m forecaster predict`")
        self.new_series = new_series
        s = self.spec
        self.id_col: str | None = s["id_col"]
        # wide data (no id column) is one series, named as the data module names it
        self.single_id: str = str(s["series_ids"][0]) if s.get("series_ids") else "0"
        self.time_col: str = s["time_col"]
        self.target_cols: list[str] = list(s["target_cols"])
        self.past_cols: list[str] = list(s["past_covariate_cols"])
        self.future_cols: list[str] = list(s["future_covariate_cols"])
        self.step_size: int = int(s["freq_step"])
        self.is_datetime = s["time_kind"] == "datetime"
        self.horizon: int = int(s["horizon"])
        gru = self.net.gru
        self.num_layers, self.hidden_size = gru.num_layers, gru.hidden_size

        value_cols = self.target_cols + self.past_cols + self.future_cols
        known = s["scalers"]
        self._known_params = {
            sid: np.array([known[sid][c] for c in value_cols], dtype=np.float32).T  # (2, n_values)
            for sid in known
        }
        if self._known_params:
            self._pooled = np.median(np.stack(list(self._known_params.values())), axis=0).astype(np.float32)
        else:
            self._pooled = np.stack([np.zeros(len(value_cols)), np.ones(len(value_cols))]).astype(np.float32)

        self._ids: dict[str, int] = {}
        self._id_list: list[str] = []
        cap = max(1, int(capacity))
        self._state = torch.zeros(self.num_layers, cap, self.hidden_size, device=self.device)
        self._last = np.full(cap, _NO_TIME, dtype=np.int64)
        self._n_obs = np.zeros(cap, dtype=np.int64)
        self._n_steps = np.zeros(cap, dtype=np.int64)
        self._params = np.zeros((cap, 2, len(value_cols)), dtype=np.float32)

    # -------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs):
        """Load a checkpoint written by ``python -m forecaster fit`` (or any Lightning checkpoint of
        a :class:`forecaster.GRUForecaster`); needs no training data."""
        from forecaster.lightning_module import GRUForecaster

        if not Path(path).is_file():
            raise ValueError(f"checkpoint {str(path)!r} does not exist")
        model = GRUForecaster.load_from_checkpoint(str(path), map_location=torch.device(device))
        return cls(model, device=device, **kwargs)

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
        state = torch.zeros(self.num_layers, new, self.hidden_size, device=self.device)
        state[:, :cap] = self._state
        self._state = state
        self._last = np.concatenate([self._last, np.full(new - cap, _NO_TIME, dtype=np.int64)])
        self._n_obs = np.concatenate([self._n_obs, np.zeros(new - cap, dtype=np.int64)])
        self._n_steps = np.concatenate([self._n_steps, np.zeros(new - cap, dtype=np.int64)])
        self._params = np.concatenate([self._params, np.zeros((new - cap, *self._params.shape[1:]), np.float32)])

    def _row(self, sid: str, create: bool) -> int | None:
        row = self._ids.get(sid)
        if row is not None or not create:
            return row
        row = len(self._id_list)
        self._grow(row + 1)
        self._ids[sid] = row
        self._id_list.append(sid)
        self._params[row] = self._known_params.get(sid, self._pooled)
        return row

    # -------------------------------------------------------------------------------------------
    # input parsing

    def _columns(self, data) -> dict[str, list]:
        """Records (a Polars DataFrame, or a list of dicts) -> plain column lists, checked."""
        need = self._required()
        if isinstance(data, pl.DataFrame):
            return {c: data[c].to_list() for c in need + [c for c in self.future_cols if c in data.columns]}
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

    def _required(self) -> list[str]:
        return ([self.id_col] if self.id_col else []) + [self.time_col] + self.target_cols + self.past_cols

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

    def _observe_frame_fast(self, df: pl.DataFrame) -> ObserveReport | None:
        """Vectorised path for the common case: every record of a known series, each series once,
        exactly one period after its last time, finite values. None when any of that fails (the
        general path then handles the batch record by record)."""
        n = df.height
        if n == 0:
            return ObserveReport()
        sids = df[self.id_col].cast(pl.Utf8).to_list() if self.id_col else [self.single_id] * n
        if len(set(sids)) != n:
            return None
        rows = [self._ids.get(sid) for sid in sids]
        if any(r is None for r in rows):
            return None
        rows = np.array(rows, dtype=np.int64)
        tcol = df[self.time_col]
        if self.is_datetime and isinstance(tcol.dtype, pl.Datetime) and tcol.dtype.time_zone is None:
            times = tcol.cast(pl.Datetime("ns")).cast(pl.Int64)
        elif not self.is_datetime and tcol.dtype.is_integer():
            times = tcol.cast(pl.Int64)
        else:
            return None
        if times.null_count():
            return None
        times = times.to_numpy()
        last = self._last[rows]
        if np.any(last == _NO_TIME) or np.any(times - last != self.step_size):
            return None
        value_cols = self.target_cols + self.past_cols + self.future_cols
        vals = df.select([pl.col(c).cast(pl.Float64) if c in df.columns else pl.lit(None, pl.Float64).alias(c)
                          for c in value_cols]).to_numpy()
        if np.isinf(vals).any():
            return None
        self._round(rows, times, vals)
        return ObserveReport(accepted=n, steps=n)

    def _to_time(self, value) -> int:
        """A timestamp (datetime, ISO string, numpy datetime64, or int) -> int64 on the spec's
        axis (ns since epoch, naive, for datetimes)."""
        if self.is_datetime:
            if isinstance(value, str):
                value = np.datetime64(value.replace("Z", ""), "ns")
            elif hasattr(value, "tzinfo") and getattr(value, "tzinfo", None) is not None:
                value = np.datetime64(value.replace(tzinfo=None), "ns")
            elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return int(value)
            return int(np.datetime64(value, "ns").astype(np.int64))
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"time {value!r} is not an integer (the model was trained on integer time)")
        return int(value)

    @staticmethod
    def _number(value) -> float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"value {value!r} is not a number")
        return float(value)

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
        n = len(cols[self.time_col])
        report = ObserveReport()
        value_cols = self.target_cols + self.past_cols + self.future_cols
        C, P = len(self.target_cols), len(self.past_cols)
        # per series: the steps to run, in order: (time, values or None for a gap step)
        plan: dict[int, list[tuple[int, np.ndarray | None]]] = {}
        last_planned: dict[int, int] = {}
        for i in range(n):
            sid = str(cols[self.id_col][i]) if self.id_col else self.single_id
            raw_t = cols[self.time_col][i]
            try:
                t = self._to_time(raw_t)
                vals = np.array([self._number(cols[c][i]) for c in value_cols], dtype=np.float64)
                if np.isinf(vals).any():
                    bad = [c for c, v in zip(value_cols, vals) if np.isinf(v)]
                    raise ValueError(f"infinite value in {bad}")
            except (ValueError, TypeError) as e:
                report.rejected.append(Rejected(i, sid, raw_t, str(e)))
                continue
            known = sid in self._ids
            if not known and self.new_series == "reject" and sid not in self.spec["scalers"]:
                report.rejected.append(Rejected(i, sid, raw_t, "unknown series (new_series='reject')"))
                continue
            row = self._row(sid, create=True)
            last = last_planned.get(row, self._last[row])
            if last != _NO_TIME:
                if t <= last:
                    what = "duplicate" if t == last else "out-of-order"
                    report.rejected.append(Rejected(i, sid, raw_t, f"{what} timestamp: the series is already at "
                                                                   f"{self._format_time(last)}"))
                    continue
                if (t - last) % self.step_size:
                    report.rejected.append(Rejected(i, sid, raw_t, f"timestamp is off the {self.spec['freq']} grid "
                                                                   f"of the series (last {self._format_time(last)})"))
                    continue
                k = (t - last) // self.step_size
            else:
                k = 1
            steps = plan.setdefault(row, [])
            steps.extend((t - (k - j) * self.step_size, None) for j in range(1, k))
            steps.append((t, vals))
            last_planned[row] = t
            report.accepted += 1
        if plan:
            report.steps = self._advance(plan, C, P)
        return report

    def _advance(self, plan: dict[int, list[tuple[int, np.ndarray | None]]], C: int, P: int) -> int:
        """Run the planned steps in rounds: round j advances every series with a j-th step, in one
        batched ``step_`` call."""
        rows_all = np.fromiter(plan.keys(), dtype=np.int64)
        lengths = np.array([len(plan[r]) for r in rows_all])
        n_values = self._params.shape[2]
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
        scaled = (vals - self._params[rows, 0]) / self._params[rows, 1]
        observed = ~np.isnan(scaled)
        scaled = np.where(observed, scaled, 0.0).astype(np.float32)
        future = np.concatenate([scaled[:, C + P:], calendar_features(times, self.spec)], axis=1)
        obs_t = observed[:, :C]
        with _one_thread_if_small(self.device, len(rows)):
            self._step_rows(rows, scaled[:, :C], obs_t.astype(np.float32), scaled[:, C:C + P], future)
        self._last[rows] = times
        self._n_steps[rows] += 1
        self._n_obs[rows] += obs_t.any(axis=1)

    def _step_rows(self, rows: np.ndarray, target, observed, past, future) -> None:
        """One recurrent step for table rows ``rows`` (all distinct) from one step's features."""
        dev = self.device
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dev)  # noqa: E731
        self.net.step_(self._state, torch.from_numpy(rows).to(dev), as_t(target), as_t(observed), as_t(past),
                       as_t(future))

    # -------------------------------------------------------------------------------------------
    # forecasts and state

    def _format_time(self, t: int):
        return np.datetime64(int(t), "ns") if self.is_datetime else int(t)

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
    def forecast(self, series: Sequence[str] | str | None = None, future: pl.DataFrame | None = None) -> pl.DataFrame:
        """Forecast the next ``horizon`` periods from each series' current state, without changing it.

        Args:
            series: ids (default: every series observed so far).
            future: when the model has user future covariates, their values for the forecast
                periods: a DataFrame with the id column, the time column and those columns.

        Returns:
            A Polars DataFrame, one row per (series, target time, target): the id column, ``origin``
            (the last observed time), the time column (the target time), ``step`` (1..horizon),
            ``target`` (column name), ``value`` (point forecast: the median for quantile models)
            and, for quantile models, one column ``q<level>`` per quantile; original units.
        """
        ids, rows = self._select(series)
        if not ids:
            return self._empty_forecast()
        H, C = self.horizon, len(self.target_cols)
        steps = np.arange(1, H + 1, dtype=np.int64)
        times = self._last[rows][:, None] + steps[None, :] * self.step_size  # (M, H)
        cal = calendar_features(times.reshape(-1), self.spec).reshape(len(rows), H, -1)
        if self.future_cols:
            fut = self._future_values(ids, rows, times, future)
            ahead = np.concatenate([fut, cal], axis=2)
        else:
            ahead = cal
        h = self._state[-1, torch.from_numpy(rows).to(self.device)]
        fut_t = torch.from_numpy(np.ascontiguousarray(ahead, dtype=np.float32)).to(self.device)
        with _one_thread_if_small(self.device, len(rows)):
            y = self.net.decode(h, fut_t.reshape(len(rows), -1)).float().cpu().numpy()  # (M, H, C, Q)
        loc = self._params[rows, 0, :C][:, None, :, None]
        scl = self._params[rows, 1, :C][:, None, :, None]
        y = y * scl + loc
        return self._forecast_frame(ids, rows, times, y)

    def _future_values(self, ids, rows, times, future: pl.DataFrame | None) -> np.ndarray:
        if future is None:
            raise ValueError(f"the model uses future covariates {self.future_cols}: pass their values for the "
                             f"next {self.horizon} periods as forecast(future=DataFrame)")
        key = [self.id_col] if self.id_col else []
        missing = [c for c in key + [self.time_col] + self.future_cols if c not in future.columns]
        if missing:
            raise ValueError(f"future lacks column(s) {missing}")
        want = pl.DataFrame({
            "__sid": np.repeat(np.array(ids, dtype=object), times.shape[1]).astype(str),
            "__t": times.reshape(-1),
        })
        f = future.select(
            (pl.col(self.id_col).cast(pl.Utf8) if self.id_col else pl.lit(self.single_id)).alias("__sid"),
            (pl.col(self.time_col).cast(pl.Datetime("ns")).cast(pl.Int64) if self.is_datetime
             else pl.col(self.time_col).cast(pl.Int64)).alias("__t"),
            *[pl.col(c).cast(pl.Float64) for c in self.future_cols],
        )
        joined = want.join(f, on=["__sid", "__t"], how="left", maintain_order="left")
        vals = joined.select(self.future_cols).to_numpy().reshape(len(ids), times.shape[1], -1)
        if np.isnan(vals).any():
            raise ValueError(f"future covariates {self.future_cols} are missing for some of the next "
                             f"{self.horizon} periods of series {ids[:5]}")
        k = len(self.target_cols) + len(self.past_cols)
        loc = self._params[rows, 0, k:][:, None, :]
        scl = self._params[rows, 1, k:][:, None, :]
        return ((vals - loc) / scl).astype(np.float32)

    def _quantile_names(self) -> list[str]:
        qs = list(self.net.quantiles)
        return [f"q{q:g}" for q in qs]

    def _forecast_frame(self, ids, rows, times, y) -> pl.DataFrame:
        M, H, C, Q = y.shape
        qnames = self._quantile_names()
        sid = np.repeat(np.array(ids, dtype=object), H * C).astype(str)
        origin = np.repeat(self._last[rows], H * C)
        t = np.repeat(times.reshape(-1), C)
        step = np.tile(np.repeat(np.arange(1, H + 1), C), M)
        target = np.tile(np.array(self.target_cols, dtype=object), M * H).astype(str)
        data = {self.id_col or "series": sid, "origin": origin, self.time_col: t, "step": step, "target": target}
        flat = y.reshape(M * H * C, Q)
        if qnames:
            mid = self.net.anchor
            data["value"] = flat[:, mid]
            for j, name in enumerate(qnames):
                data[name] = flat[:, j]
        else:
            data["value"] = flat[:, 0]
        if self.is_datetime:
            data["origin"] = origin.astype("datetime64[ns]")
            data[self.time_col] = t.astype("datetime64[ns]")
        return pl.DataFrame(data)

    def _empty_forecast(self) -> pl.DataFrame:
        tdt = pl.Datetime("ns") if self.is_datetime else pl.Int64
        schema = {self.id_col or "series": pl.Utf8, "origin": tdt, self.time_col: tdt, "step": pl.Int64,
                  "target": pl.Utf8, "value": pl.Float32}
        schema.update({q: pl.Float32 for q in self._quantile_names()})
        return pl.DataFrame(schema=schema)

    def hidden_state(self, series: Sequence[str] | str | None = None) -> tuple[list[str], torch.Tensor]:
        """Each series' GRU state, e.g. for embeddings or monitoring.

        Returns:
            (ids, states): states is a float32 tensor (len(ids), num_layers, H), a copy.
        """
        ids, rows = self._select(series)
        return ids, self._state[:, torch.from_numpy(rows).to(self.device)].transpose(0, 1).cpu().clone()

    def info(self) -> pl.DataFrame:
        """One row per series: id, last time, observations seen, recurrent steps run."""
        n = len(self._id_list)
        df = pl.DataFrame({"series": self._id_list, "last_time": self._last[:n],
                           "observations": self._n_obs[:n], "steps": self._n_steps[:n]})
        if self.is_datetime:
            df = df.with_columns(pl.col("last_time").cast(pl.Datetime("ns")))
        return df

    # -------------------------------------------------------------------------------------------
    # snapshots

    def _fingerprint(self) -> dict:
        return {"num_layers": self.num_layers, "hidden_size": self.hidden_size,
                "target_cols": self.target_cols, "freq_step": self.step_size, "time_kind": self.spec["time_kind"]}

    def save_state(self, path: str | os.PathLike) -> None:
        """Write every series' state, last time and counts to ``path`` atomically: the snapshot is
        written to a temporary file in the same folder, flushed to disk, then renamed over ``path``,
        so a crash mid-write leaves the previous snapshot whole."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n = len(self._id_list)
        payload = {
            "format_version": STATE_FORMAT_VERSION,
            "fingerprint": self._fingerprint(),
            "ids": list(self._id_list),
            "state": self._state[:, :n].cpu().clone(),
            "last": self._last[:n].copy(),
            "n_obs": self._n_obs[:n].copy(),
            "n_steps": self._n_steps[:n].copy(),
            "params": self._params[:n].copy(),
        }
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_state(self, path: str | os.PathLike) -> None:
        """Restore a snapshot written by :meth:`save_state` (replacing the current state)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"state file {str(path)!r} does not exist")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a truncated or foreign file
            raise ValueError(f"state file {str(path)!r} is not a readable snapshot: {e}") from None
        if not isinstance(payload, dict) or payload.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(f"state file {str(path)!r} has format version "
                             f"{payload.get('format_version') if isinstance(payload, dict) else None}, "
                             f"expected {STATE_FORMAT_VERSION}")
        if payload["fingerprint"] != self._fingerprint():
            raise ValueError(f"state file {str(path)!r} was written for another model "
                             f"({payload['fingerprint']}), this one is {self._fingerprint()}")
        n = len(payload["ids"])
        self._ids, self._id_list = {}, []
        self._state = torch.zeros(self.num_layers, max(n, 1), self.hidden_size, device=self.device)
        self._last = np.full(max(n, 1), _NO_TIME, dtype=np.int64)
        self._n_obs = np.zeros(max(n, 1), dtype=np.int64)
        self._n_steps = np.zeros(max(n, 1), dtype=np.int64)
        self._params = np.zeros((max(n, 1), *self._params.shape[1:]), dtype=np.float32)
        for i, sid in enumerate(payload["ids"]):
            self._ids[sid] = i
            self._id_list.append(sid)
        self._state[:, :n] = payload["state"].to(self.device)
        self._last[:n] = payload["last"]
        self._n_obs[:n] = payload["n_obs"]
        self._n_steps[:n] = payload["n_steps"]
        self._params[:n] = payload["params"]


def main(argv: list[str] | None = None) -> int:
    """``python -m forecaster stream``: see :mod:`forecaster.stream_cli`."""
    from forecaster.stream_cli import main as stream_main

    return stream_main(argv)
