"""Forecast metrics on the original scale (MAE, RMSE, sMAPE, MASE) and the two baselines every run
is compared with (last value, seasonal naive), computed from a window's context only.

The metrics sum in float64, from float64 differences: in original units a float32 square overflows
past errors of 2e19 and underflows below 1e-19, and a float32 running sum loses digits over a long
test part. sMAPE has no absolute floor under its denominator (torchmetrics clamps ``|y| + |p|`` at
1.2e-6, which scores every forecast of data at 1e-12 as perfect): an element where forecast and
target are both 0 counts as 0.

MASE's scale is per window and target: the mean absolute seasonal difference
``|y_t - y_{t-m}|`` over the window's context (pairs where both are observed), so it needs no
training data and is the in-sample error of the seasonal-naive forecast on that context. A context
no longer than one season holds no such pair: the scale is then the mean one-step difference
(m = 1, the naive forecast's in-sample error), and the module warns when it is built that way.
MASE is NaN when no element has a usable scale (e.g. every context constant).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from forecaster.baseline import season_offsets

__all__ = ["MeanAbsoluteError", "RootMeanSquaredError", "SymmetricMeanAbsolutePercentageError",
           "MeanAbsoluteScaledError", "ForecastMetrics", "last_value_forecast", "seasonal_naive_forecast",
           "seasonal_scale", "METHODS", "METRICS"]

METHODS = ("model", "seasonal_naive", "last_value")
METRICS = ("mae", "rmse", "smape", "mase")


def last_value_forecast(context: Tensor, observed: Tensor, horizon: int) -> Tensor:
    """(B, T, C) context, (B, T, C) observed mask -> (B, horizon, C): the last observed value of
    each target repeated (0 if a target was never observed in the context)."""
    T = context.shape[1]
    pos = torch.arange(T, device=context.device).view(1, T, 1).expand_as(context)
    last = torch.where(observed > 0, pos, torch.full_like(pos, -1)).amax(dim=1)  # (B, C)
    val = context.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)
    val = torch.where(last >= 0, val, torch.zeros_like(val))
    return val.unsqueeze(1).expand(-1, horizon, -1)


def seasonal_naive_forecast(context: Tensor, horizon: int, season_length: int,
                            observed: Tensor | None = None) -> Tensor:
    """(B, T, C) context -> (B, horizon, C): ``y[T-1+k] = y[T-1+k - m*ceil(k/m)]`` for k = 1..horizon
    (the value one season before, repeated for horizons beyond one season).

    With ``observed`` (B, T, C), a missing value at that lag (a holiday on a business-day grid, a
    gap) is skipped: the same phase a whole season earlier, and so on back through the context;
    with none observed, the last observed value (:func:`last_value_forecast`). Without it, the
    context's value is read as it is (a missing one is 0 in scaled units: the training mean).

    A season longer than the context (``season_length > T``) leaves no value a season back: the
    forecast is then the last value (the last observed one with ``observed``)."""
    T, m = context.shape[1], int(season_length)
    if m > T:
        if observed is not None:
            return last_value_forecast(context, observed, horizon)
        return context[:, -1:].expand(-1, horizon, -1)
    idx = T - 1 + season_offsets(horizon, m, context.device)  # (h,)
    out = context[:, idx]
    if observed is None:
        return out
    found = observed[:, idx] > 0
    for back in range(1, T // max(m, 1) + 1):  # the same phase `back` seasons earlier
        j = idx - back * max(m, 1)
        if int(j.max()) < 0 or bool(found.all()):
            break
        ok = (j >= 0).view(1, -1, 1) & (observed[:, j.clamp_min(0)] > 0) & ~found
        out = torch.where(ok, context[:, j.clamp_min(0)], out)
        found = found | ok
    return torch.where(found, out, last_value_forecast(context, observed, horizon))


def seasonal_scale(context: Tensor, observed: Tensor, season_length: int) -> Tensor:
    """(B, T, C) -> (B, C): mean |y_t - y_{t-m}| over the context's observed pairs (NaN if none);
    m = 1 when the context (T steps) is no longer than a season (T <= m leaves no pair)."""
    m = int(season_length)
    if m >= context.shape[1] or m < 1:
        m = 1
    d = (context[:, m:] - context[:, :-m]).abs()
    w = observed[:, m:] * observed[:, :-m]
    n = w.sum(1)
    return torch.where(n > 0, (d * w).sum(1) / n.clamp_min(1), torch.full_like(n, float("nan")))


class _MeanError(Metric):
    """Mean over elements of an elementwise error of ``(preds, target)``, summed in float64."""

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _error(self, preds: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.total += self._error(preds.double(), target.double()).sum()
        self.count += target.numel()

    def _mean(self) -> Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)

    def compute(self) -> Tensor:
        return self._mean().float()


class MeanAbsoluteError(_MeanError):
    """Mean of ``|pred - target|``."""

    def _error(self, preds: Tensor, target: Tensor) -> Tensor:
        return (preds - target).abs()


class RootMeanSquaredError(_MeanError):
    """Square root of the mean of ``(pred - target)^2``."""

    def _error(self, preds: Tensor, target: Tensor) -> Tensor:
        return (preds - target).square()

    def compute(self) -> Tensor:
        return self._mean().sqrt().float()


class SymmetricMeanAbsolutePercentageError(_MeanError):
    """Mean of ``2 |pred - target| / (|pred| + |target|)`` (in [0, 2]); 0 where both are 0."""

    def _error(self, preds: Tensor, target: Tensor) -> Tensor:
        den = preds.abs() + target.abs()
        return torch.where(den > 0, 2 * (preds - target).abs() / torch.where(den > 0, den, 1.0), 0.0)


class MeanAbsoluteScaledError(_MeanError):
    """Mean over observed elements of ``|pred - target| / scale`` (scale: per window and target,
    broadcast to the element; elements whose scale is 0 or NaN are left out); NaN when no element
    had a usable scale (not 0, which would read as a perfect forecast)."""

    def update(self, preds: Tensor, target: Tensor, scale: Tensor) -> None:
        ok = torch.isfinite(scale) & (scale > 0)
        self.total += ((preds.double() - target.double()).abs()[ok] / scale[ok].double()).sum()
        self.count += ok.sum().double()


class ForecastMetrics(nn.Module):
    """MAE, RMSE, sMAPE, MASE for the model and both baselines. Names: ``mae`` (model),
    ``mae_seasonal_naive``, ``mae_last_value``, ... (prefix them with the stage when logging). With
    several ``targets`` (their names), each metric also per target: ``mae@<target>``, ... (targets
    in different units make the overall MAE a sum of unlike things)."""

    def __init__(self, targets: list[str] | None = None) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict()
        self.targets = list(targets) if targets is not None and len(targets) > 1 else []
        for at in ["", *(f"@{t}" for t in self.targets)]:
            for method in METHODS:
                suffix = ("" if method == "model" else f"_{method}") + at
                self.metrics[f"mae{suffix}"] = MeanAbsoluteError()
                self.metrics[f"rmse{suffix}"] = RootMeanSquaredError()
                self.metrics[f"smape{suffix}"] = SymmetricMeanAbsolutePercentageError()
                self.metrics[f"mase{suffix}"] = MeanAbsoluteScaledError()

    def update(self, forecasts: dict[str, Tensor], target: Tensor, observed: Tensor, scale: Tensor) -> None:
        """forecasts: method -> (B, h, C); target/observed (B, h, C) original units; scale (B, C)."""
        self._update(forecasts, target, observed, scale.unsqueeze(1).expand_as(target), "")
        for c, name in enumerate(self.targets):
            self._update({m: p[..., c] for m, p in forecasts.items()}, target[..., c], observed[..., c],
                         scale[:, None, c].expand_as(target[..., c]), f"@{name}")

    def _update(self, forecasts: dict[str, Tensor], target: Tensor, observed: Tensor, sc: Tensor, at: str) -> None:
        keep = observed > 0
        y = target[keep].float()
        s = sc[keep].float()
        for method, pred in forecasts.items():
            suffix = ("" if method == "model" else f"_{method}") + at
            p = pred[keep].float()
            if p.numel() == 0:
                continue
            for name in ("mae", "rmse", "smape"):
                self.metrics[f"{name}{suffix}"].update(p, y)
            self.metrics[f"mase{suffix}"].update(p, y, s)

    def items(self):
        return self.metrics.items()
