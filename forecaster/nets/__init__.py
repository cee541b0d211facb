"""The two forecasting networks (plain ``nn.Module``s, no training logic) and the configs that
choose between them:

* :class:`StepForecastNet` (config :class:`StepNet`, the default): the per-step model; trains on
  every origin of a window and streams one observation at a time.
* :class:`WindowForecastNet` (config :class:`WindowNet`): the window model for long look-backs
  (segments, RevIN, channel independence, SegRNN's PMF decoder).
* :class:`EnsembleNet`: K of either, initialised independently, their forecasts averaged
  (``members``).

:class:`forecaster.GRUForecaster` takes a config as ``net`` (``--model.net WindowNet`` on the
command line) and builds the network for the data's shapes (:meth:`NetConfig.build`).
"""

from __future__ import annotations

from forecaster.nets.common import GRUNetBase, features, future_ahead, monotone_quantiles
from forecaster.nets.config import NET_CONFIGS, NetConfig, StepNet, WindowNet, net_config
from forecaster.nets.ensemble import EnsembleNet
from forecaster.nets.revin import REVIN_EPS, REVIN_MODES, RevIN, revin_base, revin_stats
from forecaster.nets.step import StepForecastNet
from forecaster.nets.window import WindowForecastNet

__all__ = ["StepNet", "WindowNet", "NetConfig", "NET_CONFIGS", "net_config", "StepForecastNet", "WindowForecastNet",
           "EnsembleNet", "GRUNetBase", "RevIN", "features", "future_ahead", "monotone_quantiles", "revin_base",
           "revin_stats", "REVIN_EPS", "REVIN_MODES"]
