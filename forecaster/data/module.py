"""``TimeSeriesDataModule``: a thin ``LightningDataModule`` over the stages of :mod:`forecaster.data`
(table -> grid -> calendar -> splits -> scaling -> windows), run once, lazily, on first use. It
builds the :class:`forecaster.spec.DataSpec` that checkpoints store; built from a checkpoint's spec
(:meth:`TimeSeriesDataModule.from_spec`) it applies that spec's roles, frequency, calendar and
scalers to another table instead of fitting new ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from forecaster.baseline import fit_blend
from forecaster.data.grid import calendar_array, covered_calendar, extent, regularise, resolve_frequency
from forecaster.data.scaling import SCALINGS, apply_scalers, fit_scalers
from forecaster.data.table import Roles, is_csv, read_table, scan
from forecaster.data.windows import (
    TensorBatches, TensorDictDataset, WindowDataset, collate_batched, compute_splits, window_counts,
)
from forecaster.spec import DataSpec
from forecaster.timeaxis import CALENDAR_ENCODINGS, Frequency, default_calendar, to_axis

__all__ = ["TimeSeriesDataModule", "DEFAULT_DATASET", "DEFAULT_ROLES"]

DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "datasets" / "tmy3_weather.parquet"
# column roles of the embedded dataset (used when ``path`` and ``data`` are both None)
DEFAULT_ROLES = {
    "time_col": "time",
    "id_col": "station",
    "target_cols": ["temp_air", "relative_humidity", "wind_speed"],
    "past_covariate_cols": ["dew_point", "ghi", "dni", "dhi"],
    "future_covariate_cols": [],
}
_ROLE_KEYS = ("time_col", "id_col", "target_cols", "past_covariate_cols", "future_covariate_cols")


class TimeSeriesDataModule(L.LightningDataModule):
    """A user's table of time series as windows for a forecaster (batch layout:
    :mod:`forecaster.data.windows`: target/observed (B, L, C), past_cov (B, L, P), future_cov
    (B, L, F), loc/scale (B, C), series/start (B,), with L = context_length + horizon).

    Args:
        path: CSV / Parquet / Arrow IPC file or glob; None (and ``data`` None) = the embedded TMY3
            weather dataset (2 stations, hourly, 1 year), whose column roles are then the defaults.
        data: an in-memory ``polars.DataFrame`` / ``LazyFrame`` instead of ``path`` (Python use).
        time_col: datetime/date column (ISO strings are parsed, or strings in ``time_format``;
            zone-aware times are converted to UTC, naive ones taken as given) or an integer index.
        time_format: strptime format of a text time column that is not ISO (``"%b %d %Y"`` for
            ``Jan 1 2000``); None = ISO.
        id_col: series id column (long format); None = the whole table is one series (wide format).
        target_cols: columns to forecast (C >= 1); None = every numeric column not otherwise used.
        past_covariate_cols: numeric columns observed only up to now (P); None = none.
        future_covariate_cols: numeric columns known ahead (user part of F); None = none.
        calendar_features: ``"auto"`` (by frequency: hourly -> hour_of_day, day_of_week,
            day_of_year), ``"none"``, or a list of ``minute_of_hour, hour_of_day, day_of_week,
            day_of_month, day_of_year, month_of_year``; each gives a sin and a cos column.
        freq: a Polars duration (``"1h"``, ``"30m"``, ``"1d"``, ``"1w"``), a calendar duration
            (``"1mo"``, ``"1q"``, ``"1y"``; month-start or month-end dates), ``"1bd"`` (business
            days) or an int step for integer time; None = inferred from the most common step.
        context_length, horizon: window = context + horizon steps.
        stride: step between train windows' starts.
        eval_stride: step between val/test windows (None = ``horizon``; 1 for the ETTh1 protocol).
        train_size, val_size, test_size: split per series along its regular grid. A float in
            [0, 1) is a fraction of the series' length, an int (or a whole-number float such as
            ``8640.0``) a number of steps. With ``train_size`` None, test is the last ``test_size``
            steps, val the ``val_size`` before, train the rest; with ``train_size`` set the parts are
            consecutive from the start and anything after them is unused (ETTh1: 8640 / 2880 / 2880).
        val_start, test_start: cut-off times (read by the time rule), or ints for integer time; when
            given they override the sizes: val = [val_start, test_start), test = [test_start, end).
        scaling: ``"standard"`` (mean, std), ``"robust"`` (median, IQR) or ``"none"``, per series
            and column, fitted on the training part's observed values only.
        season_length: override the seasonal period (None = from the frequency, 24 for hourly).
        batch_size, eval_batch_size (None = batch_size), num_workers, shuffle.
        pin_memory: None = when CUDA is available.
        spec: a checkpoint's data spec (``DataSpec`` or its dict): roles, time format, frequency,
            calendar, season, window shape and scalers come from it (series it does not know get
            its pooled scalers); role arguments given here must agree with it.

    Nothing is read in the constructor; the first access to a schema attribute (``n_targets``,
    ``freq``, ``series_ids``, ``spec``, ...) or ``setup()`` builds everything once. Series whose
    grid is shorter than ``context_length + horizon`` are dropped with a warning. Training data
    (no ``spec``) are refused (``ValueError`` naming the series and columns) where a series has fewer
    than ``horizon + 1`` observed values of a target in its training part (an origin and one
    horizon). Wide data without ``id_col`` is one series with id ``"0"``.
    """

    def __init__(
        self,
        path: str | None = None,
        time_col: str | None = None,
        id_col: str | None = None,
        target_cols: list[str] | None = None,
        past_covariate_cols: list[str] | None = None,
        future_covariate_cols: list[str] | None = None,
        calendar_features: list[str] | str = "auto",
        freq: str | int | None = None,
        time_format: str | None = None,
        context_length: int = 168,
        horizon: int = 24,
        stride: int = 1,
        eval_stride: int | None = None,
        train_size: int | float | None = None,
        val_size: int | float = 0.1,
        test_size: int | float = 0.1,
        val_start: str | int | None = None,
        test_start: str | int | None = None,
        scaling: Literal["standard", "robust", "none"] = "standard",
        season_length: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        pin_memory: bool | None = None,
        spec: dict | None = None,
        data: pl.DataFrame | pl.LazyFrame | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["data", "spec"])
        if path is not None and data is not None:
            raise ValueError("give either path or data, not both")
        self._given = {"time_col": time_col, "id_col": id_col, "target_cols": target_cols,
                       "past_covariate_cols": past_covariate_cols, "future_covariate_cols": future_covariate_cols}
        self._spec_in = DataSpec.from_dict(spec) if spec is not None else None
        if self._spec_in is not None:
            s = self._spec_in
            self._check_against_spec(s, freq, time_format)
            time_col, id_col, target_cols = s.time_col, s.id_col, list(s.target_cols)
            past_covariate_cols, future_covariate_cols = list(s.past_covariate_cols), list(s.future_covariate_cols)
            context_length, horizon, scaling, time_format = s.context_length, s.horizon, s.scaling, s.time_format
        elif path is None and data is None:
            roles = DEFAULT_ROLES
            time_col = time_col or roles["time_col"]
            id_col = id_col if id_col is not None else roles["id_col"]
            target_cols = target_cols if target_cols is not None else list(roles["target_cols"])
            if past_covariate_cols is None:
                past_covariate_cols = list(roles["past_covariate_cols"])
            if future_covariate_cols is None:
                future_covariate_cols = list(roles["future_covariate_cols"])
        if not time_col:
            raise ValueError("time_col is required (the name of the time column)")
        for name, v in (("context_length", context_length), ("horizon", horizon), ("stride", stride)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r}: must be an int >= 1")
        if eval_stride is not None and eval_stride < 1:
            raise ValueError(f"eval_stride={eval_stride!r}: must be >= 1")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling={scaling!r}: choose 'standard', 'robust' or 'none'")
        if season_length is not None and int(season_length) < 1:
            raise ValueError(f"season_length={season_length!r}: must be >= 1 (1 = no seasonality)")
        self.path = path
        self.data = data
        self.time_col = time_col
        self.id_col = id_col
        self.time_format = time_format
        self._target_cols = list(target_cols) if target_cols is not None else None
        self.past_covariate_cols = list(past_covariate_cols or [])
        self.future_covariate_cols = list(future_covariate_cols or [])
        self._calendar_arg = calendar_features
        self._freq_arg = freq
        self.context_length = int(context_length)
        self.horizon = int(horizon)
        self.stride = int(stride)
        self.eval_stride = int(eval_stride) if eval_stride is not None else self.horizon
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.val_start, self.test_start = val_start, test_start
        self.scaling = scaling
        self._season_arg = season_length
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.shuffle = shuffle
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._built = False
        self._every_row = False  # a CSV's column types read from every row, not the first 100 (see _build)

    def _check_against_spec(self, s: DataSpec, freq, time_format) -> None:
        """Role arguments given beside a spec must be the spec's (a model reads only its own columns)."""
        for k in _ROLE_KEYS:
            v = self._given[k]
            mine = getattr(s, k)
            if v is None or (isinstance(v, list) and not v and not mine):
                continue
            if (list(v) if isinstance(v, (list, tuple)) else v) != mine:
                raise ValueError(f"{k}={v!r} differs from the checkpoint's {k}={mine!r}; a model reads the columns it "
                                 "was trained on: leave it out (or train a model on these columns)")
        if freq is not None and Frequency.parse(freq, s.time_kind).value != s.freq.value:
            raise ValueError(f"freq={freq!r} differs from the checkpoint's freq={s.freq.value!r}")
        if time_format is not None and time_format != s.time_format:
            raise ValueError(f"time_format={time_format!r} differs from the checkpoint's {s.time_format!r}")

    @classmethod
    def from_frame(cls, data: pl.DataFrame | pl.LazyFrame, **kwargs) -> "TimeSeriesDataModule":
        """Build from an in-memory Polars frame: ``TimeSeriesDataModule.from_frame(df, time_col=...)``."""
        return cls(data=data, **kwargs)

    @classmethod
    def from_spec(cls, spec: DataSpec | dict, path: str | None = None, data: pl.DataFrame | pl.LazyFrame | None = None,
                  **kwargs) -> "TimeSeriesDataModule":
        """Windows of another table (``path`` or ``data``) with a checkpoint's spec: its roles,
        frequency, calendar, window shape and scalers, so a model forecasts new data in the units it
        was trained in. ``kwargs``: splits, strides, batch sizes."""
        return cls(path=path, data=data, spec=spec, **kwargs)

    # ---- schema, available on first access (the CLI links these to the model) ----

    @property
    def spec(self) -> DataSpec:
        """The :class:`DataSpec` of this data (roles, axis, scalers), built on first access."""
        self._build()
        return self._spec

    @property
    def target_cols(self) -> list[str]:
        return list(self.spec.target_cols)

    @property
    def n_targets(self) -> int:
        """C: number of target columns."""
        return self.spec.n_targets

    @property
    def n_past_covariates(self) -> int:
        """P: number of past covariates."""
        return self.spec.n_past_covariates

    @property
    def n_future_covariates(self) -> int:
        """F: user future covariates + calendar feature columns."""
        return self.spec.n_future_covariates

    @property
    def freq(self) -> str | int:
        """The regular step: a duration string (``"1h"``, ``"1mo"``) or an int for integer time."""
        return self.spec.freq.value

    @property
    def season_length(self) -> int:
        return self.spec.season_length

    @property
    def series_ids(self) -> list[str]:
        return list(self.spec.series_ids)

    @property
    def calendar_feature_names(self) -> list[str]:
        return self.spec.calendar_feature_names

    @property
    def window_length(self) -> int:
        return self.context_length + self.horizon

    @property
    def train_windows(self) -> int:
        """Windows in the training part at stride 1 (its amount of data, whatever ``stride``): the
        CLI links it to the model, whose ``members="auto"`` sizes its ensemble by it."""
        self._build()
        b, e = self._splits["train"]
        return int(window_counts("train", b, e, self.context_length, self.horizon, 1)[1].sum())

    # ---- the pipeline ----

    def prepare_data(self) -> None:  # nothing to download
        pass

    def setup(self, stage: str | None = None) -> None:
        self._build()

    def frame(self) -> pl.LazyFrame:
        """The input table as given (path scanned lazily, or the in-memory frame), unvalidated."""
        if self.data is not None:
            if isinstance(self.data, pl.DataFrame):
                return self.data.lazy()
            if isinstance(self.data, pl.LazyFrame):
                return self.data
            raise ValueError(f"data must be a polars DataFrame or LazyFrame, got {type(self.data).__name__}")
        return scan(self.path if self.path is not None else str(DEFAULT_DATASET), self.time_col, self.time_format,
                    every_row=self._every_row)

    def _where(self) -> str:
        if self.data is not None:
            return "the given frame"
        return repr(self.path) if self.path is not None else f"the embedded dataset {DEFAULT_DATASET.name}"

    def _calendar(self, freq: Frequency, time_kind: str, train_lengths: np.ndarray) -> tuple[list[str], dict]:
        """The calendar encodings and why each default one was kept or dropped."""
        if self._spec_in is not None:
            return list(self._spec_in.calendar), {e: "from the checkpoint's spec" for e in self._spec_in.calendar}
        cal = self._calendar_arg
        if isinstance(cal, str) and cal == "auto":
            return covered_calendar(default_calendar(freq), freq, train_lengths)
        cal = [] if isinstance(cal, str) and cal in ("none", "") else ([cal] if isinstance(cal, str) else list(cal))
        if cal and time_kind == "int":
            raise ValueError(f"calendar features {cal} need a datetime time column; {self.time_col!r} is integer "
                             "(use calendar_features='none')")
        for e in cal:
            if e not in CALENDAR_ENCODINGS:
                raise ValueError(f"unknown calendar feature {e!r}; choose from {list(CALENDAR_ENCODINGS)}")
        return cal, {e: "given" for e in cal}

    def _cut(self, v, name: str, time_kind: str) -> int | None:
        if v is None:
            return None
        if time_kind == "int":
            try:
                return int(v)
            except (TypeError, ValueError):
                raise ValueError(f"{name}={v!r}: time is integer, give an int") from None
        for fmt in dict.fromkeys((None, self.time_format)):  # ISO first, then the data's own format
            try:
                t, null, _ = to_axis([v], "datetime", fmt, what=name, strict=False)
            except ValueError:
                continue
            if not null[0]:
                return int(t[0])
        raise ValueError(f"{name}={v!r}: not a timestamp (ISO such as '2017-06-01 00:00'"
                         + (f", or in time_format {self.time_format!r})" if self.time_format else ")"))

    def _build(self) -> None:
        if self._built:
            return
        given = self._spec_in
        roles = Roles(self.time_col, self.id_col, self._target_cols, self.past_covariate_cols,
                      self.future_covariate_cols)
        kind = given.time_kind if given is not None else None
        try:
            table = read_table(self.frame(), roles, self._where(), self.time_format, time_kind=kind)
        except pl.exceptions.ComputeError:
            # a CSV's column types come from its first 100 rows: a later value of another type (text in a
            # number column, a time with an offset among naive ones) fails the read. Read the types from
            # every row: the value then gets the message it gets in row 12 (or the file simply reads).
            if self.data is not None or self.path is None or not is_csv(self.path) or self._every_row:
                raise
            self._every_row = True
            table = read_table(self.frame(), roles, self._where(), self.time_format, time_kind=kind)
        self._target_cols = table.target_cols
        time_kind, time_zone = table.time_kind, table.time_zone
        if given is not None and given.time_kind == "datetime" and (time_zone is None) != (given.time_zone is None):
            raise ValueError(
                f"time_col {self.time_col!r} in {self._where()} holds "
                f"{'naive' if time_zone is None else 'zone-aware'} times but the model was trained on "
                f"{'naive' if given.time_zone is None else 'zone-aware'} ones (read as UTC): give them the same way, "
                "or the forecasts would be shifted by the zone's offset")
        freq = resolve_frequency(table, given.freq if given is not None else self._freq_arg, self.time_col)
        # training needs whole windows; with a checkpoint's spec (prediction) a shorter series is still
        # forecast from what it has (its window is zero-padded at the start)
        ext = extent(table, freq, 1 if given is not None else self.window_length)
        vc, tc = self._cut(self.val_start, "val_start", time_kind), self._cut(self.test_start, "test_start", time_kind)
        if vc is not None and tc is not None and vc > tc:
            raise ValueError(f"val_start={self.val_start!r} is after test_start={self.test_start!r}")
        self._splits = compute_splits(ext.lengths, ext.starts, freq, train_size=self.train_size,
                                      val_size=self.val_size, test_size=self.test_size, val_cut=vc, test_cut=tc,
                                      series_ids=ext.series_ids)
        b, e = self._splits["train"]
        cal, cal_why = self._calendar(freq, time_kind, e - b)
        C, D = len(table.target_cols), len(table.value_cols)
        n_rows = table.frame.height
        grid = regularise(table, freq, ext, extra_cols=2 * len(cal))
        del table
        calendar_array(grid, freq, cal, out=grid.values[:, D:])
        if given is not None:
            loc, scl, _ = given.scalers_for(grid.series_ids)
        else:
            self._check_observed_training(grid, C)
            loc, scl = fit_scalers(grid.values[:, :D], grid.offsets, self._splits["train"], self.scaling,
                                   grid.series_ids, [*self._target_cols, *self.past_covariate_cols,
                                                     *self.future_covariate_cols], C)
        observed = apply_scalers(grid.values[:, :D], grid.offsets, loc, scl)[:, :C]
        season = (given.season_length if given is not None else
                  int(self._season_arg) if self._season_arg else freq.default_season_length())
        if given is not None:
            blend = given.baseline_for(grid.series_ids)
        else:
            # origins per series: 2,000 for a few series, fewer for many (200,000 in all, at least 200)
            origins = max(200, min(2000, 200_000 // max(1, len(grid.series_ids))))
            blend = np.stack([fit_blend(grid.values[o + b[i]:o + e[i], :C], observed[o + b[i]:o + e[i]], self.horizon,
                                        season, self.context_length, max_origins=origins)
                              for i, o in enumerate(grid.offsets[:-1])])
        any_obs = observed.any(axis=1)
        starts_row = grid.offsets[:-1]
        last_obs = np.maximum.reduceat(np.where(any_obs, np.arange(grid.n_steps), -1), starts_row) - starts_row
        if given is not None:
            for sid, t0 in zip(grid.series_ids, grid.starts):
                why_not = given.off_grid(sid, int(t0))
                if why_not is not None:
                    raise ValueError(f"series {sid!r} in {self._where()} starts at {given.format_time(int(t0))}: "
                                     f"{why_not}; the model forecasts on that grid only")
            self._spec = given.for_series(grid.series_ids, grid.starts, grid.lengths, last_obs)
        else:
            self._spec = DataSpec(
                time_col=self.time_col, id_col=self.id_col, target_cols=list(self._target_cols),
                past_covariate_cols=list(self.past_covariate_cols),
                future_covariate_cols=list(self.future_covariate_cols), time_kind=time_kind,
                freq=freq, calendar=cal, season_length=season, context_length=self.context_length,
                horizon=self.horizon, scaling=self.scaling, series_ids=list(grid.series_ids), loc=loc, scale=scl,
                series_start=grid.starts, series_length=grid.lengths, last_observed=last_obs, baseline=blend,
                time_zone=time_zone, time_format=self.time_format)
        self._grid = grid
        self._arrays = {
            "data": torch.from_numpy(grid.values),
            "observed": torch.from_numpy(observed.astype(np.float32)),
            "loc": torch.from_numpy(loc[:, :C].astype(np.float32)),
            "scale": torch.from_numpy(scl[:, :C].astype(np.float32)),
            "baseline": torch.from_numpy(blend.astype(np.float32)),
        }
        self._info = {
            "rows": n_rows, "dropped": ext.dropped, "calendar_why": cal_why,
            "freq_source": "the checkpoint" if given is not None else ("given" if self._freq_arg is not None
                                                                        else "inferred"),
            "season_source": ("the checkpoint" if given is not None else "given" if self._season_arg
                              else "from the frequency"),
            "targets_source": "given" if self._given["target_cols"] is not None or self.path is None and
                              self.data is None else "every numeric column (target_cols not set)",
            "target_missing": float(1.0 - observed.mean()) if observed.size else 0.0,
        }
        self._built = True

    def _check_observed_training(self, grid, C: int) -> None:
        """Refuse series with too little observed target in their training part: from fewer than
        ``horizon + 1`` values (an origin and one horizon) a model learns nothing, its scaler and
        baseline are guesses, and the validation loss ends up NaN."""
        need = self.horizon + 1
        b, e = self._splits["train"]
        counts = np.stack([np.count_nonzero(~np.isnan(grid.values[o + b[i]:o + e[i], :C]), axis=0)
                           for i, o in enumerate(grid.offsets[:-1])])  # (S, C)
        few = counts < need
        if not few.any():
            return
        cols = self._target_cols
        bad = np.flatnonzero(few.any(axis=1))
        shown = "; ".join(f"series {grid.series_ids[i]!r}: " + ", ".join(
            f"{cols[j]!r} observed at {counts[i, j]} of {e[i] - b[i]} training steps" for j in np.flatnonzero(few[i]))
            for i in bad[:5])
        which = sorted({cols[j] for j in np.flatnonzero(few.any(axis=0))}, key=cols.index)
        raise ValueError(
            f"too little observed target to train on in {self._where()}: {len(bad)} of {len(grid.series_ids)} series "
            f"ha{'s' if len(bad) == 1 else 've'} fewer than horizon + 1 = {need} observed values of {which} in the "
            f"training part ({shown}{'; ...' if len(bad) > 5 else ''}); drop those series or fill their targets, or "
            "give the training part more steps (val_size, test_size)")

    def summary(self) -> str:
        """What was read and how it will be used (printed at the start of ``fit``): series, rows,
        time range, frequency, season length, missing steps filled, the columns' roles, calendar
        features kept or dropped and why, windows per split, and the baseline blend."""
        self._build()
        s, g, i = self._spec, self._grid, self._info
        last = s.grid_times(g.starts, g.lengths - 1)
        filled = int((g.lengths - g.rows_in_table).sum())
        n_grid = int(g.lengths.sum())
        lines = [
            f"data: {self._where()}: {len(s.series_ids):,} series, {i['rows']:,} rows, "
            f"{s.format_time(int(g.starts.min()))} .. {s.format_time(int(last.max()))}"
            + (f" (time zone: converted to UTC)" if s.time_zone else ""),
            f"frequency {s.freq} ({i['freq_source']}); season length {s.season_length} ({i['season_source']})",
            f"missing steps filled: {filled:,} of {n_grid:,} grid steps ({filled / max(1, n_grid):.1%}); "
            f"target values missing (gaps and nulls): {i['target_missing']:.1%}",
            f"targets {s.target_cols} ({i['targets_source']}); past covariates {s.past_covariate_cols}; "
            f"future covariates {s.future_covariate_cols}",
        ]
        if i["dropped"]:
            lines.append(f"dropped {len(i['dropped'])} series shorter than the window: {i['dropped'][:5]}")
        if i["calendar_why"]:
            lines.append("calendar features: " + "; ".join(f"{e} {w}" for e, w in i["calendar_why"].items()))
        else:
            lines.append("calendar features: none")
        n = {k: len(self._windows(k)) for k in ("train", "val", "test")}
        lines.append(f"windows: train {n['train']:,}, val {n['val']:,}, test {n['test']:,} "
                     f"(context {self.context_length}, horizon {self.horizon})")
        if len(s.series_ids):
            med = np.median(s.baseline, axis=0)  # (C, 2K + 1)
            K = (med.shape[-1] - 1) // 2
            parts = [f"{c}: seasonal {w[0]:.2f} -> {w[K - 1]:.2f}, last {w[K]:.2f} -> {w[2 * K - 1]:.2f}"
                     for c, w in zip(s.target_cols, med)]
            lines.append(f"baseline blend (median over series; step 1 -> {self.horizon}; the rest is the level): "
                         + "; ".join(parts))
        return "\n".join(lines)

    # ---- splits and windows ----

    def split_bounds(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(begin, end)``: int64 arrays (S,) of the grid indices ``[begin, end)`` of ``split``
        ("train" | "val" | "test") per series (index into ``series_ids``). The first time of the
        test part of series ``i`` is ``timestamps_for(i, begin[i], 1)[0]``."""
        self._build()
        if split not in self._splits:
            raise ValueError(f"split={split!r}: choose 'train', 'val' or 'test'")
        b, e = self._splits[split]
        return b.copy(), e.copy()

    def _windows(self, split: str) -> WindowDataset:
        self._build()
        b, e = self._splits[split]
        stride = self.stride if split == "train" else self.eval_stride
        first, counts = window_counts(split, b, e, self.context_length, self.horizon, stride)
        s = self._spec
        sizes = (s.n_targets, s.n_past_covariates, len(s.future_covariate_cols))
        return WindowDataset(self._arrays, self._grid.offsets, first, counts, stride, self.window_length, sizes)

    def observed_forecast_steps(self, split: str) -> np.ndarray:
        """int64 (S, C): observed target values per series and target in the steps that ``split``'s
        ("val" | "test") windows forecast, the values its loss and metrics are computed from (none at
        all: the validation loss is 0 / 0)."""
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r}: choose 'val' or 'test'")
        self._build()
        b, e = self._splits[split]
        first, counts = window_counts(split, b, e, self.context_length, self.horizon, self.eval_stride)
        obs = self._arrays["observed"].numpy()
        out = np.zeros((len(b), obs.shape[1]), dtype=np.int64)
        h, stride = self.horizon, self.eval_stride
        for i in np.flatnonzero(counts):
            f0 = int(self._grid.offsets[i] + first[i]) + self.context_length
            seg = obs[f0:f0 + int(counts[i] - 1) * stride + h]
            if stride > h:  # the steps between one window's forecast and the next are not scored
                seg = seg[np.arange(len(seg)) % stride < h]
            out[i] = np.count_nonzero(seg, axis=0)
        return out

    def train_dataset(self) -> WindowDataset:
        return self._windows("train")

    def val_dataset(self) -> WindowDataset:
        return self._windows("val")

    def test_dataset(self) -> WindowDataset:
        return self._windows("test")

    def gather(self, series, start, length: int) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Windows of ``length`` grid steps of series ``series`` (int64 (B,), indices into
        ``series_ids``) from grid index ``start`` (int64 (B,), may run off either end of a series):
        ``(batch, inside)``, the batch in the layout of :mod:`forecaster.data.windows` (steps outside
        a series' grid are unobserved zeros; calendar features are those of their times) and the bool
        (B, length) mask of steps inside the grid."""
        self._build()
        s, g = self._spec, self._grid
        series = np.asarray(series, dtype=np.int64).reshape(-1)
        start = np.asarray(start, dtype=np.int64).reshape(-1)
        B, C, P = len(series), s.n_targets, s.n_past_covariates
        D = len(s.value_cols)
        local = start[:, None] + np.arange(length, dtype=np.int64)  # (B, L)
        inside = (local >= 0) & (local < g.lengths[series][:, None])
        rows = torch.from_numpy(np.where(inside, g.offsets[series][:, None] + local, 0))
        ins = torch.from_numpy(inside)[..., None]
        data = self._arrays["data"][rows] * ins  # (B, L, D+K)
        obs = self._arrays["observed"][rows] * ins
        if s.calendar and not inside.all():
            t = s.grid_times(g.starts[series][:, None], local)
            data[..., D:] = torch.from_numpy(s.calendar_features(t.reshape(-1)).reshape(B, length, -1))
        return {
            "target": data[..., :C].contiguous(),
            "observed": obs.contiguous(),
            "past_cov": data[..., C:C + P].contiguous(),
            "future_cov": data[..., C + P:].contiguous(),
            "loc": self._arrays["loc"][series],
            "scale": self._arrays["scale"][series],
            "baseline": self._arrays["baseline"][series],
            "series": torch.from_numpy(series),
            "start": torch.from_numpy(start),
        }, inside

    def predict_batch(self) -> dict[str, torch.Tensor]:
        """One window per series (S windows): the context is the ``context_length`` steps up to and
        including the last step with an observed target, the last ``horizon`` steps are the future
        (target 0, observed 0, past_cov 0; calendar features from the future times; user future
        covariates from rows of the table beyond the last observed target, else ``ValueError``).
        Same dict layout as the other loaders, first dimension S."""
        self._build()
        s = self._spec
        S, ctx, h = len(s.series_ids), self.context_length, self.horizon
        start = s.last_observed + 1 - ctx  # may be < 0 for a series with trailing gaps: zero-padded
        batch, inside = self.gather(np.arange(S), start, self.window_length)
        batch["target"][:, ctx:] = 0.0
        batch["observed"][:, ctx:] = 0.0
        batch["past_cov"][:, ctx:] = 0.0
        if s.future_covariate_cols:
            fut_inside = inside[:, ctx:]
            if not fut_inside.all():
                i = int(np.argmin(fut_inside.all(axis=1)))
                raise ValueError(
                    f"future covariates {s.future_covariate_cols} are needed for the {h} steps after the last "
                    f"observed target, but series {s.series_ids[i]!r} has only {int(fut_inside[i].sum())} of those "
                    "rows; append rows with the future covariates (and null targets) to the table")
        return batch

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = RandomSampler(ds) if shuffle else SequentialSampler(ds)
        return DataLoader(ds, batch_sampler=TensorBatches(sampler, batch_size, drop_last=False),
                          collate_fn=collate_batched, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        ds = self.train_dataset()
        if len(ds) == 0:
            raise ValueError(f"no training window: every series' train part is shorter than context_length + "
                             f"horizon = {self.window_length} steps; shorten the window or enlarge train_size")
        return self._loader(ds, self.batch_size, self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset(), self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset(), self.eval_batch_size, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(TensorDictDataset(self.predict_batch()), self.eval_batch_size, False)

    # ---- time ----

    def grid_time(self, series_idx, k) -> np.ndarray:
        """Axis times (int64) of grid steps ``k`` of series ``series_idx`` (indices into
        ``series_ids``; broadcast)."""
        self._build()
        return self._spec.grid_times(self._grid.starts[np.asarray(series_idx)], k)

    def timestamps_for(self, series_idx: int, start: int, steps: int) -> pl.Series:
        """Times of steps ``start .. start + steps - 1`` of series ``series_idx`` (an index into
        ``series_ids``, as in a batch's ``"series"``; ``start`` as in its ``"start"``): a Polars
        Series (``Datetime("ns")``, zoned UTC for zoned source data, or Int64 for integer time) of
        length ``steps``. The forecast of a window is at
        ``timestamps_for(series, start + context_length, horizon)``."""
        t = self.grid_time(int(series_idx), int(start) + np.arange(int(steps), dtype=np.int64))
        return self._spec.times_series(t, self.time_col)

    def state_dict(self) -> dict:
        """Saved into Lightning checkpoints: ``{"spec": spec.to_dict()}`` when the data were built."""
        return {"spec": self._spec.to_dict()} if self._built else {}
