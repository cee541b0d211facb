"""The naive forecast every model starts from: the network learns only the difference.

From an origin ``t`` with the context window ``[t - T + 1, t]`` (scaled units, per target):

* **last** ``L``: the last observed value in the window (the level ``mu`` if none);
* **seasonal** ``S(k)``: the value one season before the target step,
  ``y[t + k - m * ceil(k / m)]``, when it lies in the window and was observed (else ``L``);
* **mean** ``mu``: the series' level on its training part.

The baseline is the blend ``w_s * S(k) + w_l * L + (1 - w_s - w_l) * mu`` with weights per series
and target (``w_s, w_l >= 0``, ``w_s + w_l <= 1``), fitted by least squares on the training part
(:func:`fit_blend`) and kept in the data spec, so prediction and streaming use the same numbers.
The modes ``seasonal``, ``last`` and ``mean`` fix the weights to (1, 0), (0, 1) and (0, 0);
``none`` switches the baseline off. Everything here is a function of the window alone: a stream
that keeps the last ``T`` steps gets exactly what ``predict`` computes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["BASELINES", "BaselineMode", "baseline_params", "baseline_forecast", "fit_blend", "MIN_FIT_PAIRS"]

BaselineMode = Literal["blend", "seasonal", "last", "mean", "none"]
BASELINES = ("blend", "seasonal", "last", "mean", "none")
MIN_FIT_PAIRS = 20  # fewer (origin, step) pairs on a series' training part: fall back to the last value


def baseline_params(mode: str, fitted: Tensor) -> Tensor:
    """The (B, C, 3) weights ``[w_s, w_l, mu]`` a mode uses, from the fitted ones of the batch."""
    if mode == "blend":
        return fitted
    w = {"seasonal": (1.0, 0.0), "last": (0.0, 1.0), "mean": (0.0, 0.0)}[mode]
    out = fitted.clone()
    out[..., 0], out[..., 1] = w
    return out


def _last_observed(target: Tensor, observed: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """For every origin t of a (B, L, C) window: the last observed value in ``[t - T + 1, t]`` and
    whether there is one; each (B, L, C)."""
    L = target.shape[1]
    pos = torch.arange(L, device=target.device).view(1, L, 1)
    idx = torch.where(observed > 0, pos, torch.full_like(pos, -1)).expand_as(target).cummax(dim=1).values
    ok = (idx >= 0) & (idx > pos - T)
    return target.gather(1, idx.clamp_min(0)), ok


def baseline_forecast(target: Tensor, observed: Tensor, params: Tensor, horizon: int, season_length: int,
                      context_length: int, origins: int | None = None) -> Tensor:
    """The baseline forecast from the origins of a window.

    Args:
        target, observed: (B, L, C) scaled window (missing values 0, observed 0).
        params: (B, C, 3) ``[w_s, w_l, mu]`` per series and target.
        horizon: h. season_length: m. context_length: T, the look-back a forecast may use.
        origins: None = the last origin only, ``t = L - 1``; n = the first n origins ``t = 0..n-1``
            (each with the window's steps up to t).

    Returns:
        (B, h, C) for the last origin, or (B, n, h, C).
    """
    B, L, C = target.shape
    last, has_last = _last_observed(target, observed, context_length)
    ts = torch.arange(L, device=target.device) if origins is not None else torch.tensor([L - 1], device=target.device)
    if origins is not None:
        ts = ts[:origins]
    ws, wl, mu = params[..., 0].unsqueeze(1), params[..., 1].unsqueeze(1), params[..., 2].unsqueeze(1)  # (B, 1, C)
    lv = torch.where(has_last[:, ts], last[:, ts], mu)  # (B, n, C)
    k = torch.arange(1, horizon + 1, device=target.device)
    m = max(1, int(season_length))
    lag = ts.view(-1, 1) + k.view(1, -1) - m * torch.div(k + m - 1, m, rounding_mode="floor").view(1, -1)  # (n, h)
    inside = (lag >= 0) & (lag > ts.view(-1, 1) - context_length)
    g = lag.clamp_min(0).reshape(-1)
    sv = target[:, g].view(B, len(ts), horizon, C)
    so = observed[:, g].view(B, len(ts), horizon, C) > 0
    sv = torch.where(so & inside.view(1, len(ts), horizon, 1), sv, lv.unsqueeze(2))
    base = ws.unsqueeze(2) * sv + wl.unsqueeze(2) * lv.unsqueeze(2) + (1 - ws - wl).unsqueeze(2) * mu.unsqueeze(2)
    return base[:, 0] if origins is None else base


def fit_blend(values: np.ndarray, observed: np.ndarray, horizon: int, season_length: int, context_length: int,
              max_origins: int = 2000) -> np.ndarray:
    """Least-squares blend weights of one series' training part.

    Args:
        values: (n, C) scaled training values (missing: anything), observed: bool (n, C).
        max_origins: origins used at most (evenly spaced), to bound the cost on long series.

    Returns:
        float64 (C, 3): ``[w_s, w_l, mu]`` per target; ``mu`` is the mean of the observed values.
        Fewer than :data:`MIN_FIT_PAIRS` usable (origin, step) pairs: the last value, ``(0, 1, mu)``.
    """
    n, C = values.shape
    obs = observed.astype(bool)
    y = np.where(obs, values, 0.0).astype(np.float64)
    mu = np.array([y[obs[:, c], c].mean() if obs[:, c].any() else 0.0 for c in range(C)])
    out = np.zeros((C, 3))
    out[:, 1], out[:, 2] = 1.0, mu
    first, stop = 0, n - horizon  # origins t with t + horizon inside the part
    if stop <= first:
        return out
    ts = np.unique(np.linspace(first, stop - 1, min(max_origins, stop - first)).round().astype(np.int64))
    k = np.arange(1, horizon + 1)
    m = max(1, int(season_length))
    pos = np.arange(n)[:, None]
    lastidx = np.maximum.accumulate(np.where(obs, pos, -1), axis=0)  # (n, C)
    li = lastidx[ts]  # (n_o, C)
    has_last = (li >= 0) & (li > ts[:, None] - context_length)
    lv = np.where(has_last, y[np.maximum(li, 0), np.arange(C)], mu)  # (n_o, C)
    lag = ts[:, None] + k[None, :] - m * ((k + m - 1) // m)[None, :]  # (n_o, h)
    inside = (lag >= 0) & (lag > ts[:, None] - context_length)
    lg = np.maximum(lag, 0)
    sv = np.where(obs[lg] & inside[..., None], y[lg], lv[:, None, :])  # (n_o, h, C)
    tgt_i = ts[:, None] + k[None, :]
    yt, yo = y[tgt_i], obs[tgt_i]  # (n_o, h, C)
    for c in range(C):
        ok = yo[..., c]
        if ok.sum() < MIN_FIT_PAIRS:
            continue
        s = sv[..., c][ok] - mu[c]
        la = np.broadcast_to(lv[:, None, c], ok.shape)[ok] - mu[c]
        t = yt[..., c][ok] - mu[c]
        out[c, :2] = _constrained_ls(s, la, t)
    return out


def _constrained_ls(s: np.ndarray, la: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """argmin over a, b >= 0, a + b <= 1 of ||t - a s - b la||^2 (a 2-variable QP: the unconstrained
    optimum if feasible, else the best point on an edge of the triangle)."""
    ss, sl, ll, ts_, tl = s @ s, s @ la, la @ la, t @ s, t @ la
    cands = []
    det = ss * ll - sl * sl
    if det > 1e-12 * max(ss * ll, 1e-300):
        a = (ts_ * ll - tl * sl) / det
        b = (tl * ss - ts_ * sl) / det
        if a >= 0 and b >= 0 and a + b <= 1:
            cands.append((a, b))
    if ll > 0:
        cands.append((0.0, float(np.clip(tl / ll, 0, 1))))
    if ss > 0:
        cands.append((float(np.clip(ts_ / ss, 0, 1)), 0.0))
    d = s - la
    dd = d @ d
    if dd > 0:  # a + b = 1: t - la = a (s - la)
        a = float(np.clip((t - la) @ d / dd, 0, 1))
        cands.append((a, 1.0 - a))
    cands.append((0.0, 1.0))
    sse = [((t - a * s - b * la) ** 2).sum() for a, b in cands]
    a, b = cands[int(np.argmin(sse))]
    return float(a), float(b)
