"""The statistical peers a practitioner runs first (statsforecast's AutoETS, AutoARIMA, AutoTheta and
MSTL) on exactly the windows our model is scored on, in original units.

The windows come from the data module's own stages (:mod:`forecaster.data`): the table read by the
time rule, every series put on its regular grid (missing steps NaN), the splits of
:class:`forecaster.data.windows.SplitArgs` (test = the last ``test_size`` steps, val the default
10% before it, at least one horizon) and the test windows of
:func:`forecaster.data.windows.window_counts` (``horizon`` steps each, ``eval_stride = horizon``).
So a window here is a window there: the same series, the same first step, the same history
before it. The values are the float32 grid values the model reads.

A peer forecasts window ``[f, f + h)`` of a series from its grid values before ``f`` only; missing
steps in that history are filled by linear interpolation between observed neighbours (a missing
tail by the last observed value: nothing after ``f`` is read), because statsforecast needs
gap-free series. Errors are scored on the observed steps of the window only, as ours are.

``refit="once"`` (default): each model is fitted once per series on the history before the test
part (train + val) and forecasts every test window from that window's history with the fitted
parameters (statsforecast's ``forward``; ``cross_validation(refit=False)``): like our model, which
is trained once and conditions on each window's context. ``refit="window"``: refitted on the
history before every window (``cross_validation(refit=True)``), much slower for AutoARIMA.

Seasons (:func:`peer_seasons`): every model gets the project's season of the frequency
(:meth:`forecaster.timeaxis.Frequency.default_season_length`: 48 half-hourly, 24 hourly, 7 daily,
5 business-daily, 52 weekly, 12 monthly, 4 quarterly, 1 yearly), unless a season is given; MSTL
gets the data's seasons: for sub-daily data the day and the week, for daily data the week and the
year (365 days), else that one season; a season with fewer than two cycles in the shortest
history is left out, and MSTL without any season (yearly data) is not run (statsforecast needs the
``supersmoother`` package there).

``SeasonalNaive`` (:class:`SeasonalNaive`, numpy, no package needed) runs through the same
windows as a check: on data without gaps it must reproduce the seasonal-naive MAE ``fit`` reports
for the same windows (the project's formula), to float precision.

``pip install -e '.[peers]'`` installs statsforecast (never a dependency of the model itself).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from forecaster.data.grid import extent, regularise, resolve_frequency
from forecaster.data.table import Roles, Source
from forecaster.data.windows import SplitArgs, window_counts
from forecaster.timeaxis import DAY_NS, Frequency

__all__ = ["PEERS", "PEERS_INSTALL", "require_statsforecast", "peer_seasons", "TestWindows", "test_windows",
           "history_filled", "SeasonalNaive", "make_model", "run_peers"]

PEERS = ("AutoETS", "AutoARIMA", "AutoTheta", "MSTL")
PEERS_INSTALL = "pip install -e '.[peers]'"
_WEEK_NS = 7 * DAY_NS


def require_statsforecast():
    """The ``statsforecast.models`` module, or ``ImportError`` with one line saying how to install it."""
    try:
        import statsforecast.models as models
    except ImportError as e:
        raise ImportError(f"the statistical peers need the statsforecast package ({e}); install it with: "
                          f"{PEERS_INSTALL}") from None
    return models


def peer_seasons(freq: Frequency, shortest_history: int, season_length: int | None = None) -> tuple[int, list[int]]:
    """``(season, mstl_seasons)``: the season length every peer gets (``season_length`` if given,
    else the project's season of ``freq``) and the seasons MSTL gets (see the module docstring;
    empty: MSTL is not run). ``shortest_history``: steps of the shortest history a model is fitted
    on; MSTL's seasons need two cycles of it."""
    m = int(season_length) if season_length else freq.default_season_length()
    seasons = [m]
    if not season_length and freq.kind == "fixed":
        if freq.step < DAY_NS and _WEEK_NS % freq.step == 0:
            seasons = [m, _WEEK_NS // freq.step]
        elif freq.step == DAY_NS:
            seasons = [7, 365]
    seasons = [s for s in seasons if 1 < s and 2 * s <= shortest_history]
    return m, seasons


@dataclass
class TestWindows:
    """The test windows of a table, as the data module makes them.

    Attributes:
        freq: the grid's frequency.
        series_ids: (S,) ids, in the data module's order.
        values: per series, float64 (n_s,) grid values, NaN where missing.
        test_begin: int64 (S,): first grid step of each series' test part.
        starts: per series, int64 (k_s,): the first forecast step ``f`` of each test window.
        horizon: h, steps per window.
    """

    freq: Frequency
    series_ids: list[str]
    values: list[np.ndarray]
    test_begin: np.ndarray
    starts: list[np.ndarray]
    horizon: int

    @property
    def n_windows(self) -> int:
        return int(sum(len(s) for s in self.starts))


def test_windows(data: pl.DataFrame, *, time_col: str, id_col: str | None, target_col: str, freq: str | int | None,
                 context_length: int, horizon: int, test_size: int | float, val_size: int | float = 0.1,
                 time_format: str | None = None) -> TestWindows:
    """The test windows ``fit`` scores a model on for ``data`` with these data-module arguments
    (the same names and meanings as :class:`forecaster.data.TimeSeriesDataModule`'s; one target).
    Series shorter than ``context_length + horizon`` are dropped, as there."""
    roles = Roles(time_col, id_col, [target_col])
    table = Source(data=data).read(roles, time_format)
    f = resolve_frequency(table, freq, time_col)
    ext = extent(table, f, context_length + horizon)
    splits = SplitArgs(val_size=val_size, test_size=test_size, min_part=int(horizon))
    b, e = splits.bounds(ext.lengths, ext.starts, f, ext.series_ids, table.time_kind, time_format)["test"]
    grid = regularise(table, f, ext)
    first, counts = window_counts("test", b, e, context_length, horizon, horizon)
    o = grid.offsets
    values = [grid.values[o[i]:o[i + 1], 0].astype(np.float64) for i in range(len(ext.series_ids))]
    starts = [first[i] + context_length + horizon * np.arange(counts[i], dtype=np.int64)
              for i in range(len(ext.series_ids))]
    return TestWindows(f, list(grid.series_ids), values, b.astype(np.int64), starts, int(horizon))


def history_filled(y: np.ndarray, end: int) -> np.ndarray:
    """float64 (end,): ``y[:end]`` with NaNs filled by linear interpolation between observed
    neighbours, a NaN head by the first and a NaN tail by the last observed value (nothing at or
    after ``end`` is read). ``ValueError`` if none of it is observed."""
    h = np.asarray(y[:end], dtype=np.float64)
    ok = ~np.isnan(h)
    if not ok.any():
        raise ValueError(f"no observed value in the {end} steps of history")
    if ok.all():
        return h.copy()
    idx = np.arange(end)
    return np.interp(idx, idx[ok], h[ok])


class SeasonalNaive:
    """The seasonal-naive forecast with statsforecast's model interface: from history ``y`` (T,),
    step k = 1..h is ``y[T - 1 + k - m * ceil(k / m)]`` (the project's formula,
    :func:`forecaster.metrics.seasonal_naive_forecast`); ``m`` is capped at T."""

    def __init__(self, season_length: int):
        self.m = max(1, int(season_length))

    def forecast(self, y: np.ndarray, h: int, **_) -> dict:
        y = np.asarray(y, dtype=np.float64)
        m = min(self.m, len(y))
        k = np.arange(1, h + 1)
        return {"mean": y[len(y) - 1 + k - m * np.ceil(k / m).astype(np.int64)]}

    def fit(self, y: np.ndarray, **_) -> "SeasonalNaive":
        return self

    def forward(self, y: np.ndarray, h: int, **_) -> dict:
        return self.forecast(y, h)


def make_model(name: str, season: int, mstl_seasons: list[int]):
    """A model ``name`` (one of :data:`PEERS`, from statsforecast, or ``"SeasonalNaive"``) with its
    season(s), default settings otherwise; None for MSTL without a season."""
    if name == "SeasonalNaive":
        return SeasonalNaive(season)
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose from {[*PEERS, 'SeasonalNaive']}")
    models = require_statsforecast()
    if name == "MSTL":
        return models.MSTL(season_length=list(mstl_seasons)) if mstl_seasons else None
    return getattr(models, name)(season_length=int(season))


def run_peers(w: TestWindows, peers: tuple[str, ...] | list[str] = PEERS, refit: str = "once",
              season_length: int | None = None, log=None) -> dict[str, dict]:
    """Every peer on every test window of ``w``: ``{name: {"mae", "seconds", "windows", "refit",
    "season", ...}}`` (``mae``: mean |y - forecast| over the observed steps of every window and
    series, in original units; ``seconds``: fit + predict wall time summed over the series and
    windows; None and a ``"skipped"`` reason where a peer does not apply). ``refit``: ``"once"`` or
    ``"window"`` (module docstring). ``log``: called with a line after each peer."""
    if refit not in ("once", "window"):
        raise ValueError(f"refit={refit!r}: choose 'once' or 'window'")
    if any(p != "SeasonalNaive" for p in peers):
        require_statsforecast()
    h = w.horizon
    if refit == "once":
        shortest = int(w.test_begin.min())
    else:
        shortest = int(min((s[0] for s in w.starts if len(s)), default=0))
    season, mstl_seasons = peer_seasons(w.freq, shortest, season_length)
    out = {}
    for name in peers:
        model0 = make_model(name, season, mstl_seasons)
        info = {"season": season if name != "MSTL" else mstl_seasons, "refit": refit}
        if model0 is None:
            out[name] = {"mae": None, "seconds": None, "windows": 0, **info,
                         "skipped": "no season with two cycles in the history"}
            continue
        total, count, seconds, failed = 0.0, 0, 0.0, 0
        for y, starts in zip(w.values, w.starts):
            if not len(starts):
                continue
            t0 = time.perf_counter()
            fcs = []
            fitted = None
            for f in starts:
                try:
                    if refit == "window":
                        fc = make_model(name, season, mstl_seasons).forecast(y=history_filled(y, int(f)), h=h)["mean"]
                    else:
                        if fitted is None:
                            fitted = make_model(name, season, mstl_seasons).fit(y=history_filled(y, int(starts[0])))
                        fc = fitted.forward(y=history_filled(y, int(f)), h=h)["mean"]
                except Exception:  # a fit that fails scores as the last value, and is counted
                    failed += 1
                    fc = np.full(h, history_filled(y, int(f))[-1])
                fcs.append(np.asarray(fc, dtype=np.float64))
            seconds += time.perf_counter() - t0
            for f, fc in zip(starts, fcs):
                truth = y[int(f):int(f) + h]
                ok = ~np.isnan(truth)
                total += float(np.abs(truth[ok] - fc[ok]).sum())
                count += int(ok.sum())
        out[name] = {"mae": total / count if count else float("nan"), "seconds": round(seconds, 2),
                     "windows": w.n_windows, "failed_fits": failed, **info}
        if log is not None:
            log(f"{name}: {out[name]}")
    return out
