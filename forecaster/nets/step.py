"""``StepForecastNet``: the per-step model, which streams one observation at a time.

Each step's features go through an input projection (``Linear`` + GELU) into a
:class:`kernels.FusedGRU`: per target, with ``inputs="relative"`` (the Lightning module's default)
the change since the previous observation and the deviation from the look-back's mean
(:func:`~forecaster.nets.common.relative_features`), with ``inputs="level"`` the scaled value; then
the observed masks, the past covariates and the future covariates of that step; from the GRU's output state
``h_t`` at any origin ``t``, a head MLP forecasts steps ``t+1 .. t+horizon`` from ``h_t``
concatenated with those steps' future covariates. Training forks: one GRU pass over the context
and every origin forecasts (:meth:`StepForecastNet.forward`). Streaming keeps ``h_t`` per series
and advances it with :meth:`StepForecastNet.step_`.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from forecaster.nets.common import GRUNetBase, future_ahead, relative_features

__all__ = ["StepForecastNet"]


class StepForecastNet(GRUNetBase):
    """Input projection -> FusedGRU -> horizon head, per step.

    Args:
        n_targets: C. n_past_covariates: P. n_future_covariates: F (user + calendar).
        horizon: steps forecast from each origin.
        hidden_size, num_layers, dropout, reset_after, backend: of ``kernels.FusedGRU``.
        d_model: width of the input projection (the GRU's input size).
        head_hidden: hidden width of the head MLP (0: a single linear layer).
        quantiles: sorted levels in (0, 1), or None / empty for a point forecast (Q = 1).
        head_dropout: dropout in front of the head.
        baseline, season_length, context_length: the naive forecast the output is added to
            (:class:`~forecaster.nets.common.GRUNetBase`); ``context_length`` is also the look-back of
            the relative inputs.
        inputs: ``"relative"`` (shift-invariant: change and deviation from the look-back's mean, 2C
            channels) or ``"level"`` (the scaled values, C channels).
    """

    trains_on_every_origin = True
    carries_state = True

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
        head_dropout: float = 0.0,
        baseline: str = "none",
        season_length: int = 1,
        context_length: int | None = None,
        inputs: Literal["relative", "level"] = "level",
    ) -> None:
        super().__init__(n_targets, horizon, quantiles, n_targets, baseline, season_length, context_length)
        if not 0.0 <= float(head_dropout) < 1.0:
            raise ValueError(f"head_dropout={head_dropout!r}: must be in [0, 1)")
        if inputs not in ("relative", "level"):
            raise ValueError(f"inputs={inputs!r}: choose 'relative' or 'level'")
        if inputs == "relative" and context_length is None:
            raise ValueError("inputs='relative' needs the context_length (the look-back of the mean)")
        self.inputs = inputs
        self.n_past, self.n_future = int(n_past_covariates), int(n_future_covariates)
        n_value = 2 * self.n_targets if inputs == "relative" else self.n_targets
        self.n_in = n_value + self.n_targets + self.n_past + self.n_future
        self.input_proj = nn.Sequential(nn.Linear(self.n_in, d_model), nn.GELU())
        self.gru = self.make_gru(d_model, hidden_size, num_layers, dropout, reset_after, backend)
        self.head = self.make_head(hidden_size + self.horizon * self.n_future, head_hidden,
                                   self.horizon * self.n_targets * self.n_quantiles)
        # a separate module so the default model's state_dict keys stay as they were
        self.head_dropout = nn.Dropout(float(head_dropout)) if head_dropout else nn.Identity()

    def features(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor) -> Tensor:
        """The GRU's inputs of the steps of a window (target/observed (B, T, C), past_cov (B, T, P),
        future_cov (B, T, F), from the window's first step) -> (B, T, n_in)."""
        values = relative_features(target, observed, self.context_length) if self.inputs == "relative" \
            else target * observed
        return torch.cat([values, observed, past_cov, future_cov], dim=-1)

    def encode(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Features (B, T, n_in) -> GRU output states (B, T, H) and final states (num_layers, B, H)."""
        return self._gru(self.input_proj(x), hx)

    def decode(self, h: Tensor, future_ahead: Tensor) -> Tensor:
        """GRU output state(s) h (..., H) and the future covariates of the next ``horizon`` steps
        (..., horizon * F) -> the network's forecasts (..., horizon, C, Q), non-crossing along Q,
        before the baseline is added (:meth:`add_baseline`)."""
        return self._head(torch.cat([h.float(), future_ahead.float()], dim=-1))

    def forward(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor,
                context_length: int, baseline: Tensor | None = None, residual: bool = False) -> Tensor:
        """Forking sequences over a window of L = context_length + horizon steps.

        The GRU runs over steps 0 .. context_length-1 (each step's input from that step only);
        origin t forecasts steps t+1 .. t+horizon (plus the baseline from steps 0..t; ``baseline``:
        the batch's (B, C, 2K+7) weights). Returns (B, context_length, horizon, C, Q)
        (``residual``: the network's part, before the baseline is added)."""
        T = int(context_length)
        if target.shape[1] < T + self.horizon:
            raise ValueError(f"window has {target.shape[1]} steps, need context_length + horizon = {T + self.horizon}")
        x = self.features(target[:, :T], observed[:, :T], past_cov[:, :T], future_cov[:, :T])
        out, _ = self.encode(x)
        y = self.decode(out, future_ahead(future_cov, T, self.horizon))
        return y if residual else self.add_baseline(y, target[:, :T], observed[:, :T], baseline, origins=T)

    def forecast_last(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor,
                      context_length: int, baseline: Tensor | None = None, residual: bool = False) -> Tensor:
        """Only the last origin (t = context_length-1): (B, horizon, C, Q), cheaper than forward
        (``residual``: the network's part, before the baseline is added)."""
        T = int(context_length)
        x = self.features(target[:, :T], observed[:, :T], past_cov[:, :T], future_cov[:, :T])
        out, _ = self.encode(x)
        fa = future_cov[:, T:T + self.horizon].reshape(future_cov.shape[0], -1)
        y = self.decode(out[:, -1], fa)
        return y if residual else self.add_baseline(y, target[:, :T], observed[:, :T], baseline)

    # ---- streaming ----

    @torch.no_grad()
    def step_(self, state: Tensor, idx: Tensor, values: Tensor, observed: Tensor, past_cov: Tensor,
              future_cov: Tensor, mask: Tensor | None = None, assume_unique: bool = False) -> Tensor:
        """Advance rows ``idx`` (M,) of a (num_layers, N, H) float32 state table by one step
        (``assume_unique``: skip the check that ``idx`` has no repeats, a device sync on CUDA).

        values: this step's value inputs, (M, C) scaled targets for ``inputs="level"``, (M, 2C) from
        :func:`~forecaster.nets.common.relative_step` for ``"relative"``; observed (M, C), past_cov
        (M, P), future_cov (M, F). Returns the new last-layer states (M, H); feed them to
        :meth:`decode` with the next ``horizon`` steps' future covariates to forecast from this
        step."""
        if self.inputs == "level":
            values = values * observed
        x = self.input_proj(torch.cat([values, observed, past_cov, future_cov], dim=-1))
        return self.gru.step_(state, idx, x.to(self.gru.weight_ih_l0.dtype), mask=mask, assume_unique=assume_unique)

    def output_state(self, state: Tensor, idx: Tensor) -> Tensor:
        """What :meth:`decode` reads of rows ``idx`` (M,) of a state table: the last layer, (M, H)."""
        return state[-1, idx]

    def init_state(self, n: int, device=None) -> Tensor:
        """A zero state table (num_layers, n, H), float32, for :meth:`step_`."""
        return torch.zeros(self.gru.num_layers, n, self.gru.hidden_size, device=device)
