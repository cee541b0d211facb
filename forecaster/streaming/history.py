"""The two ways a stream uses a series' past (``history``):

- :class:`CarriedState` (``"carry"``, the per-step model's default): the GRU state carries the
  whole history, one recurrent step per observation and no GRU run per forecast; its baseline
  reads the running look-back sums and the last season of the ring (its last whole seasons for a
  seasonally adjusted target).
- :class:`RunWindow` (``"window"``; the window model always): the look-back is kept in the ring and
  the last ``context_length`` steps run from the zero state at each forecast, which is what the
  model was trained on and what ``predict`` does, at O(context) per forecast.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from forecaster.baseline import NO_AGE, rotate_history, summary_width, with_first
from forecaster.spec import DataSpec
from forecaster.streaming.lookback import LookBack
from forecaster.streaming.records import NO_TIME
from forecaster.streaming.table import SeriesTable

__all__ = ["CarriedState", "RunWindow", "one_thread_if_small", "SMALL_BATCH"]

# Below this many rows a CPU step runs on one intra-op thread: ATen parallelises some pointwise ops
# (GELU) even for a (1, 32) tensor, and when the other cores are busy the OpenMP region waits for
# them. Measured on a 2-core CPU under load: GELU 1,968 us with 2 threads, 7 us with 1.
SMALL_BATCH = 256


@contextmanager
def one_thread_if_small(device: torch.device, rows: int):
    n = torch.get_num_threads()
    if device.type != "cpu" or rows > SMALL_BATCH or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def baseline_rows(spec: DataSpec, t: dict, rows: np.ndarray, before: int = 0) -> np.ndarray:
    """The baseline entry of ``rows`` (M, C, 2K + 7 + HISTORY_SLOTS): their fitted blend, its
    history profiles turned to the last step less ``before`` steps (0: the origin, for the
    look-back's summary; ``T - 1``: the first step of the window, as a batch's), and each target's
    first observation, aged there."""
    first = t["first_t"][rows]  # (M, C)
    seen = first != NO_TIME
    age = np.full(first.shape, NO_AGE)
    last = t["last"][rows]
    if seen.any():
        age[seen] = spec.freq.index(first[seen], np.broadcast_to(last[:, None], first.shape)[seen])[0] - before
    base = t["base"][rows]
    known = last != NO_TIME
    if known.any():  # rows never stepped forecast nothing; their profiles stay as they are
        shift = np.zeros(len(rows), np.int64)
        shift[known] = spec.freq.absolute_step(last[known]) - before
        base = rotate_history(base, shift[:, None], spec.season_length, spec.horizon)
    return with_first(base, t["first_y"][rows], age.astype(np.float32))


def _as_t(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)


class CarriedState:
    """Per-step model, ``history="carry"``: each series' GRU state advances one step per observation."""

    name = "carry"
    carries = True

    def __init__(self, net, spec: DataSpec, lookback: LookBack, device: torch.device):
        self.net, self.spec, self.lookback, self.device = net, spec, lookback, device
        self.C, self.P = len(spec.target_cols), len(spec.past_covariate_cols)

    def reset(self, table: SeriesTable, rows: np.ndarray) -> None:
        """The zero state for ``rows`` (a restart)."""
        table.state[:, torch.from_numpy(rows).to(self.device)] = 0.0

    def step(self, table: SeriesTable, rows: np.ndarray, scaled: np.ndarray, observed: np.ndarray,
             future: np.ndarray) -> np.ndarray:
        """One recurrent step of distinct ``rows`` from scaled values (M, D) (0 where missing), the
        targets' observed mask (M, C) and the future inputs (M, F); returns which rows' state is
        finite after it (bool (M,))."""
        C, P = self.C, self.P
        values = scaled[:, :C]
        if self.net.inputs == "relative":
            values = self.lookback.relative_values(table.t, rows, values, observed)
        self.step_rows(table, rows, values, observed.astype(np.float32), scaled[:, C:C + P], future)
        if table.state.device.type == "cpu":  # numpy: 2.5 us for one row, torch's op dispatch 17 us (2-core CPU)
            return np.isfinite(table.state.numpy()[:, rows]).all(axis=(0, 2))
        rows_t = torch.from_numpy(rows).to(self.device)
        return torch.isfinite(table.state.index_select(1, rows_t)).all(dim=2).all(dim=0).cpu().numpy()

    def step_rows(self, table: SeriesTable, rows: np.ndarray, target, observed, past, future) -> None:
        """``net.step_`` on the state table for ``rows`` (all distinct) from one step's features."""
        dev = self.device
        self.net.step_(table.state, torch.from_numpy(rows).to(dev), _as_t(target, dev), _as_t(observed, dev),
                       _as_t(past, dev), _as_t(future, dev))

    def forecast(self, table: SeriesTable, rows: np.ndarray, ahead: np.ndarray) -> np.ndarray:
        """Decode each series' state and add its baseline: (M, H, C, Q), scaled units."""
        dev, net, t = self.device, self.net, table.t
        h = net.output_state(table.state, torch.from_numpy(rows).to(dev))
        with one_thread_if_small(dev, len(rows)):
            y = net.decode(h, _as_t(ahead, dev).reshape(len(rows), -1))
            if net.baseline != "none":
                if "sum_y" in t:  # the running look-back summary: O(m) per forecast, O(T) if seasonally adjusted
                    params = baseline_rows(self.spec, t, rows)  # or the level is smoothed or over the whole seasons
                    width = summary_width(params, self.spec.horizon, net.season_length, self.lookback.T)
                    summary = tuple(torch.from_numpy(a).to(dev) for a in self.lookback.summary(t, rows, width))
                    params = torch.from_numpy(params).to(dev)
                    y = net.add_baseline_from_summary(y, summary, params)
                else:
                    win_y, win_o, _ = self.lookback.window(t, rows)
                    params = torch.from_numpy(baseline_rows(self.spec, t, rows, self.lookback.T - 1)).to(dev)
                    y = net.add_baseline(y, _as_t(win_y, dev), _as_t(win_o, dev), params)
            return y.float().cpu().numpy()


class RunWindow:
    """``history="window"`` (the window model, or the per-step model by choice): run the look-back
    window at each forecast; nothing is stepped per observation but the ring."""

    name = "window"
    carries = False

    def __init__(self, net, spec: DataSpec, lookback: LookBack, device: torch.device):
        self.net, self.spec, self.lookback, self.device = net, spec, lookback, device
        self.C, self.P = len(spec.target_cols), len(spec.past_covariate_cols)

    def reset(self, table: SeriesTable, rows: np.ndarray) -> None:
        pass  # no state: the emptied ring is the restart

    def step(self, table, rows, scaled, observed, future) -> np.ndarray:
        return np.ones(len(rows), dtype=bool)

    def forecast(self, table: SeriesTable, rows: np.ndarray, ahead: np.ndarray) -> np.ndarray:
        """Run the window of each series (the forecast ``predict`` makes from the same origin):
        (M, H, C, Q), scaled units."""
        T, H, C, P = self.lookback.T, self.spec.horizon, self.C, self.P
        M, dev = len(rows), self.device
        y, o, x = self.lookback.window(table.t, rows)
        times = self.spec.grid_times(table.t["last"][rows][:, None], np.arange(-T + 1, 1)[None, :])  # (M, T)
        cal = self.spec.calendar_features(times.reshape(-1)).reshape(M, T, -1)
        future_ctx = np.concatenate([x[..., P:], cal], axis=2)  # user future covariates, then calendar
        z = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
        target = _as_t(np.concatenate([y, z(M, H, C)], axis=1), dev)
        observed = _as_t(np.concatenate([o, z(M, H, C)], axis=1), dev)
        past = _as_t(np.concatenate([x[..., :P], z(M, H, P)], axis=1), dev)
        fut = _as_t(np.concatenate([future_ctx, ahead], axis=1), dev)
        base = torch.from_numpy(baseline_rows(self.spec, table.t, rows, T - 1)).to(dev)
        with one_thread_if_small(dev, M):
            return self.net.forecast_last(target, observed, past, fut, T, base).float().cpu().numpy()
