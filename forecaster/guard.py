"""``FiniteValidationLoss``: ``fit`` keeps no checkpoint of a validation loss that is not a number.

A NaN validation loss is what too little data or a diverged network look like from inside the
training loop, and Lightning's ``ModelCheckpoint`` saves the first validation as the "best" whatever
its loss. :class:`GRUForecaster` attaches this callback (``configure_callbacks``), so the CLI and a
plain ``lightning.Trainer`` both get it: a fit whose validation part holds no observed target does
not start, and a validation whose loss is not finite stops the fit with
:class:`NonFiniteLossError` (a ``ValueError``: one ``error:`` line and exit code 2 from the CLI),
naming the series and targets, before the checkpoint callbacks (which Lightning runs last) see it.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

__all__ = ["FiniteValidationLoss", "NonFiniteLossError"]


class NonFiniteLossError(ValueError):
    """The validation loss of a fit is not finite (or cannot be)."""


class FiniteValidationLoss(pl.Callback):
    """Refuses a fit whose validation cannot give a finite loss, and stops one whose validation
    loss (``val/loss``, ``val/loss_network``) is not finite, saying which series and targets."""

    KEYS = ("val/loss", "val/loss_network")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if trainer.limit_val_batches == 0 or not hasattr(dm, "observed_forecast_steps"):
            return
        n = len(dm.val_dataset())
        if n == 0:  # no window at all: the CLI says what to change; Lightning skips validation
            return
        if dm.observed_forecast_steps("val").sum() == 0:
            raise NonFiniteLossError(
                f"the validation part holds no observed value of {dm.target_cols} in any series (its {n} windows "
                "forecast missing steps only), so the validation loss would be 0 / 0: give the validation part "
                "observed targets (val_size, val_start), or train without validation (--trainer.limit_val_batches 0 "
                "--checkpoint.monitor train/loss_epoch --early_stopping.monitor train/loss_epoch)")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        bad = {k: float(v) for k in self.KEYS
               if (v := trainer.callback_metrics.get(k)) is not None and not math.isfinite(float(v))}
        if not bad:
            return
        what = ", ".join(f"{k} = {v}" for k, v in bad.items())
        cb = trainer.checkpoint_callback
        kept = (f"; the best checkpoint before it: {cb.best_model_path}" if cb is not None and cb.best_model_path
                else "; no checkpoint was saved")
        raise NonFiniteLossError(f"{what} at step {trainer.global_step}: {_diagnose(trainer, pl_module)}{kept}")


@torch.no_grad()
def _diagnose(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
    """Why the validation loss is not finite, from the validation batches that ran (only on failure)."""
    loaders = trainer.val_dataloaders
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    T = pl_module.context_length
    ids = list(getattr(trainer.datamodule, "series_ids", []))
    cols = list(pl_module.target_cols)
    seen, bad = 0.0, {}
    for dl, limit in zip(loaders, trainer.num_val_batches):
        for i, batch in enumerate(dl):
            if i >= limit:
                break
            batch = {k: v.to(pl_module.device) for k, v in batch.items()}
            seen += float(batch["observed"][:, T:].sum())
            fc = pl_module.forecast(batch)  # (B, h, C, Q)
            for b, c in (~torch.isfinite(fc)).any(dim=-1).any(dim=1).nonzero().tolist():
                s = int(batch["series"][b])
                bad.setdefault(ids[s] if s < len(ids) else s, set()).add(cols[c])
    if not seen:
        return (f"the validation batches that ran hold no observed target (limit_val_batches = "
                f"{trainer.limit_val_batches}); validate on more of the validation part")
    if bad:
        shown = "; ".join(f"series {s!r}: {sorted(c, key=cols.index)}" for s, c in list(bad.items())[:5])
        return (f"the forecasts are not finite for {len(bad)} series ({shown}{'; ...' if len(bad) > 5 else ''}): "
                "training diverged; lower --model.lr, or check those series' values and covariates")
    return "every forecast is finite and targets are observed; set FORECASTER_DEBUG=1 and report it"
