"""An exponential moving average of the weights, for training (Lightning's ``EMAWeightAveraging``,
limited to the parameters).

Off in ``python -m forecaster fit`` unless asked for (``--weight_averaging.decay 0.95``). What it
does on the accuracy zoo (README, "Accuracy on data nobody tuned for"; three seeds, decay 0.95,
test MAE against the raw weights, one network on every dataset, before ``members``): lower on the longer series (taylor_30m -4%, macro_1q -6%,
nyc_temp_1h and co2_1w -2%) and the seed spread shrinks on most datasets (taylor_30m 5.8% -> 1.3%,
sunspots_1y 13.5% -> 2.8%), but higher on airline_1mo (+15% over eight seeds: its best checkpoint
is the first validation, where the average still holds the younger weights) and us_employment_1mo
(+5% over eight seeds), and on sunspots_1y it narrows the spread mostly by lifting the lucky
seeds. Not a default, then; a way to make a run less dependent on its seed.

What differs from Lightning's callback:
- Only the parameters are averaged and swapped, and a checkpoint takes its buffers from the module.
  The buffers hold the validation's choice (``net.use_network``, ``net.fallback``), made at the end
  of a validation, after the last averaging step; Lightning's callback saves the average's copy of
  the buffers, synced at the last training step, so a checkpoint could carry an older choice.
- ``validate`` or ``test`` right after ``fit`` (``--test_after_fit``) load the best checkpoint and
  keep its average; Lightning's callback would swap in its last average there, or reload the raw
  weights.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["ParameterEMA"]


class ParameterEMA(EMAWeightAveraging):
    """The exponential moving average of the parameters, updated after every optimizer step,
    ``avg = decay * avg + (1 - decay) * current`` (the first update copies the weights).

    Validation runs on the average (so early stopping, the checkpoint's criterion and the
    validation's choice between the network and the plain baselines all judge it), checkpoints
    store it as their ``state_dict`` (so ``test``, ``predict`` and the stream use it, with nothing
    to configure), and training ends with it in the model. The raw weights are kept in the
    checkpoint's ``current_model_state`` and restored when ``fit`` resumes from it (also with the
    averaging switched off). A checkpoint saved after ``fit`` (``trainer.save_checkpoint``) holds
    the average in both places, since training ends with it: resume from the checkpoints ``fit``
    wrote. Checkpoints must be full ones: with ``save_weights_only`` Lightning skips this
    callback's hook, so ``fit`` refuses that combination.

    Args:
        decay: the weight of the old average at each step, in [0, 1); ``1 / (1 - decay)`` steps is
            about how far back the average reaches (20 for 0.95, well inside the 50 steps between
            two validations of the default config). ``None`` switches the averaging off: the raw
            weights are validated and saved, as without the callback.
    """

    def __init__(self, decay: Optional[float] = 0.95) -> None:
        try:
            ok = decay is None or (not isinstance(decay, bool) and 0.0 <= float(decay) < 1.0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"the weight averaging's decay must be a number in [0, 1), or None (null on the "
                             f"command line) to switch it off; got {decay!r} (0.95 averages about the last 20 "
                             f"optimizer steps)")
        super().__init__(use_buffers=False, decay=0.0 if decay is None else float(decay))
        self.decay = None if decay is None else float(decay)
        self._swapped = False  # the module holds the average (during a validation in fit)

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if self.decay is None or stage != "fit":
            return
        weights_only = [type(cb).__name__ for cb in trainer.checkpoint_callbacks
                        if getattr(cb, "save_weights_only", False)]
        if weights_only:  # Lightning skips the callbacks' on_save_checkpoint for those: the raw weights
            raise ValueError(f"the weight averaging needs full checkpoints to save the average, but {weights_only} "
                             "save weights only; set --checkpoint.save_weights_only false, or switch the "
                             "averaging off (--weight_averaging.decay null)")
        super().setup(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._average_model is not None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._average_model is not None:
            super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._average_model is not None:
            super().on_train_end(trainer, pl_module)

    # Swaps only while fitting: a ``validate`` after ``fit`` (``--test_after_fit false``) loads the
    # best checkpoint, which holds the average already; swapping would put the last average there.
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self._average_model is not None and trainer.state.fn == "fit" and not self._swapped:
            self._swap_models(pl_module)
            self._swapped = True

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """An interrupted validation (Ctrl-C, an error) leaves the raw weights in the model, as
        after any training step, so a checkpoint written on the way out is the right way round."""
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def _pairs(self, pl_module: "pl.LightningModule"):
        assert self._average_model is not None
        return zip(self._average_model.module.parameters(), pl_module.parameters())

    def _swap_models(self, pl_module: "pl.LightningModule") -> None:
        for avg, cur in self._pairs(pl_module):
            tmp = avg.data.clone()
            avg.data.copy_(cur.data)
            cur.data.copy_(tmp)

    def _copy_average_to_current(self, pl_module: "pl.LightningModule") -> None:
        for avg, cur in self._pairs(pl_module):
            cur.data.copy_(avg.data)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """``state_dict``: the module's, its parameters replaced by their averages (its buffers, the
        validation's choice among them, as they are); the raw parameters go to
        ``current_model_state``, the averaging's counter to ``averaging_state``."""
        if self._average_model is None:
            return
        state = checkpoint["state_dict"]
        checkpoint["current_model_state"] = dict(state)
        names = [name for name, _ in pl_module.named_parameters()]
        averaged = dict(state)
        for name, avg in zip(names, self._average_model.module.parameters()):
            averaged[name] = avg.detach().clone()
        checkpoint["state_dict"] = averaged
        checkpoint["averaging_state"] = {k: v for k, v in self._average_model.state_dict().items()
                                         if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Resuming ``fit``: the average from ``state_dict``, the raw weights from
        ``current_model_state`` (a checkpoint saved without averaging starts both from its weights).
        Lightning calls this in ``validate``/``test`` after ``fit`` too: there the checkpoint's
        average stays in the model."""
        if trainer.state.fn != "fit":
            return
        if self._average_model is None:  # resuming with the averaging off: go on from the raw weights
            if "current_model_state" in checkpoint:
                pl_module.load_state_dict(checkpoint["current_model_state"])
                rank_zero_info("Resuming without weight averaging from a checkpoint trained with it: training "
                               "continues from its raw weights (current_model_state), not from the average.")
            return
        self._average_model.module.load_state_dict(checkpoint["state_dict"], strict=False)
        if "averaging_state" in checkpoint:
            self._average_model.load_state_dict(
                {**self._average_model.state_dict(), **checkpoint["averaging_state"]})
        if "current_model_state" in checkpoint:
            pl_module.load_state_dict(checkpoint["current_model_state"])
