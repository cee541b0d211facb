"""The naive forecast every model starts from: the network learns only the difference.

From an origin ``t`` with the context window ``[t - T + 1, t]`` (scaled units, per target):

* **last** ``L``: the last observed value in the window;
* **seasonal** ``S(k)``: the value one season before the target step,
  ``y[t + k - m * ceil(k / m)]``, when it lies in the window and was observed (else ``L``);
* **level** ``M``: the mean of the observed values in the window (the level of the look-back,
  which follows a trend or a shift, unlike a level fitted on the training part), over its whole
  seasons ``Q m`` where a season ``1 < m <= T`` does not fill it (:func:`level_window`: a
  part-season more would count its phases twice), and possibly smoothed: the step ``i`` steps
  back weighted ``(1 - alpha)^i`` (simple exponential smoothing's level, over the window only).

With no observation in the window, ``L`` and ``M`` are the series' mean on its training part,
``mu``. The baseline is the blend ``w_s(k) * S(k) + w_l(k) * L + (1 - w_s(k) - w_l(k)) * M`` with weights
per series, target and horizon step (``w_s, w_l >= 0``, ``w_s + w_l <= U(k)``): the last value tends
to win one step ahead, the season or the level further out. Up to ``w_s + w_l = 1`` the blend is
an average of the three; beyond it, it extrapolates the look-back's trend: the plain mean ``M``
of ``W`` steps lies at their centre, ``c = (W - 1) / 2`` steps back (a smoothed level nearer:
:func:`trend_cap`), so ``L + (w_l - 1) (L - M)`` with ``w_l = 1 + k / c`` continues the straight
line through ``M`` and ``L`` to step ``k`` (the drift a Theta or Holt forecast adds to its level),
and ``S(k)`` plus such a drift is seasonal naive with the trend of the seasons in between.
``U(k) = 1 + s(k) / c`` caps the fit's extrapolation at that undamped linear trend, with ``s(k)``
the steps a forecast reaches past the
value it starts from (``m * ceil(k / m)`` for a season ``1 < m <= T``, the seasonal value's reach,
which then bounds a trend continued from the last value too; else ``k``). The cap holds for each
step's fitted weights; stored at the knots (means of the nearest steps) and interpolated in
log(step), the weights of a step may pass its own cap a little (by up to a tenth of the trend in
the fits measured, where the cap jumps from season to season). The weights are fitted by
least squares on the training part, a cross-validation choosing among the plain naives, the blend
without a trend and the blend with one, as they are, seasonally adjusted or with a smoothed level,
with or without the drift (:func:`fit_blend`), at a few knots, steps ``1, 2, 4, ..., horizon``
(:func:`blend_knots`), and interpolated linearly in ``log(step)`` between them; the data spec keeps
them, so prediction and streaming use the same numbers.

**The drift of the whole history.** A trend the look-back is too short to see (a yearly series
with a look-back of 8 years) shows in the slope from the series' first observation ``y_first`` to
the origin: ``w_d * k * D`` is added to the blend, ``D = (L - y_first) / (age + DRIFT_PRIOR * T)``
with ``age`` the steps from that observation to the origin (shrunk: a slope from a short history is
mostly noise). ``w_d`` in [0, 1] is fitted by least squares on what a candidate blend leaves; the
cross-validation chooses each candidate with or without it, together (:func:`_candidates`: a
drift on a candidate that continues the look-back's trend competes with one on the last value).
With ``w_d = 1``, the last value and a long history, this is the random walk with drift.

**The level.** The plain mean lags a trend by half the window; the last value is one noisy
observation. A smoothed level lies in between, ``c`` steps back (the mean lag of its weights): the
level, the blend and the trend also come with each smoothed level of :data:`LEVEL_ALPHAS` in
place of the plain mean, chosen as they are (the plain mean is alpha 0; one more
:data:`BLEND_MARGIN` for the smoothed ones kept M3's quarterly series at the plain mean, sMAPE
9.97 of the blend alone against 9.84). ``alpha = 0, q = 0`` is the
plain mean of the whole look-back, what specs before version 5 fitted; every fit since writes
``q = 1``. ``r = s = 0``: the look-back's profile alone, what specs before version 6 fitted.

**The seasonal adjustment.** ``S(k)`` reads one season back, a single noisy value, and ``L`` and
``M`` carry the phase they were observed at. Where the look-back holds ``Q = floor(T / m) >= 1``
whole seasons (:func:`adjust_seasons`), the profile ``A(p)``, the mean of the observed values at
phase ``p`` over the last ``Q m`` steps (the look-back's mean where a phase has none), moves them
to step k's phase: the blend reads ``L + w_a (A_k - A_L)`` for ``L`` and ``M + w_a (A_k - M)`` for
``M`` (``A_k`` at the target step's phase, ``A_L`` at the last observation's). With ``w_a = 1`` the
last value is the seasonally adjusted random walk (Naive2 of the M competitions, with the
profile of the look-back, or one of the training part's, below) and the mean is the
seasonal mean. ``w_a`` is 0 or 1: the cross-validation chooses between the five candidates as they
are and seasonally adjusted, the adjusted ones by one more :data:`BLEND_MARGIN`.

**The profile of the training part.** A look-back of a few seasons gives a noisy profile (M3's
quarterly series: two years). :func:`history_profile` fits each target's on its training part (a
classical additive decomposition of its last :data:`HISTORY_WINDOW` seasons, phase 0 at its first
observation) and keeps it as ``H``, :data:`HISTORY_HARMONICS` harmonics. With ``r > 0`` the
adjustment reads ``A + r (M + g H_k - A)`` in place of ``A`` (and ``A_L + r (M + g H_L - A_L)``),
``g = 1`` (``s = 0``: the training part's amplitude) or ``g = beta`` (``s = 1``): the least-squares
scale, at least 0, of the look-back's profile at its m latest phases on ``H`` there, the current
amplitude of a swing that grows with the level. The choice offers ``(r, s) = (0.5, 0)`` and ``(1,
1)`` for every adjusted candidate. It applies where the phase is known (a batch's or a stream's
``age``) and the last observation lies in the last ``Q m`` steps (else the look-back's profile
alone, as the summary holds no older phase).

Parameters of a series and target, fitted: ``[w_s at the K knots, w_l at the K knots, w_d, w_a,
alpha, q, r, s, H 2F, mu]`` (``2K + 5 +`` :data:`HISTORY_SLOTS` numbers; :func:`param_layout`;
``q`` 1: the level over the :func:`level_window`, 0: over the whole look-back). A batch or a stream passes them with the series' first
observation after them, ``[..., y_first, age]`` (:func:`with_first`; ``age`` that of the window's
first step, or of the origin for :func:`baseline_from_summary`). The modes ``seasonal``, ``last``
and ``mean`` fix the weights to (1, 0), (0, 1) and (0, 0), without drift or adjustment (``mean``: the
plain mean of the whole look-back); ``none`` switches the
baseline off. Everything here is a function of the window and of the series' first observation: a
stream that keeps the last ``T`` steps and that observation gets exactly what ``predict``
computes from a table of the same history. It needs less than the window, though: the last observed
value, the window's mean and its last :func:`summary_width` steps (``min(m, T)``, the ``Q m`` of
the whole seasons of a seasonally adjusted target or a level over them, ``T`` for a smoothed
level of the whole look-back) (:func:`baseline_from_summary`): the per-step stream keeps the first
two up to date in O(1) per observation and reads the steps from its ring, O(W) per forecast.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BASELINES",
    "BLEND_CANDIDATES",
    "BLEND_MARGIN",
    "DRIFT_PRIOR",
    "HISTORY_HARMONICS",
    "HISTORY_SHARE",
    "HISTORY_SLOTS",
    "HISTORY_WINDOW",
    "LEVEL_ALPHAS",
    "MIN_FIT_PAIRS",
    "NO_AGE",
    "BaselineMode",
    "adjust_seasons",
    "any_adjusted",
    "baseline_forecast",
    "baseline_from_summary",
    "baseline_params",
    "blend_knots",
    "blend_pairs",
    "blend_weights",
    "canonical_params",
    "fit_blend",
    "fit_panel_blends",
    "history_profile",
    "level_weights",
    "level_window",
    "param_layout",
    "rotate_history",
    "season_offsets",
    "season_width",
    "summary_width",
    "trend_cap",
    "widen_params",
    "with_first",
]

BaselineMode = Literal["blend", "seasonal", "last", "mean", "none"]
BASELINES = ("blend", "seasonal", "last", "mean", "none")
MIN_FIT_PAIRS = 20  # fewer (origin, step) pairs on a series' training part: fall back to the last value
#: A fitted blend (two weights per step) replaces the best plain naive only if its cross-validated
#: error is this much (relative) below that naive's, and the blend that continues a trend replaces
#: the one that does not only if it is this much below that one's: on 40 random walks of 400 steps
#: (horizon 24) a blend 0.2% better than the last value was noise.
BLEND_MARGIN = 0.02
#: The drift's slope from a series' first observation is shrunk as if it had this many look-backs
#: more behind it, ``D = (L - y_first) / (age + DRIFT_PRIOR * T)``: a slope from a short history is
#: mostly noise (M3's yearly series, look-back 8: the cross-validated drift weight and the test
#: sMAPE, prior 0 / 0.5 / 1 / 2 / 3 / 4 look-backs: 0.15 / 0.40 / 0.59 / 0.94 / 1 / 1 and 17.46 /
#: 17.09 / 16.97 / 16.85 / 16.96 / 17.06).
DRIFT_PRIOR = 2.0
#: The smoothed levels the blend's choice may put in place of the look-back's plain mean: the mean
#: with the step ``i`` steps back weighted ``(1 - alpha)^i`` (simple exponential smoothing's level,
#: over the look-back only); the plain mean is alpha 0.
LEVEL_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5)
#: The age of a target never observed (any age below 1: no drift).
NO_AGE = -1e9
#: The history profile (:func:`history_profile`): the harmonics of the season it keeps (``2F``
#: numbers per series and target, exact for a season of up to ``2F + 1`` steps, its smooth part for
#: a longer one), the share of the adjustment it takes from the look-back's profile in the mixed
#: candidates, the seasons of the training part it needs at least and averages over at most (its
#: last ones: a profile that changes over decades, co2_1w's or us_employment_1mo's, is the recent one;
#: the untrained blend's test MAE with the last 10 / 20 / 30 / all seasons: co2_1w 0.535 / 0.612 /
#: 0.726 / 0.774, us_employment_1mo 31.72 / 32.87 / 33.66 / 33.66, nyc_temp_1h 5.080 / 5.063 / 5.065 /
#: 4.992, at cf46fd0; M3's quarterly and monthly series are shorter than 10 seasons or hardly longer).
HISTORY_HARMONICS = 6
HISTORY_SHARE = 0.5
HISTORY_SEASONS = 3
HISTORY_WINDOW = 10
#: The history profile's numbers in a parameter vector: its share ``r``, whether its amplitude is
#: the look-back's ``s``, its ``2F`` coefficients.
HISTORY_SLOTS = 2 + 2 * HISTORY_HARMONICS


def blend_knots(horizon: int) -> np.ndarray:
    """The steps the blend weights are fitted at: 1, 2, 4, ... below the horizon, and the horizon."""
    k = [1]
    while k[-1] * 2 < horizon:
        k.append(k[-1] * 2)
    if k[-1] != horizon:
        k.append(horizon)
    return np.array(k, dtype=np.int64)


def _interp(horizon: int, K: int) -> np.ndarray:
    """(horizon, K): step k's weight as a linear interpolation in log(k) of the K knot values (K = 1:
    one weight for every step)."""
    if K == 1:
        return np.ones((horizon, 1))
    knots = np.log(blend_knots(horizon).astype(np.float64))
    if len(knots) != K:
        raise ValueError(f"blend weights at {K} knots do not fit horizon {horizon} ({len(knots)} knots)")
    steps = np.log(np.arange(1, horizon + 1, dtype=np.float64))
    out = np.zeros((horizon, K))
    j = np.clip(np.searchsorted(knots, steps, side="right") - 1, 0, K - 2)
    f = (steps - knots[j]) / (knots[j + 1] - knots[j])
    out[np.arange(horizon), j] = 1.0 - f
    out[np.arange(horizon), j + 1] = f
    return out


def param_layout(size: int, horizon: int) -> tuple[int, bool, bool, bool, bool, bool]:
    """``(K, drift, adjusted, level, history, anchored)`` of a parameter vector of ``size`` numbers
    for ``horizon``: the fitted form ``[w_s K, w_l K, w_d, w_a, alpha, q, r, H 2F, mu]``
    (``2K + 5 +`` :data:`HISTORY_SLOTS`), the form a batch or a stream passes, with the series'
    first observation after it, ``[..., y_first, age]`` (``2K + 7 + HISTORY_SLOTS``; its history
    profile turned to the window's first step or the origin, :func:`rotate_history`), and the fitted
    forms of earlier specs: ``[w_s K, w_l K, w_d, w_a, alpha, q, mu]`` (``2K + 5``, before the
    history profile; also with ``[y_first, age]``, ``2K + 7``), ``[w_s K, w_l K, w_d, w_a, mu]``
    (``2K + 3``, before the smoothed level), ``[w_s K, w_l K, w_d, mu]`` (``2K + 2``, before the
    seasonal adjustment) and ``[w_s K, w_l K, mu]`` (``2K + 1``, before the drift), the latter two
    also with one weight for every step (K = 1). K is the horizon's :func:`blend_knots`."""
    Kh = len(blend_knots(horizon))
    H2 = 2 * HISTORY_HARMONICS
    layouts = [(Kh, 2 * Kh + 5 + HISTORY_SLOTS, True, True, True, True, False),
               (Kh, 2 * Kh + 7 + HISTORY_SLOTS, True, True, True, True, True),
               (Kh, 2 * Kh + 5, True, True, True, False, False), (Kh, 2 * Kh + 7, True, True, True, False, True),
               (Kh, 2 * Kh + 3, True, True, False, False, False), (Kh, 2 * Kh + 2, True, False, False, False, False),
               (Kh, 2 * Kh + 1, False, False, False, False, False), (1, 4, True, False, False, False, False),
               (1, 3, False, False, False, False, False)]
    for K, n, drift, adjusted, level, history, anchored in layouts:
        if size == n:
            return K, drift, adjusted, level, history, anchored
    raise ValueError(f"baseline parameters of {size} numbers do not fit horizon {horizon}: expected "
                     f"{2 * Kh + 5 + HISTORY_SLOTS} ([w_s at {Kh} knots, w_l at {Kh} knots, w_d, w_a, alpha, q, r, s, "
                     f"{H2} history profile coefficients, mu]), {2 * Kh + 7 + HISTORY_SLOTS} (with the first observation "
                     f"and its age), or "
                     f"{2 * Kh + 5} / {2 * Kh + 3} / {2 * Kh + 2} / {2 * Kh + 1} (a spec from before the history "
                     f"profile / the smoothed level / the seasonal adjustment / the drift)")


def canonical_params(params: np.ndarray, horizon: int) -> np.ndarray:
    """Fitted parameters (..., P) of any earlier layout -> float64 (..., 2K + 5 + HISTORY_SLOTS) at the horizon's
    K knots (a spec from before the drift, the seasonal adjustment or the smoothed level has none
    of them: ``w_d = 0``, ``w_a = 0``, ``alpha = 0``, ``q = 0``, the plain mean of the whole
    look-back it was fitted with; one weight for every step is repeated at each knot). The
    forecast is unchanged."""
    p = np.asarray(params, dtype=np.float64)
    if param_layout(p.shape[-1], horizon)[5]:
        raise ValueError("canonical_params takes fitted parameters (2K + 5 + HISTORY_SLOTS), not a batch's (two more)")
    return widen_params(p, len(blend_knots(horizon)))


def widen_params(params: np.ndarray, K: int) -> np.ndarray:
    """Fitted parameters (..., P) at K knots or one weight for every step, with or without the
    drift, the seasonal adjustment, the smoothed level and the history profile -> (..., 2K + 5 +
    HISTORY_SLOTS) ``[w_s K, w_l K, w_d, w_a, alpha, q, r, s, H 2F, mu]`` (0 for the weights a layout lacks; one
    weight repeated at each knot): the same forecast. ``ValueError`` for another P."""
    p = np.asarray(params)
    n = p.shape[-1]
    full = 4 + HISTORY_SLOTS  # w_d, w_a, alpha, q, r, s, H
    for k, size, extra in ((K, 2 * K + 1 + full, full), (K, 2 * K + 5, 4), (K, 2 * K + 3, 2), (K, 2 * K + 2, 1),
                           (K, 2 * K + 1, 0), (1, 4, 1), (1, 3, 0)):
        if n == size:
            ws, wl = np.repeat(p[..., :k], K // k, axis=-1), np.repeat(p[..., k:2 * k], K // k, axis=-1)
            rest = p[..., 2 * k:2 * k + extra]
            zero = np.zeros((*p.shape[:-1], full - extra), dtype=p.dtype)
            return np.concatenate([ws, wl, rest, zero, p[..., -1:]], axis=-1)
    raise ValueError(f"baseline parameters of {n} numbers are not blend weights at {K} knots or one")


def _slots(size: int, horizon: int) -> tuple[int, int | None, int | None, int | None, int | None, int, int | None]:
    """Where a layout keeps ``(K, w_d, w_a, alpha, r, mu, y_first)`` (None: not in it; ``q`` follows
    ``alpha``, the history profile's 2F coefficients follow ``r``, ``age`` follows ``y_first``)."""
    K, drift, adjusted, level, history, anchored = param_layout(size, horizon)
    wd = 2 * K if drift else None
    wa = 2 * K + 1 if adjusted else None
    al = 2 * K + 2 if level else None
    hp = 2 * K + 4 if history else None
    mu = 2 * K + int(drift) + int(adjusted) + 2 * int(level) + HISTORY_SLOTS * int(history)
    return K, wd, wa, al, hp, mu, (mu + 1 if anchored else None)


def blend_weights(params: Tensor, horizon: int) -> tuple[Tensor, Tensor, Tensor]:
    """``[w_s knots, w_l knots, (w_d, (w_a, (alpha, q,))) mu, ...]`` (..., P) -> per-step ``w_s`` and ``w_l``
    (..., horizon) and ``mu`` (...) (layouts: :func:`param_layout`)."""
    K, _wd, _wa, _al, _hp, mu, _y0 = _slots(params.shape[-1], horizon)
    M = torch.as_tensor(_interp(horizon, K), dtype=params.dtype, device=params.device)  # (h, K)
    return params[..., :K] @ M.T, params[..., K:2 * K] @ M.T, params[..., mu]


def _adjust_of(params: Tensor, horizon: int) -> Tensor:
    """``w_a`` (...): 1 where the blend reads the seasonally adjusted last value and mean, 0 (or a
    layout without it) where it reads them as they are."""
    wa = _slots(params.shape[-1], horizon)[2]
    return params[..., wa] if wa is not None else torch.zeros_like(params[..., 0])


def _level_of(params: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
    """``(alpha, q)`` (...): the level's smoothing and window (:func:`level_window`; 0, 0 for a
    layout without them: the plain mean of the whole look-back)."""
    al = _slots(params.shape[-1], horizon)[3]
    if al is None:
        zero = torch.zeros_like(params[..., 0])
        return zero, zero
    return params[..., al], params[..., al + 1]


def _history_of(params: Tensor, horizon: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(r, s, coef)`` (...), (...), (..., 2F): the history profile's share, whether its amplitude
    is the look-back's (1) or its own (0), and its coefficients; None for a layout without them."""
    hp = _slots(params.shape[-1], horizon)[4]
    if hp is None:
        return None
    return params[..., hp], params[..., hp + 1], params[..., hp + 2:hp + 2 + 2 * HISTORY_HARMONICS]


def _history_at(coef: Tensor, pos: Tensor, m: int) -> Tensor:
    """The history profile ``H`` at positions ``pos`` (int64 (B, ..., C): steps after its phase 0,
    which a batch's or a stream's coefficients have at the window's first step or the origin,
    :func:`rotate_history`): ``coef`` (B, C, 2F) -> (B, ..., C) float64."""
    F = HISTORY_HARMONICS
    dt = torch.float64
    ph = torch.remainder(pos, m).to(dt) * (2.0 * np.pi / m)  # an integer phase: exact
    ang = ph.unsqueeze(-1) * torch.arange(1, F + 1, device=pos.device, dtype=dt)  # (B, ..., C, F)
    view = (coef.shape[0], *([1] * (pos.dim() - 2)), coef.shape[1], F)
    c, s = coef[..., :F].to(dt).reshape(view), coef[..., F:].to(dt).reshape(view)
    return (torch.cos(ang) * c + torch.sin(ang) * s).sum(dim=-1)


def _with_history(A: Tensor, A_last: Tensor, level: Tensor, level_last: Tensor, rr: Tensor, Hk: Tensor,
                  HL: Tensor) -> tuple[Tensor, Tensor]:
    """The profile the adjustment reads, with the history profile's share ``rr`` (..., C):
    ``A + rr (M + H_k - A)`` (``A``, ``H_k`` (..., h, C), the level ``M`` broadcast against them)
    and ``A_L + rr (M + H_L - A_L)`` (``A_last``, ``HL``, ``level_last`` (..., C)); ``rr`` 0: as
    they are, to the bit."""
    dt = A.dtype
    rr = rr.to(dt)
    return (A + rr.unsqueeze(-2) * (level + Hk.to(dt) - A), A_last + rr * (level_last + HL.to(dt) - A_last))


def history_profile(values: np.ndarray, observed: np.ndarray, season_length: int) -> np.ndarray:
    """The seasonal profile of a target's whole training part, as a classical additive
    decomposition fits it, kept as its first :data:`HISTORY_HARMONICS` harmonics.

    Args:
        values, observed: (n,) one target's scaled training values (missing: anything) and bool mask.
        season_length: m.

    Returns:
        float64 (2F,): ``[c_1..c_F, s_1..s_F]``, the profile at phase ``p`` (the position in
        ``values``, mod m: phase 0 at its first step) being ``sum_j c_j cos(2 pi j p / m) + s_j
        sin(2 pi j p / m)`` (mean 0 over a season; :func:`rotate_history` moves phase 0). The
        detrended values (less a centred moving average of one season, ``2 x m`` for an even m,
        over the observed span with its gaps interpolated) of the last :data:`HISTORY_WINDOW`
        seasons are averaged at each phase over the observed steps and centred. All 0 for a season
        of one step, an observed span of fewer than :data:`HISTORY_SEASONS` seasons, or a phase
        observed in fewer than two seasons.
    """
    m, F = int(season_length), HISTORY_HARMONICS
    out = np.zeros(2 * F)
    obs = np.asarray(observed, bool)
    idx = np.flatnonzero(obs)
    if m < 2 or len(idx) == 0 or idx[-1] + 1 - idx[0] < HISTORY_SEASONS * m:
        return out
    start = idx[0]
    if idx[-1] + 1 - start > (HISTORY_WINDOW + 1) * m:  # the last seasons only (a season more for the moving average)
        start = idx[-1] + 1 - (HISTORY_WINDOW + 1) * m
    o = obs[start:idx[-1] + 1]
    y = np.asarray(values, np.float64)[start:idx[-1] + 1]
    pos = np.arange(len(y))
    yf = np.interp(pos, pos[o], y[o])  # the gaps, for the moving average only
    w = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    ma = np.convolve(yf, w, mode="valid")
    off = (len(w) - 1) // 2
    keep = o[off:off + len(ma)]
    d = (yf[off:off + len(ma)] - ma)[keep]
    ph = ((np.arange(len(ma)) + off + start) % m)[keep]  # the phase of the position in ``values``
    cnt = np.bincount(ph, minlength=m)
    if (cnt < 2).any():
        return out
    S = np.bincount(ph, weights=d, minlength=m) / cnt
    S -= S.mean()
    p = np.arange(m)
    for j in range(1, F + 1):
        if 2 * j < m:
            out[j - 1] = 2.0 / m * (S * np.cos(2 * np.pi * j * p / m)).sum()
            out[F + j - 1] = 2.0 / m * (S * np.sin(2 * np.pi * j * p / m)).sum()
        elif 2 * j == m:
            out[j - 1] = (S * np.cos(np.pi * p)).sum() / m
    return out


def _beta(A: Tensor, H: Tensor) -> Tensor:
    """The amplitude of the look-back's profile on the history profile's shape: ``A``, ``H``
    (..., m, C), each at the m latest phases; least squares of ``A`` centred on ``H`` centred,
    at least 0 (0 where ``H`` is): (..., C) float64."""
    dt = torch.float64
    A, H = A.to(dt), H.to(dt)
    A, H = A - A.mean(dim=-2, keepdim=True), H - H.mean(dim=-2, keepdim=True)
    den = (H * H).sum(dim=-2)
    num = (A * H).sum(dim=-2).clamp_min(0.0)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def _beta_np(A: np.ndarray, H: np.ndarray) -> np.ndarray:
    """numpy :func:`_beta`: (..., m, C) -> (..., C)."""
    A, H = A - A.mean(axis=-2, keepdims=True), H - H.mean(axis=-2, keepdims=True)
    den = (H * H).sum(axis=-2)
    num = np.maximum((A * H).sum(axis=-2), 0.0)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def history_values(coef: np.ndarray, pos: np.ndarray, season_length: int) -> np.ndarray:
    """numpy :func:`_history_at`: ``coef`` (C, 2F), integer ``pos`` (..., C) -> (..., C) float64."""
    F, m = HISTORY_HARMONICS, int(season_length)
    ph = np.remainder(np.asarray(pos, np.int64), m) * (2.0 * np.pi / m)
    ang = ph[..., None] * np.arange(1, F + 1)
    return (np.cos(ang) * coef[:, :F] + np.sin(ang) * coef[:, F:]).sum(axis=-1)


def rotate_history(params: np.ndarray, shift, season_length: int, horizon: int) -> np.ndarray:
    """The history profile of ``params`` (..., P), any layout of :func:`param_layout` (none: as
    they are), moved so that its phase 0 lies ``shift`` steps later (int, broadcast against
    ``params.shape[:-1]``): ``H'(p) = H(p + shift)``, each harmonic's coefficients turned by
    ``2 pi j shift / m`` (the angle of ``j shift mod m``: exact for any integer). The fit's profiles
    have phase 0 at their part's first step; the spec keeps them at the grid's absolute step 0
    (:meth:`forecaster.timeaxis.Frequency.index` from time 0), a batch's at its window's first
    step, a stream's summary at its origin."""
    p = np.asarray(params)
    hp = _slots(p.shape[-1], horizon)[4]
    m = int(season_length)
    if hp is None or m < 2:
        return p
    F = HISTORY_HARMONICS
    j = np.arange(1, F + 1, dtype=np.int64)
    sh = np.broadcast_to(np.asarray(shift, np.int64), p.shape[:-1])[..., None]
    ang = np.remainder(j * np.remainder(sh, m), m) * (2.0 * np.pi / m)  # (..., F)
    c, s = p[..., hp + 2:hp + 2 + F].astype(np.float64), p[..., hp + 2 + F:hp + 2 + 2 * F].astype(np.float64)
    out = p.copy()
    out[..., hp + 2:hp + 2 + F] = c * np.cos(ang) + s * np.sin(ang)
    out[..., hp + 2 + F:hp + 2 + 2 * F] = s * np.cos(ang) - c * np.sin(ang)
    return out


def _drift_of(params: Tensor, horizon: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(w_d, y_first, age)`` (...) of a batch's parameters (the fitted ones and two more), None
    for fitted ones."""
    _K, wd, _wa, _al, _hp, _mu, y0 = _slots(params.shape[-1], horizon)
    if y0 is None:
        return None
    return params[..., wd], params[..., y0], params[..., y0 + 1]


def with_first(params: np.ndarray | Tensor, first_value, age):
    """A batch's parameters: fitted ones (..., P; their history profile already turned to the
    frame's first position, :func:`rotate_history`) and each series' first observed value (scaled;
    ...) and the age of the frame's first position (steps since that observation; < 1 or
    non-finite: no drift) -> (..., P + 2). numpy or torch, as ``params``."""
    if isinstance(params, Tensor):
        fv = torch.as_tensor(first_value, dtype=params.dtype, device=params.device)
        ag = torch.as_tensor(age, dtype=params.dtype, device=params.device)
        return torch.cat([params, fv.unsqueeze(-1), ag.unsqueeze(-1)], dim=-1)
    p = np.asarray(params)
    return np.concatenate([p, np.asarray(first_value, p.dtype)[..., None], np.asarray(age, p.dtype)[..., None]],
                          axis=-1)


def baseline_params(mode: str, fitted: Tensor, horizon: int) -> Tensor:
    """The (B, C, P) parameters a mode uses, from the batch's (layouts: :func:`param_layout`): the
    plain modes fix the weights and have neither drift nor seasonal adjustment; ``mean`` is the
    plain mean of the whole look-back (``alpha = 0``, ``q = 0``)."""
    if mode == "blend":
        return fitted
    K, wd, wa, al, hp, _mu, _y0 = _slots(fitted.shape[-1], horizon)
    w = {"seasonal": (1.0, 0.0), "last": (0.0, 1.0), "mean": (0.0, 0.0)}[mode]
    out = fitted.clone()
    out[..., :K], out[..., K:2 * K] = w
    for j in (wd, wa, al, None if al is None else al + 1, hp):
        if j is not None:
            out[..., j] = 0.0
    return out


def _drift_term(base: Tensor, lv: Tensor, has_last: Tensor, wd: Tensor, y0: Tensor, age: Tensor,
                horizon: int, context_length: int) -> Tensor:
    """``base`` (B, n, h, C) plus ``w_d * k * D``, ``D = (L - y_first) / (age + DRIFT_PRIOR * T)``
    the (shrunk) slope from the series' first observation to the origin, 0 at or before it
    (lv, has_last, age: (B, n, C); wd, y0: (B, C))."""
    ok = has_last & torch.isfinite(age) & (age >= 1)
    D = torch.where(ok, (lv - y0.unsqueeze(1)) / (torch.where(ok, age, torch.ones_like(age))
                                                        + DRIFT_PRIOR * context_length),
                    torch.zeros_like(lv))
    k = torch.arange(1, horizon + 1, device=base.device, dtype=base.dtype).view(1, 1, -1, 1)
    return base + wd.view(wd.shape[0], 1, 1, -1) * k * D.unsqueeze(2)


def _last_observed(target: Tensor, observed: Tensor, T: int) -> tuple[Tensor, Tensor, Tensor]:
    """For every origin t of a (B, L, C) window: the last observed value in ``[t - T + 1, t]``,
    whether there is one, and its position (-1: none ever); each (B, L, C)."""
    L = target.shape[1]
    pos = torch.arange(L, device=target.device).view(1, L, 1)
    idx = torch.where(observed > 0, pos, torch.full_like(pos, -1)).expand_as(target).cummax(dim=1).values
    ok = (idx >= 0) & (idx > pos - T)
    return target.gather(1, idx.clamp_min(0)), ok, idx


def adjust_seasons(season_length: int, context_length: int) -> int:
    """``Q``: the whole seasons of the look-back the seasonal adjustment averages over,
    ``floor(T / m)`` for a season ``1 < m <= T``, else 0 (no adjustment)."""
    m, T = int(season_length), int(context_length)
    return T // m if 1 < m <= T else 0


def _some(wa: Tensor) -> bool:
    """Whether the seasonal adjustment must be computed for weights ``wa``: any not 0 (on a CPU,
    where asking is free; on an accelerator always, rather than wait for the answer: with
    ``w_a = 0`` it changes nothing, to the bit)."""
    return wa.device.type != "cpu" or bool((wa != 0).any())


def _adjusted(lv: Tensor, mean: Tensor, A: Tensor, A_last: Tensor, wa: Tensor) -> tuple[Tensor, Tensor]:
    """The last value and the mean as the blend reads them, moved to step k's phase by ``w_a``
    times the look-back's seasonal profile, ``L + w_a (A_k - A_L)`` and ``M + w_a (A_k - M)``
    (elementwise: ``A`` (..., h, C), the others broadcast against it, e.g. (..., 1, C))."""
    return lv + wa * (A - A_last), mean + wa * (A - mean)


def _phase_means(target: Tensor, observed: Tensor, ts: Tensor, lag: Tensor, last_idx: Tensor, Q: int, m: int,
                 fallback: Tensor) -> tuple[Tensor, Tensor]:
    """The look-back's seasonal profile at the origins ``ts`` (n,) of a (B, L, C) window: ``A``
    (B, n, h, C), the mean of the observed values at step k's phase over the last Q whole seasons
    ``[t - Q m + 1, t]`` (``lag`` (n, h): the latest position of that phase at or before t), and
    ``A_last`` (B, n, C), the same at the phase of the last observation (``last_idx`` (B, n, C),
    -1: none); ``fallback`` (B, n, C) (the look-back's level) where a phase has no observation."""
    B, L, C = target.shape
    pad = (-L) % m
    o = observed.to(target.dtype)

    def seasonal_cumsum(v):  # (B, 1 + L, C): 0, then the sum of v at positions j, j - m, j - 2m, ... >= 0
        v = torch.nn.functional.pad(v, (0, 0, pad, 0)).view(B, (L + pad) // m, m, C).cumsum(dim=1)
        return torch.cat([torch.zeros_like(v[:, 0, :1]), v.reshape(B, L + pad, C)[:, pad:]], dim=1)

    sy, sn = seasonal_cumsum(target * o), seasonal_cumsum(o)
    n, h = lag.shape
    hi, lo = (lag + 1).clamp_min(0).reshape(-1), (lag + 1 - Q * m).clamp_min(0).reshape(-1)
    num = (sy[:, hi] - sy[:, lo]).view(B, n, h, C)
    cnt = (sn[:, hi] - sn[:, lo]).view(B, n, h, C)
    A = torch.where(cnt > 0, num / cnt.clamp_min(1), fallback.unsqueeze(2))
    t = ts.view(1, -1, 1)
    jl = last_idx + m * torch.div(t - last_idx, m, rounding_mode="floor")  # the last observation's phase, at or before t
    hi, lo = (jl + 1).clamp(0, L), (jl + 1 - Q * m).clamp(0, L)
    num_l, cnt_l = sy.gather(1, hi) - sy.gather(1, lo), sn.gather(1, hi) - sn.gather(1, lo)
    A_last = torch.where((cnt_l > 0) & (last_idx >= 0), num_l / cnt_l.clamp_min(1), fallback)
    return A, A_last


def baseline_forecast(target: Tensor, observed: Tensor, params: Tensor, horizon: int, season_length: int,
                      context_length: int, origins: int | None = None) -> Tensor:
    """The baseline forecast from the origins of a window.

    Args:
        target, observed: (B, L, C) scaled window (missing values 0, observed 0).
        params: (B, C, P) per series and target (:func:`param_layout`): the fitted ``[w_s knots,
            w_l knots, w_d, w_a, alpha, q, mu]``, or those with ``[y_first, age]`` after them (:func:`with_first`):
            the series' first observed value and how many steps after it the window's first step
            lies, which add the drift ``w_d * k * (L - y_first) / (age + t + DRIFT_PRIOR * T)`` of
            the whole history at origin ``t`` (without them, no drift).
        horizon: h. season_length: m. context_length: T, the look-back a forecast may use.
        origins: None = the last origin only, ``t = L - 1``; n = the first n origins ``t = 0..n-1``
            (each with the window's steps up to t).

    Returns:
        (B, h, C) for the last origin, or (B, n, h, C).
    """
    B, L, C = target.shape
    last, has_last, last_idx = _last_observed(target, observed, context_length)
    ts = torch.arange(L, device=target.device) if origins is not None else torch.tensor([L - 1], device=target.device)
    if origins is not None:
        ts = ts[:origins]
    ws, wl, mu = blend_weights(params, horizon)  # (B, C, h), (B, C, h), (B, C)
    wa = _adjust_of(params, horizon).view(B, 1, 1, C)
    ws, wl, mu = ws.transpose(1, 2).unsqueeze(1), wl.transpose(1, 2).unsqueeze(1), mu.unsqueeze(1)  # (B, 1, h, C)
    lv = torch.where(has_last[:, ts], last[:, ts], mu)  # (B, n, C)
    alpha, q = _level_of(params, horizon)  # (B, C)
    if origins is None:  # the last origin: one sum over its look-back, as a stream's summary (no running sums to round)
        W = min(int(context_length), L)
        mu = _last_level(target[:, L - W:], observed[:, L - W:], alpha, q, season_length, context_length,
                         mu[:, 0]).unsqueeze(1)  # (B, 1, C): the level
    else:
        mu = _level(target, observed, alpha.unsqueeze(1), q.unsqueeze(1), season_length, context_length, mu)[:, ts]
    lag = ts.view(-1, 1) + season_offsets(horizon, season_length, target.device).view(1, -1)  # (n, h)
    inside = (lag >= 0) & (lag > ts.view(-1, 1) - context_length)
    g = lag.clamp_min(0).reshape(-1)
    sv = target[:, g].view(B, len(ts), horizon, C)
    so = observed[:, g].view(B, len(ts), horizon, C) > 0
    sv = torch.where(so & inside.view(1, len(ts), horizon, 1), sv, lv.unsqueeze(2))
    lk, mk = lv.unsqueeze(2), mu.unsqueeze(2)
    Q = adjust_seasons(season_length, context_length)
    if Q and _some(wa):  # the seasonally adjusted last value and mean (w_a = 0: as they are, to the bit)
        m = int(season_length)
        if origins is None:  # the last origin: from its last Q m steps alone, as a stream's summary
            pad = max(0, Q * m - L)
            v, o = (torch.nn.functional.pad(x, (0, 0, pad, 0)) for x in (target, observed))
            prof, A_last, p_last = _last_profile(v, o, Q, m, mu[:, 0])
            A = prof[:, season_offsets(horizon, m, target.device) + m - 1].unsqueeze(1)  # (B, 1, h, C)
            A_last = A_last.unsqueeze(1)
        else:  # every origin: seasonal cumulative sums (a huge value earlier in the window rounds them)
            A, A_last = _phase_means(target, observed, ts, lag, last_idx[:, ts], Q, m, mu)
        hist = _history_of(params, horizon) if _drift_of(params, horizon) is not None else None
        if hist is not None and _some(hist[0]):  # the history profile's share (phase 0: the window's first step)
            r, sc, coef = hist
            k = torch.arange(1, horizon + 1, device=target.device)
            latest = torch.arange(m - 1, -1, -1, device=target.device)  # the m latest phases, oldest first

            def at(pos):  # (B, ..., C) positions -> H there
                return _history_at(coef, pos, m)

            if origins is None:
                Hk = at((L - 1 + k).view(1, 1, -1, 1).expand(B, 1, -1, C))  # (B, 1, h, C)
                HL = at(L - Q * m + p_last).unsqueeze(1)  # (B, 1, C)
                recent = (p_last >= 0).unsqueeze(1)
                if _some(sc):  # the look-back's amplitude: its profile by phase (prof) on the history's shape
                    beta = _beta(prof, at((L - 1 - latest).view(1, -1, 1).expand(B, -1, C))).unsqueeze(1)  # (B, 1, C)
            else:
                li = last_idx[:, ts]  # (B, n, C)
                t = ts.view(1, -1, 1)
                jl = li + m * torch.div(t - li, m, rounding_mode="floor")  # the last observation's phase
                Hk = at((ts.view(-1, 1) + k).view(1, len(ts), -1, 1).expand(B, -1, -1, C))  # (B, n, h, C)
                HL = at(jl)  # (B, n, C)
                recent = (li >= 0) & (li > t - Q * m)
                if _some(sc):
                    lagm = ts.view(-1, 1) - latest.view(1, -1)  # (n, m)
                    Am = _phase_means(target, observed, ts, lagm, li, Q, m, mu)[0]  # (B, n, m, C)
                    beta = _beta(Am, at(lagm.view(1, len(ts), m, 1).expand(B, -1, -1, C)))
            if _some(sc):
                g = torch.where(sc.unsqueeze(1) > 0.5, beta, torch.ones_like(beta))  # (B, n, C)
                Hk, HL = Hk * g.unsqueeze(2), HL * g
            rr = torch.where(recent, r.unsqueeze(1), torch.zeros_like(r).unsqueeze(1))
            A, A_last = _with_history(A, A_last, mk, mu, rr, Hk, HL)
        lk, mk = _adjusted(lk, mk, A, A_last.unsqueeze(2), wa)
    base = ws * sv + wl * lk + (1 - ws - wl) * mk
    drift = _drift_of(params, horizon)
    if drift is not None:
        wd, y0, age = drift
        base = _drift_term(base, lv, has_last[:, ts], wd, y0, age.unsqueeze(1) + ts.to(age.dtype).view(1, -1, 1),
                           horizon, context_length)
    return base[:, 0] if origins is None else base


def season_offsets(horizon: int, season_length: int, device: torch.device | str = "cpu") -> Tensor:
    """(horizon,) int64: where step k's seasonal value lies relative to the origin,
    ``k - m * ceil(k / m)`` (in ``-m + 1 .. 0``)."""
    k = torch.arange(1, horizon + 1, device=device)
    m = max(1, int(season_length))
    return k - m * torch.div(k + m - 1, m, rounding_mode="floor")


def season_width(season_length: int, context_length: int, adjusted: bool = True) -> int:
    """How many of the last steps the baseline of a last origin reads: the seasonal naive
    ``min(m, T)``, and with ``adjusted`` (a target whose ``w_a`` is not 0: :func:`any_adjusted`)
    the :func:`adjust_seasons` whole seasons of the adjustment (``Q m``)."""
    m, T = max(1, int(season_length)), int(context_length)
    return max(min(m, T), adjust_seasons(m, T) * m if adjusted else 0)


def summary_width(params: np.ndarray | Tensor, horizon: int, season_length: int, context_length: int) -> int:
    """How many of the last steps :func:`baseline_from_summary` must read for ``params`` (..., P):
    :func:`season_width` (with the whole seasons where a target is seasonally adjusted), and the
    level's window where a target's level is not the running mean of the whole look-back (a
    smoothed one, ``alpha`` not 0: ``T``, or the :func:`level_window` with ``q = 1``; the whole
    seasons ``Q m < T`` with ``q = 1``)."""
    m, T = max(1, int(season_length)), int(context_length)
    width = season_width(m, T, any_adjusted(params, horizon))
    al = _slots(params.shape[-1], horizon)[3]
    if al is not None:
        p = params.detach().cpu().numpy() if isinstance(params, Tensor) else np.asarray(params)
        a, q, Wq = p[..., al], p[..., al + 1] > 0.5, level_window(m, T)
        if ((a != 0) & ~q).any():
            width = max(width, T)
        if (q & ((a != 0) | (Wq < T))).any():
            width = max(width, Wq)
    return width


def any_adjusted(params: np.ndarray | Tensor, horizon: int) -> bool:
    """Whether any series and target of ``params`` (..., P) (a layout of :func:`param_layout`) is
    seasonally adjusted (``w_a`` not 0)."""
    wa = _slots(params.shape[-1], horizon)[2]
    return wa is not None and bool((params[..., wa] != 0).any())


def _last_profile(values: Tensor, obs: Tensor, Q: int, m: int, fallback: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The profile of the last ``Q m`` steps (B, W >= Q m, C) of a look-back, by phase: ``(B, m, C)``,
    position r the phase of slot ``W - m + r`` (``fallback`` (B, C), the look-back's level, where a
    phase has no observation), the profile at the last observed slot's phase (B, C) (the
    fallback where none is observed) and that slot (B, C) int64, among the last ``Q m`` (-1: none). Summed over those steps only: a value before them does not
    enter, not even as a rounding error."""
    B, W, C = values.shape
    o = obs[:, W - Q * m:].to(values.dtype)
    num = (values[:, W - Q * m:] * o).view(B, Q, m, C).sum(dim=1)  # (B, m, C)
    cnt = o.view(B, Q, m, C).sum(dim=1)
    prof = torch.where(cnt > 0, num / cnt.clamp_min(1), fallback.unsqueeze(1))
    pos = torch.arange(Q * m, device=values.device).view(1, -1, 1)
    p_last = torch.where(o > 0, pos, torch.full_like(pos, -1)).amax(dim=1)  # (B, C): the last observed slot
    A_last = torch.where(p_last >= 0, prof.gather(1, (p_last.clamp_min(0) % m).unsqueeze(1))[:, 0], fallback)
    return prof, A_last, p_last


def baseline_from_summary(last: Tensor, has_last: Tensor, mean: Tensor, has_mean: Tensor, season: Tensor,
                          season_obs: Tensor, params: Tensor, horizon: int, season_length: int,
                          context_length: int) -> Tensor:
    """The last origin's baseline from a summary of its window instead of the window: what
    :func:`baseline_forecast` computes from the whole look-back, for a stream that keeps the last
    value and the look-back's running mean and reads only its last steps (:func:`summary_width`).

    Args:
        last, has_last: (B, C) the last observed value in the look-back, and whether there is one.
        mean, has_mean: (B, C) the mean of the look-back's observed values, and whether there is one.
        season, season_obs: (B, W, C) the look-back's last ``W = summary_width(params, h, m, T)``
            steps, oldest first (values and observed mask; steps before the series began are
            unobserved): the last season where no target is seasonally adjusted and every level
            is the plain mean of the whole look-back, else the whole seasons or the whole
            look-back (fewer than a target needs: ``ValueError``).
        params: (B, C, P) as in :func:`baseline_forecast`; the ``age`` of a batch's form is the
            origin's (steps from the series' first observation to the last step).
        horizon, season_length, context_length: as there.

    Returns:
        (B, horizon, C), equal to ``baseline_forecast(window, ...)`` of the same look-back.
    """
    ws, wl, mu0 = blend_weights(params, horizon)  # (B, C, h), (B, C, h), (B, C)
    lv = torch.where(has_last, last, mu0)
    mu = torch.where(has_mean, mean, mu0)
    W = season.shape[1]
    alpha, q = _level_of(params, horizon)  # (B, C)
    T, Wq = int(context_length), level_window(season_length, context_length)
    own = (alpha != 0) | ((q > 0.5) & (Wq < T))  # a level other than the running mean of the whole look-back
    if W < T and bool((own & ((q <= 0.5) | (W < Wq))).any()):
        raise ValueError(f"the look-back summary holds {W} steps; a smoothed level or one over the whole seasons "
                         f"reads its last {T if bool((own & (q <= 0.5)).any()) else Wq} (summary_width): pass those")
    if alpha.device.type != "cpu" or bool(own.any()):  # from the ring's last steps
        mu = torch.where(own, _last_level(season, season_obs, alpha, q, season_length, context_length, mu0), mu)
    j = season_offsets(horizon, season_length, season.device) + W - 1  # (h,) index in the last W steps
    inside = (j >= 0).view(1, horizon, 1)  # m > T: a season back may lie before the look-back
    j = j.clamp_min(0)
    sv = torch.where((season_obs[:, j] > 0) & inside, season[:, j], lv.unsqueeze(1))  # (B, h, C)
    ws, wl = ws.transpose(1, 2), wl.transpose(1, 2)  # (B, h, C)
    lk, mk = lv.unsqueeze(1), mu.unsqueeze(1)
    Q, m = adjust_seasons(season_length, context_length), int(season_length)
    if Q and W < Q * m:  # a summary of the last season only: fine where nothing is adjusted
        if any_adjusted(params, horizon):
            raise ValueError(f"the look-back summary holds {W} steps; a seasonally adjusted baseline (w_a != 0) "
                             f"reads its last {Q * m} (season_width(m, T)): pass those")
        Q = 0
    wa = _adjust_of(params, horizon).unsqueeze(1)  # (B, 1, C)
    if Q and _some(wa):  # the profile of the last Q whole seasons, by phase r
        prof, A_last, p_last = _last_profile(season, season_obs, Q, m, mu)
        A = prof[:, season_offsets(horizon, m, season.device) + m - 1]  # (B, h, C)
        hist = _history_of(params, horizon) if _drift_of(params, horizon) is not None else None
        if hist is not None and _some(hist[0]):  # the history profile's share (phase 0: the origin)
            r, sc, coef = hist
            B, C = r.shape
            k = torch.arange(1, horizon + 1, device=season.device).view(1, -1, 1)
            Hk = _history_at(coef, k.expand(B, -1, C), m)  # (B, h, C)
            HL = _history_at(coef, p_last - (Q * m - 1), m)  # (B, C)
            if _some(sc):  # the look-back's amplitude: its profile by phase (prof) on the history's shape
                latest = torch.arange(m - 1, -1, -1, device=season.device).view(1, -1, 1)
                beta = _beta(prof, _history_at(coef, (-latest).expand(B, -1, C), m))  # (B, C)
                g = torch.where(sc > 0.5, beta, torch.ones_like(beta))
                Hk, HL = Hk * g.unsqueeze(1), HL * g
            rr = torch.where(p_last >= 0, r, torch.zeros_like(r))
            A, A_last = _with_history(A, A_last, mk, mu, rr, Hk, HL)
        lk, mk = _adjusted(lk, mk, A, A_last.unsqueeze(1), wa)
    base = ws * sv + wl * lk + (1 - ws - wl) * mk
    drift = _drift_of(params, horizon)
    if drift is not None:
        wd, y0, age = drift
        base = _drift_term(base.unsqueeze(1), lv.unsqueeze(1), has_last.bool().unsqueeze(1), wd, y0, age.unsqueeze(1),
                           horizon, context_length)[:, 0]
    return base


def _window_mean(target: Tensor, observed: Tensor, T: int, fallback: Tensor) -> Tensor:
    """For every origin t of a (B, L, C) window: the mean of the observed values in
    ``[t - T + 1, t]`` (``fallback`` (B, 1, C) where there is none): (B, L, C)."""
    o = observed.to(target.dtype)
    cs = torch.cumsum(target * o, dim=1)
    cn = torch.cumsum(o, dim=1)
    if T < target.shape[1]:
        cs = cs - torch.nn.functional.pad(cs, (0, 0, T, 0))[:, :-T]
        cn = cn - torch.nn.functional.pad(cn, (0, 0, T, 0))[:, :-T]
    return torch.where(cn > 0, cs / cn.clamp_min(1), fallback)


def _oldest_first_weights(alpha: Tensor, q: Tensor, W: int, season_length: int, context_length: int) -> Tensor:
    """(B, C, W) float64: the level's weight of each of the last W steps, oldest first, for
    ``alpha``, ``q`` (B, C): ``(1 - alpha)^i`` for the step i steps back within the level's window
    (the whole look-back T where ``q = 0``, :func:`level_window` where ``q = 1``), else 0. In
    float64: ``0.5^149`` is below float32's range."""
    T, Wq = int(context_length), level_window(season_length, context_length)
    dt = torch.float64
    i = torch.arange(W - 1, -1, -1, device=alpha.device, dtype=dt)  # steps back, oldest first
    width = torch.where(q > 0.5, float(Wq), float(T)).unsqueeze(-1)  # (B, C, 1)
    return torch.where(i < width, (1.0 - alpha.to(dt)).unsqueeze(-1) ** i, torch.zeros((), dtype=dt,
                                                                                       device=alpha.device))


def _last_level(values: Tensor, obs: Tensor, alpha: Tensor, q: Tensor, season_length: int, context_length: int,
                fallback: Tensor) -> Tensor:
    """The level of the last origin of a look-back's last W steps (B, W, C), as :func:`_level`
    computes it for every origin (``alpha``, ``q``, ``fallback`` (B, C)): one weighted sum over the
    steps, O(W), (B, C)."""
    w = _oldest_first_weights(alpha, q, values.shape[1], season_length, context_length).transpose(-1, -2).contiguous()
    w = w * obs.to(torch.float64)  # (B, W, C)
    den = w.sum(dim=1)
    num = (w * values.to(torch.float64)).sum(dim=1)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       fallback.to(torch.float64)).to(values.dtype)


def level_window(season_length: int, context_length: int) -> int:
    """The steps the level ``M`` of a fit with ``q = 1`` averages over: the look-back's whole
    seasons ``Q m`` (:func:`adjust_seasons`) for a season ``1 < m <= T`` (a part-season more would
    weigh its phases twice), else the whole look-back ``T``."""
    Q = adjust_seasons(season_length, context_length)
    return Q * int(season_length) if Q else int(context_length)


def level_weights(alpha: float, width: int) -> np.ndarray:
    """(width,) float64: the level's weight of the step ``i`` steps before the origin,
    ``(1 - alpha)^i`` (``alpha = 0``: the plain mean)."""
    return (1.0 - float(alpha)) ** np.arange(int(width), dtype=np.float64)


def _level(target: Tensor, observed: Tensor, alpha: Tensor, q: Tensor, season_length: int, context_length: int,
           fallback: Tensor) -> Tensor:
    """The level ``M`` at every origin t of a (B, L, C) window: the mean of the observed values in
    the last ``W`` steps up to t, the step ``i`` steps back weighted ``(1 - alpha)^i``, with ``W``
    the whole look-back ``T`` where ``q = 0`` and :func:`level_window` where ``q = 1``
    (``alpha``, ``q`` (B, 1, C); ``fallback`` (B, 1, C) where the window has no observation):
    (B, L, C). Where ``alpha = 0`` from running sums (an earlier spec's mean, as it was); else
    a sum over the window's steps, in float64 (``(1 - alpha)^i`` leaves float32's range at
    ``0.5^149``)."""
    T, Wq = int(context_length), level_window(season_length, context_length)
    plain = _window_mean(target, observed, T, fallback)
    if Wq < T and (q.device.type != "cpu" or bool((q != 0).any())):
        plain = torch.where(q > 0.5, _window_mean(target, observed, Wq, fallback), plain)
    if alpha.device.type == "cpu" and not bool((alpha != 0).any()):
        return plain
    B, L, C = target.shape
    dt = torch.float64
    o = observed.to(dt)
    W = min(T, L)
    # (B C, 1, W): a cross-correlation over the left-padded window, the origin last
    w = _oldest_first_weights(alpha[:, 0], q[:, 0], W, season_length, context_length).reshape(B * C, 1, W)

    def weighted(v):  # (B, L, C) -> the weighted sum over each origin's last W steps
        x = torch.nn.functional.pad(v.transpose(1, 2).reshape(1, B * C, L), (W - 1, 0))
        return torch.nn.functional.conv1d(x, w, groups=B * C).view(B, C, L).transpose(1, 2)

    num, den = weighted(target.to(dt) * o), weighted(o)
    smooth = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), fallback.to(dt))
    return torch.where(alpha != 0, smooth.to(target.dtype), plain)  # alpha 0: the running sums, as before


def fit_blend(values: np.ndarray, observed: np.ndarray, horizon: int, season_length: int, context_length: int,
              max_origins: int = 2000) -> np.ndarray:
    """Least-squares blend weights of one series' training part.

    Args:
        values: (n, C) scaled training values (missing: anything), observed: bool (n, C).
        max_origins: origins used at most (evenly spaced), to bound the cost on long series.

    Returns:
        float64 (C, 2K + 5 + HISTORY_SLOTS): ``[w_s at the knots, w_l at the knots, w_d, w_a, alpha,
        q = 1, r, s, H 2F, mu]`` per target (K knots of :func:`blend_knots`; ``H``: the target's
        :func:`history_profile`, phase 0 at the part's first step); ``mu`` is the mean of the observed training
        values (the fallback of an empty look-back). The candidates (:data:`BLEND_CANDIDATES`): the
        last value, the season, the look-back's level, the least-squares blend of the three
        (``w_s, w_l >= 0``, ``w_s + w_l <= 1``, per step) and the least-squares blend that may
        continue a trend (``w_s + w_l <=`` :func:`trend_cap`), the same five seasonally adjusted
        (``w_a = 1``; where the look-back holds a whole season) by the look-back's profile, by the
        profile half the look-back's and half the training part's (``r = 0.5``) and by the training
        part's shape at the look-back's amplitude (``r = s = 1``), the level, blend and trend with
        each smoothed level of :data:`LEVEL_ALPHAS`, each without and with the drift of the whole history;
        per target the one of least absolute error over the whole horizon (each step counted alike)
        cross-validated over four blocks of the training origins, a more free one only if it wins by
        :data:`BLEND_MARGIN` (see :func:`_candidates`). A knot holds the mean over the steps nearest
        to it in log(step). A step with fewer than :data:`MIN_FIT_PAIRS` usable (origin, target)
        pairs is the (adjusted, if chosen) last value, (0, 1).
        :func:`fit_panel_blends` fits the series too short for this together.
    """
    mu, pairs = blend_pairs(values, observed, horizon, season_length, context_length, max_origins)
    coef = _profiles(values, observed, season_length, context_length)
    if pairs is None:
        zero = np.zeros(len(mu))
        return _at_knots(np.zeros((horizon, len(mu))), np.ones((horizon, len(mu))), zero, zero.astype(bool), zero,
                         zero, zero, coef, mu)
    return _at_knots(*_fit_pairs(pairs, horizon, season_length, context_length), coef, mu)


def _profiles(values: np.ndarray, observed: np.ndarray, season_length: int, context_length: int) -> np.ndarray:
    """(C, 2F): :func:`history_profile` of each target, 0 where no candidate reads it (no whole
    season in the look-back)."""
    C = values.shape[1]
    if not adjust_seasons(season_length, context_length):
        return np.zeros((C, 2 * HISTORY_HARMONICS))
    obs = np.asarray(observed, bool)
    return np.stack([history_profile(values[:, c], obs[:, c], season_length) for c in range(C)]) if C else \
        np.zeros((0, 2 * HISTORY_HARMONICS))


def fit_panel_blends(series: list[tuple[np.ndarray, np.ndarray]], horizon: int, season_length: int,
                     context_length: int, max_origins: int = 2000) -> np.ndarray:
    """:func:`fit_blend` of every series of a panel, the short ones helped by the others.

    Args:
        series: S pairs ``(values (n_i, C), observed bool (n_i, C))``, each series' scaled training part.

    Returns:
        float64 (S, C, 2K + 5 + HISTORY_SLOTS) (an empty panel: (0, 0, that)). Each series and target (targets
        apart: a sparse target does not make its series short) chooses among the candidates of
        :func:`_candidates` (the last value, the season, the look-back mean, the blend without
        trend, the blend with trend, the same seasonally adjusted, each without and with the drift)
        by its own cross-validation over four blocks of its origins,
        when every block has :data:`MIN_FIT_PAIRS` origins. Shorter series cannot tell the
        candidates apart alone:

        - a series with at least :data:`MIN_FIT_PAIRS` pairs at every step but fewer origins
          (M3's quarterly and "other" series, fertility_1y's) keeps its own fitted weights, but
          which candidate is chosen by all such series together (their cross-validations over
          four small blocks each, summed per candidate and target);
        - a series with fewer pairs at a step (most of M3's yearly series, which
          :func:`fit_blend` alone gives the last value) is fitted on the pooled pairs of all such
          series (scale-free: each series is scaled), as one series, and gets those weights with
          its own ``mu``.

        A panel of one series is :func:`fit_blend` (exactly for one target; with several, up to
        the rounding of sums taken target by target).
    """
    fitted = [blend_pairs(v, o, horizon, season_length, context_length, max_origins) for v, o in series]
    C = series[0][0].shape[1] if series else 0
    a = np.zeros((len(series), horizon, C))
    b = np.ones((len(series), horizon, C))
    d = np.zeros((len(series), C))
    adj = np.zeros((len(series), C), bool)
    al = np.zeros((len(series), C))
    rs = np.zeros((len(series), C))
    ss = np.zeros((len(series), C))

    def put(i, c, chosen):  # one series' and target's choice (_chosen, each (h, 1) or (1,))
        a[i, :, c:c + 1], b[i, :, c:c + 1], d[i, c:c + 1], adj[i, c:c + 1] = chosen[:4]
        al[i, c:c + 1], rs[i, c:c + 1], ss[i, c:c + 1] = chosen[4:]

    for c in range(C):  # each target on its own: a sparse target does not make its series short
        few, vote, votes = [], [], []
        for i, (_mu, pairs) in enumerate(fitted):
            pc = None if pairs is None else tuple(p if p is None else p[..., c:c + 1] for p in pairs)
            if pc is None or (pc[3].sum(axis=0) < MIN_FIT_PAIRS).any():
                few.append((i, pc))
                continue
            weights, wds, relative, checked, kinds = _candidates(pc, horizon, season_length, context_length)
            if checked:
                put(i, c, _chosen(weights, wds, relative, pc[3], kinds))
            else:
                vote.append((i, weights, wds, pc))
                votes.append(relative)
        if vote:
            relative = np.sum(votes, axis=0)  # (F, 2, 1): every short series' cross-validation counts alike
            for i, weights, wds, pc in vote:
                put(i, c, _chosen(weights, wds, relative, pc[3], kinds))
        pooled = [pc for _i, pc in few if pc is not None and pc[3].sum() > 0]
        if pooled:
            stacked = tuple(None if pooled[0][j] is None else np.concatenate([p[j] for p in pooled])
                            for j in range(len(pooled[0])))
            chosen = _fit_pairs(stacked, horizon, season_length, context_length)
            for i, _pc in few:
                put(i, c, chosen)
    return np.stack([_at_knots(a[i], b[i], d[i], adj[i], al[i], rs[i], ss[i],
                               _profiles(v, o, season_length, context_length), mu)
                     for i, ((mu, _p), (v, o)) in enumerate(zip(fitted, series))]) if series \
        else np.zeros((0, 0, 2 * len(blend_knots(horizon)) + 5 + HISTORY_SLOTS))


def blend_pairs(values: np.ndarray, observed: np.ndarray, horizon: int, season_length: int, context_length: int,
                max_origins: int = 2000) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
    """The regression :func:`fit_blend` solves, from one series' training part (arguments as there).

    Returns:
        ``mu`` (C,), the mean of the observed training values, and ``(s, l, t, w, d, a, p, e, a_h,
        p_h, a_b, p_b)``, each (n_o, horizon, C) over the n_o origins used but ``e``: the season, the last value and
        the target, each less the look-back's level (the plain mean of its :func:`level_window`),
        1.0 where the target is observed, else 0.0, the drift
        regressor ``k * (L - y_first) / (t - t_first + DRIFT_PRIOR * T)`` (the shrunk slope from
        the part's first observation of the target to the origin; 0 at or before it), and the
        seasonal profile ``A_k`` and the adjusted last value ``L + A_k - A_L``, each less the
        look-back's mean (both None where :func:`adjust_seasons` is 0), ``e`` (n_o, G, C),
        each smoothed level of :data:`LEVEL_ALPHAS` less the plain one, and the same two as ``a``
        and ``p`` with the training part's :func:`history_profile` ``H`` in place of the
        look-back's profile (``H_k`` and ``L + H_k - H_L``, the adjustment's ``r = 1, s = 0``) and
        with its shape at the look-back's amplitude (``beta H``: ``r = s = 1``), each the look-back's
        where the last observation lies before its last whole seasons (None where ``a`` is; the
        tuple None when the part has no origin with a whole horizon after it).
    """
    n, C = values.shape
    obs = observed.astype(bool)
    y = np.where(obs, values, 0.0).astype(np.float64)
    mu = np.array([y[obs[:, c], c].mean() if obs[:, c].any() else 0.0 for c in range(C)])
    stop = n - horizon  # origins t with t + horizon inside the part
    if stop <= 0:
        return mu, None
    ts = np.unique(np.linspace(0, stop - 1, min(max_origins, stop)).round().astype(np.int64))
    k = np.arange(1, horizon + 1)
    pos = np.arange(n)[:, None]
    lastidx = np.maximum.accumulate(np.where(obs, pos, -1), axis=0)  # (n, C)
    li = lastidx[ts]  # (n_o, C)
    has_last = (li >= 0) & (li > ts[:, None] - context_length)
    lv = np.where(has_last, y[np.maximum(li, 0), np.arange(C)], mu)  # (n_o, C)
    cs = np.concatenate([np.zeros((1, C)), np.cumsum(y * obs, axis=0)])
    cn = np.concatenate([np.zeros((1, C)), np.cumsum(obs, axis=0)])
    Wq = level_window(season_length, context_length)
    lo = np.maximum(ts + 1 - Wq, 0)
    ws_, wn_ = cs[ts + 1] - cs[lo], cn[ts + 1] - cn[lo]
    lm = np.where(wn_ > 0, ws_ / np.maximum(wn_, 1), mu)  # (n_o, C): the level of each look-back
    # the smoothed levels (:data:`LEVEL_ALPHAS`), less the plain one: (n_o, G, C)
    num, den = np.zeros((len(LEVEL_ALPHAS), len(ts), C)), np.zeros((len(LEVEL_ALPHAS), len(ts), C))
    weights = np.stack([level_weights(a, Wq) for a in LEVEL_ALPHAS])  # (G, Wq): by steps back
    for i in range(Wq):
        j = ts - i
        ok = (j >= 0)[:, None] & obs[np.maximum(j, 0)]
        wt = weights[:, i, None, None]
        num += wt * np.where(ok, y[np.maximum(j, 0)], 0.0)
        den += wt * ok
    e_ = np.where(den > 0, num / np.where(den > 0, den, 1.0), lm).transpose(1, 0, 2) - lm[:, None, :]
    lag = ts[:, None] + season_offsets(horizon, season_length).numpy()[None, :]  # (n_o, h)
    inside = (lag >= 0) & (lag > ts[:, None] - context_length)
    lg = np.maximum(lag, 0)
    sv = np.where(obs[lg] & inside[..., None], y[lg], lv[:, None, :])  # (n_o, h, C)
    tgt_i = ts[:, None] + k[None, :]
    yt, w = y[tgt_i], obs[tgt_i].astype(np.float64)  # (n_o, h, C)
    s_, l_, t_ = sv - lm[:, None, :], np.broadcast_to((lv - lm)[:, None, :], sv.shape), yt - lm[:, None, :]
    # the drift regressor k * D: D = (L - y_first) / (t - t_first + DRIFT_PRIOR * T), the shrunk slope from the
    # target's first observation to the origin (0 at or before it, or with no last value in the look-back)
    first = np.argmax(obs, axis=0)  # (C,)
    y0 = y[first, np.arange(C)]
    age = ts[:, None] - first[None, :]  # (n_o, C)
    ok = has_last & (age >= 1) & obs.any(axis=0)[None, :]
    D = np.where(ok, (lv - y0[None, :]) / (np.maximum(age, 1) + DRIFT_PRIOR * context_length), 0.0)
    d_ = k[None, :, None] * D[:, None, :]  # (n_o, h, C)
    # the seasonally adjusted last value and mean (:func:`_phase_means`): A_k, the mean at step k's phase over the
    # last Q whole seasons, and P = L + A_k - A_L (A_L at the last observation's phase), each less the mean
    Q, m = adjust_seasons(season_length, context_length), int(season_length)
    if not Q:
        return mu, (s_, np.ascontiguousarray(l_), t_, w, d_, None, None, e_, None, None, None, None)
    pad = (-n) % m
    sc = [np.concatenate([np.zeros((1, C)), np.pad(v, ((pad, 0), (0, 0))).reshape(-1, m, C).cumsum(axis=0)
                          .reshape(-1, C)[pad:]]) for v in (y * obs, obs.astype(np.float64))]  # (1 + n, C)

    def phase_mean(j, fallback):  # j (n_o, ..., C) positions (latest of their phase at or before the origin)
        hi, lo = np.clip(j + 1, 0, n), np.clip(j + 1 - Q * m, 0, n)
        cols = np.arange(C)
        num, cnt = (v[hi, cols] - v[lo, cols] for v in sc)
        return np.where(cnt > 0, num / np.maximum(cnt, 1), fallback)

    A = phase_mean(np.broadcast_to(lag[..., None], (*lag.shape, C)), lm[:, None, :])  # (n_o, h, C)
    jl = li + m * ((ts[:, None] - li) // m)  # (n_o, C): the last observation's phase, at or before the origin
    A_last = np.where(li >= 0, phase_mean(jl, lm), lm)
    a_ = A - lm[:, None, :]
    p_ = l_ + a_ - (A_last - lm)[:, None, :]
    # the history profile (:func:`history_profile`, phase 0 at the part's first step) in place of the look-back's,
    # where the last observation lies in the last Q whole seasons (else the look-back's, as the forecast reads it)
    coef = np.stack([history_profile(values[:, c], obs[:, c], m) for c in range(C)])  # (C, 2F)
    recent = ((li >= 0) & (li > ts[:, None] - Q * m))[:, None, :]  # (n_o, 1, C)
    Hk = history_values(coef, np.broadcast_to(tgt_i[..., None], (*tgt_i.shape, C)), m)  # (n_o, h, C)
    HL = history_values(coef, jl, m)  # (n_o, C)
    a_h = np.where(recent, Hk, a_)
    p_h = np.where(recent, l_ + Hk - HL[:, None, :], p_)
    # its shape at the look-back's amplitude: beta, the look-back's profile at the m latest phases on it (>= 0)
    lagm = ts[:, None] - np.arange(m - 1, -1, -1)[None, :]  # (n_o, m)
    Am = phase_mean(np.broadcast_to(lagm[..., None], (*lagm.shape, C)), lm[:, None, :])  # (n_o, m, C)
    beta = _beta_np(Am, history_values(coef, np.broadcast_to(lagm[..., None], Am.shape), m))[:, None, :]  # (n_o, 1, C)
    a_b = np.where(recent, beta * Hk, a_)
    p_b = np.where(recent, l_ + beta * (Hk - HL[:, None, :]), p_)
    return mu, (s_, np.ascontiguousarray(l_), t_, w, d_, a_, p_, e_, a_h, p_h, a_b, p_b)


def _fit_pairs(pairs: tuple[np.ndarray, ...], horizon: int, season_length: int,
               context_length: int) -> tuple[np.ndarray, ...]:
    """Per-step weights (w_s, w_l), each (horizon, C), the drift weight w_d (C,), whether the
    blend is seasonally adjusted (C,) bool, its level's alpha and its history profile's r and s
    (C,), of :func:`blend_pairs`'
    regression: the candidate and drift its own cross-validation chooses (:func:`_candidates`; the
    four blocks may be small), the last value for steps with too few pairs (as :func:`fit_blend`
    describes)."""
    weights, wds, relative, _checked, kinds = _candidates(pairs, horizon, season_length, context_length)
    return _chosen(weights, wds, relative, pairs[3], kinds)


def _family(pairs: tuple[np.ndarray, ...], adj: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The regression's (season, last, target), each (n_o, h, C), less the mean or, where ``adj``
    (C,) bool, less the seasonal profile ``A_k`` (the last value then the adjusted ``P``)."""
    s_, l_, t_, a_, p_ = pairs[0], pairs[1], pairs[2], pairs[5], pairs[6]
    if a_ is None or not np.any(adj):
        return s_, l_, t_
    return np.where(adj, s_ - a_, s_), np.where(adj, p_ - a_, l_), np.where(adj, t_ - a_, t_)


def _drift_weight(gram: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``w_d`` (..., C) in [0, 1]: least squares, over every origin and step, of what the blend of
    weights (a, b) (..., horizon, C) leaves, ``t - a s - b l``, on the drift regressor ``d``, from
    the Gram sums per step (``gram`` "td", "sd", "ld", "dd": (..., horizon, C) sums over observed
    pairs; a leading axis: one problem per block)."""
    num = (gram["td"] - a * gram["sd"] - b * gram["ld"]).sum(axis=-2)
    den = gram["dd"].sum(axis=-2)
    return np.clip(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0), 0.0, 1.0)


#: The candidates of the blend's choice, simpler first: ties and near-ties go to the earlier. The
#: next five are the first five seasonally adjusted (the last value and the mean moved by the
#: look-back's seasonal profile; the season is the same in both): only where the season fits the
#: look-back whole (:func:`adjust_seasons`), then twice more with the training part's profile in the
#: look-back's (half and half; its shape at the look-back's amplitude). Then the first five again for each smoothed level of
#: :data:`LEVEL_ALPHAS` in place of the plain mean (its last value and season repeat the plain
#: ones: a tie, which the plain one wins).
BLEND_CANDIDATES = ("last", "season", "mean", "blend", "trend",
                    "adjusted last", "adjusted season", "adjusted mean", "adjusted blend", "adjusted trend")


def _candidates(pairs: tuple[np.ndarray, ...], horizon: int, season_length: int,
                context_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray]:
    """The :data:`BLEND_CANDIDATES` of one regression of :func:`blend_pairs`, each without and
    with the drift of the whole history, and their cross-validated errors.

    Returns:
        ``weights`` (F, 2, horizon, C) (F = 5 per family: the plain one, the seasonally adjusted
        ones where the look-back holds a whole season (by its profile, by the mixed one and by the
        training part's shape: :func:`_with_history`), one per smoothed level of
        :data:`LEVEL_ALPHAS`): (w_s, w_l) per step of the last value (0, 1), the season (1, 0),
        the level (0, 0), the least-squares blend on the unit triangle (``w_s + w_l <= 1``, an
        average of the three) and the one up to :func:`trend_cap` (a trend continued), both
        fitted on every origin; the seasonally adjusted family on the adjusted last value and mean
        (:func:`_family`), a smoothed level's on the regressors less that level;
        ``drift`` (F, C): each one's drift weight, least squares of what it leaves
        (:func:`_drift_weight`); ``relative`` (F, 2, C): the absolute error of each without and
        with its drift over the four blocks of origins (in time order; each block forecast with
        weights and drift fitted on the other three), each step's divided by the plain naives'
        mean error at that step (raw sums would let the far steps decide), averaged over the steps
        and divided by ``(1 - BLEND_MARGIN)`` once for the blend, twice for the trend, once more
        for each adjusted one (whichever profile) and once more with the drift: a more free
        candidate must win by a margin, not by the noise of its freedom (a smoothed level is no more
        free than the plain mean, which is alpha 0: not once more); whether every block holds :data:`MIN_FIT_PAIRS` origins (else the
        comparison is too noisy to trust alone); and ``kinds`` (F, 4): each candidate's seasonal
        adjustment (0 or 1), level alpha and history profile's ``r`` and ``s``.
    """
    w, d_ = pairs[3], pairs[4]
    s0 = pairs[0]
    h, C = s0.shape[1], s0.shape[2]
    level = trend_cap(horizon, season_length, context_length)[:, None]
    # (regressors, trend cap, seasonally adjusted, alpha, the history profile's share)
    families = [(tuple(pairs[:3]), level, 0, 0.0, (0.0, 0.0))]
    if pairs[5] is not None:
        families.append((_family(pairs, np.ones(C, bool)), level, 1, 0.0, (0.0, 0.0)))
        if len(pairs) > 11 and pairs[8] is not None:  # the profile partly the history's, or its shape
            r = HISTORY_SHARE
            mixed = (*pairs[:5], (1 - r) * pairs[5] + r * pairs[8], (1 - r) * pairs[6] + r * pairs[9])
            families.append((_family(mixed, np.ones(C, bool)), level, 1, 0.0, (r, 0.0)))
            shaped = (*pairs[:5], pairs[10], pairs[11])
            families.append((_family(shaped, np.ones(C, bool)), level, 1, 0.0, (1.0, 1.0)))
    e_ = pairs[7] if len(pairs) > 7 else None
    for g, alpha in enumerate(LEVEL_ALPHAS if e_ is not None else ()):  # the smoothed level as the mean
        e = e_[:, g:g + 1, :]  # (n_o, 1, C)
        families.append(((pairs[0] - e, pairs[1] - e, pairs[2] - e),
                         trend_cap(horizon, season_length, context_length, alpha)[:, None], 0, alpha, (0.0, 0.0)))
    blocks = [q for q in np.array_split(np.arange(len(s0)), 4) if len(q)]
    inf = np.full((h, C), np.inf)
    plain = [(np.zeros((h, C)), np.ones((h, C))), (np.ones((h, C)), np.zeros((h, C))),
             (np.zeros((h, C)), np.zeros((h, C)))]
    weights, drift, errors, kinds, penalty = [], [], [], [], []
    for (s_, l_, t_), cap, adjusted, alpha, share in families:
        caps = (np.ones((h, 1)), cap)
        terms = {"ss": (s_, s_), "sl": (s_, l_), "ll": (l_, l_), "ts": (t_, s_), "tl": (t_, l_)}
        with_d = {"td": (t_, d_), "sd": (s_, d_), "ld": (l_, d_), "dd": (d_, d_)}
        gram = [{name: (u[q] * v[q] * w[q]).sum(axis=0) for name, (u, v) in {**terms, **with_d}.items()}
                for q in blocks]  # (h, C)
        total = {name: sum(g[name] for g in gram) for name in gram[0]}
        fitted = plain + [_triangle_ls(U, **{n: total[n] for n in terms}) for U in caps]
        rest = {n: total[n] - np.stack([g[n] for g in gram]) for n in total}  # (n_blocks, h, C): the other blocks'
        held = [_triangle_ls(U, **{n: rest[n] for n in terms}) for U in caps]  # each block's blend weights from them
        for j, (wa, wb) in enumerate(fitted):
            weights.append((wa, wb))
            drift.append(_drift_weight(total, wa, wb))
            kinds.append((adjusted, alpha, *share))
            penalty.append((0, 0, 0, 1, 2)[j] + int(adjusted))
            if j >= 3 and len(blocks) < 2:  # a fitted blend needs other blocks to be judged on
                errors += [inf, inf]
                continue
            ba, bb = held[j - 3] if j >= 3 else (wa[None], wb[None])  # (n_blocks or 1, h, C)
            wds = _drift_weight(rest, ba, bb)  # (n_blocks, C): each block's drift from the other blocks
            without, with_ = np.zeros((h, C)), np.zeros((h, C))
            for i, q in enumerate(blocks):
                a_q, b_q = ba[min(i, len(ba) - 1)], bb[min(i, len(bb) - 1)]
                r = t_[q] - a_q * s_[q] - b_q * l_[q]  # what it leaves on block q
                without += (np.abs(r) * w[q]).sum(axis=0)
                with_ += (np.abs(r - wds[i] * d_[q]) * w[q]).sum(axis=0)
            errors += [without, with_ if len(blocks) > 1 else inf]
    weights, drift = np.array(weights), np.array(drift)  # (F, 2, h, C), (F, C)
    errors = np.stack(errors).reshape(len(weights), 2, h, C)
    finite = np.where(np.isfinite(errors[:3, 0]), errors[:3, 0], 0.0)
    scale = finite.mean(axis=0)  # (h, C): the plain naives' mean error at each step
    relative = np.where(scale > 0, errors / np.where(scale > 0, scale, 1.0), 1.0).mean(axis=2)  # (F, 2, C)
    relative /= (1.0 - BLEND_MARGIN) ** (np.array(penalty)[:, None] + np.array([0, 1]))[..., None]
    return (weights, drift, relative, len(blocks) == 4 and min(len(q) for q in blocks) >= MIN_FIT_PAIRS,
            np.array(kinds, dtype=np.float64))


def _chosen(weights: np.ndarray, drift: np.ndarray, relative: np.ndarray, w: np.ndarray,
            kinds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per target the option of least ``relative`` (F, 2, C) (the first of equal ones: the
    simpler): its (w_s, w_l) per step, each (horizon, C), its drift weight (C,) (0 without),
    whether it is seasonally adjusted (C,) bool, its level's ``alpha`` (C,) and its history
    profile's share ``r`` and amplitude ``s`` (C,) (``kinds`` (F, 4): each candidate's adjustment,
    alpha, r and s); at steps with fewer than :data:`MIN_FIT_PAIRS`
    observed pairs (``w`` (n_o, horizon, C)) the family's last value."""
    # the first within rounding of the least: the simpler of equal ones (a context of one step makes
    # every candidate the last value, and summation order alone would pick among them)
    F, _two, C = relative.shape
    flat = relative.reshape(2 * F, C)
    best = np.argmax(flat <= flat.min(axis=0, keepdims=True) * (1 + 1e-9) + 1e-12, axis=0)  # (C,)
    cand, with_drift = best // 2, best % 2 == 1
    cols = np.arange(C)
    a = weights[cand, 0, :, cols].T  # (h, C)
    b = weights[cand, 1, :, cols].T
    few = w.sum(axis=0) < MIN_FIT_PAIRS
    wd = np.where(with_drift, drift[cand, cols], 0.0)
    return (np.where(few, 0.0, a), np.where(few, 1.0, b), wd, kinds[cand, 0] > 0.5, kinds[cand, 1], kinds[cand, 2],
            kinds[cand, 3])


def _at_knots(a: np.ndarray, b: np.ndarray, wd: np.ndarray, adj: np.ndarray, alpha: np.ndarray, r: np.ndarray,
              scaled: np.ndarray, coef: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Per-step weights (horizon, C), the drift weight ``wd``, the seasonal adjustment ``adj``
    (bool), the level's ``alpha``, the history profile's share ``r`` and amplitude ``scaled`` and
    ``mu`` (C,), its coefficients ``coef`` (C, 2F) -> (C, 2K + 5 + HISTORY_SLOTS) ``[w_s knots,
    w_l knots, w_d, w_a, alpha, q = 1, r, s, H 2F, mu]``: a knot holds the mean of the steps
    nearest to it in log(step)."""
    horizon, C = a.shape
    knots = blend_knots(horizon)
    K = len(knots)
    out = np.zeros((C, 2 * K + 5 + HISTORY_SLOTS))
    out[:, 2 * K] = wd
    out[:, 2 * K + 1] = adj
    out[:, 2 * K + 2] = alpha
    out[:, 2 * K + 3] = 1.0  # the level over the look-back's whole seasons (level_window)
    out[:, 2 * K + 4] = r
    out[:, 2 * K + 5] = scaled
    out[:, 2 * K + 6:2 * K + 6 + 2 * HISTORY_HARMONICS] = coef
    out[:, -1] = mu
    lk, ls = np.log(knots.astype(np.float64)), np.log(np.arange(1, horizon + 1, dtype=np.float64))
    nearest = np.argmin(np.abs(ls[:, None] - lk[None, :]), axis=1)  # (h,)
    for j in range(K):
        sel = nearest == j
        out[:, j] = a[sel].mean(axis=0)
        out[:, K + j] = b[sel].mean(axis=0)
    return out


def trend_cap(horizon: int, season_length: int, context_length: int, alpha: float = 0.0) -> np.ndarray:
    """(horizon,) float64: ``U(k) = 1 + s(k) / c``, the largest ``w_s + w_l`` of step k: the blend's
    extrapolation of the look-back's trend reaches at most the straight line through the level
    (at its centre, ``c`` steps back: the mean lag of its weights over the :func:`level_window`
    ``W``, ``(W - 1) / 2`` for the plain mean, ``alpha = 0``) and the last value, ``s(k)`` steps on
    from the value the forecast starts from (``m * ceil(k / m)`` for a season ``1 < m <= T``, else
    ``k``). 1 (no trend) for a level of one step. It bounds each step's fit (:func:`fit_blend`),
    not the knot values interpolated from them."""
    k = np.arange(1, horizon + 1, dtype=np.float64)
    m, T = max(1, int(season_length)), int(context_length)
    s = m * np.ceil(k / m) if 1 < m <= T else k
    wt = level_weights(alpha, level_window(m, T))
    c = float((np.arange(len(wt)) * wt).sum() / wt.sum())
    return 1.0 + s / c if c > 0 else np.ones(horizon)


def _triangle_ls(U, ss, sl, ll, ts, tl) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_constrained_ls` on the triangle a, b >= 0, a + b <= U (U > 0, broadcast against the
    sums): the unit triangle's problem for (a / U, b / U), whose regressors are U s and U l."""
    a, b = _constrained_ls(U * U * ss, U * U * sl, U * U * ll, U * ts, U * tl)
    return a * U, b * U


def _constrained_ls(ss, sl, ll, ts, tl) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise over arrays of Gram sums: argmin over a, b >= 0, a + b <= 1 of
    ``||t - a s - b l||^2`` (a 2-variable QP: the unconstrained optimum where feasible, else the best
    point on an edge of the triangle)."""
    tiny = 1e-12

    def sse(a, b):  # up to the constant ||t||^2
        return -2 * a * ts - 2 * b * tl + a * a * ss + 2 * a * b * sl + b * b * ll

    det = ss * ll - sl * sl
    with np.errstate(divide="ignore", invalid="ignore"):
        ua = np.where(det > tiny * np.maximum(ss * ll, tiny), (ts * ll - tl * sl) / det, -1.0)
        ub = np.where(det > tiny * np.maximum(ss * ll, tiny), (tl * ss - ts * sl) / det, -1.0)
        dd = ss - 2 * sl + ll  # ||s - l||^2
        e_a = np.clip(np.where(dd > tiny, (ts - tl - sl + ll) / dd, 0.0), 0, 1)  # a + b = 1
        cands = [
            (np.zeros_like(ss), np.clip(np.where(ll > tiny, tl / ll, 1.0), 0, 1)),   # a = 0
            (np.clip(np.where(ss > tiny, ts / ss, 0.0), 0, 1), np.zeros_like(ss)),   # b = 0
            (e_a, 1.0 - e_a),
            (np.zeros_like(ss), np.ones_like(ss)),
        ]
    feasible = (ua >= 0) & (ub >= 0) & (ua + ub <= 1)
    cands.insert(0, (np.where(feasible, ua, 0.0), np.where(feasible, ub, 1.0)))
    costs = np.stack([sse(a, b) for a, b in cands])  # (n_cand, ...)
    costs[0] = np.where(feasible, costs[0], np.inf)
    best = np.argmin(costs, axis=0)
    a = np.choose(best, [c[0] for c in cands])
    b = np.choose(best, [c[1] for c in cands])
    return a, b
