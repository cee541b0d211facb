"""Swapping the network of a running stream (:meth:`StreamingForecaster.swap`) and watching a
checkpoint file for a newer one (:class:`CheckpointWatcher`, ``stream --watch PATH``).

A swap serves another network of the same data from the next record on, without losing a series:

- **Compatible only**: the new network and its spec must read the same columns (id, time,
  targets, past and future covariates), on the same time axis and frequency, calendar features,
  season, look-back and horizon, with the same quantile levels and the same kind of model, so
  that every series' columns keep their meaning. Anything else is refused with a
  :class:`SwapError` naming the difference; the stream keeps its model. The network's size
  (hidden width, layers) may differ: the state table is rebuilt.
- **Re-warmed states**: the per-step model's carried state is a function of the whole history,
  which the stream does not keep. Each series' state is re-computed by running the new network
  over its look-back ring (the last ``context_length`` steps, oldest first, from the zero state,
  missing steps as unobserved), which is exactly the state the model computes from a context
  window ending at the series' last time (how it was trained, and how a stream restarts a series
  after a long gap), and the state a fresh stream of the new network reaches from those steps:
  the same code (:meth:`~forecaster.streaming.steps.Stepper.round`) runs them, ``batch_size``
  series at a time, on a scratch table. A stream that runs its window (``history="window"``, or
  the window model) keeps no state: the next forecast runs the new network on the window.
  Re-warming the carried state needs the look-back of every input, which a carry stream keeps
  only when built with ``swappable=True`` (``stream --watch`` does) or when the model has no
  covariates.
- **Scalers**: a checkpoint warm-started with ``--warm_start_scalers refit`` has other scalers;
  every series gets the new spec's (its own, or the pooled ones) and baseline blend, and its
  look-back is converted to them (rounding aside, the values the new scalers give).
- **Atomic**: everything is computed aside (a candidate stream, new arrays); the stream's parts
  are replaced in one step at the end. On any exception (an interrupt included) the stream keeps
  its model, its states and its look-back as they were.
- **Snapshots**: the state file's fingerprint holds the weights' digest, so a snapshot written
  after the swap belongs to the new network (one written for another network is refused at
  load). The first snapshot after a swap writes every series (a base), since every state changed
  and a log's deltas carry the base's fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forecaster.spec import DataSpec
from forecaster.streaming.records import NO_TIME, show

__all__ = ["SwapError", "SwapReport", "swap_model", "incompatibility", "CheckpointWatcher", "load_model"]

# spec entries that two networks of one stream must share (the meaning of every per-series column)
SAME_SPEC = ("time_col", "id_col", "target_cols", "past_covariate_cols", "future_covariate_cols", "time_kind",
             "time_zone", "time_format", "freq", "month_end", "calendar", "season_length", "context_length", "horizon")


class SwapError(ValueError):
    """A model the stream cannot swap to (one line); the stream keeps its model."""


@dataclass
class SwapReport:
    """What a swap did: the old and new weights' digests (the snapshot fingerprint's ``weights``),
    the series whose carried state was re-warmed, whether the scalers changed, and the seconds it
    took (re-warming included)."""

    old: str
    new: str
    series: int
    rewarmed: int
    rescaled: bool
    seconds: float
    source: str = ""

    def line(self) -> str:
        """The one-line log of the swap."""
        what = f"{self.rewarmed:,} series re-warmed from their look-back" if self.rewarmed or not self.series else \
            f"{self.series:,} series kept (the window runs at each forecast: no state to re-warm)"
        src = f" ({self.source})" if self.source else ""
        scal = "; scalers converted to the new spec's" if self.rescaled else ""
        return f"swapped model {self.old} -> {self.new}{src}: {what}{scal}, {self.seconds:.2f} s"


def incompatibility(stream, net, spec: DataSpec) -> str | None:
    """Why ``net`` with ``spec`` cannot serve ``stream``'s series (None: it can)."""
    old, new = stream.spec.to_dict(), spec.to_dict()
    diff = [f"{k} {show(old.get(k))} -> {show(new.get(k))}" for k in SAME_SPEC if old.get(k) != new.get(k)]
    if diff:
        return "other data: " + "; ".join(diff[:4])
    if bool(getattr(net, "carries_state", False)) != bool(stream.net.carries_state):
        kind = lambda n: "per-step (carried state)" if n.carries_state else "window"  # noqa: E731
        return f"another kind of model: {kind(stream.net)} -> {kind(net)}"
    if list(net.quantiles) != list(stream.net.quantiles):
        return f"other quantile levels: {stream.net.quantiles} -> {list(net.quantiles)}"
    return None


def swap_model(stream, net, spec, batch_size: int = 4096, source: str = "") -> SwapReport:
    """:meth:`StreamingForecaster.swap` (see the module docstring)."""
    from forecaster.nets import GRUNetBase

    t0 = time.perf_counter()
    if not isinstance(net, GRUNetBase):
        raise SwapError(f"swap needs a forecasting network of forecaster.nets (model.net), got {type(net).__name__}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise SwapError(f"batch_size must be an int >= 1, got {batch_size!r}")
    try:
        spec = DataSpec.from_dict(spec)
    except (ValueError, KeyError, TypeError) as e:
        raise SwapError(f"the new model's data spec is not readable ({type(e).__name__}: {show(str(e))})") from None
    why = incompatibility(stream, net, spec)
    if why is None:
        cand = type(stream)(net, spec, capacity=1, **stream._options)  # the new parts, built aside
        if cand.table.layout != stream.table.layout:
            why = "it keeps other per-series columns (another baseline or inputs setting)"
    if why:
        raise SwapError(f"cannot swap to the new model: {why}; the stream keeps its model")
    old_table, n = stream.table, len(stream.table)
    carries = cand.strategy.carries
    covariates = len(cand.spec.value_cols) > len(cand.target_cols)
    if carries and n and ("ring_y" not in old_table.t or (covariates and "ring_x" not in old_table.t)):
        raise SwapError("cannot swap: this stream keeps no look-back of every input to re-warm the carried states "
                        "from; build it with swappable=True (stream --watch does); the stream keeps its model")
    t = dict(old_table.t)  # columns changed below are replaced by new arrays: the old table stays intact
    ids = old_table.id_list[:n]
    rescaled = _rescale(cand, t, ids, n)
    cap = len(old_table.dirty)
    L, H = cand.net.state_shape
    state = torch.zeros(L, cap if carries else 0, H, device=cand.device)
    rewarmed = 0
    if carries and n:
        for k in ("sum_y", "cnt", "last_y", "last_n"):  # the relative inputs' bookkeeping: re-computed too
            if k in t:
                t[k] = t[k].copy()
        with torch.inference_mode():
            for a in range(0, n, batch_size):
                rows = np.arange(a, min(n, a + batch_size), dtype=np.int64)
                rewarmed += _rewarm(cand, t, rows, state, ids)
    # commit: the candidate's parts with the old table's series (one dict update: no half swap)
    table = cand.table
    table.__dict__.update({**old_table.__dict__, "t": t, "state": state, "L": L, "H": H,
                           "dirty": np.ones(cap, dtype=bool), "removed": set(old_table.removed)})
    table.dirty[n:] = False
    report = SwapReport(stream._digest, cand._digest, n, rewarmed, rescaled, 0.0, source)
    file = stream._file
    stream.__dict__.update({k: v for k, v in cand.__dict__.items() if k != "_file"})
    if file is not None:
        file.rebase()
    report.seconds = time.perf_counter() - t0
    return report


def _rescale(cand, t: dict, ids: list[str], n: int) -> bool:
    """Each series' scalers and baseline blend from the new spec; its look-back and the future
    covariates kept ahead converted to them where the scalers changed. New arrays in ``t``;
    returns whether any scaler changed. (The relative inputs' bookkeeping is re-computed by the
    re-warm; a stream without a carried state keeps none.)"""
    if not n:
        return False
    loc, sc, _ = cand.spec.scalers_for(ids)
    new = np.stack([loc, sc], axis=1).astype(np.float32)  # (n, 2, D), as Stepper.row stores them
    old = t["params"][:n]
    base = cand.spec.baseline_for(ids).astype(t["base"].dtype)
    if not np.array_equal(base, t["base"][:n]):
        t["base"] = t["base"].copy()
        t["base"][:n] = base
    _anchor(cand, t, ids, n, old, new)
    if np.array_equal(new, old):
        return False
    C = len(cand.target_cols)

    def convert(name: str, cols: slice, mask) -> None:  # (n, W, k) scaled values: old scalers -> new ones
        v = t[name][:n].astype(np.float64)
        o_loc, o_sc, n_loc, n_sc = (a[:, None, cols].astype(np.float64) for a in
                                    (old[:, 0], old[:, 1], new[:, 0], new[:, 1]))
        with np.errstate(over="ignore", invalid="ignore"):
            conv = ((v * o_sc + o_loc - n_loc) / n_sc).astype(np.float32)
        t[name] = t[name].copy()
        t[name][:n] = np.where(mask, conv, t[name][:n])

    if "ring_y" in t:
        convert("ring_y", slice(0, C), t["ring_o"][:n] > 0)
    if "ring_x" in t and t["ring_x"].shape[-1]:
        convert("ring_x", slice(C, None), True)
    if "ahead_x" in t:
        convert("ahead_x", slice(C + len(cand.past_cols), None), t["ahead_ok"][:n])
    t["params"] = t["params"].copy()
    t["params"][:n] = new
    return True


def _anchor(cand, t: dict, ids: list[str], n: int, old: np.ndarray, new: np.ndarray) -> None:
    """Each target's first observation (the baseline drift's anchor) in the new scalers, or the new
    spec's where it knows an earlier one (as a fresh stream of the new model would start)."""
    C = len(cand.target_cols)
    ft = t["first_t"][:n].copy()
    seen = ft != NO_TIME
    with np.errstate(over="ignore", invalid="ignore"):
        fy = ((t["first_y"][:n].astype(np.float64) * old[:, 1, :C] + old[:, 0, :C] - new[:, 0, :C]) / new[:, 1, :C])
    fy = np.where(seen, fy, 0.0)
    sv, st = cand.spec.anchors_for(ids)
    earlier = (st != NO_TIME) & (~seen | (st < ft))
    t["first_y"], t["first_t"] = t["first_y"].copy(), t["first_t"].copy()
    t["first_y"][:n] = np.where(earlier, sv, fy).astype(np.float32)
    t["first_t"][:n] = np.where(earlier, st, ft)


def _rewarm(cand, t: dict, rows: np.ndarray, state: torch.Tensor, ids: list[str]) -> int:
    """Re-compute the carried state of table rows ``rows`` with the candidate's network: its
    steps (:meth:`~forecaster.streaming.steps.Stepper.round`) over each row's look-back ring on
    the candidate's own (scratch) table, as a fresh stream observing those steps; the states go
    to ``state``, the relative inputs' running bookkeeping to ``t`` (whose columns are the swap's
    own copies). Returns the rows re-warmed (those with a step)."""
    T, ring = cand.context_length, cand.lookback.ring
    C = len(cand.target_cols)
    m = len(rows)
    n = t["n_steps"][rows]
    W = np.minimum(n, T)  # the steps of each look-back (fewer for a young series)
    last = t["last"][rows]
    scratch = cand.table
    scratch.reset(m)
    local = np.arange(m, dtype=np.int64)
    scratch.t["params"][:m] = t["params"][rows]
    D = t["params"].shape[2]
    for j in range(T):
        step = n - T + j  # the live step number at window position j
        live = np.flatnonzero(step >= 0)
        if not live.size:
            continue
        r, slot = rows[live], step[live] % ring
        vals = np.full((live.size, D), np.nan, dtype=np.float32)
        vals[:, :C] = np.where(t["ring_o"][r, slot] > 0, t["ring_y"][r, slot], np.nan)
        if "ring_x" in t and D > C:
            vals[:, C:] = t["ring_x"][r, slot]
        times = np.asarray(cand.spec.grid_times(last[live], -(T - 1 - j)), dtype=np.int64)
        failed = cand.stepper.round(local[live], times, vals)
        if failed.any():
            raise SwapError(f"re-warming with the new model drives the state of series {show(ids[int(r[failed][0])])} "
                            "to a non-finite value; the stream keeps its model")
    state[:, torch.from_numpy(rows).to(state.device)] = scratch.state[:, :m]
    if "last_n" in t:  # the relative inputs' bookkeeping as the fresh stream has it, in the live step numbers
        t["sum_y"][rows] = scratch.t["sum_y"][:m]
        t["cnt"][rows] = scratch.t["cnt"][:m]
        t["last_y"][rows] = scratch.t["last_y"][:m]
        ln = scratch.t["last_n"][:m]
        t["last_n"][rows] = np.where(ln >= 0, ln + (n - W)[:, None], -1)
    return int((W > 0).sum())


# ---- a checkpoint file watched for a newer model --------------------------------------------------

def load_model(path: str | os.PathLike, device="cpu"):
    """``(net, spec dict)`` of a checkpoint written by ``fit``, read with the project's one safe
    loader (:func:`forecaster.checkpoint.read_checkpoint`: tensors and plain data only, a crafted
    file runs no code); a one-line ``ValueError`` for a file that is not such a checkpoint."""
    from forecaster.lightning_module import load_checkpoint

    model, _ = load_checkpoint(path, map_location=device)
    if model.data_spec is None:
        raise SwapError(f"checkpoint {str(path)!r} has no data spec (not written by `python -m forecaster fit`)")
    return model.net, model.data_spec


def _stat_key(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class CheckpointWatcher:
    """Watches a checkpoint path and swaps a stream to each new, complete, valid and compatible
    checkpoint that appears there (``stream --watch PATH``).

    The rule: every ``every`` seconds the file's (inode, size, modification time) is read; a file
    that changed is only read once that triple has stayed the same for one more interval (``fit``
    writes its checkpoint in place, not by a rename: a file read mid-write would be truncated),
    and only when its content's SHA-256 is new (touching the file does nothing). Then it is loaded
    with the safe loader and swapped to (:func:`swap_model`); a file that is not a valid
    checkpoint (truncated, garbage, a foreign pickle) or not compatible with the stream is
    reported in one line and ignored until it changes again; the stream keeps serving its model.
    A file whose weights are the ones already served is not swapped to.

    Args:
        path: the checkpoint file (it need not exist yet).
        every: seconds between two looks (default 5).
        device: where the new network goes (the stream's).
        err: where the one-line messages go.
        clock: ``time.monotonic`` (tests pass their own).
    """

    def __init__(self, path: str | os.PathLike, every: float = 5.0, device="cpu", err=None, clock=time.monotonic):
        if not (isinstance(every, (int, float)) and every > 0 and every == every):
            raise ValueError(f"every must be a number of seconds > 0, got {every!r}")
        self.path, self.every, self.device, self.err, self.clock = Path(path), float(every), device, err, clock
        self._next = 0.0
        self._changed = None  # the stat key seen changed, waiting to be stable
        self._done_key = None  # the stat key last handled (loaded, refused or the same content)
        self._done_sha: str | None = None
        self.swaps: list[SwapReport] = []
        self.ignored = 0

    def _say(self, text: str) -> None:
        if self.err is not None:
            try:
                print(text, file=self.err, flush=True)
            except (OSError, ValueError):
                pass

    def poll(self, stream, force: bool = False) -> SwapReport | None:
        """Look at the file if due (or ``force``) and swap ``stream`` to a new checkpoint there;
        returns the :class:`SwapReport` of a swap, else None. Never raises for what the file holds."""
        now = self.clock()
        if not force and now < self._next:
            return None
        self._next = now + self.every
        key = _stat_key(self.path)
        if key is None or key == self._done_key:
            self._changed = None
            return None
        if key != self._changed and not force:  # changed since the last look: wait until it stays the same
            self._changed = key
            return None
        self._changed = None
        sha = _sha256(self.path)
        if sha is None:
            return None
        if sha == self._done_sha:
            self._done_key = key
            return None
        where = f"--watch {str(self.path)!r}"
        try:
            net, spec = load_model(self.path, self.device)
        except Exception as e:  # noqa: BLE001 - whatever the file holds: one line, the stream goes on
            return self._ignore(key, sha, f"{where}: ignored, not a valid checkpoint ({_one_line(e)}); still serving "
                                          f"model {stream._digest}")
        if _stat_key(self.path) != key:  # rewritten while being read: look again once it is stable
            return None
        try:
            if incompatibility(stream, net, DataSpec.from_dict(spec)) is None and \
                    _weights_of(net) == stream._digest:
                self._done_key, self._done_sha = key, sha
                return None
            report = swap_model(stream, net, spec, source=str(self.path))
        except Exception as e:  # noqa: BLE001 - SwapError and anything else: the stream keeps its model
            return self._ignore(key, sha, f"{where}: not swapped to: {_one_line(e)}"
                                + ("" if "keeps its model" in str(e) else "; the stream keeps its model"))
        self._done_key, self._done_sha = key, sha
        self.swaps.append(report)
        self._say(report.line())
        return report

    def _ignore(self, key, sha, text: str) -> None:
        self._done_key, self._done_sha = key, sha
        self.ignored += 1
        self._say(text)
        return None


def _weights_of(net) -> str:
    from forecaster.streaming.stream import _weights_digest

    return _weights_digest(net)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:300] + "..."


def resume_on_watched(stream, state: str | os.PathLike, watch: str | os.PathLike, error: Exception):
    """At start: the state file ``state`` was refused by ``stream`` (``error``); when it was
    written for the model at ``watch`` (the stream swapped to it before it stopped), the stream
    (still empty) swaps to that model and loads the state; returns the :class:`SwapReport`.
    Otherwise raises ``error`` again, the stream as it was."""
    old_net, old_spec = stream.net, stream.spec
    try:
        net, spec = load_model(watch, stream.device)
        report = swap_model(stream, net, spec, source=str(watch))
    except Exception:  # noqa: BLE001 - not a model this stream can take: the state's own refusal stands
        raise error from None
    try:
        stream.load_state(state)
    except Exception:  # noqa: BLE001 - not the watched model's state either: back to the first model
        swap_model(stream, old_net, old_spec)  # an empty stream: nothing to re-warm
        raise error from None
    return report


# ---- swaps in a replay ----------------------------------------------------------------------------

class ScheduledSwaps:
    """The swaps of a replay (``stream --replay DATA --swap CKPT@TIME``): before the first test
    timestamp at or after each ``TIME``, the stream swaps to ``CKPT`` (the checkpoint a retraining
    at that time would have produced: fit on data up to it). Pass it as
    :func:`~forecaster.evaluation.replay`'s ``before_timestamp``.

    Args:
        items: ``(checkpoint path, time text)`` pairs, in any order; each checkpoint is read (and
            refused in one line) now.
        spec: the stream's data spec (reads the times by its time rule).
        device: where the networks go. err: where the swaps are logged (one line each).
    """

    def __init__(self, items: list[tuple[str, str]], spec: DataSpec, device="cpu", err=None):
        self.pending = []
        for path, when in items:
            t, null = spec.parse_times([when], what=f"--swap time {when!r}", strict=False)
            if null[0]:
                raise SwapError(f"--swap {path}@{when}: the time {when!r} could not be read (give it as the data's "
                                "time column writes it, e.g. 2017-10-01T00:00:00)")
            net, sp = load_model(path, device)
            self.pending.append((int(t[0]), when, path, net, sp))
        self.pending.sort(key=lambda p: p[0])
        self.err = err
        self.done: list[tuple[int, SwapReport]] = []

    def __call__(self, t: int, stream) -> None:
        while self.pending and t >= self.pending[0][0]:
            _, when, path, net, spec = self.pending.pop(0)
            report = swap_model(stream, net, spec, source=f"{path} at {stream.spec.format_time(t)}")
            self.done.append((t, report))
            if self.err is not None:
                print(report.line(), file=self.err, flush=True)


def by_model(errors) -> list[dict]:
    """The online MAE of each model of a replay with swaps (the ``model`` column of its errors), in
    the order they served, beside both baselines on the same forecasts: ``model``, ``first_origin``,
    ``last_origin``, ``mae``, ``mae_seasonal_naive``, ``mae_last_value``, ``n``."""
    import polars as pl

    a = pl.col("actual")
    return (errors.group_by("model", maintain_order=True)
            .agg(pl.col("origin").min().alias("first_origin"), pl.col("origin").max().alias("last_origin"),
                 (pl.col("forecast") - a).abs().mean().alias("mae"),
                 (pl.col("seasonal_naive") - a).abs().mean().alias("mae_seasonal_naive"),
                 (pl.col("last_value") - a).abs().mean().alias("mae_last_value"), pl.len().alias("n"))
            .sort("first_origin").to_dicts())
