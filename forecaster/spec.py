"""``DataSpec``: every fact about the data that training, prediction, streaming and the replay
share, in one object: the column roles, the time axis (the time rule, the frequency and its grid
arithmetic, calendar features), the window shape, and the per-series scalers.

The data module builds it (:attr:`forecaster.TimeSeriesDataModule.spec`), checkpoints store it
(:meth:`DataSpec.to_dict`, plain JSON), and ``predict``, the stream and the replay read it back
(:meth:`DataSpec.from_dict`), so a forecast never needs the training data.

Shapes: S series, D value columns (``C`` targets, then ``P`` past covariates, then the user's future
covariates), ``F = len(future_covariate_cols) + 2 * len(calendar)`` future features.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import polars as pl

from forecaster.baseline import HISTORY_SLOTS, blend_knots, canonical_params
from forecaster.timeaxis import Frequency, calendar_feature_names, calendar_features, format_time, to_axis

__all__ = ["DataSpec", "SPEC_VERSION"]

SPEC_VERSION = 6  # 6: the baseline's history profile (w_s K, w_l K, w_d, w_a, alpha, q, r, s, H 2F, mu); 5: its level
# (w_s K, w_l K, w_d, w_a, alpha, q, mu); 4: its seasonal adjustment (w_s K, w_l K, w_d, w_a, mu); 3: its drift
# (each series' first observation); 5, 4, 3, 2, 1 are read
# "No time yet" in the int64 time columns (NaT read as an int64 is the same value: refused).
NO_TIME = np.iinfo(np.int64).min
# Times (int64 axis values: nanoseconds since 1970 for datetimes) beyond this, about 2244 and 1696,
# are refused: 18 years from int64's ends (2262, 1677), so that later steps and forecast times of
# a stream do not overflow.
TIME_MAX = (1 << 63) - (1 << 59)
#: A first observation read from a spec is a scaled value within this.
FIRST_VALUE_MAX = 1e15


def _read_firsts(info: dict, ids: list[str], targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each series' first observation per target from a spec dict's ``series`` entries
    (``"first": {target: [value, time] | None}``; absent in specs before version 3: none)."""
    fv = np.zeros((len(ids), len(targets)))
    ft = np.full((len(ids), len(targets)), NO_TIME, dtype=np.int64)
    if not isinstance(info, dict):  # (no series entries: nothing known, as for their grids)
        return fv, ft
    for i, sid in enumerate(ids):
        entry = info.get(sid)
        firsts = entry.get("first") if isinstance(entry, dict) else None
        if firsts is None:
            continue
        if not isinstance(firsts, dict):
            raise ValueError(f"the data spec's first observations of series {sid!r} are not a mapping of targets")
        for j, c in enumerate(targets):
            f = firsts.get(c)
            if f is None:
                continue
            if not (isinstance(f, (list, tuple)) and len(f) == 2 and _number(f[0], FIRST_VALUE_MAX)
                    and _number(f[1], TIME_MAX, integer=True)):
                raise ValueError(f"the data spec's first observation of series {sid!r}, target {c!r} is not "
                                 f"[value, time] (a number within +-{FIRST_VALUE_MAX:g} and an integer time within "
                                 f"+-{TIME_MAX})")
            fv[i, j], ft[i, j] = float(f[0]), int(f[1])
    return fv, ft


def _number(x, limit, integer: bool = False) -> bool:
    """A JSON number (not a bool) within +-limit (an int, if ``integer``)."""
    if isinstance(x, bool) or not isinstance(x, int if integer else (int, float)):
        return False
    try:
        return bool(abs(x) <= limit)
    except OverflowError:
        return False


@dataclass(eq=False)
class DataSpec:
    """The data's roles, time axis, window shape and scalers (see the module docstring).

    Attributes:
        time_col, id_col, target_cols, past_covariate_cols, future_covariate_cols: column roles
            (``id_col`` None: one series, id ``"0"``).
        time_kind: ``"datetime"`` or ``"int"``. time_zone: ``"UTC"`` when the source times were
            zone-aware (they were converted to UTC), else None. time_format: strptime format of
            string times (None: ISO).
        freq: the :class:`~forecaster.timeaxis.Frequency`.
        calendar: calendar encodings fed to the model as future features.
        season_length: steps per season (seasonal naive, MASE).
        context_length, horizon: the window the model reads and forecasts.
        scaling: ``"standard"``, ``"robust"`` or ``"none"``.
        series_ids: ids (S,) of the series with scalers.
        loc, scale: float64 (S, D): ``scaled = (value - loc) / scale`` per series and value column.
        series_start, series_length, last_observed: int64 (S,): the fitted table's grid per series
            (first grid time, grid steps, grid index of the last observed target); informational
            for prediction on other tables.
        baseline: float64 (S, C, 2K + 5 + HISTORY_SLOTS): the fitted naive blend per series and
            target, ``[w_season at K knots, w_last at K knots, w_drift, w_adjust, alpha, q, r, s, H
            2F, mu]`` (:mod:`forecaster.baseline`; ``alpha``, ``q``: the level's smoothing and
            window; ``r``, ``s``, ``H``: the training part's profile's share of the seasonal
            adjustment, its amplitude (0: its own, 1: the look-back's) and its F harmonics'
            coefficients, phase 0 at the grid's absolute step 0 (``freq.absolute_step``); ``mu`` is the
            training mean, used only for an empty look-back), in scaled units. Earlier layouts (no
            history profile: ``2K + 5``; no level: ``2K + 3``; no seasonal adjustment: ``2K + 2``;
            no drift: ``2K + 1``) are read as the same forecast with those weights 0.
        first_value, first_time: float64 / int64 (S, C): each series' first observation of each
            target in the fitted table (scaled value, axis time; ``NO_TIME``: none), the anchor of
            the baseline's drift wherever a later table or a stream starts after it.
    """

    time_col: str
    id_col: str | None
    target_cols: list[str]
    past_covariate_cols: list[str]
    future_covariate_cols: list[str]
    time_kind: str
    freq: Frequency
    calendar: list[str]
    season_length: int
    context_length: int
    horizon: int
    scaling: str
    series_ids: list[str]
    loc: np.ndarray
    scale: np.ndarray
    series_start: np.ndarray
    series_length: np.ndarray
    last_observed: np.ndarray
    baseline: np.ndarray | None = None
    time_zone: str | None = None
    time_format: str | None = None
    first_value: np.ndarray | None = None
    first_time: np.ndarray | None = None
    _index: dict = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.baseline is None:  # specs from before the baseline: the last value
            b = np.zeros((len(self.series_ids), len(self.target_cols), 3))
            b[..., 1] = 1.0
            self.baseline = b
        # every earlier layout (one weight for all steps, no drift, no adjustment, the plain mean of the whole
        # look-back) as [w_s K, w_l K, w_d, w_a, alpha, q, mu]
        self.baseline = canonical_params(self.baseline, self.horizon)
        al = 2 * len(blend_knots(self.horizon)) + 2
        alpha, q = self.baseline[..., al], self.baseline[..., al + 1]
        r, amplitude = self.baseline[..., al + 2], self.baseline[..., al + 3]
        if not (((alpha >= 0) & (alpha.astype(np.float32) < 1)).all() and np.isin(q, (0.0, 1.0)).all()):
            raise ValueError("the data spec's baseline levels must have alpha in [0, 1) and q 0 or 1 (a blend's "
                             "level is not one the baseline computes); refit the model or restore its spec")
        if not (((r >= 0) & (r <= 1)).all() and np.isin(amplitude, (0.0, 1.0)).all()):
            raise ValueError("the data spec's baseline history profiles must have r in [0, 1] and s 0 or 1 (a blend's "
                             "seasonal profile is not one the baseline computes); refit the model or restore its spec")
        shape = (len(self.series_ids), len(self.target_cols))
        if self.first_value is None or self.first_time is None:  # specs from before the drift: none known
            self.first_value, self.first_time = np.zeros(shape), np.full(shape, NO_TIME, dtype=np.int64)

    # ---- sizes ----

    @property
    def value_cols(self) -> list[str]:
        """Targets, past covariates, user future covariates: the D columns of ``loc``/``scale``."""
        return [*self.target_cols, *self.past_covariate_cols, *self.future_covariate_cols]

    @property
    def n_targets(self) -> int:
        return len(self.target_cols)

    @property
    def n_past_covariates(self) -> int:
        return len(self.past_covariate_cols)

    @property
    def n_future_covariates(self) -> int:
        """User future covariates + calendar feature columns."""
        return len(self.future_covariate_cols) + 2 * len(self.calendar)

    @property
    def calendar_feature_names(self) -> list[str]:
        return calendar_feature_names(self.calendar)

    # ---- series and scalers ----

    def series_index(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of ``series_ids`` for ``ids`` (int64 (n,)), -1 for a series the spec does not know."""
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.series_ids)}
        return np.array([self._index.get(str(s), -1) for s in ids], dtype=np.int64)

    def pooled_scalers(self) -> tuple[np.ndarray, np.ndarray]:
        """``(loc, scale)`` float64 (D,) for a series the spec does not know: the median over the
        known series of each column's location and scale (0 and 1 without any)."""
        if not len(self.series_ids):
            D = len(self.value_cols)
            return np.zeros(D), np.ones(D)
        return np.median(self.loc, axis=0), np.median(self.scale, axis=0)

    def anchors_for(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(first_value, first_time)`` (n, C) of each series' first observation in the fitted
        table; a series the spec does not know has none (0, ``NO_TIME``)."""
        rows = self.series_index(ids)
        known = rows >= 0
        value = np.zeros((len(rows), len(self.target_cols)))
        time = np.full((len(rows), len(self.target_cols)), NO_TIME, dtype=np.int64)
        value[known], time[known] = self.first_value[rows[known]], self.first_time[rows[known]]
        return value, time

    def baseline_for(self, ids: Sequence[str]) -> np.ndarray:
        """float64 (n, C, 2K + 5 + HISTORY_SLOTS): the baseline blend of each series; a series the
        spec does not know gets the median over the known ones (whose drift, anchored at that series' own first
        observation, is the median weight, and the level's alpha too; seasonally adjusted, and its
        level over the whole seasons, if most of them are), without a training part's profile (the
        known ones' are their own: ``r = s = 0``, the look-back's profile)."""
        rows = self.series_index(ids)
        if len(self.series_ids):
            pooled = np.median(self.baseline, axis=0)
            wa = 2 * len(blend_knots(self.horizon)) + 1  # the seasonal adjustment is 0 or 1: the majority's,
            for j in (wa, wa + 2):  # and so is the level's window q
                pooled[:, j] = (self.baseline[:, :, j] > 0.5).mean(axis=0) > 0.5
            pooled[:, wa + 3:wa + 3 + HISTORY_SLOTS] = 0.0  # r, s and the coefficients
        else:  # the last value
            pooled = np.zeros((len(self.target_cols), 3))
            pooled[:, 1] = 1.0
            pooled = canonical_params(pooled, self.horizon)
        out = np.tile(pooled, (len(rows), 1, 1))
        known = rows >= 0
        out[known] = self.baseline[rows[known]]
        return out

    def scalers_for(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(loc, scale, known)``: float64 (n, D), float64 (n, D), bool (n,); unknown series get
        :meth:`pooled_scalers`."""
        rows = self.series_index(ids)
        known = rows >= 0
        ploc, pscale = self.pooled_scalers()
        loc = np.tile(ploc, (len(rows), 1))
        sc = np.tile(pscale, (len(rows), 1))
        loc[known], sc[known] = self.loc[rows[known]], self.scale[rows[known]]
        return loc, sc, known

    def scaler(self, series_id: str, cols: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(loc, scale)``, float64 (len(cols),), of a known series; ``cols`` defaults to the
        targets. ``ValueError`` for an unknown series or column."""
        cols = list(self.target_cols if cols is None else cols)
        row = int(self.series_index([series_id])[0])
        if row < 0:
            raise ValueError(f"series {series_id!r} is not in the spec (known: {self.series_ids[:10]}...); use "
                             "scalers_for() for the pooled scalers of a new series")
        vc = self.value_cols
        missing = [c for c in cols if c not in vc]
        if missing:
            raise ValueError(f"no scaler for column(s) {missing}; the value columns are {vc}")
        j = [vc.index(c) for c in cols]
        return self.loc[row, j], self.scale[row, j]

    def scale_values(self, values, series_id: str, cols: Sequence[str] | None = None) -> np.ndarray:
        """Original units -> model units, ``(values - loc) / scale``. ``values``: (..., len(cols)),
        ``cols`` defaulting to the targets; float32, same shape."""
        loc, sc = self.scaler(series_id, cols)
        return ((np.asarray(values, dtype=np.float64) - loc) / sc).astype(np.float32)

    def unscale_values(self, values, series_id: str, cols: Sequence[str] | None = None) -> np.ndarray:
        """Model units -> original units, ``values * scale + loc`` (the inverse of
        :meth:`scale_values`); float32, same shape."""
        loc, sc = self.scaler(series_id, cols)
        return (np.asarray(values, dtype=np.float64) * sc + loc).astype(np.float32)

    # ---- time ----

    def parse_times(self, values, *, what: str | None = None, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Times in any accepted form -> ``(int64 axis values (n,), null (n,))`` by the time rule of
        :func:`forecaster.timeaxis.to_axis`, with this spec's time kind and format."""
        t, null, _ = to_axis(values, self.time_kind, self.time_format, what=what or f"time_col {self.time_col!r}",
                             strict=strict)
        return t, null

    def grid_times(self, origin, k) -> np.ndarray:
        """Times (int64 axis values) of grid steps ``k`` from ``origin`` (broadcast)."""
        return self.freq.time(origin, k)

    def times_series(self, t: np.ndarray, name: str = "time") -> pl.Series:
        """Axis values -> a Polars Series: ``Datetime("ns")`` (with time zone ``UTC`` for zoned source
        data) or ``Int64`` for integer time."""
        s = pl.Series(name, np.asarray(t, dtype=np.int64).reshape(-1), dtype=pl.Int64)
        if self.time_kind != "datetime":
            return s
        s = s.cast(pl.Datetime("ns"))
        return s.dt.replace_time_zone(self.time_zone) if self.time_zone else s

    def format_time(self, t: int):
        return format_time(t, self.time_kind)

    def off_grid(self, series_id: str, t: int) -> str | None:
        """None when axis time ``t`` can be on the grid of series ``series_id``: on its training
        grid for a series the spec knows, else on the frequency's anchoring (month ends or days 1..28
        for months, weekdays for business days); otherwise why not (a series' first record sets its
        grid in a stream)."""
        f = self.freq
        row = int(self.series_index([series_id])[0])
        if row >= 0 and len(self.series_start):
            _, on = f.index(int(self.series_start[row]), int(t))
            if not bool(on):
                return f"timestamp is off the {f} grid the series was trained on (e.g. " \
                       f"{self.format_time(int(self.series_start[row]))})"
            return None
        _, on = f.index(int(t), int(t))
        if not bool(on):
            why = {"bday": " (a business day)", "session": " (a step inside the open hours of an open day)"}
            return f"timestamp is not a {f} grid time{why.get(f.kind, '')}"
        if f.kind == "month":
            day = np.floor_divide(int(t), 86_400_000_000_000)
            d = np.datetime64(int(day), "D")
            month_end = (d + 1).astype("datetime64[M]") != d.astype("datetime64[M]")
            dom = int((d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64)) + 1
            if f.month_end and not month_end:
                return f"timestamp is not a month end: the model's {f} grid is on month ends"
            if not f.month_end and dom > 28:
                return f"timestamp is on day {dom} of the month: the model's {f} grid is on days 1..28"
        return None

    def calendar_features(self, times: np.ndarray) -> np.ndarray:
        """float32 (n, 2 * len(calendar)) calendar features of axis times (n,)."""
        return calendar_features(times, self.calendar)

    # ---- other tables ----

    def for_series(self, ids: Sequence[str], starts: np.ndarray, lengths: np.ndarray,
                   last_observed: np.ndarray) -> "DataSpec":
        """This spec's roles, axis and scalers on another table's series (prediction data): known
        series keep their scalers, new ones get the pooled scalers."""
        loc, sc, _ = self.scalers_for(ids)
        first_value, first_time = self.anchors_for(ids)
        return replace(self, series_ids=[str(s) for s in ids], loc=loc, scale=sc, baseline=self.baseline_for(ids),
                       first_value=first_value, first_time=first_time,
                       series_start=np.asarray(starts, np.int64), series_length=np.asarray(lengths, np.int64),
                       last_observed=np.asarray(last_observed, np.int64))

    # ---- serialisation ----

    def to_dict(self) -> dict:
        """Plain JSON (saved in checkpoints as the model's ``data_spec``)."""
        vc = self.value_cols
        return {
            "version": SPEC_VERSION,
            "time_col": self.time_col,
            "id_col": self.id_col,
            "target_cols": list(self.target_cols),
            "past_covariate_cols": list(self.past_covariate_cols),
            "future_covariate_cols": list(self.future_covariate_cols),
            "time_kind": self.time_kind,
            "time_zone": self.time_zone,
            "time_format": self.time_format,
            "freq": self.freq.value,
            "month_end": bool(self.freq.month_end),
            "calendar": list(self.calendar),
            "calendar_feature_names": self.calendar_feature_names,
            "season_length": int(self.season_length),
            "context_length": int(self.context_length),
            "horizon": int(self.horizon),
            "scaling": self.scaling,
            "series_ids": list(self.series_ids),
            "series": {sid: {"start": int(self.series_start[i]), "length": int(self.series_length[i]),
                             "last_observed": int(self.last_observed[i]),
                             "first": {c: None if self.first_time[i, j] == NO_TIME else
                                       [float(self.first_value[i, j]), int(self.first_time[i, j])]
                                       for j, c in enumerate(self.target_cols)}}
                       for i, sid in enumerate(self.series_ids)}
            if len(self.series_start) == len(self.series_ids) else {},
            "scalers": {sid: {c: [float(self.loc[i, j]), float(self.scale[i, j])] for j, c in enumerate(vc)}
                        for i, sid in enumerate(self.series_ids)},
            "baseline": {sid: {c: [float(x) for x in self.baseline[i, j]] for j, c in enumerate(self.target_cols)}
                         for i, sid in enumerate(self.series_ids)},
        }

    @classmethod
    def from_dict(cls, d: dict | "DataSpec") -> "DataSpec":
        """The inverse of :meth:`to_dict`; also reads the version-1 specs of earlier checkpoints."""
        if isinstance(d, DataSpec):
            return d
        if not isinstance(d, dict) or "time_col" not in d:
            raise ValueError("not a data spec (a dict written by DataSpec.to_dict)")
        version = int(d.get("version", 1))
        if version > SPEC_VERSION:
            raise ValueError(f"the data spec has version {version}; this code reads up to {SPEC_VERSION}: "
                             "upgrade gru-forecaster")
        ids = [str(s) for s in d.get("series_ids", list(d.get("scalers", {})))]
        vc = [*d["target_cols"], *d["past_covariate_cols"], *d["future_covariate_cols"]]
        sc = d.get("scalers", {})
        loc = np.array([[sc[s][c][0] for c in vc] for s in ids], dtype=np.float64).reshape(len(ids), len(vc))
        scl = np.array([[sc[s][c][1] for c in vc] for s in ids], dtype=np.float64).reshape(len(ids), len(vc))
        bl = d.get("baseline")
        base = None if bl is None or not ids else np.array([[bl[s][c] for c in d["target_cols"]] for s in ids],
                                                            dtype=np.float64)
        if base is not None and not (np.isfinite(base).all() and (np.abs(base) <= 1e15).all()):
            raise ValueError("the data spec's baseline blends must be finite numbers within 1e15 (a weight, a drift, "
                             "an adjustment or a mean is not); refit the model or restore its spec")
        info = d.get("series", {})
        # (without the series' grids, e.g. a hand-written spec, no array: no check against them)
        grids = isinstance(info, dict) and all(isinstance(info.get(s), dict) and
                                               all(_number(info[s].get(k), TIME_MAX, integer=True)
                                                   for k in ("start", "length", "last_observed")) for s in ids)
        get = lambda k: np.array([int(info[s][k]) for s in ids], dtype=np.int64) \
            if grids else np.zeros(0, dtype=np.int64)  # noqa: E731
        kind = d["time_kind"]
        fv, ft = _read_firsts(info, ids, list(d["target_cols"]))
        return cls(
            time_col=d["time_col"], id_col=d["id_col"], target_cols=list(d["target_cols"]),
            past_covariate_cols=list(d["past_covariate_cols"]), future_covariate_cols=list(d["future_covariate_cols"]),
            time_kind=kind, freq=Frequency.parse(d["freq"], kind, month_end=bool(d.get("month_end", False))),
            calendar=list(d.get("calendar", [])), season_length=int(d["season_length"]),
            context_length=int(d["context_length"]), horizon=int(d["horizon"]), scaling=d.get("scaling", "standard"),
            series_ids=ids, loc=loc, scale=scl, series_start=get("start"), series_length=get("length"),
            last_observed=get("last_observed"), baseline=base, time_zone=d.get("time_zone"),
            time_format=d.get("time_format"), first_value=fv, first_time=ft,
        )
