"""``BaselineChoice``: after each validation of a fit, the point forecast the model will use: the
network on its baseline, or a plain baseline (a Lightning ``Callback``, which
:class:`forecaster.GRUForecaster` attaches to every fit).

The candidates are the network and each plain baseline (the fitted blend, seasonal naive, the last
value, the look-back mean), scored on every validation window: the training loss, and the point
forecast's error per window (the absolute error for the quantile loss). The simpler forecast is
the default: the network is kept only if its mean point error is below the plain baseline's by
more than ``switch_z`` standard errors of the per-window difference (a few windows where a noisy
network happens to win, as on a random walk, are no evidence); else the plain baseline, with the
network's quantile spread re-centred on it. The plain baseline is the model's own (the fitted
blend, chosen by a cross-validation over the whole training part), unless another beats it on
the validation windows by the same rule (a handful of windows, noisy on their own, once replaced
seattle_tmax_1d's smoothed level, test MAE 3.28, by the last value, 4.11). With fewer than ``min_windows`` windows (a
12-month validation part is one window) nothing can be told apart and the network is kept. The
choice is about the point (the candidates differ only there, and it is what MAE scores).

It logs ``val/loss`` (the chosen candidate's loss: the checkpoint's criterion), ``val/loss_<name>``
and ``val/point_loss_<name>`` of each candidate and ``val/uses_network``; the choice is stored in
the network's buffers (``use_network``, ``fallback``), so the checkpoint holds it.
``val/loss_network`` (the module's own log, the early-stopping criterion) stays the network's:
training goes on while the network improves, even while a plain baseline is still better.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import Tensor
from torchmetrics.aggregation import CatMetric, MeanMetric
from torchmetrics.utilities import dim_zero_cat

from forecaster.baseline import BASELINES

__all__ = ["BaselineChoice", "CANDIDATES", "MIN_WINDOWS", "SWITCH_Z"]

CANDIDATES = ("network", "blend", "seasonal", "last", "mean")
MIN_WINDOWS = 10  # validation windows it takes to choose between the network and a plain baseline
SWITCH_Z = 2.0  # standard errors by which the network must beat the best plain baseline


class BaselineChoice(pl.Callback):
    """Chooses between the network and the plain baselines after each validation of a fit (see
    the module docstring). ``min_windows``, ``switch_z``: the rule's thresholds."""

    def __init__(self, min_windows: int = MIN_WINDOWS, switch_z: float = SWITCH_Z) -> None:
        self.min_windows, self.switch_z = int(min_windows), float(switch_z)
        self.loss = {name: MeanMetric() for name in CANDIDATES}
        self.point = {name: CatMetric() for name in CANDIDATES}

    @staticmethod
    def active(trainer: pl.Trainer | None, pl_module) -> bool:
        """Whether the choice runs: a fit of a model with a baseline (the module then hands each
        validation batch's residual forecast to :meth:`on_validation_batch_end`)."""
        return (trainer is not None and trainer.state.fn == "fit" and pl_module.net.baseline != "none"
                and any(isinstance(c, BaselineChoice) for c in trainer.callbacks))

    def _metrics(self):
        return [*self.loss.values(), *self.point.values()]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        for m in self._metrics():
            m.to(pl_module.device)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(outputs, dict) or outputs.get("residual") is None:
            return
        net, T, h = pl_module.net, pl_module.context_length, pl_module.horizon
        r, pred = outputs["residual"], outputs["pred"]
        y, w = batch["target"][:, T:T + h].float(), batch["observed"][:, T:T + h].float()
        args = (batch["target"][:, :T], batch["observed"][:, :T], batch.get("baseline"))
        for name in CANDIDATES:
            cand = pred if name == "network" else net.add_baseline(r, *args, mode=name, plain=True)
            self.loss[name].update(pl_module._loss(cand.float(), y, w), w.sum())
            per_window, seen = pl_module.window_point_losses(cand.float(), y, w)
            self.point[name].update(per_window[seen])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not self.loss["network"].update_called:
            return
        if trainer.sanity_checking:  # two batches of an untrained net
            for m in self._metrics():
                m.reset()
            return
        losses = {name: float(m.compute()) for name, m in self.loss.items()}
        points = {name: _cat(m.compute()) for name, m in self.point.items()}
        for m in self._metrics():
            m.reset()
        best, means = self.choose(points, default=pl_module.net.baseline)
        pl_module.net.use_network.fill_(best == "network")
        if best != "network":
            pl_module.net.fallback.fill_(BASELINES.index(best))
        for name, value in losses.items():
            if name != "network":
                pl_module.log(f"val/loss_{name}", value)
            pl_module.log(f"val/point_loss_{name}", means[name])
        pl_module.log("val/loss", losses[best], prog_bar=True)
        pl_module.log("val/uses_network", float(best == "network"))

    def choose(self, points: dict[str, Tensor], default: str = "blend") -> tuple[str, dict[str, float]]:
        """The rule on each candidate's per-window point errors (float64 (n,)): ``(the chosen
        candidate, each candidate's mean error)``; ``default``: the model's own plain baseline."""
        n = points["network"].numel()
        means = {name: float(v.mean()) if n else float("nan") for name, v in points.items()}
        best = "network"
        if n >= self.min_windows:
            others = [k for k in points if k != "network"]
            plain = default if default in others else others[0]
            rival = min(others, key=lambda k: means[k])
            if rival != plain and self._beats(points[rival], points[plain]):
                plain = rival
            if not self._beats(points["network"], points[plain]):
                best = plain
        return best, means

    def _beats(self, a: Tensor, b: Tensor) -> bool:
        """Whether errors ``a`` are below ``b`` (per window, (n,)) by more than ``switch_z``
        standard errors of their difference."""
        d = a - b
        return float(d.mean()) < -self.switch_z * float(d.std()) / math.sqrt(d.numel())


def _cat(value: Tensor | list[Tensor]) -> Tensor:
    """A CatMetric's value as one float64 vector (empty when nothing was added: no validation window
    had an observed target)."""
    if isinstance(value, list) and not value:
        return torch.empty(0, dtype=torch.float64)
    return dim_zero_cat(value).flatten().double()
