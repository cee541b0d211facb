"""``GRUForecaster``: the LightningModule that trains :class:`forecaster.model.GRUForecastNet`.

Training uses forking sequences: the GRU runs once over the context and every origin
``t >= min_origin`` forecasts steps ``t+1 .. t+horizon`` inside the window, so the model learns to
forecast from any point of a stream. Validation, test and predict use the last origin
(``t = context_length - 1``), i.e. the window's last ``horizon`` steps; metrics are on the original
scale beside the seasonal-naive and last-value baselines on the same windows, plus MSE and MAE in
the data module's scaled units (``{stage}/mse_scaled``, ``{stage}/mae_scaled`` and their
``_seasonal_naive`` / ``_last_value`` twins; with ``scaling: standard`` these are the z-scored
metrics of the ETTh1 protocol), averaged over every observed element of every window.

With ``decoder="last"`` or ``"pmf"`` (see :mod:`forecaster.model` for the long-look-back options)
training uses the last origin only, like evaluation.

The checkpoint holds the hyperparameters, the data spec (columns, frequency, calendar, scalers:
``TimeSeriesDataModule.spec()``) and :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from forecaster.metrics import ForecastMetrics, last_value_forecast, seasonal_naive_forecast, seasonal_scale
from forecaster.model import GRUForecastNet, check_options

__all__ = ["GRUForecaster", "CheckpointMismatchError", "FORMAT_VERSION"]

FORMAT_VERSION = 1
LOSSES = ("mae", "mse", "huber", "quantile")
_SHAPE_KEYS = ("n_targets", "n_past_covariates", "n_future_covariates", "horizon", "hidden_size", "num_layers",
               "d_model", "head_hidden", "quantiles", "channel_independent", "segment_length")


class CheckpointMismatchError(ValueError):
    """A checkpoint that cannot be loaded into this model (other format version or shapes)."""


class GRUForecaster(L.LightningModule):
    """GRU forecaster on ``kernels.FusedGRU``.

    Args:
        n_targets, n_past_covariates, n_future_covariates, context_length, horizon: the data's shape
            (linked from ``TimeSeriesDataModule`` by the CLI; pass them from the data module in Python).
        seasonal_period: period of the seasonal-naive baseline and of MASE's scale.
        hidden_size, num_layers, dropout, reset_after, backend: the GRU (``backend``: auto | torch | triton).
        d_model: width of the input projection; head_hidden: hidden width of the head MLP.
        loss: ``mae``, ``mse``, ``huber`` (point forecasts) or ``quantile`` (pinball loss over ``quantiles``).
            All are computed on the data module's scaled values (z-scores with ``scaling: standard``).
        huber_delta: for ``loss="huber"``: errors up to this size (in scaled units) cost ``e**2 / 2``,
            larger ones ``delta * (|e| - delta / 2)`` (``torch.nn.functional.huber_loss``): between
            ``mse`` (large delta) and ``mae`` (small delta, scaled by delta).
        quantiles: levels for ``loss="quantile"`` (sorted, in (0, 1)); the one nearest 0.5 is the
            point forecast used for metrics.
        min_origin: first origin that contributes to the training loss (a short warm-up).
        channel_independent, revin, segment_length, decoder, head_dropout: the long-look-back options
            of :class:`forecaster.model.GRUForecastNet` (defaults: off, today's forking model).
            ``channel_independent``: targets as univariate series sharing weights (no covariates);
            ``revin``: none | last | mean | std, per-window level (and, for std, scale) removed and restored;
            ``segment_length``: steps per GRU input (needs context_length % segment_length == 0);
            ``decoder``: forking (every origin) | last (final state only; needed by segments/revin) |
                pmf (SegRNN's parallel multi-step decoder: one GRU step per output segment);
            ``head_dropout``: dropout in front of the head.
        lr, weight_decay: AdamW (overridden by ``--optimizer`` on the CLI).
        lr_decay: multiply the learning rate by this after every epoch (ExponentialLR; 1.0 = constant).
            Ignored when the CLI's ``--optimizer`` / ``--lr_scheduler`` replace configure_optimizers.
        data_spec: ``TimeSeriesDataModule.spec()``: saved in the checkpoint so it can forecast
            without the training data (linked by the CLI).
    """

    def __init__(
        self,
        n_targets: int = 1,
        n_past_covariates: int = 0,
        n_future_covariates: int = 0,
        context_length: int = 168,
        horizon: int = 24,
        seasonal_period: int = 24,
        hidden_size: int = 64,
        num_layers: int = 1,
        d_model: int = 32,
        head_hidden: int = 128,
        dropout: float = 0.0,
        reset_after: bool = True,
        backend: str = "auto",
        loss: str = "quantile",
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        huber_delta: float = 1.0,
        min_origin: int = 24,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        data_spec: dict | None = None,
        channel_independent: bool = False,
        revin: str = "none",
        segment_length: int = 1,
        decoder: str = "forking",
        head_dropout: float = 0.0,
        lr_decay: float = 1.0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}: choose one of {list(LOSSES)}")
        if not huber_delta > 0.0:
            raise ValueError(f"huber_delta={huber_delta!r}: must be > 0 (the error size, in scaled units, where the "
                             "Huber loss turns from quadratic to linear)")
        if not 0.0 < lr_decay <= 1.0:
            raise ValueError(f"lr_decay={lr_decay!r}: must be in (0, 1]")
        check_options(n_past_covariates, n_future_covariates, channel_independent, revin, segment_length, decoder,
                      head_dropout, context_length, horizon)
        if not 0 <= min_origin < context_length:
            raise ValueError(f"min_origin={min_origin} must be in [0, context_length={context_length})")
        quantiles = [float(q) for q in quantiles] if loss == "quantile" else []
        if loss == "quantile" and not quantiles:
            raise ValueError("loss='quantile' needs at least one quantile")
        self.save_hyperparameters()
        self.hparams["quantiles"] = quantiles
        self.context_length, self.horizon = int(context_length), int(horizon)
        self.season_length = int(seasonal_period)
        self.net = GRUForecastNet(
            n_targets, n_past_covariates, n_future_covariates, horizon, hidden_size=hidden_size,
            num_layers=num_layers, d_model=d_model, head_hidden=head_hidden, dropout=dropout,
            reset_after=reset_after, backend=backend, quantiles=quantiles,
            channel_independent=channel_independent, revin=revin, segment_length=segment_length, decoder=decoder,
            head_dropout=head_dropout,
        )
        self.register_buffer("_q", torch.tensor(quantiles or [0.5], dtype=torch.float32), persistent=False)
        self.val_metrics = ForecastMetrics()
        self.test_metrics = ForecastMetrics()
        self.val_scaled = ScaledMetrics()
        self.test_scaled = ScaledMetrics()
        self._scaler_cache: dict = {}

    @classmethod
    def from_datamodule(cls, dm, **kwargs) -> "GRUForecaster":
        """A model shaped for ``dm`` (a ``TimeSeriesDataModule``): its target/covariate counts, context,
        horizon, seasonal period and spec (columns, frequency, scalers) are filled in; ``kwargs`` are
        the other hyperparameters."""
        return cls(n_targets=dm.n_targets, n_past_covariates=dm.n_past_covariates,
                   n_future_covariates=dm.n_future_covariates, context_length=dm.context_length,
                   horizon=dm.horizon, seasonal_period=dm.season_length, data_spec=dm.spec(), **kwargs)

    # ---- convenience ----

    @property
    def data_spec(self) -> dict | None:
        return self.hparams.get("data_spec")

    @property
    def quantiles(self) -> list[float]:
        return list(self.net.quantiles)

    @property
    def target_cols(self) -> list[str]:
        spec = self.data_spec
        return list(spec["target_cols"]) if spec else [f"target_{i}" for i in range(self.net.n_targets)]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """All origins of the context: (B, context_length, horizon, C, Q), scaled units."""
        return self.net(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"],
                        self.context_length)

    @torch.no_grad()
    def forecast(self, batch: dict[str, Tensor]) -> Tensor:
        """Forecast of each window's last ``horizon`` steps from its context, on the original scale:
        (B, horizon, C, Q). ``batch`` as yielded by ``TimeSeriesDataModule`` (predict windows or any
        window: only the context and the future covariates are read)."""
        s = self.net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"],
                                   self.context_length)
        return s * batch["scale"][:, None, :, None] + batch["loc"][:, None, :, None]

    # ---- training ----

    def _loss(self, pred: Tensor, y: Tensor, w: Tensor) -> Tensor:
        """pred (..., Q), y and w (...): observed-weighted mean of the elementwise loss."""
        kind = self.hparams.loss
        if kind == "quantile":
            e = y.unsqueeze(-1) - pred
            q = self._q.to(pred.dtype)
            el = torch.maximum(q * e, (q - 1) * e).mean(-1)
        elif kind == "mae":
            el = (pred[..., 0] - y).abs()
        elif kind == "huber":
            el = F.huber_loss(pred[..., 0], y, reduction="none", delta=self.hparams.huber_delta)
        else:
            el = (pred[..., 0] - y) ** 2
        return (el * w).sum() / w.sum().clamp_min(1.0)

    def _shared_forking_loss(self, batch: dict[str, Tensor]) -> Tensor:
        T, h = self.context_length, self.horizon
        pred = self(batch)  # (B, T, h, C, Q)
        # targets of origin t: steps t+1 .. t+h -> (B, T, h, C)
        y = batch["target"][:, 1:T + h].unfold(1, h, 1).transpose(-1, -2)
        w = batch["observed"][:, 1:T + h].unfold(1, h, 1).transpose(-1, -2)
        m = int(self.hparams.min_origin)
        return self._loss(pred[:, m:].float(), y[:, m:].float(), w[:, m:].float())

    def _last_origin_loss(self, batch: dict[str, Tensor]) -> Tensor:
        T, h = self.context_length, self.horizon
        pred = self.net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], T)
        return self._loss(pred.float(), batch["target"][:, T:T + h].float(), batch["observed"][:, T:T + h].float())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.net.decoder != "forking":
            loss = self._last_origin_loss(batch)
        else:
            loss = self._shared_forking_loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["target"].shape[0])
        return loss

    # ---- evaluation (last origin) ----

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        batch = self._align_scalers(batch)
        T, h = self.context_length, self.horizon
        B = batch["target"].shape[0]
        pred_s = self.net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], T)
        y_s, w = batch["target"][:, T:T + h], batch["observed"][:, T:T + h]
        loss = self._loss(pred_s.float(), y_s.float(), w.float())
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", on_epoch=True, sync_dist=True, batch_size=B)

        loc, sc = batch["loc"][:, None, :], batch["scale"][:, None, :]
        ctx = batch["target"][:, :T] * sc + loc
        ctx_obs = batch["observed"][:, :T]
        y = y_s * sc + loc
        point = pred_s[..., self.net.anchor].float() * sc + loc
        forecasts = {
            "model": point,
            "seasonal_naive": seasonal_naive_forecast(ctx, h, self.season_length),
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
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """{"series", "start", "forecast" (B, horizon, C, Q) original scale}."""
        batch = self._align_scalers(batch)
        return {"series": batch["series"], "start": batch["start"], "forecast": self.forecast(batch).float()}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        decay = float(self.hparams.get("lr_decay", 1.0))
        if decay == 1.0:
            return opt
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ---- scalers: forecast with the checkpoint's scalers, not ones refitted on new data ----

    def _align_scalers(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """If the attached data module fitted different scalers (e.g. predicting on a newer file),
        re-express the batch in this model's scalers for the series the model knows."""
        spec = self.data_spec
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if not spec or dm is None or not hasattr(dm, "spec"):
            return batch
        key = id(dm)
        if key not in self._scaler_cache:
            self._scaler_cache = {key: _scaler_conversion(spec, dm.spec())}
        conv = self._scaler_cache[key]
        if conv is None:
            return batch
        a, b = (t.to(batch["target"].device) for t in conv)  # (S, D): scaled_model = scaled_dm * a + b
        s = batch["series"]
        A, Bv = a[s][:, None, :], b[s][:, None, :]
        C, P = batch["target"].shape[-1], batch["past_cov"].shape[-1]
        Fu = A.shape[-1] - C - P
        out = dict(batch)
        out["target"] = (batch["target"] * A[..., :C] + Bv[..., :C]) * batch["observed"]
        out["past_cov"] = batch["past_cov"] * A[..., C:C + P] + Bv[..., C:C + P]
        if Fu:
            fc = batch["future_cov"].clone()
            fc[..., :Fu] = fc[..., :Fu] * A[..., C + P:] + Bv[..., C + P:]
            out["future_cov"] = fc
        # original = scaled_model * scale_model + loc_model
        out["scale"] = batch["scale"] / a[s][:, :C]
        out["loc"] = batch["loc"] - b[s][:, :C] * out["scale"]
        return out

    # ---- checkpoint format ----

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
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


def _scaler_conversion(model_spec: dict, dm_spec: dict):
    """Per data-module series (S, D) factors a, b with scaled_model = scaled_dm * a + b over the value
    columns (targets, past, user future covariates); None when nothing changes."""
    cols = [*dm_spec["target_cols"], *dm_spec["past_covariate_cols"], *dm_spec["future_covariate_cols"]]
    S, D = len(dm_spec["series_ids"]), len(cols)
    a, b = np.ones((S, D), np.float64), np.zeros((S, D), np.float64)
    changed = False
    for i, sid in enumerate(dm_spec["series_ids"]):
        mine = model_spec.get("scalers", {}).get(str(sid))
        theirs = dm_spec["scalers"][str(sid)]
        if mine is None:  # a series the model has not seen: keep the data's own scalers
            continue
        for j, c in enumerate(cols):
            if c not in mine:
                continue
            l1, s1 = theirs[c]
            l0, s0 = mine[c]
            a[i, j], b[i, j] = s1 / s0, (l1 - l0) / s0
            changed |= not (np.isclose(a[i, j], 1.0, rtol=1e-6) and np.isclose(b[i, j], 0.0, atol=1e-6))
    if not changed:
        return None
    return torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)


def check_checkpoint(checkpoint: dict[str, Any], model: GRUForecaster | None = None) -> None:
    """Raise :class:`CheckpointMismatchError` (one clear sentence) for a checkpoint of another
    format version, or whose weights do not fit ``model``."""
    ver = checkpoint.get("forecaster_format_version")
    if ver is None:
        raise CheckpointMismatchError("the checkpoint was not written by GRUForecaster (no forecaster_format_version)")
    if ver != FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"the checkpoint has format version {ver} but this code reads version {FORMAT_VERSION}; "
            "retrain or use the matching gru-forecaster version")
    if model is None:
        return
    own = model.state_dict()
    theirs = checkpoint.get("state_dict", {})
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in theirs.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in theirs]
    if bad or missing:
        hp = checkpoint.get("forecaster_shape") or checkpoint.get("hyper_parameters", {})
        diff = [f"{k}={hp.get(k)!r} (model: {model.hparams.get(k)!r})" for k in _SHAPE_KEYS
                if k in hp and hp.get(k) != model.hparams.get(k)]
        what = ", ".join(diff) if diff else "; ".join(bad[:3] + [f"missing {k}" for k in missing[:3]])
        raise CheckpointMismatchError(
            f"the checkpoint does not fit this model/data: checkpoint has {what}. Use the data columns and model settings "
            "the checkpoint was trained with")
