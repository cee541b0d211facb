"""The training losses, as objects (``GRUForecaster(loss=...)`` names one of :data:`LOSSES`).

Each works on the data module's scaled values: ``pred`` (..., Q) against ``y`` (...), elementwise;
:meth:`ForecastLoss.point_error` is what the validation's choice between the network and the plain
baselines compares (the point forecast's error in each window).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ForecastLoss", "QuantileLoss", "MAELoss", "MSELoss", "HuberLoss", "LOSSES", "make_loss"]


class ForecastLoss(nn.Module):
    """A loss of forecasts (B..., Q) against targets (B...): :meth:`elementwise`; ``quantiles`` are
    the levels it trains (empty for a point loss, whose forecast has Q = 1)."""

    quantiles: list[float] = []

    def elementwise(self, pred: Tensor, y: Tensor) -> Tensor:
        """pred (..., Q), y (...) -> the loss of each element (...)."""
        raise NotImplementedError

    def point_error(self, point: Tensor, y: Tensor) -> Tensor:
        """The point forecast's error (...) from point (..., 1) and y (...): the loss itself for a point
        loss, the absolute error for the quantile loss (its median's pinball loss, doubled)."""
        return self.elementwise(point, y)


class QuantileLoss(ForecastLoss):
    """Pinball loss averaged over ``quantiles`` (sorted, in (0, 1))."""

    def __init__(self, quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> None:
        super().__init__()
        self.quantiles = [float(q) for q in quantiles]
        if not self.quantiles:
            raise ValueError("loss='quantile' needs at least one quantile")
        self.register_buffer("q", torch.tensor(self.quantiles, dtype=torch.float32), persistent=False)

    def elementwise(self, pred: Tensor, y: Tensor) -> Tensor:
        e = y.unsqueeze(-1) - pred
        q = self.q.to(pred.dtype)
        return torch.maximum(q * e, (q - 1) * e).mean(-1)

    def point_error(self, point: Tensor, y: Tensor) -> Tensor:
        return (point[..., 0] - y).abs()


class MAELoss(ForecastLoss):
    def elementwise(self, pred: Tensor, y: Tensor) -> Tensor:
        return (pred[..., 0] - y).abs()


class MSELoss(ForecastLoss):
    def elementwise(self, pred: Tensor, y: Tensor) -> Tensor:
        return (pred[..., 0] - y) ** 2


class HuberLoss(ForecastLoss):
    """Errors up to ``delta`` (scaled units) cost ``e**2 / 2``, larger ones ``delta * (|e| - delta / 2)``."""

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        if not delta > 0.0:
            raise ValueError(f"huber_delta={delta!r}: must be > 0 (the error size, in scaled units, where the Huber "
                             "loss turns from quadratic to linear)")
        self.delta = float(delta)

    def elementwise(self, pred: Tensor, y: Tensor) -> Tensor:
        return F.huber_loss(pred[..., 0], y, reduction="none", delta=self.delta)


LOSSES = {"quantile": QuantileLoss, "mae": MAELoss, "mse": MSELoss, "huber": HuberLoss}


def make_loss(kind: str, quantiles: Sequence[float] = (0.1, 0.5, 0.9), huber_delta: float = 1.0) -> ForecastLoss:
    """The loss ``kind`` (one of :data:`LOSSES`) with its setting."""
    if kind not in LOSSES:
        raise ValueError(f"loss={kind!r}: choose one of {list(LOSSES)}")
    if kind == "quantile":
        return QuantileLoss(quantiles)
    return HuberLoss(huber_delta) if kind == "huber" else LOSSES[kind]()
