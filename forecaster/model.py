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

Options for long look-backs (defaults keep the per-step forking model above; the ETTh1 "SegGRU"
design of ``configs/etth1.yaml`` turns them all on):

* ``channel_independent``: each target is its own univariate series, all sharing the weights
  ((B, T, C) -> (B*C, T, 1) inside the net). Only without past/future covariates (calendar
  features are future covariates: use ``calendar_features: none``).
* ``revin``: ``"last"`` / ``"mean"``: per window and target, subtract the context's last observed
  value / mean of observed values before the network and add it back to every forecast (and
  quantile). ``"std"``: RevIN's instance normalisation without the affine part: subtract the mean
  and divide by ``sqrt(var + 1e-5)`` of the observed context values, then multiply every forecast
  by that scale and add the mean back. ``"last"`` and ``"mean"`` make the forecast shift-equivariant,
  ``"std"`` shift- and scale-equivariant (up to the 1e-5). Needs a final-state decoder
  (``"last"`` or ``"pmf"``).
* ``segment_length`` w > 1: the context is cut into ``context_length / w`` segments of w steps;
  each segment's features (step-major, ``w * n_in``) go through ``Linear(w * n_in, d_model)`` +
  ReLU into ONE GRU step (SegRNN). Needs ``context_length % w == 0`` and a final-state decoder.
* ``decoder``: ``"forking"`` (the head on every origin's state, trained on every origin from
  ``min_origin``), ``"last"`` (the same head on the final state only, trained on the last origin
  only: the "RMF" decoder of SegRNN with ``head_hidden: 0``) or ``"pmf"`` (SegRNN's parallel
  multi-step decoder: the horizon is cut into ``horizon / w`` segments of w steps; segment m's
  input is a learned position embedding, concatenated with a learned embedding of the target's
  channel when ``channel_independent``; ONE step of the same GRU from the final state, for all
  segments at once, then dropout and the head ``Linear(hidden, w * C * Q)`` give that segment's
  w steps. Needs ``horizon % w == 0`` and no future covariates; trained on the last origin).
* ``head_dropout``: dropout in front of the head (every decoder).

Models with any of these options on cannot be stepped one time step at a time (:attr:`streamable`
is False; :meth:`step_` raises).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kernels import FusedGRU

__all__ = ["GRUForecastNet", "future_ahead", "monotone_quantiles", "REVIN_MODES", "DECODERS"]

REVIN_MODES = ("none", "last", "mean", "std")
REVIN_EPS = 1e-5  # added to the window variance before the square root (as in RevIN, Kim et al. 2022)
DECODERS = ("forking", "last", "pmf")


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
        channel_independent, revin, segment_length, decoder, head_dropout: see the module docstring.
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
        channel_independent: bool = False,
        revin: str = "none",
        segment_length: int = 1,
        decoder: str = "forking",
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, v in (("n_targets", n_targets), ("horizon", horizon), ("segment_length", segment_length)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.n_targets, self.n_past, self.n_future = int(n_targets), int(n_past_covariates), int(n_future_covariates)
        self.horizon = int(horizon)
        check_options(self.n_past, self.n_future, channel_independent, revin, segment_length, decoder, head_dropout,
                      horizon=self.horizon)
        self.channel_independent, self.revin = bool(channel_independent), str(revin)
        self.segment_length, self.decoder = int(segment_length), str(decoder)
        # targets the network itself sees per row: 1 when channel-independent (rows are B*C)
        self.n_net_targets = 1 if self.channel_independent else self.n_targets
        qs = [float(q) for q in (quantiles or [])]
        if any(not 0.0 < q < 1.0 for q in qs) or qs != sorted(qs) or len(set(qs)) != len(qs):
            raise ValueError(f"quantiles must be distinct, sorted and in (0, 1), got {list(quantiles or [])}")
        self.quantiles = qs
        self.n_quantiles = max(1, len(qs))
        # the quantile predicted directly (the point forecast): the one closest to the median
        self.anchor = min(range(len(qs)), key=lambda i: abs(qs[i] - 0.5)) if qs else 0
        self.n_in = 2 * self.n_net_targets + self.n_past + self.n_future
        if self.segment_length > 1:  # SegRNN: one segment of w steps -> one GRU input
            self.input_proj = nn.Sequential(nn.Linear(self.n_in * self.segment_length, d_model), nn.ReLU())
        else:
            self.input_proj = nn.Sequential(nn.Linear(self.n_in, d_model), nn.GELU())
        self.gru = FusedGRU(d_model, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout,
                            reset_after=reset_after, backend=backend)
        head_in = hidden_size + self.horizon * self.n_future
        head_out = self.horizon * self.n_net_targets * self.n_quantiles
        if self.decoder == "pmf":  # one decoder step per output segment of w steps
            n_seg = self.horizon // self.segment_length
            d_chan = d_model // 2 if self.channel_independent else 0
            # N(0, 1) like SegRNN's torch.randn; the GRU input of segment m (of channel c)
            self.pos_emb = nn.Parameter(torch.randn(n_seg, d_model - d_chan))
            self.channel_emb = nn.Parameter(torch.randn(self.n_targets, d_chan)) if d_chan else None
            head_in = hidden_size
            head_out = self.segment_length * self.n_net_targets * self.n_quantiles
        if head_hidden:
            self.head = nn.Sequential(nn.Linear(head_in, head_hidden), nn.GELU(), nn.Linear(head_hidden, head_out))
        else:
            self.head = nn.Linear(head_in, head_out)
        # a separate module so the default model's state_dict keys stay as they were
        self.head_dropout = nn.Dropout(float(head_dropout)) if head_dropout else nn.Identity()

    @property
    def streamable(self) -> bool:
        """True for the per-step forking model the streaming predictor can advance one step at a time."""
        return not (self.channel_independent or self.revin != "none" or self.segment_length > 1
                    or self.decoder != "forking")

    # ---- pieces ----

    def features(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor) -> Tensor:
        """(..., C), (..., C), (..., P), (..., F) of the same step(s) -> (..., n_in)."""
        return torch.cat([target * observed, observed, past_cov, future_cov], dim=-1)

    def encode(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Features (B, T, n_in) -> GRU output states (B, T, H) and final states (num_layers, B, H)."""
        return self._gru(self.input_proj(x), hx)

    def _gru(self, z: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w = self.gru.weight_ih_l0
        if z.dtype != w.dtype and not torch.is_autocast_enabled(z.device.type):
            z = z.to(w.dtype)
        return self.gru(z, hx)

    def decode(self, h: Tensor, future_ahead: Tensor) -> Tensor:
        """GRU output state(s) h (..., H) and the future covariates of the next ``horizon`` steps
        (..., horizon * F) -> forecasts (..., horizon, C, Q), non-crossing along Q."""
        return self._head(torch.cat([h.float(), future_ahead.float()], dim=-1))

    def _head(self, z: Tensor) -> Tensor:
        """Head input (..., head_in) -> dropout, head, non-crossing quantiles: (..., steps, C_net, Q)."""
        if not torch.is_autocast_enabled(z.device.type):
            z = z.to(next(self.head.parameters()).dtype)
        raw = self.head(self.head_dropout(z)).float()
        raw = raw.reshape(*z.shape[:-1], -1, self.n_net_targets, self.n_quantiles)
        return monotone_quantiles(raw, self.anchor)

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

    @torch.no_grad()
    def step_(self, state: Tensor, idx: Tensor, target: Tensor, observed: Tensor, past_cov: Tensor,
              future_cov: Tensor, mask: Tensor | None = None) -> Tensor:
        """Streaming: advance rows ``idx`` of a (num_layers, N, H) float32 state table by one step.

        target/observed (M, C), past_cov (M, P), future_cov (M, F) are this step's scaled values.
        Returns the new last-layer states (M, H); feed them to :meth:`decode` with the next
        ``horizon`` steps' future covariates to forecast from this step."""
        if not self.streamable:
            raise ValueError("this model cannot be stepped one time step at a time (channel_independent, revin, "
                             "segment_length > 1 or decoder != 'forking'); use forecast_last on whole windows")
        x = self.input_proj(self.features(target, observed, past_cov, future_cov))
        return self.gru.step_(state, idx, x.to(self.gru.weight_ih_l0.dtype), mask=mask)

    def init_state(self, n: int, device=None) -> Tensor:
        """A zero state table (num_layers, n, H), float32, for :meth:`step_`."""
        return torch.zeros(self.gru.num_layers, n, self.gru.hidden_size, device=device)

    # ---- whole windows ----

    def _prepare(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor, T: int):
        """Context target/observed (B, T, C) -> the rows the network sees (RevIN-normalised, and
        (B*C, T, 1) when channel-independent), past_cov (rows, T, P), future_cov (rows, L, F) and the
        per (B, C) (loc, scale) to undo on the forecasts (None: no RevIN)."""
        target, observed, past_cov = target[:, :T], observed[:, :T], past_cov[:, :T]
        base = None
        if self.revin != "none":
            loc, scale = revin_stats(target, observed, self.revin)
            base = (loc.detach(), scale.detach())
            target = (target - base[0].unsqueeze(1)) / base[1].unsqueeze(1) * observed
        if self.channel_independent:
            B, _, C = target.shape
            target = target.permute(0, 2, 1).reshape(B * C, T, 1)
            observed = observed.permute(0, 2, 1).reshape(B * C, T, 1)
            # no covariates with channel_independent (checked in __init__): empty tensors of B*C rows
            past_cov = past_cov.new_zeros(B * C, T, 0)
            future_cov = future_cov.new_zeros(B * C, future_cov.shape[1], 0)
        return target, observed, past_cov, future_cov, base

    def _finish(self, y: Tensor, B: int, base: tuple[Tensor, Tensor] | None) -> Tensor:
        """Network output (..., horizon, C_net, Q) with leading (B*C, ...) rows when channel-independent
        -> (B, ..., horizon, C, Q), RevIN undone (times scale, plus loc)."""
        if self.channel_independent:
            C = self.n_targets
            y = y.reshape(B, C, *y.shape[1:]).squeeze(-2)  # (B, C, ..., horizon, Q)
            y = y.movedim(1, -2)  # (B, ..., horizon, C, Q)
        if base is not None:
            shape = (B, *([1] * (y.dim() - 3)), self.n_targets, 1)
            y = y * base[1].view(shape).to(y.dtype) + base[0].view(shape).to(y.dtype)
        return y

    def forward(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor,
                context_length: int) -> Tensor:
        """Forking sequences over a window of L = context_length + horizon steps.

        The GRU runs over steps 0 .. context_length-1 (each step's input from that step only);
        origin t forecasts steps t+1 .. t+horizon. Returns (B, context_length, horizon, C, Q).
        Only for ``decoder="forking"`` (use :meth:`forecast_last` otherwise)."""
        if self.decoder != "forking":
            raise ValueError(f"forward() forecasts from every origin; decoder={self.decoder!r} only forecasts from the "
                             "last one: use forecast_last")
        T = int(context_length)
        if target.shape[1] < T + self.horizon:
            raise ValueError(f"window has {target.shape[1]} steps, need context_length + horizon = {T + self.horizon}")
        B = target.shape[0]
        tg, ob, pc, fc, base = self._prepare(target, observed, past_cov, future_cov, T)
        x = self.features(tg, ob, pc, fc[:, :T])
        out, _ = self.encode(x)
        return self._finish(self.decode(out, future_ahead(fc, T, self.horizon)), B, base)

    def forecast_last(self, target: Tensor, observed: Tensor, past_cov: Tensor, future_cov: Tensor,
                      context_length: int) -> Tensor:
        """Only the last origin (t = context_length-1): (B, horizon, C, Q), cheaper than forward."""
        T = int(context_length)
        w = self.segment_length
        if T % w:
            raise ValueError(f"context_length={T} must be a multiple of segment_length={w}")
        B = target.shape[0]
        tg, ob, pc, fc, base = self._prepare(target, observed, past_cov, future_cov, T)
        x = self.features(tg, ob, pc, fc[:, :T])
        if w > 1:  # (R, T, n_in) -> (R, T/w, w*n_in), step-major inside a segment
            x = x.reshape(x.shape[0], T // w, w * x.shape[-1])
        out, hn = self.encode(x)
        if self.decoder == "pmf":
            return self._finish(self.decode_segments(hn), B, base)
        fa = fc[:, T:T + self.horizon].reshape(fc.shape[0], -1)
        return self._finish(self.decode(out[:, -1], fa), B, base)


def revin_stats(target: Tensor, observed: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(B, T, C) context and observed mask -> (loc, scale), each (B, C): the network sees
    ``(target - loc) / scale`` and its forecasts are mapped back by ``* scale + loc``.

    ``loc`` is :func:`revin_base` (of ``"mean"`` for ``"std"``); ``scale`` is ``sqrt(var + 1e-5)`` of
    the observed values for ``"std"`` (``sqrt(1e-5)`` for a constant or never observed context) and 1
    for ``"last"`` / ``"mean"``."""
    loc = revin_base(target, observed, "mean" if mode == "std" else mode)
    if mode != "std":
        return loc, torch.ones_like(loc)
    var = revin_base((target - loc.unsqueeze(1)) ** 2, observed, "mean")  # the masked mean of the squares
    return loc, torch.sqrt(var + REVIN_EPS)


def revin_base(target: Tensor, observed: Tensor, mode: str) -> Tensor:
    """(B, T, C) context and observed mask -> (B, C): the last observed value (``"last"``) or the mean of
    the observed values (``"mean"``); 0 where a target was never observed."""
    if mode == "last":
        T = target.shape[1]
        pos = torch.arange(T, device=target.device).view(1, T, 1).expand_as(target)
        last = torch.where(observed > 0, pos, torch.full_like(pos, -1)).amax(dim=1)  # (B, C)
        val = target.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)
        return torch.where(last >= 0, val, torch.zeros_like(val))
    if mode == "mean":
        n = observed.sum(1)
        return (target * observed).sum(1) / n.clamp_min(1.0)
    raise ValueError(f"revin={mode!r}: choose one of {list(REVIN_MODES)}")


def check_options(n_past: int, n_future: int, channel_independent: bool, revin: str, segment_length: int,
                  decoder: str, head_dropout: float, context_length: int | None = None,
                  horizon: int | None = None) -> None:
    """Raise ValueError (one clear sentence) for an invalid combination of the long-look-back options."""
    if revin not in REVIN_MODES:
        raise ValueError(f"revin={revin!r}: choose one of {list(REVIN_MODES)}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r}: choose one of {list(DECODERS)}")
    if not 0.0 <= float(head_dropout) < 1.0:
        raise ValueError(f"head_dropout={head_dropout!r}: must be in [0, 1)")
    if int(segment_length) < 1:
        raise ValueError(f"segment_length={segment_length!r}: must be >= 1")
    if channel_independent and (n_past or n_future):
        raise ValueError(
            f"channel_independent=True needs a model without covariates, but it has n_past_covariates={n_past} and "
            f"n_future_covariates={n_future} (calendar features count as future covariates: set "
            "calendar_features: none and no past/future covariate columns)")
    if int(segment_length) > 1 and decoder == "forking":
        raise ValueError(f"segment_length={segment_length} > 1 needs decoder='last' or decoder='pmf' (segments leave "
                         f"no per-step origins to fork from), got decoder={decoder!r}")
    if revin != "none" and decoder == "forking":
        raise ValueError(f"revin={revin!r} needs decoder='last' or decoder='pmf' (a window's last value would leak "
                         f"the future into earlier forking origins), got decoder={decoder!r}")
    if decoder == "pmf" and n_future:
        raise ValueError(f"decoder='pmf' reads no future covariates, but the model has n_future_covariates={n_future} "
                         "(calendar features count: set calendar_features: none), or use decoder='last'")
    if decoder == "pmf" and horizon is not None and int(horizon) % int(segment_length):
        raise ValueError(f"decoder='pmf' cuts the horizon into segments of segment_length={segment_length} steps: "
                         f"horizon={horizon} must be a multiple of it")
    if context_length is not None and int(context_length) % int(segment_length):
        raise ValueError(f"context_length={context_length} must be a multiple of segment_length={segment_length}")
