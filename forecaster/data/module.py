"""``TimeSeriesDataModule``: a thin ``LightningDataModule`` over the stages of :mod:`forecaster.data`
(table -> grid -> calendar -> splits -> scaling -> windows), run once, lazily, on first use. It fits
the :class:`forecaster.spec.DataSpec` that checkpoints store (:func:`forecaster.data.build.fit_spec`);
built from a checkpoint's spec (:meth:`TimeSeriesDataModule.from_spec`) it applies that spec's roles,
frequency, calendar and scalers to another table instead (:func:`forecaster.data.build.apply_spec`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from forecaster.data.build import apply_spec, check_args_against_spec, describe, fit_spec
from forecaster.data.scaling import SCALINGS
from forecaster.data.table import Roles, Source
from forecaster.data.windows import (
    SplitArgs, TensorBatches, TensorDictDataset, WindowDataset, collate_batched, gather, observed_forecast_steps,
    predict_batch, window_counts,
)
from forecaster.spec import DataSpec

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


class TimeSeriesDataModule(L.LightningDataModule):
    """A user's table of time series as windows for a forecaster.

    Batch layout (:mod:`forecaster.data.windows`): target/observed (B, L, C), past_cov (B, L, P),
    future_cov (B, L, F), loc/scale (B, C), series/start (B,), with L = context_length + horizon.

    Args:
        path: CSV / Parquet / Arrow IPC file or glob; None (and ``data`` None) = the embedded TMY3
            weather dataset (2 stations, hourly, 1 year), whose column roles are then the defaults.
        time_col: datetime/date column (ISO strings are parsed, or strings in ``time_format``;
            zone-aware times are converted to UTC, naive ones taken as given) or an integer index.
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
        time_format: strptime format of a text time column that is not ISO (``"%b %d %Y"`` for
            ``Jan 1 2000``); None = ISO.
        context_length: steps of look-back in a window (window = context + horizon steps), or
            ``"auto"``: :data:`~forecaster.data.build.AUTO_CONTEXT` steps, or one season plus the horizon
            when the season is that long or longer (a day of 5-minute data: 288 + horizon), so the
            look-back always holds the same time a season earlier (up to
            :data:`~forecaster.data.build.MAX_AUTO_CONTEXT` steps).
        horizon: steps forecast after the look-back (window = context + horizon steps).
        stride: step between train windows' starts.
        eval_stride: step between val/test windows (None = ``horizon``; 1 for the ETTh1 protocol).
        train_size: the training part of each series, split along its regular grid: a float in
            [0, 1) is a fraction of the series' length, an int (or a whole-number float such as
            ``8640.0``) a number of steps. None: test is the last ``test_size`` steps, val the
            ``val_size`` before, train the rest; set: the parts are consecutive from the start and
            anything after them is unused (ETTh1: 8640 / 2880 / 2880).
        val_size: the validation part of each series, as ``train_size`` (fraction or steps); a fraction
            is at least ``horizon`` steps (one window).
        test_size: the test part of each series, as ``train_size`` (fraction or steps); a fraction is
            at least ``horizon`` steps (one window).
        val_start: cut-off time of the validation part (read by the time rule), or an int for
            integer time; with ``test_start`` it overrides the sizes: val = [val_start, test_start).
        test_start: cut-off time of the test part, as ``val_start``: test = [test_start, end).
        scaling: ``"standard"`` (mean, std), ``"robust"`` (median, IQR) or ``"none"``, per series
            and column, fitted on the training part's observed values only.
        season_length: override the seasonal period (None = from the frequency, 24 for hourly).
        batch_size: training windows per batch.
        eval_batch_size: validation / test / predict windows per batch (None = ``batch_size``).
        num_workers: DataLoader worker processes (0 = load in the main process).
        shuffle: shuffle the training windows every epoch.
        pin_memory: pin the batches' memory for faster copies to a GPU; None = when CUDA is
            available.
        spec: a checkpoint's data spec (``DataSpec`` or its dict): roles, time format, frequency,
            calendar, season, window shape and scalers come from it (series it does not know get
            its pooled scalers); role arguments given here must agree with it.
        data: an in-memory ``polars.DataFrame`` / ``LazyFrame`` instead of ``path`` (Python use).

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
        context_length: int | Literal["auto"] = 168,
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
        # "auto" is resolved when the data are read; the model records the steps (its linked hparam)
        self.save_hyperparameters(ignore=["data", "spec", *(["context_length"] if context_length == "auto" else [])])
        if path is not None and data is not None:
            raise ValueError("give either path or data, not both")
        self._given = {"time_col": time_col, "id_col": id_col, "target_cols": target_cols,
                       "past_covariate_cols": past_covariate_cols, "future_covariate_cols": future_covariate_cols}
        self._spec_in = DataSpec.from_dict(spec) if spec is not None else None
        if self._spec_in is not None:
            s = self._spec_in
            check_args_against_spec(s, self._given, freq, time_format)
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
        if context_length == "auto" and self._spec_in is None:
            context_length = None  # resolved from the season when the data are read
        elif isinstance(context_length, str):
            raise ValueError(f"context_length={context_length!r}: must be an int >= 1 or 'auto'")
        for name, v in (("context_length", context_length), ("horizon", horizon), ("stride", stride)):
            if v is None:
                continue
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
        self._context_arg = None if context_length is None else int(context_length)
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
        self._source = (Source(data=data) if data is not None else Source(path) if path is not None else
                        Source(str(DEFAULT_DATASET), where=f"the embedded dataset {DEFAULT_DATASET.name}"))
        self._built = False

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
    def context_length(self) -> int:
        """Steps of look-back in a window (``"auto"`` is resolved when the data are read)."""
        return self._context_arg if self._context_arg is not None else self.spec.context_length

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
        return self._source.frame(self.time_col, self.time_format)

    def _where(self) -> str:
        return self._source.where

    def _build(self) -> None:
        if self._built:
            return
        horizon = self._spec_in.horizon if self._spec_in is not None else self.horizon
        splits = SplitArgs(self.train_size, self.val_size, self.test_size, self.val_start, self.test_start,
                           min_part=int(horizon))
        if self._spec_in is not None:
            p = apply_spec(self._source, self._spec_in, splits=splits)
        else:
            roles = Roles(self.time_col, self.id_col, self._target_cols, self.past_covariate_cols,
                          self.future_covariate_cols)
            p = fit_spec(self._source, roles, time_format=self.time_format, freq=self._freq_arg,
                         calendar_features=self._calendar_arg, season_length=self._season_arg,
                         context_length=self._context_arg, horizon=self.horizon, scaling=self.scaling, splits=splits)
        self._spec, self._grid, self._splits, self._arrays = p.spec, p.grid, p.splits, p.arrays
        self._target_cols = list(p.spec.target_cols)
        self._info = {**p.info, "targets_source": "given" if self._given["target_cols"] is not None or self.path is None
                      and self.data is None else "every numeric column (target_cols not set)"}
        self._built = True

    def summary(self) -> str:
        """What was read and how it will be used (printed at the start of ``fit``): series, rows,
        time range, frequency, season length, missing steps filled, the columns' roles, calendar
        features kept or dropped and why, windows per split, and the baseline blend."""
        self._build()
        return describe(self._spec, self._grid, self._info, self._where(),
                        {k: len(self._windows(k)) for k in ("train", "val", "test")})

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
        return WindowDataset(self._arrays, self._grid.offsets, first, counts, stride, self.window_length, sizes,
                             s.season_length, s.horizon)

    def observed_forecast_steps(self, split: str) -> np.ndarray:
        """int64 (S, C): observed target values per series and target in the steps that ``split``'s
        ("val" | "test") windows forecast, the values its loss and metrics are computed from (none at
        all: the validation loss is 0 / 0)."""
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r}: choose 'val' or 'test'")
        self._build()
        b, e = self._splits[split]
        return observed_forecast_steps(self._arrays["observed"].numpy(), self._grid.offsets, b, e, self.context_length,
                                       self.horizon, self.eval_stride)

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
        return gather(self._arrays, self._grid, self._spec, series, start, length)

    def predict_batch(self) -> dict[str, torch.Tensor]:
        """One window per series (S windows): the context is the ``context_length`` steps up to and
        including the last step with an observed target, the last ``horizon`` steps are the future
        (target 0, observed 0, past_cov 0; calendar features from the future times; user future
        covariates from rows of the table beyond the last observed target, else ``ValueError``).
        Same dict layout as the other loaders, first dimension S."""
        self._build()
        return predict_batch(self._arrays, self._grid, self._spec)

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
