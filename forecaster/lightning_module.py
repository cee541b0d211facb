"""``GRUForecaster``: the LightningModule that trains the networks of :mod:`forecaster.nets`.

Training uses forking sequences: the GRU runs once over the context and every origin
``t >= min_origin`` forecasts steps ``t+1 .. t+horizon`` inside the window, so the model learns to
forecast from any point of a stream. Validation, test and predict use the last origin
(``t = context_length - 1``), i.e. the window's last ``horizon`` steps; metrics are on the original
scale beside the seasonal-naive and last-value baselines on the same windows, plus MSE and MAE in
the data module's scaled units (``{stage}/mse_scaled``, ``{stage}/mae_scaled`` and their
``_seasonal_naive`` / ``_last_value`` twins; with ``scaling: standard`` these are the z-scored
metrics of the ETTh1 protocol), averaged over every observed element of every window.

With ``net=WindowNet(...)`` (the window model, :mod:`forecaster.nets.window`, for long look-backs)
training uses the last origin only, like evaluation.

The checkpoint holds the hyperparameters, the data spec (columns, frequency, calendar, scalers:
``TimeSeriesDataModule.spec.to_dict()``) and :data:`FORMAT_VERSION`. The module only trains and
evaluates: batches arrive in the spec's scaled units (prediction data is built with the
checkpoint's spec, :meth:`forecaster.TimeSeriesDataModule.from_spec`).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Sequence

import lightning as L
from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from lightning.pytorch.utilities import rank_zero_warn
import torch
from torch import Tensor, nn
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from forecaster.choice import BaselineChoice
from forecaster.forecasts import predictions_frame
from forecaster.guard import FiniteValidationLoss
from forecaster.losses import make_loss
from forecaster.metrics import ForecastMetrics, last_value_forecast, seasonal_naive_forecast, seasonal_scale
from forecaster.nets import EnsembleNet, NetConfig, net_config
from forecaster.spec import DataSpec

__all__ = ["GRUForecaster", "CheckpointMismatchError", "FORMAT_VERSION", "load_checkpoint", "check_checkpoint",
           "checkpoint_hparams"]

FORMAT_VERSION = 4  # 4: the network as ``net`` (class_path / init_args) instead of flat settings
# Settings a checkpoint must hold (those of checkpoints before a setting existed are not migrated:
# train again with this version).
REQUIRED_HPARAMS = ("baseline", "net", "members")
_SHAPE_KEYS = ("n_targets", "n_past_covariates", "n_future_covariates", "horizon", "quantiles", "net", "members")


ENSEMBLE_WINDOWS = 2000  # members="auto": an ensemble up to ENSEMBLE_WINDOWS / 2 training windows
MAX_AUTO_MEMBERS = 5


def resolve_members(members: int | str, train_windows: int | None) -> int:
    """``members`` as a number: ``"auto"`` is ``ENSEMBLE_WINDOWS // train_windows`` clipped to
    [1, MAX_AUTO_MEMBERS] (1 without ``train_windows``); anything else is returned as it is, for
    :meth:`forecaster.nets.NetConfig.build` to check."""
    if members != "auto":
        return members  # NetConfig.build checks it
    if train_windows is None or int(train_windows) < 1:
        return 1
    return max(1, min(MAX_AUTO_MEMBERS, ENSEMBLE_WINDOWS // int(train_windows)))


class CheckpointMismatchError(ValueError):
    """A checkpoint that cannot be loaded into this model (other format version or shapes)."""


class GRUForecaster(L.LightningModule):
    """GRU forecaster on ``kernels.FusedGRU``.

    Args:
        n_targets: targets C (linked from the data module by the CLI; :meth:`from_datamodule` in Python).
        n_past_covariates: past covariates P (linked from the data module).
        n_future_covariates: future covariates F, user and calendar (linked from the data module).
        context_length: steps the model reads (linked from ``data.context_length``).
        horizon: steps it forecasts (linked from ``data.horizon``).
        seasonal_period: period of the seasonal-naive baseline and of MASE's scale (linked from the data).
        net: the network (Lightning's dependency injection: ``--model.net WindowNet``, or
            ``class_path``/``init_args`` in a config): :class:`forecaster.nets.StepNet` (the default,
            the per-step model: a forecast from every origin, streams one observation at a time) or
            :class:`forecaster.nets.WindowNet` (the window model, final state only, for long
            look-backs: segments, RevIN, SegRNN's PMF decoder), with its widths, GRU formulation and
            backend; also its plain-data form ``{"class_path": ..., "init_args": {...}}`` (what the
            checkpoint stores, :func:`forecaster.nets.net_config`); None: ``StepNet()``.
        loss: ``mae``, ``mse``, ``huber`` (point forecasts) or ``quantile`` (pinball loss over ``quantiles``).
            All are computed on the data module's scaled values (z-scores with ``scaling: standard``).
        huber_delta: for ``loss="huber"``: errors up to this size (in scaled units) cost ``e**2 / 2``,
            larger ones ``delta * (|e| - delta / 2)`` (``torch.nn.functional.huber_loss``): between
            ``mse`` (large delta) and ``mae`` (small delta, scaled by delta).
        quantiles: levels for ``loss="quantile"`` (sorted, in (0, 1)); the one nearest 0.5 is the
            point forecast used for metrics.
        min_origin: first origin that contributes to the training loss (a short warm-up); None =
            ``min(24, context_length // 3)``.
        baseline: the naive forecast the network learns the difference to (:mod:`forecaster.baseline`):
            ``blend`` (seasonal naive, the last value and the look-back's mean, weighted per series,
            target and horizon step as fitted on the training part; the data spec holds the weights),
            ``seasonal``, ``last``, ``mean``, or ``none`` (the network alone). The untrained model
            forecasts the baseline exactly (its quantiles spread around it).
        lr: AdamW's learning rate (the CLI's ``--optimizer`` replaces the optimizer).
        weight_decay: AdamW's weight decay.
        members: networks averaged (:class:`forecaster.nets.EnsembleNet`), each initialised on its own
            and trained as it would be alone, their forecasts (quantiles and all) averaged: an int
            >= 1, or ``auto``: ``ENSEMBLE_WINDOWS // train_windows`` between 1 and
            ``MAX_AUTO_MEMBERS``, i.e. an ensemble for a small training part (a few hundred windows,
            where the seed decides much of a single network's forecast) and one network above
            ``ENSEMBLE_WINDOWS / 2`` windows. Training, forecasting and a stream's state cost K
            times a single network's. The number is saved: a checkpoint rebuilds its networks
            whatever data it later forecasts (load it with ``load_from_checkpoint``; a model built
            anew with :meth:`from_datamodule` on other data may choose another number).
        train_windows: windows in the training part at stride 1, its amount of data whatever
            ``data.stride`` (linked from the data by the CLI; :meth:`from_datamodule` fills it in);
            only read by ``members="auto"`` (None: 1 network).
        lr_decay: multiply the learning rate by this after every epoch (ExponentialLR; 1.0 = constant).
            Ignored when the CLI's ``--optimizer`` / ``--lr_scheduler`` replace configure_optimizers.
        data_spec: ``TimeSeriesDataModule.spec.to_dict()``: saved in the checkpoint so it can
            forecast without the training data (linked by the CLI).
    """

    def __init__(
        self,
        n_targets: int = 1,
        n_past_covariates: int = 0,
        n_future_covariates: int = 0,
        context_length: int = 168,
        horizon: int = 24,
        seasonal_period: int = 24,
        net: NetConfig | None = None,
        loss: Literal["mae", "mse", "huber", "quantile"] = "quantile",
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        huber_delta: float = 1.0,
        min_origin: int | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        data_spec: dict | None = None,
        lr_decay: float = 1.0,
        baseline: Literal["blend", "seasonal", "last", "mean", "none"] = "blend",
        members: int | Literal["auto"] = "auto",
        train_windows: int | None = None,
    ) -> None:
        super().__init__()
        self.loss_fn = make_loss(loss, quantiles, huber_delta)
        if not 0.0 < lr_decay <= 1.0:
            raise ValueError(f"lr_decay={lr_decay!r}: must be in (0, 1]")
        if min_origin is None:
            min_origin = min(24, int(context_length) // 3)
        if not 0 <= min_origin < context_length:
            raise ValueError(f"min_origin={min_origin} must be in [0, context_length={context_length}) (or null for "
                             f"min(24, context_length // 3))")
        quantiles = list(self.loss_fn.quantiles)
        self.members_auto = members == "auto"  # how the number was chosen (fit's line about it)
        members = resolve_members(members, train_windows)
        net = net_config(net)
        self.save_hyperparameters()
        self.hparams["net"] = net.to_dict()  # plain data (a checkpoint is read with weights_only=True)
        self.hparams["quantiles"] = quantiles
        self.hparams["members"] = members  # the number "auto" chose: a checkpoint rebuilds the same networks
        self.context_length, self.horizon = int(context_length), int(horizon)
        self.min_origin = int(min_origin)
        self.season_length = int(seasonal_period)
        if self.season_length >= self.context_length:
            rank_zero_warn(f"seasonal_period={self.season_length} is not shorter than context_length="
                           f"{self.context_length}: a window's context holds no seasonal pair, so MASE scales by "
                           f"one-step differences (and, for a season longer than the context, the seasonal-naive "
                           f"forecast is the last value); use context_length > {self.season_length} (or 'auto')")
        self.net = net.build(n_targets, n_past_covariates, n_future_covariates, horizon, context_length,
                             quantiles=quantiles, baseline=baseline, season_length=seasonal_period, members=members)
        if quantiles and baseline != "none" and 0.5 not in quantiles:
            raise ValueError(f"quantiles={quantiles} lack 0.5: with a baseline the median is the point forecast the "
                             "baseline anchors; add 0.5 (or set baseline='none')")

        targets = list(data_spec["target_cols"]) if data_spec else None
        self.val_metrics = ForecastMetrics(targets)
        self.test_metrics = ForecastMetrics(targets)
        self.val_scaled = ScaledMetrics()
        self.test_scaled = ScaledMetrics()

    @classmethod
    def from_datamodule(cls, dm, **kwargs) -> "GRUForecaster":
        """A model shaped for ``dm`` (a ``TimeSeriesDataModule``): its target/covariate counts, context,
        horizon, seasonal period and spec (columns, frequency, scalers) are filled in; ``kwargs`` are
        the other hyperparameters."""
        return cls(n_targets=dm.n_targets, n_past_covariates=dm.n_past_covariates,
                   n_future_covariates=dm.n_future_covariates, context_length=dm.context_length,
                   horizon=dm.horizon, seasonal_period=dm.season_length, data_spec=dm.spec.to_dict(),
                   **{"train_windows": dm.train_windows, **kwargs})

    # ---- convenience ----

    @property
    def data_spec(self) -> dict | None:
        """The data spec as stored in the checkpoint (a plain dict), or None."""
        return self.hparams.get("data_spec")

    @property
    def spec(self) -> DataSpec | None:
        """The data spec as a :class:`DataSpec`, or None for a model built without one."""
        d = self.data_spec
        if d is None:
            return None
        if getattr(self, "_spec_cache", (None, None))[0] is not d:
            self._spec_cache = (d, DataSpec.from_dict(d))
        return self._spec_cache[1]

    @property
    def quantiles(self) -> list[float]:
        return list(self.net.quantiles)

    @property
    def target_cols(self) -> list[str]:
        spec = self.data_spec
        return list(spec["target_cols"]) if spec else [f"target_{i}" for i in range(self.net.n_targets)]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """All origins of the context: (B, context_length, horizon, C, Q), scaled units (the per-step
        model only; the window model forecasts from the last origin: :meth:`forecast`)."""
        if not self.net.trains_on_every_origin:
            raise ValueError(f"forward() forecasts from every origin; {type(self.net).__name__} only forecasts from "
                             "the last one: use forecast()")
        return self.net(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"],
                        self.context_length, batch.get("baseline"))

    @torch.no_grad()
    def forecast(self, batch: dict[str, Tensor]) -> Tensor:
        """Forecast of each window's last ``horizon`` steps from its context, on the original scale:
        (B, horizon, C, Q), as the trained model forecasts (eval mode: no dropout, the validation's
        choice between the network and the plain baselines). ``batch`` as yielded by
        ``TimeSeriesDataModule`` (predict windows or any window: only the context and the future
        covariates are read)."""
        was = self.training
        self.eval()
        try:
            s = self._forecast_scaled(batch)
        finally:
            self.train(was)
        return s * batch["scale"][:, None, :, None] + batch["loc"][:, None, :, None]

    def _forecast_scaled(self, batch: dict[str, Tensor]) -> Tensor:
        """The last origin's forecast (B, horizon, C, Q) in scaled units."""
        return self.net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"],
                                      self.context_length, batch.get("baseline"))

    @torch.no_grad()
    def forecast_frame(self, dm):
        """Forecast the ``horizon`` steps after each series' last observed target of ``dm`` (a
        ``TimeSeriesDataModule``; build it with ``TimeSeriesDataModule.from_spec(model.spec, ...)``
        for data other than the training data) as the forecast table of :mod:`forecaster.forecasts`."""
        batch = {k: v.to(self.device) for k, v in dm.predict_batch().items()}
        fc = self.forecast(batch).float().cpu().numpy()
        return predictions_frame(dm, [{"series": batch["series"].cpu(), "start": batch["start"].cpu(),
                                       "forecast": torch.from_numpy(fc)}], self.quantiles, self.net.anchor)

    # ---- training ----

    def _loss(self, pred: Tensor, y: Tensor, w: Tensor) -> Tensor:
        """pred (..., Q), y and w (...): observed-weighted mean of the elementwise loss."""
        el = self.loss_fn.elementwise(pred, y)
        return (el * w).sum() / w.sum().clamp_min(1.0)

    def window_point_losses(self, pred: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """The point forecast's (the anchor quantile's) error in each window: pred (B, h, C, Q), y
        and w (B, h, C) -> the mean over the window's observed elements (B,) and whether it has any
        (B,) (:meth:`forecaster.losses.ForecastLoss.point_error`)."""
        point = pred[..., self.net.anchor:self.net.anchor + 1]
        el = self.loss_fn.point_error(point, y)
        n = w.flatten(1).sum(1)
        return (el * w).flatten(1).sum(1) / n.clamp_min(1.0), n > 0

    def _member_loss(self, pred: Tensor, y: Tensor, w: Tensor) -> Tensor:
        """:meth:`_loss` of pred (..., Q) against y and w (...); with an ensemble pred has a leading
        member axis (K, ...) and this is the members' mean loss."""
        if pred.dim() == y.dim() + 2:
            y, w = y.expand(pred.shape[:-1]), w.expand(pred.shape[:-1])
        return self._loss(pred, y, w)

    def _shared_forking_loss(self, batch: dict[str, Tensor]) -> Tensor:
        T, h = self.context_length, self.horizon
        # (B, T, h, C, Q); an ensemble's members each: (K, B, T, h, C, Q)
        pred = self.net(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], T,
                        batch.get("baseline"), **self._each())
        # targets of origin t: steps t+1 .. t+h -> (B, T, h, C)
        y = batch["target"][:, 1:T + h].unfold(1, h, 1).transpose(-1, -2)
        w = batch["observed"][:, 1:T + h].unfold(1, h, 1).transpose(-1, -2)
        m = self.min_origin
        return self._member_loss(pred[..., m:, :, :, :].float(), y[:, m:].float(), w[:, m:].float())

    def _last_origin_loss(self, batch: dict[str, Tensor]) -> Tensor:
        T, h = self.context_length, self.horizon
        pred = self.net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], T,
                                      batch.get("baseline"), **self._each())
        return self._member_loss(pred.float(), batch["target"][:, T:T + h].float(),
                                 batch["observed"][:, T:T + h].float())

    def _each(self) -> dict:
        return {"each": True} if isinstance(self.net, EnsembleNet) else {}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """The loss (with ``members`` > 1 the members' mean loss, logged as ``train/loss``; the
        gradient is that of their summed losses, so each member trains as it would alone)."""
        if self.net.trains_on_every_origin:
            loss = self._shared_forking_loss(batch)
        else:
            loss = self._last_origin_loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["target"].shape[0])
        return loss * self.n_members

    @property
    def n_members(self) -> int:
        """Networks averaged (``members``)."""
        return self.net.n_members if isinstance(self.net, EnsembleNet) else 1

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's clipping (``trainer.gradient_clip_val``), but member by member for an
        ensemble: one member's large gradient does not shrink the others' steps. Under a precision
        plugin with its own clipping (FSDP, DeepSpeed, ...) or a fused optimizer under 16-bit AMP
        (which Lightning refuses to clip), Lightning's clipping of the whole model runs instead."""
        plugin = self._trainer.precision_plugin if self._trainer is not None else None
        own = plugin is None or type(plugin) in (Precision, MixedPrecision, HalfPrecision, DoublePrecision)
        if isinstance(plugin, MixedPrecision) and getattr(optimizer, "defaults", {}).get("fused"):
            own = False  # a fused optimizer unscales in its step: Lightning's own check refuses to clip it
        if not isinstance(self.net, EnsembleNet) or not gradient_clip_val or not own:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        for params in self.net.member_parameters():
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # ---- evaluation (last origin) ----

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        T, h = self.context_length, self.horizon
        B = batch["target"].shape[0]
        y_s, w = batch["target"][:, T:T + h], batch["observed"][:, T:T + h]
        gated = stage == "val" and BaselineChoice.active(self._trainer, self)
        r = None
        if gated:  # the residual too: BaselineChoice scores the network and each plain baseline on it
            net = self.net
            r = net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], T,
                                  batch.get("baseline"), residual=True)
            pred_s = net.add_baseline(r, batch["target"][:, :T], batch["observed"][:, :T], batch.get("baseline"),
                                      mode=net.baseline)
        else:
            pred_s = self._forecast_scaled(batch)
        loss = self._loss(pred_s.float(), y_s.float(), w.float())
        if stage == "val":  # the network's own loss: what early stopping watches (is it still improving?)
            self.log("val/loss_network", loss, on_epoch=True, sync_dist=True, batch_size=B)
        if not gated:
            self.log(f"{stage}/loss", loss, prog_bar=stage == "val", on_epoch=True, sync_dist=True, batch_size=B)

        loc, sc = batch["loc"][:, None, :], batch["scale"][:, None, :]
        ctx = batch["target"][:, :T] * sc + loc
        ctx_obs = batch["observed"][:, :T]
        y = y_s * sc + loc
        point = pred_s[..., self.net.anchor].float() * sc + loc
        forecasts = {
            "model": point,
            "seasonal_naive": seasonal_naive_forecast(ctx, h, self.season_length, ctx_obs),
            "last_value": last_value_forecast(ctx, ctx_obs, h),
        }
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(forecasts, y, w, seasonal_scale(ctx, ctx_obs, self.season_length))
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=B)
        scaled = self.val_scaled if stage == "val" else self.test_scaled
        scaled.update({k: (v - loc) / sc for k, v in forecasts.items()}, y_s.float(), w)
        for name, metric in scaled.items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=B)
        return {"loss": loss, "residual": r, "pred": pred_s} if gated else loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int):
        """The validation loss; while fitting a model with a baseline, also the forecast and its
        residual, for :class:`forecaster.choice.BaselineChoice`."""
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """{"series", "start", "forecast" (B, horizon, C, Q) original scale}."""
        return {"series": batch["series"], "start": batch["start"], "forecast": self.forecast(batch).float()}

    def configure_callbacks(self):
        """:class:`~forecaster.choice.BaselineChoice` (the point forecast: the network or a plain
        baseline) and :class:`~forecaster.guard.FiniteValidationLoss` (no fit keeps a checkpoint of
        a validation loss that is not finite); each attached once (``test`` after ``fit`` finds
        them on the trainer)."""
        have = self._trainer.callbacks if self._trainer is not None else []
        return [cb() for cb in (BaselineChoice, FiniteValidationLoss) if not any(isinstance(c, cb) for c in have)]

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        decay = float(self.hparams.get("lr_decay", 1.0))
        if decay == 1.0:
            return opt
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ---- checkpoint format ----

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Lightning's loader, after :func:`forecaster.checkpoint.read_checkpoint` has read the file
        as tensors and plain data and :func:`forecaster.checkpoint.check_sizes` has checked its
        settings and network (a crafted file is refused in one line before Lightning reads it;
        ``kwargs`` override saved hyperparameters, e.g. ``net=StepNet(...)``)."""
        from forecaster.checkpoint import check_sizes, read_checkpoint

        if isinstance(checkpoint_path, (str, os.PathLike)):
            check_sizes(checkpoint_hparams(read_checkpoint(checkpoint_path)), f"checkpoint {str(checkpoint_path)!r}")
        if "net" in kwargs:
            kwargs["net"] = net_config(kwargs["net"]).to_dict()
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the hyperparameters rebuild the model by themselves (GRUForecaster(**hparams)); Lightning's
        # CLI instantiator key would have the loader parse them again, importing class paths
        checkpoint.get("hyper_parameters", {}).pop("_instantiator", None)
        checkpoint["forecaster_format_version"] = FORMAT_VERSION
        checkpoint["forecaster_shape"] = {k: self.hparams.get(k) for k in _SHAPE_KEYS}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint(checkpoint, self)


class ScaledMetrics(nn.Module):
    """MSE and MAE in the data module's scaled units for the model and both baselines, over every
    observed element (names ``mse_scaled``, ``mae_scaled``, ``mse_scaled_seasonal_naive``, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict()
        for method in ("model", "seasonal_naive", "last_value"):
            suffix = "" if method == "model" else f"_{method}"
            self.metrics[f"mse_scaled{suffix}"] = MeanSquaredError()
            self.metrics[f"mae_scaled{suffix}"] = MeanAbsoluteError()

    def update(self, forecasts: dict[str, Tensor], target: Tensor, observed: Tensor) -> None:
        """forecasts: method -> (B, h, C) scaled; target/observed (B, h, C) scaled units."""
        keep = observed > 0
        y = target[keep].float()
        if y.numel() == 0:
            return
        for method, pred in forecasts.items():
            suffix = "" if method == "model" else f"_{method}"
            p = pred[keep].float()
            self.metrics[f"mse_scaled{suffix}"].update(p, y)
            self.metrics[f"mae_scaled{suffix}"].update(p, y)

    def items(self):
        return self.metrics.items()


def check_checkpoint(checkpoint: dict[str, Any], model: GRUForecaster | None = None) -> None:
    """Raise :class:`CheckpointMismatchError` (one clear sentence) for a checkpoint of another
    format version, or whose weights do not fit ``model``."""
    ver = checkpoint.get("forecaster_format_version")
    if ver is None:
        raise CheckpointMismatchError("the checkpoint was not written by GRUForecaster (no forecaster_format_version)")
    if ver != FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"the checkpoint has format version {str(ver)[:20]} but this code reads version {FORMAT_VERSION}; "
            "retrain or use the matching gru-forecaster version")
    hp = checkpoint.get("hyper_parameters") or {}
    lacking = [k for k in REQUIRED_HPARAMS if k not in hp]
    if lacking:
        raise CheckpointMismatchError(f"the checkpoint predates the settings {lacking} (an older gru-forecaster); "
                                      "train it again with this version")
    if model is None:
        return
    own = model.state_dict()
    theirs = checkpoint.get("state_dict", {})
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in theirs.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in theirs]
    extra = [k for k in theirs if k not in own]
    if extra and not bad and not missing:
        raise CheckpointMismatchError(f"the checkpoint holds weights this model does not have ({extra[:3]}); it was "
                                      "not written for this model or this version of gru-forecaster")
    if bad or missing:
        hp = checkpoint.get("forecaster_shape") or checkpoint.get("hyper_parameters", {})
        diff = [f"{k}={hp.get(k)!r} (model: {model.hparams.get(k)!r})" for k in _SHAPE_KEYS
                if k in hp and hp.get(k) != model.hparams.get(k)]
        what = ", ".join(diff) if diff else "; ".join(bad[:3] + [f"missing {k}" for k in missing[:3]])
        raise CheckpointMismatchError(
            f"the checkpoint does not fit this model/data: checkpoint has {what}. Use the data columns and model settings "
            "the checkpoint was trained with")


def checkpoint_hparams(checkpoint: dict) -> dict:
    """A checkpoint's hyperparameters (a copy)."""
    return dict(checkpoint.get("hyper_parameters") or {})


def load_checkpoint(path, map_location="cpu") -> tuple[GRUForecaster, dict]:
    """Read a checkpoint once: ``(model, checkpoint dict)``, the model in eval mode. One-line
    :class:`~forecaster.checkpoint.CheckpointError` / :class:`CheckpointMismatchError` (both
    ``ValueError``) for a missing, unreadable or foreign file, or one holding anything but tensors
    and plain data (refused without running it: :func:`forecaster.checkpoint.read_checkpoint`)."""
    import inspect

    from forecaster.checkpoint import check_sizes, read_checkpoint

    ckpt = read_checkpoint(path, map_location=map_location)  # tensors and plain data only: runs no code
    check_checkpoint(ckpt)
    hp = checkpoint_hparams(ckpt)
    check_sizes(hp, f"checkpoint {str(path)!r}")
    params = inspect.signature(GRUForecaster.__init__).parameters
    try:
        model = GRUForecaster(**{k: v for k, v in hp.items() if k in params})
    except (TypeError, RuntimeError, OverflowError, KeyError, AttributeError) as e:  # settings of no model we build
        raise CheckpointMismatchError(f"checkpoint {str(path)!r} describes no model this code can build "
                                      f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    model.on_load_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval(), ckpt
