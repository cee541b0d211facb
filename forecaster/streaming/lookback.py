"""Each series' look-back in the state table: a ring of its last ``context_length`` steps and the
running sums the per-step model's relative inputs read, all updated in O(1) per observation.

The columns it owns (see :meth:`LookBack.layout`):
- ``ring_y``, ``ring_o`` (ring, C): scaled targets and observed mask, step ``n`` at slot
  ``n % ring``; ``ring_x`` (ring, P + F_user) the other inputs, for a stream that runs its window;
- ``sum_y``, ``cnt`` (C,): the look-back's running sum and count of observed values, ``last_y``,
  ``last_n`` (C,): the last observation's value and step number (-1: none), for relative inputs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LookBack", "HEAL_ABOVE"]

# a value above this (scaled units: standard deviations) leaving the look-back: its running sum is recomputed
HEAL_ABOVE = 1e6


class LookBack:
    """The look-back bookkeeping of a stream (stateless: it works on the table's arrays ``t``).

    Args:
        context_length: ``T``, the look-back's length.
        ring: slots of the ring (``T``, or 0 for a stream that reads no look-back).
        with_inputs: keep every input column (``ring_x``): the stream runs its window, or keeps
            what re-warming a carried state after a model swap reads (``swappable``).
        relative: keep the running sums of the per-step model's relative inputs.
    """

    def __init__(self, context_length: int, ring: int, with_inputs: bool, relative: bool):
        self.T, self.ring, self.with_inputs, self.relative = context_length, ring, with_inputs, relative

    def layout(self, n_targets: int, n_values: int) -> dict[str, tuple[tuple, type, object]]:
        """Its per-series columns: name -> (shape after the row axis, dtype, initial value)."""
        C, t = n_targets, {}
        if self.ring:
            t.update(ring_y=((self.ring, C), np.float32, 0.0), ring_o=((self.ring, C), np.float32, 0.0))
        if self.with_inputs:
            t["ring_x"] = ((self.ring, n_values - C), np.float32, 0.0)
        if self.relative:
            t.update(sum_y=((C,), np.float64, 0.0), cnt=((C,), np.int64, 0), last_y=((C,), np.float32, 0.0),
                     last_n=((C,), np.int64, -1))
        return t

    def reset(self, t: dict, rows: np.ndarray) -> None:
        """Empty the look-back of ``rows`` (a restart after a long gap)."""
        for k in ("ring_y", "ring_o", "ring_x", "sum_y", "cnt", "last_y"):
            if k in t:
                t[k][rows] = 0
        if "last_n" in t:
            t["last_n"][rows] = -1

    def record(self, t: dict, rows: np.ndarray, scaled: np.ndarray, observed: np.ndarray, n_targets: int) -> None:
        """Write step ``n_steps - 1`` (already counted) of ``rows`` into the ring: scaled values (M, D)
        (0 where missing) and the targets' observed mask (M, C)."""
        if not self.ring:
            return
        slot = (t["n_steps"][rows] - 1) % self.ring
        t["ring_y"][rows, slot] = scaled[:, :n_targets]
        t["ring_o"][rows, slot] = observed
        if self.with_inputs:
            t["ring_x"][rows, slot] = scaled[:, n_targets:]

    def in_look_back(self, last_n: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Whether each last observation (step numbers (M, C); -1: none) lies in the look-back of
        step ``step`` (M,), ``[step - T + 1, step]``: (M, C) bool."""
        return (last_n >= 0) & (step[:, None] - last_n <= self.T - 1)

    def relative_values(self, t: dict, rows: np.ndarray, value: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """The per-step model's relative inputs of this step (M, 2C) from the step's scaled values
        and mask (M, C), in O(1): the look-back's running sum and count (the step ``T`` steps back
        leaves it, this one joins) and the last observation: what
        :func:`~forecaster.nets.common.relative_features` computes for it in a window. Updates that
        bookkeeping (part of the round: rolled back with it). A series' sum is recomputed from its
        ring every ``T`` steps (amortised O(1)) and when a value above ``HEAL_ABOVE`` (scaled)
        leaves it, so neither rounding nor one huge value lingers in it. Call before
        :meth:`record` of the same step (the ring still holds step ``n - T``)."""
        T = self.T
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
        has_prev = self.in_look_back(last_n, n)
        change = np.where(observed & has_prev, value - t["last_y"][rows], 0.0)
        dev = np.where(observed, value - mean, 0.0)
        t["last_y"][rows] = np.where(observed, value, t["last_y"][rows])
        t["last_n"][rows] = np.where(observed, n[:, None], last_n)
        return np.concatenate([change, dev], axis=1).astype(np.float32)

    def window(self, t: dict, rows: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``width`` (default ``T``, at most that) steps of each series from its ring,
        oldest first: scaled targets (M, W, C), observed (M, W, C) and the other inputs
        (M, W, P + F_user; with ``with_inputs`` only, else None); steps before a series' first
        observation are unobserved zeros, as ``predict`` pads them."""
        T = self.T
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

    def summary(self, t: dict, rows: np.ndarray, season_width: int) -> tuple[np.ndarray, ...]:
        """What the baseline reads of each series' look-back, from the running bookkeeping of the
        relative inputs and the last ``season_width`` slots of the ring: last observed value
        (M, C) and whether there is one, the look-back's mean (M, C) and whether there is one, and
        the last ``W`` steps' values and mask (M, W, C), oldest first (the last season, or the
        whole seasons or the whole look-back the seasonal adjustment or the level reads:
        :func:`~forecaster.baseline.summary_width`; see
        :func:`~forecaster.baseline.baseline_from_summary`)."""
        cur = t["n_steps"][rows] - 1  # the last step's number
        has_last = self.in_look_back(t["last_n"][rows], cur)
        cnt = t["cnt"][rows]
        mean = (t["sum_y"][rows] / np.maximum(cnt, 1)).astype(np.float32)
        season, season_obs, _ = self.window(t, rows, season_width)
        return t["last_y"][rows], has_last, mean, cnt > 0, season, season_obs
