"""Streaming time-series forecasting with a GRU on fused Triton kernels.

Public API (imported lazily, so ``import forecaster`` stays cheap and works without Triton):
``TimeSeriesDataModule``, ``GRUForecaster``, ``StreamingForecaster``, ``DataSpec``, ``replay``,
``ParameterEMA`` (an opt-in moving average of the weights for training).
"""

from importlib import import_module

_EXPORTS = {
    "TimeSeriesDataModule": "forecaster.data",
    "GRUForecaster": "forecaster.lightning_module",
    "StreamingForecaster": "forecaster.streaming",
    "DataSpec": "forecaster.spec",
    "replay": "forecaster.evaluation",
    "ParameterEMA": "forecaster.averaging",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'forecaster' has no attribute {name!r}")
