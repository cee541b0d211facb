"""``GRUForecastNet``: the forecasting network as a plain ``nn.Module`` (no training logic).

Pieces, each usable on its own so the streaming predictor can run one step at a time:

* :meth:`GRUForecastNet.features` ``(target, observed, past_cov, future_cov) -> x``: the raw input
  of each step, ``cat(target * observed, observed, past_cov, future_cov)`` of the SAME step
  (future_cov holds the user's known-future covariates then the calendar features of that step).
* :attr:`GRUForecastNet.input_proj`: ``Linear(n_in, d_model)`` + GELU.
* :attr:`GRUForecastNet.gru`: ``kernels.FusedGRU(d_model, hidden_size, num_layers, batch_first=True)``.
* :meth:`GRUForecastNet.decode` ``(h, future_ahead) -> (..., horizon, C, Q)``: an MLP head on the
  GRU output state ``h_t`` concatenated with the future covariates of steps ``t+1 .. t+horizon``
  (``future_ahead``, (..., horizon * F), step-major). Quantiles never cross: the middle quantile
  is predicted directly, the others as cumulative softplus increments away from it.

Shapes: B batch, T steps, C targets, P past covariates, F future covariates (user + calendar),
Q quantiles (1 for a point forecast). Everything is in the data module's scaled units.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kernels import FusedGRU

__all__ = ["GRUForecastNet", "future_ahead", "monotone_quantiles"]


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


class GRUForecastNet(nn.Module):
    """Input projection -> FusedGRU -> horizon head (see the module docstring).

    Args:
        n_targets: C. n_past_covariates: P. n_future_covariates: F (user + calendar).
        horizon: steps forecast from each origin.
        hidden_size, num_layers, dropout, reset_after, backend: of ``kernels.FusedGRU``.
        d_model: width of the input projection (the GRU's input size).
        head_hidden: hidden width of the head MLP (0: a single linear layer).
        quantiles: sorted levels in (0, 1), or None / empty for a point forecast (Q = 1).
    """

    def __init__(
        self,
        n_targets: int,
        n_past_covariates: int,
        n_future_covariates: int,
        horizon: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        d_model: int = 32,
        head_hidden: int = 128,
        dropout: float = 0.0,
        reset_after: bool = True,
        backend: str = "auto",
        quantiles: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("n_targets", n_targets), ("horizon", horizon)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.n_targets, self.n_past, self.n_future = int(n_targets), int(n_past_covariates), int(n_future_covariates)
        self.horizon = int(horizon)
        qs = [float(q) for q in (quantiles or [])]
        if any(not 0.0 < q < 1.0 for q in qs) or qs != sorted(qs) or len(set(qs)) != len(qs):
            raise ValueError(f"quantiles must be distinct, sorted and in (0, 1), got {list(quantiles or [])}")
        self.quantiles = qs
        self.n_quantiles = max(1, len(qs))
        # the quantile predicted directly (the point forecast): the one closest to the median
        self.anchor = min(range(len(qs)), key=lambda i: abs(qs[i] - 0.5)) if qs else 0
        self.n_in = 2 * self.n_targets + self.n_past + self.n_future
        self.input_proj = nn.Sequential(nn.Linear(self.n_in, d_model), nn.GELU())
        self.gru = FusedGRU(d_model, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout,
                            reset_after=reset_after, backend=backend)
        head_in = hidden_size + self.horizon * self.n_future
        head_out = self.horizon * self.n_targets * self.n_quantiles
        if head_hidden:
            self.head = nn.Sequential(nn.Linear(head_in, head_hidden), nn.GELU(), nn.Linear(head_hidden, head_out))
        else:
            self.head = nn.Linear(head_in, head_out)

    # ---- pieces ----

    def features(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor) -> Tensor:
        """(..., C), (..., C), (..., P), (..., F) of the same step(s) -> (..., n_in)."""
        return torch.cat([target * observed, observed, past_cov, future_cov], dim=-1)

    def encode(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Features (B, T, n_in) -> GRU output states (B, T, H) and final states (num_layers, B, H)."""
        z = self.input_proj(x)
        w = self.gru.weight_ih_l0
        if z.dtype != w.dtype and not torch.is_autocast_enabled(z.device.type):
            z = z.to(w.dtype)
        return self.gru(z, hx)

    def decode(self, h: Tensor, future_ahead: Tensor) -> Tensor:
        """GRU output state(s) h (..., H) and the future covariates of the next ``horizon`` steps
        (..., horizon * F) -> forecasts (..., horizon, C, Q), non-crossing along Q."""
        z = torch.cat([h.float(), future_ahead.float()], dim=-1)
        if not torch.is_autocast_enabled(z.device.type):
            z = z.to(next(self.head.parameters()).dtype)
        raw = self.head(z).float()
        raw = raw.reshape(*h.shape[:-1], self.horizon, self.n_targets, self.n_quantiles)
        return monotone_quantiles(raw, self.anchor)

    @torch.no_grad()
    def step_(self, state: Tensor, idx: Tensor, target: Tensor, observed: Tensor, past_cov: Tensor,
              future_cov: Tensor, mask: Tensor | None = None) -> Tensor:
        """Streaming: advance rows ``idx`` of a (num_layers, N, H) float32 state table by one step.

        target/observed (M, C), past_cov (M, P), future_cov (M, F) are this step's scaled values.
        Returns the new last-layer states (M, H); feed them to :meth:`decode` with the next
        ``horizon`` steps' future covariates to forecast from this step."""
        x = self.input_proj(self.features(target, observed, past_cov, future_cov))
        return self.gru.step_(state, idx, x.to(self.gru.weight_ih_l0.dtype), mask=mask)

    def init_state(self, n: int, device=None) -> Tensor:
        """A zero state table (num_layers, n, H), float32, for :meth:`step_`."""
        return torch.zeros(self.gru.num_layers, n, self.gru.hidden_size, device=device)

    # ---- whole windows ----

    def forward(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor,
                context_length: int) -> Tensor:
        """Forking sequences over a window of L = context_length + horizon steps.

        The GRU runs over steps 0 .. context_length-1 (each step's input from that step only);
        origin t forecasts steps t+1 .. t+horizon. Returns (B, context_length, horizon, C, Q)."""
        T = int(context_length)
        if target.shape[1] < T + self.horizon:
            raise ValueError(f"window has {target.shape[1]} steps, need context_length + horizon = {T + self.horizon}")
        x = self.features(target[:, :T], observed[:, :T], past_cov[:, :T], future_cov[:, :T])
        out, _ = self.encode(x)
        return self.decode(out, future_ahead(future_cov, T, self.horizon))

    def forecast_last(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor,
                      context_length: int) -> Tensor:
        """Only the last origin (t = context_length-1): (B, horizon, C, Q), cheaper than forward."""
        T = int(context_length)
        x = self.features(target[:, :T], observed[:, :T], past_cov[:, :T], future_cov[:, :T])
        out, _ = self.encode(x)
        fa = future_cov[:, T:T + self.horizon].reshape(target.shape[0], -1)
        return self.decode(out[:, -1], fa)
