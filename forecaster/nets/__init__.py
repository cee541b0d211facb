"""The two forecasting networks (plain ``nn.Module``s, no training logic):

* :class:`StepForecastNet` (``decoder="forking"``): the per-step model; trains on every origin
  of a window and streams one observation at a time.
* :class:`WindowForecastNet` (``decoder="last"`` or ``"pmf"``): the window model for long
  look-backs (segments, RevIN, channel independence, SegRNN's PMF decoder).
* :class:`EnsembleNet`: K of either, initialised independently, their forecasts averaged
  (``members``).

:func:`build_net` picks one from the flat hyperparameters the Lightning module and the CLI use.
"""

from __future__ import annotations

from typing import Literal, Sequence

from forecaster.nets.common import GRUNetBase, features, future_ahead, monotone_quantiles
from forecaster.nets.ensemble import EnsembleNet
from forecaster.nets.revin import REVIN_EPS, REVIN_MODES, RevIN, revin_base, revin_stats
from forecaster.nets.step import StepForecastNet
from forecaster.nets.window import WindowForecastNet, check_window_options

__all__ = ["StepForecastNet", "WindowForecastNet", "EnsembleNet", "GRUNetBase", "RevIN", "build_net", "DECODERS", "Decoder",
           "features", "future_ahead", "monotone_quantiles", "revin_base", "revin_stats", "REVIN_EPS", "REVIN_MODES"]

Decoder = Literal["forking", "last", "pmf"]
DECODERS = ("forking", "last", "pmf")


def build_net(n_targets: int, n_past_covariates: int, n_future_covariates: int, horizon: int,
              context_length: int | None = None, *, decoder: str = "forking", channel_independent: bool = False,
              revin: str = "none", segment_length: int = 1, quantiles: Sequence[float] | None = None,
              members: int = 1, **common) -> GRUNetBase:
    """``decoder="forking"`` -> :class:`StepForecastNet` (which has no window options: they raise a
    ``ValueError`` naming the decoder to use); ``"last"`` / ``"pmf"`` -> :class:`WindowForecastNet`;
    ``members`` K > 1: an :class:`EnsembleNet` of K of them (initialised one after the other from
    torch's random state). ``common``: hidden_size, num_layers, d_model, head_hidden, dropout,
    reset_after, backend, head_dropout, baseline, season_length."""
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members={members!r}: the number of networks averaged, an int >= 1 (1: a single network; "
                         "GRUForecaster also takes 'auto', by the size of the training part)")
    if members > 1:
        return EnsembleNet([build_net(n_targets, n_past_covariates, n_future_covariates, horizon, context_length,
                                      decoder=decoder, channel_independent=channel_independent, revin=revin,
                                      segment_length=segment_length, quantiles=quantiles, **common)
                            for _ in range(members)])
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r}: choose one of {list(DECODERS)}")
    if decoder == "forking":
        if revin not in REVIN_MODES:
            raise ValueError(f"revin={revin!r}: choose one of {list(REVIN_MODES)}")
        if int(segment_length) < 1:
            raise ValueError(f"segment_length={segment_length!r}: must be >= 1")
        if int(segment_length) > 1:
            raise ValueError(f"segment_length={segment_length} > 1 needs decoder='last' or decoder='pmf' (segments "
                             "leave no per-step origins to fork from), got decoder='forking'")
        if revin != "none":
            raise ValueError(f"revin={revin!r} needs decoder='last' or decoder='pmf' (a window's last value would "
                             "leak the future into earlier forking origins), got decoder='forking'")
        if channel_independent:
            raise ValueError("channel_independent=True needs decoder='last' or decoder='pmf' (the window model), "
                             "got decoder='forking'")
        return StepForecastNet(n_targets, n_past_covariates, n_future_covariates, horizon, quantiles=quantiles,
                               context_length=context_length, **common)
    return WindowForecastNet(n_targets, n_past_covariates, n_future_covariates, horizon, context_length,
                             quantiles=quantiles, channel_independent=channel_independent, revin=revin,
                             segment_length=segment_length, decoder=decoder, **common)
