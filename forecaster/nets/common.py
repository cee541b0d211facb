"""Pieces both forecasting networks share: the per-step features, the future covariates ahead of
each origin, the quantile head (non-crossing quantiles) and the GRU call.

Shapes: B batch, T steps, C targets, P past covariates, F future covariates (user + calendar), Q
quantiles (1 for a point forecast). Everything is in the data module's scaled units.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from forecaster.baseline import BASELINES, baseline_forecast, baseline_from_summary, baseline_params
from kernels import FusedGRU

__all__ = ["features", "relative_features", "relative_step", "future_ahead", "monotone_quantiles", "GRUNetBase"]


def features(target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor) -> Tensor:
    """The raw input of each step: (..., C), (..., C), (..., P), (..., F) of the SAME step(s) ->
    ``cat(target * observed, observed, past_cov, future_cov)``, (..., 2C + P + F)."""
    return torch.cat([target * observed, observed, past_cov, future_cov], dim=-1)


def relative_features(target: Tensor, observed: Tensor, context_length: int) -> Tensor:
    """Shift-invariant inputs of every step of a (B, L, C) window: the change since the previous
    observation within the look-back (0 without one) and the deviation from the mean of the observed
    values of the look-back ``[t - T + 1, t]``; both 0 at a missing step. (B, L, 2C): the C changes,
    then the C deviations. A series that trends or shifts beyond its training range gives the network
    inputs it has seen; the level itself comes in through the baseline."""
    B, L, C = target.shape
    T = int(context_length)
    o = observed > 0
    of = o.to(target.dtype)
    pos = torch.arange(L, device=target.device).view(1, L, 1)
    idx = torch.where(o, pos, torch.full_like(pos, -1)).expand_as(target).cummax(dim=1).values
    prev = torch.nn.functional.pad(idx, (0, 0, 1, 0), value=-1)[:, :-1]  # the last observation before t
    has_prev = (prev >= 0) & (prev > pos - T)
    change = torch.where(o & has_prev, target - target.gather(1, prev.clamp_min(0)), torch.zeros_like(target))
    cs, cn = torch.cumsum(target * of, dim=1), torch.cumsum(of, dim=1)
    if T < L:
        cs = cs - torch.nn.functional.pad(cs, (0, 0, T, 0))[:, :-T]
        cn = cn - torch.nn.functional.pad(cn, (0, 0, T, 0))[:, :-T]
    dev = torch.where(o, target - cs / cn.clamp_min(1), torch.zeros_like(target))
    return torch.cat([change, dev], dim=-1)


def relative_step(value: Tensor, observed: Tensor, prev: Tensor, has_prev: Tensor, mean: Tensor) -> Tensor:
    """:func:`relative_features` of one step from a stream's bookkeeping: this step's value and mask
    (M, C), the previous observation in the look-back and whether there is one (M, C), and the mean
    of the look-back's observed values including this step (M, C) -> (M, 2C)."""
    o = observed > 0
    change = torch.where(o & has_prev, value - prev, torch.zeros_like(value))
    dev = torch.where(o, value - mean, torch.zeros_like(value))
    return torch.cat([change, dev], dim=-1)


def future_ahead(future_cov: Tensor, n_origins: int, horizon: int) -> Tensor:
    """Future covariates of steps ``t+1 .. t+horizon`` for every origin ``t = 0 .. n_origins-1``.

    Args:
        future_cov: (B, L, F) with ``L >= n_origins + horizon``.
    Returns:
        (B, n_origins, horizon * F), step-major (the F covariates of step t+1, then of t+2, ...).
    """
    B, L, Fc = future_cov.shape
    if L < n_origins + horizon:
        raise ValueError(f"future_cov has {L} steps; {n_origins} origins x horizon {horizon} need {n_origins + horizon}")
    if Fc == 0:
        return future_cov.new_zeros(B, n_origins, 0)
    win = future_cov[:, 1:n_origins + horizon].unfold(1, horizon, 1)  # (B, n_origins, F, horizon)
    return win.transpose(-1, -2).reshape(B, n_origins, horizon * Fc)


def monotone_quantiles(raw: Tensor, anchor: int) -> Tensor:
    """Raw head outputs (..., Q) -> non-decreasing quantiles: ``raw[anchor]`` is kept, quantiles above
    it add cumulative softplus increments, quantiles below subtract them."""
    Q = raw.shape[-1]
    if Q == 1:
        return raw
    mid = raw[..., anchor:anchor + 1]
    parts = []
    if anchor > 0:
        inc = F.softplus(raw[..., :anchor]).flip(-1).cumsum(-1).flip(-1)  # inc[i] = sum_{j>=i} sp(raw_j)
        parts.append(mid - inc)
    parts.append(mid)
    if anchor < Q - 1:
        parts.append(mid + F.softplus(raw[..., anchor + 1:]).cumsum(-1))
    return torch.cat(parts, dim=-1)


class GRUNetBase(nn.Module):
    """What both networks have: target counts, quantile levels, the baseline they start from, and
    the helpers that run the GRU and the head. Subclasses create ``input_proj``, ``gru``, ``head``
    and ``head_dropout``.

    Args:
        n_targets: C. horizon: steps forecast from an origin.
        quantiles: sorted levels in (0, 1), or None / empty for a point forecast (Q = 1).
        n_net_targets: targets per network row (1 when channel-independent, else C).
        baseline: the naive forecast the network's output is added to (:mod:`forecaster.baseline`):
            ``blend`` (the weights of the batch's ``baseline`` entry), ``seasonal``, ``last``,
            ``mean``, or ``none`` (the network alone). With a baseline the head's last layer starts
            at zero, so the untrained model forecasts the baseline exactly.
        season_length, context_length: m and T of the baseline.
    """

    carries_state = False  # whether it streams by carrying a recurrent state (step_, decode)

    def __init__(self, n_targets: int, horizon: int, quantiles: Sequence[float] | None, n_net_targets: int,
                 baseline: str = "none", season_length: int = 1, context_length: int | None = None) -> None:
        super().__init__()
        for name, v in (("n_targets", n_targets), ("horizon", horizon)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if baseline not in BASELINES:
            raise ValueError(f"baseline={baseline!r}: choose one of {list(BASELINES)}")
        if baseline != "none" and context_length is None:
            raise ValueError("a baseline needs the context_length (the look-back it may use)")
        self.baseline = baseline
        self.season_length = max(1, int(season_length))
        self.context_length = None if context_length is None else int(context_length)
        # Chosen on validation by the Lightning module, saved in checkpoints: whether the network's point
        # forecast is used (True) or the plain baseline `fallback` (an index into BASELINES) with the
        # network's quantile spread around it (False). Training always uses the network.
        self.register_buffer("use_network", torch.tensor(True))
        self.register_buffer("fallback", torch.tensor(BASELINES.index(baseline), dtype=torch.int64))
        self.n_targets, self.horizon, self.n_net_targets = int(n_targets), int(horizon), int(n_net_targets)
        qs = [float(q) for q in (quantiles or [])]
        if any(not 0.0 < q < 1.0 for q in qs) or qs != sorted(qs) or len(set(qs)) != len(qs):
            raise ValueError(f"quantiles must be distinct, sorted and in (0, 1), got {list(quantiles or [])}")
        self.quantiles = qs
        self.n_quantiles = max(1, len(qs))
        # the quantile predicted directly (the point forecast): the one closest to the median
        self.anchor = min(range(len(qs)), key=lambda i: abs(qs[i] - 0.5)) if qs else 0

    @property
    def state_shape(self) -> tuple[int, int]:
        """(layers, H) of the state table a stream keeps per series (``init_state``)."""
        return self.gru.num_layers, self.gru.hidden_size

    @staticmethod
    def make_gru(d_model: int, hidden_size: int, num_layers: int, dropout: float, reset_after: bool,
                 backend: str) -> FusedGRU:
        return FusedGRU(d_model, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout,
                        reset_after=reset_after, backend=backend)

    def make_head(self, head_in: int, head_hidden: int, head_out: int) -> nn.Module:
        if head_hidden:
            head = nn.Sequential(nn.Linear(head_in, head_hidden), nn.GELU(), nn.Linear(head_hidden, head_out))
        else:
            head = nn.Linear(head_in, head_out)
        if self.baseline != "none":  # the untrained residual is zero: the forecast starts at the baseline
            last = head[-1] if isinstance(head, nn.Sequential) else head
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        return head

    def add_baseline(self, y: Tensor, target: Tensor, observed: Tensor, params: Tensor | None,
                     origins: int | None = None, mode: str | None = None, plain: bool = False) -> Tensor:
        """Add the baseline of the context (target/observed (B, T, C), scaled) to the network's
        forecasts y ((B, h, C, Q) from the last origin, or (B, n, h, C, Q) from the first n origins).

        ``mode`` None: the model's own choice (its ``baseline`` plus the network; in eval mode with
        ``use_network`` off, the plain ``fallback`` baseline with the network's quantiles re-centred on
        it). Otherwise that baseline, plus the network (``plain`` False) or re-centred on it
        (``plain`` True): the candidates the validation compares."""
        return self._add_base(y, params, mode, plain, target.dtype, lambda p: baseline_forecast(
            target, observed, p, self.horizon, self.season_length, self.context_length, origins))

    def add_baseline_from_summary(self, y: Tensor, summary: tuple[Tensor, ...], params: Tensor | None,
                                  mode: str | None = None, plain: bool = False) -> Tensor:
        """:meth:`add_baseline` for the last origin, from a summary of the look-back instead of the
        look-back: ``summary`` = (last, has_last, mean, has_mean, season, season_obs) as
        :func:`~forecaster.baseline.baseline_from_summary` takes them (the stream keeps these in
        O(1) per observation and reads ``summary_width(params, h, m, T)`` <= T steps per forecast). y: (B, h, C, Q)."""
        return self._add_base(y, params, mode, plain, summary[0].dtype, lambda p: baseline_from_summary(
            *summary, p, self.horizon, self.season_length, self.context_length))

    def _add_base(self, y: Tensor, params: Tensor | None, mode: str | None, plain: bool, dtype: torch.dtype,
                  base_of) -> Tensor:
        if self.baseline == "none":
            return y
        if params is None:
            raise ValueError(f"baseline={self.baseline!r} needs the batch's 'baseline' entry (B, C, 2K+7) (the "
                             "spec's per-series weights; TimeSeriesDataModule batches carry it), or build the "
                             "model with baseline='none'")
        if mode is None:
            plain = not (self.training or bool(self.use_network))
            mode = BASELINES[int(self.fallback)] if plain else self.baseline
        if plain:  # the point forecast is the baseline; the quantiles keep the network's spread
            y = y - y[..., self.anchor:self.anchor + 1]
        base = base_of(baseline_params(mode, params.to(dtype), self.horizon))
        return y + base.unsqueeze(-1).to(y.dtype)

    def _gru(self, z: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w = self.gru.weight_ih_l0
        if z.dtype != w.dtype and not torch.is_autocast_enabled(z.device.type):
            z = z.to(w.dtype)
        return self.gru(z, hx)

    def _head(self, z: Tensor) -> Tensor:
        """Head input (..., head_in) -> dropout, head, non-crossing quantiles: (..., steps, C_net, Q)."""
        if not torch.is_autocast_enabled(z.device.type):
            z = z.to(next(self.head.parameters()).dtype)
        raw = self.head(self.head_dropout(z)).float()
        raw = raw.reshape(*z.shape[:-1], -1, self.n_net_targets, self.n_quantiles)
        return monotone_quantiles(raw, self.anchor)
