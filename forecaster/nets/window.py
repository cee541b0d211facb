"""``WindowForecastNet``: the window model for long look-backs (SegRNN's design with a GRU), which
forecasts from a whole context window at once.

Options (``configs/etth1.yaml`` turns them all on):

* ``channel_independent``: each target is its own univariate series, all sharing the weights
  ((B, T, C) -> (B*C, T, 1) inside the net). Only without past/future covariates (calendar
  features are future covariates: use ``calendar_features: none``).
* ``revin``: per window and target, :class:`~forecaster.nets.revin.RevIN` normalisation of the
  context, undone on every forecast and quantile.
* ``segment_length`` w: the context is cut into ``context_length / w`` segments of w steps; each
  segment's features (step-major, ``w * n_in``) go through ``Linear(w * n_in, d_model)`` + ReLU
  into ONE GRU step (SegRNN). Needs ``context_length % w == 0``. w = 1 is one GRU step per step.
* ``decoder``: ``"last"`` (the head on the final state; with ``head_hidden: 0`` SegRNN's "RMF"
  decoder) or ``"pmf"`` (SegRNN's parallel multi-step decoder: the horizon is cut into
  ``horizon / w`` segments of w steps; segment m's input is a learned position embedding,
  concatenated with a learned embedding of the target's channel when ``channel_independent``; ONE
  step of the same GRU from the final state, for all segments at once, then dropout and the head
  ``Linear(hidden, w * C * Q)`` give that segment's w steps. Needs ``horizon % w == 0`` and no
  future covariates).
* ``head_dropout``: dropout in front of the head.

Training and evaluation use the window's last origin only.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from forecaster.nets.common import GRUNetBase, features
from forecaster.nets.revin import RevIN, RevinMode

__all__ = ["WindowForecastNet", "WindowDecoder"]

WindowDecoder = Literal["last", "pmf"]


class WindowForecastNet(GRUNetBase):
    """Optional RevIN -> (channel-independent rows) -> segments -> FusedGRU -> last-state or PMF
    decoder (see the module docstring).

    Args:
        n_targets: C. n_past_covariates: P. n_future_covariates: F (user + calendar).
        horizon: steps forecast. context_length: the window's look-back (checked against segments).
        hidden_size, num_layers, dropout, reset_after, backend: of ``kernels.FusedGRU``.
        d_model: width of the input projection; head_hidden: hidden width of the head (0: linear).
        quantiles: sorted levels in (0, 1), or None / empty for a point forecast (Q = 1).
        channel_independent, revin, segment_length, decoder, head_dropout: see the module docstring.
        baseline, season_length: the naive forecast the output is added to
            (:class:`~forecaster.nets.common.GRUNetBase`); with RevIN it takes the place of RevIN's
            location (the output is ``baseline + scale * network``).
    """

    trains_on_every_origin = False

    def __init__(
        self,
        n_targets: int,
        n_past_covariates: int,
        n_future_covariates: int,
        horizon: int,
        context_length: int | None = None,
        hidden_size: int = 64,
        num_layers: int = 1,
        d_model: int = 32,
        head_hidden: int = 128,
        dropout: float = 0.0,
        reset_after: bool = True,
        backend: str = "auto",
        quantiles: Sequence[float] | None = None,
        channel_independent: bool = False,
        revin: RevinMode = "none",
        segment_length: int = 1,
        decoder: WindowDecoder = "last",
        head_dropout: float = 0.0,
        baseline: str = "none",
        season_length: int = 1,
    ) -> None:
        n_past, n_future = int(n_past_covariates), int(n_future_covariates)
        check_window_options(n_past, n_future, channel_independent, revin, segment_length, decoder, head_dropout,
                             context_length, horizon)
        super().__init__(n_targets, horizon, quantiles, 1 if channel_independent else n_targets, baseline,
                         season_length, context_length)
        self.n_past, self.n_future = n_past, n_future
        self.channel_independent, self.segment_length, self.decoder = bool(channel_independent), int(segment_length), decoder
        self.revin = RevIN(revin)
        self.n_in = 2 * self.n_net_targets + self.n_past + self.n_future
        w = self.segment_length
        if w > 1:  # SegRNN: one segment of w steps -> one GRU input
            self.input_proj = nn.Sequential(nn.Linear(self.n_in * w, d_model), nn.ReLU())
        else:
            self.input_proj = nn.Sequential(nn.Linear(self.n_in, d_model), nn.GELU())
        self.gru = self.make_gru(d_model, hidden_size, num_layers, dropout, reset_after, backend)
        if decoder == "pmf":  # one decoder step per output segment of w steps
            d_chan = d_model // 2 if self.channel_independent else 0
            # N(0, 1) like SegRNN's torch.randn; the GRU input of segment m (of channel c)
            self.pos_emb = nn.Parameter(torch.randn(self.horizon // w, d_model - d_chan))
            self.channel_emb = nn.Parameter(torch.randn(self.n_targets, d_chan)) if d_chan else None
            head_in, head_out = hidden_size, w * self.n_net_targets * self.n_quantiles
        else:
            head_in = hidden_size + self.horizon * self.n_future
            head_out = self.horizon * self.n_net_targets * self.n_quantiles
        self.head = self.make_head(head_in, head_hidden, head_out)
        self.head_dropout = nn.Dropout(float(head_dropout)) if head_dropout else nn.Identity()

    def _rows(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor, T: int):
        """Context (B, T, C) -> the rows the network sees (RevIN-normalised, and (B*C, T, 1) when
        channel-independent), past_cov (rows, T, P), future_cov (rows, L, F), and the RevIN
        (loc, scale) per (B, C) (None without RevIN)."""
        target, observed, past_cov = target[:, :T], observed[:, :T], past_cov[:, :T]
        target, base = self.revin.normalize(target, observed)
        if self.channel_independent:
            B, _, C = target.shape
            target = target.permute(0, 2, 1).reshape(B * C, T, 1)
            observed = observed.permute(0, 2, 1).reshape(B * C, T, 1)
            # no covariates with channel_independent (checked in __init__): empty tensors of B*C rows
            past_cov = past_cov.new_zeros(B * C, T, 0)
            future_cov = future_cov.new_zeros(B * C, future_cov.shape[1], 0)
        return target, observed, past_cov, future_cov, base

    def decode_segments(self, hn: Tensor) -> Tensor:
        """``decoder="pmf"``: final GRU states hn (num_layers, R, H) of R network rows (B*C when
        channel-independent, row r being channel r % C) -> forecasts (R, horizon, C_net, Q).

        All ``horizon / w`` output segments advance ONE GRU step from hn at once (R * horizon/w rows)."""
        L_, R, H_ = hn.shape
        M = self.pos_emb.shape[0]
        inp = self.pos_emb.unsqueeze(0).expand(R, M, -1)
        if self.channel_emb is not None:
            chan = self.channel_emb.repeat(R // self.n_targets, 1)  # row r -> channel r % C
            inp = torch.cat([inp, chan.unsqueeze(1).expand(R, M, -1)], dim=-1)
        hx = hn.unsqueeze(2).expand(L_, R, M, H_).reshape(L_, R * M, H_)
        out, _ = self._gru(inp.reshape(R * M, 1, -1), hx)
        y = self._head(out[:, 0].float())  # (R*M, w, C_net, Q)
        return y.reshape(R, self.horizon, self.n_net_targets, self.n_quantiles)  # segment-major, then step

    def forecast_last(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor,
                      context_length: int, baseline: Tensor | None = None, residual: bool = False) -> Tensor:
        """The forecast of a window's last ``horizon`` steps from its first ``context_length``:
        target/observed (B, L, C), past_cov (B, L, P), future_cov (B, L, F), baseline weights
        (B, C, 2K+7) -> (B, horizon, C, Q) (``residual``: the network's part, before the baseline
        is added; with a baseline only)."""
        T, w = int(context_length), self.segment_length
        if T % w:
            raise ValueError(f"context_length={T} must be a multiple of segment_length={w}")
        B = target.shape[0]
        tg, ob, pc, fc, base = self._rows(target, observed, past_cov, future_cov, T)
        x = features(tg, ob, pc, fc[:, :T])
        if w > 1:  # (R, T, n_in) -> (R, T/w, w*n_in), step-major inside a segment
            x = x.reshape(x.shape[0], T // w, w * x.shape[-1])
        out, hn = self._gru(self.input_proj(x))
        if self.decoder == "pmf":
            y = self.decode_segments(hn)
        else:
            fa = fc[:, T:T + self.horizon].reshape(fc.shape[0], -1)
            y = self._head(torch.cat([out[:, -1].float(), fa.float()], dim=-1))
        if self.channel_independent:  # (B*C, horizon, 1, Q) -> (B, horizon, C, Q)
            y = y.reshape(B, self.n_targets, *y.shape[1:]).squeeze(-2).movedim(1, -2)
        if self.baseline == "none":
            return self.revin.denormalize(y, base)
        if base is not None:  # RevIN's scale stays; the baseline takes the place of its location
            y = y * base[1].view(B, 1, -1, 1).to(y.dtype)
        return y if residual else self.add_baseline(y, target[:, :T], observed[:, :T], baseline)

    forward = forecast_last


def check_window_options(n_past: int, n_future: int, channel_independent: bool, revin: str, segment_length: int,
                         decoder: str, head_dropout: float, context_length: int | None = None,
                         horizon: int | None = None) -> None:
    """Raise ValueError (one clear sentence) for an invalid window-model setting."""
    if revin not in ("none", "last", "mean", "std"):
        raise ValueError(f"revin={revin!r}: choose one of ['none', 'last', 'mean', 'std']")
    if decoder not in ("last", "pmf"):
        raise ValueError(f"decoder={decoder!r}: the window model decodes with 'last' or 'pmf'")
    if not 0.0 <= float(head_dropout) < 1.0:
        raise ValueError(f"head_dropout={head_dropout!r}: must be in [0, 1)")
    if int(segment_length) < 1:
        raise ValueError(f"segment_length={segment_length!r}: must be >= 1")
    if channel_independent and (n_past or n_future):
        raise ValueError(
            f"channel_independent=True needs a model without covariates, but it has n_past_covariates={n_past} and "
            f"n_future_covariates={n_future} (calendar features count as future covariates: set "
            "calendar_features: none and no past/future covariate columns)")
    if decoder == "pmf" and n_future:
        raise ValueError(f"decoder='pmf' reads no future covariates, but the model has n_future_covariates={n_future} "
                         "(calendar features count: set calendar_features: none), or use decoder='last'")
    if decoder == "pmf" and horizon is not None and int(horizon) % int(segment_length):
        raise ValueError(f"decoder='pmf' cuts the horizon into segments of segment_length={segment_length} steps: "
                         f"horizon={horizon} must be a multiple of it")
    if context_length is not None and int(context_length) % int(segment_length):
        raise ValueError(f"context_length={context_length} must be a multiple of segment_length={segment_length}")
