"""The weight averaging of ``fit`` (:class:`forecaster.averaging.ParameterEMA`): what is validated
is what is saved, the validation's choice survives the swaps, ``decay: null`` is training without
it, and resuming restores both the raw weights and the average."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from types import SimpleNamespace

from forecaster.averaging import ParameterEMA
from forecaster.cli import main
from forecaster.nets import StepNet

SMALL = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "6", "--trainer.val_check_interval", "2",
         "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "1",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--model.net.hidden_size", "8", "--model.net.d_model", "8", "--model.net.head_hidden", "16", "--model.lr", "0.05",
         "--data.context_length", "48", "--data.horizon", "12", "--early_stopping.patience", "100"]



def _fit(root, *extra):
    code = main(["fit", *SMALL, "--test_after_fit", "false", "--trainer.default_root_dir", str(root),
                 "--trainer.logger.init_args.save_dir", str(root), *extra])
    assert code == 0
    (ckpt,) = sorted(root.rglob("best-*.ckpt"))
    val = pl.read_csv(next(root.rglob("metrics.csv")))["val/loss"].drop_nulls().to_list()
    return torch.load(ckpt, weights_only=False), val


@pytest.fixture(scope="module")
def averaged(tmp_path_factory):
    return _fit(tmp_path_factory.mktemp("ema"), "--weight_averaging.decay", "0.5")


def test_the_checkpoint_holds_the_average_and_validates_to_its_recorded_loss(averaged):
    ck, val = averaged
    # three validations during fit, then the best checkpoint validated again after it: the same
    # weights, so the same loss (it would be the last average's, or the raw weights', otherwise)
    *during, after = val
    assert len(during) == 3
    assert after == pytest.approx(min(during), rel=1e-5, abs=1e-6)
    avg, raw = ck["state_dict"], ck["current_model_state"]
    params = [k for k in avg if k.startswith("net.") and avg[k].is_floating_point() and "use_network" not in k
              and "fallback" not in k]
    assert any(not torch.equal(avg[k], raw[k]) for k in params)  # the average differs from the raw weights
    assert ck["averaging_state"]["n_averaged"] > 0


def test_the_validation_choice_is_saved_with_the_average(averaged):
    ck, _ = averaged
    for key in ("net.use_network", "net.fallback"):  # the buffers are the module's, not a stale copy
        assert torch.equal(ck["state_dict"][key], ck["current_model_state"][key])


def test_decay_null_trains_without_averaging(tmp_path):
    ck, val = _fit(tmp_path, "--weight_averaging.decay", "null")
    assert "current_model_state" not in ck and "averaging_state" not in ck
    *during, after = val
    assert after == pytest.approx(min(during), rel=1e-5, abs=1e-6)


def test_averaging_changes_what_is_trained(averaged, tmp_path):
    plain, _ = _fit(tmp_path, "--weight_averaging.decay", "null")
    avg, _ = averaged
    assert any(not torch.equal(plain["state_dict"][k], avg["state_dict"][k]) for k in plain["state_dict"]
               if plain["state_dict"][k].is_floating_point())


@pytest.mark.parametrize("decay", [1.0, -0.1, 2, False, "abc", float("nan")])
def test_bad_decay_is_a_clear_error(decay):
    with pytest.raises(ValueError, match=r"decay must be a number in \[0, 1\), or None \(null on the command line"):
        ParameterEMA(decay=decay)


def test_weights_only_checkpoints_are_refused_with_the_averaging(tmp_path, capsys):
    # Lightning skips the callbacks' checkpoint hook for weights-only checkpoints: the raw weights
    # would be saved while the average was validated
    code = main(["fit", *SMALL, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                 "--checkpoint.save_weights_only", "true", "--weight_averaging.decay", "0.5"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "save weights only" in err and "--checkpoint.save_weights_only false" in err
    assert "Traceback" not in err


def test_an_interrupted_validation_leaves_the_raw_weights_in_the_model():
    from forecaster.lightning_module import GRUForecaster

    model = GRUForecaster(n_targets=1, n_past_covariates=0, n_future_covariates=0, context_length=12, horizon=4,
                          seasonal_period=3, min_origin=2, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    cb = ParameterEMA(decay=0.5)
    cb.setup(SimpleNamespace(checkpoint_callbacks=[]), model, "fit")
    cb._average_model.update_parameters(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    fitting = SimpleNamespace(state=SimpleNamespace(fn="fit"))
    cb.on_validation_epoch_start(fitting, model)  # the module now holds the average
    assert any(not torch.equal(raw[k], v) for k, v in model.state_dict().items())
    cb.on_exception(fitting, model, KeyboardInterrupt())
    for k, v in model.state_dict().items():
        assert torch.equal(raw[k], v), k
    cb.on_validation_epoch_end(fitting, model)  # nothing left to swap back
    for k, v in model.state_dict().items():
        assert torch.equal(raw[k], v), k


@pytest.mark.parametrize("decay", ["0.5", "null"])
def test_resume_restores_the_raw_weights_and_the_average(averaged, tmp_path, decay):
    # with the averaging switched off, too: training goes on from the raw weights (the optimizer's
    # state belongs to them), not from the average
    ck, _ = averaged
    path = tmp_path / "best.ckpt"
    torch.save(ck, path)
    seen = {}

    class Probe(ParameterEMA):
        def on_load_checkpoint(self, trainer, pl_module, checkpoint):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
            if trainer.state.fn != "fit" or seen:  # the validate after fit loads the new best checkpoint
                return
            seen["raw"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            if self._average_model is not None:
                seen["avg"] = {k: v.detach().clone() for k, v in self._average_model.module.state_dict().items()}
                seen["n"] = int(self._average_model.n_averaged)

    import forecaster.cli as cli

    orig = cli.ParameterEMA
    cli.ParameterEMA = Probe
    try:
        code = main(["fit", *SMALL, "--trainer.max_epochs", "2", "--test_after_fit", "false",
                     "--weight_averaging.decay", decay, "--ckpt_path", str(path),
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
                     str(tmp_path)])
    finally:
        cli.ParameterEMA = orig
    assert code == 0
    for k, v in ck["current_model_state"].items():
        assert torch.equal(seen["raw"][k], v), k
    if decay == "null":
        assert "avg" not in seen
        return
    for k, v in ck["state_dict"].items():
        if k in seen["avg"] and "use_network" not in k and "fallback" not in k:
            assert torch.equal(seen["avg"][k], v), k
    assert seen["n"] == int(ck["averaging_state"]["n_averaged"])


def test_save_takes_the_averaged_parameters_and_the_live_choice():
    # the choice is made at the end of a validation, after the last averaging step: the checkpoint
    # must take it from the module, not from the average's copy of the buffers
    from forecaster.lightning_module import GRUForecaster

    model = GRUForecaster(n_targets=2, n_past_covariates=0, n_future_covariates=0, context_length=12, horizon=4,
                          seasonal_period=3, min_origin=2, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))
    cb = ParameterEMA(decay=0.5)
    cb.setup(SimpleNamespace(checkpoint_callbacks=[]), model, "fit")
    cb._average_model.update_parameters(model)  # copies the weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    cb._average_model.update_parameters(model)  # average = start + 0.5
    model.net.use_network.fill_(False)
    model.net.fallback.fill_(2)
    ck = {"state_dict": model.state_dict()}
    cb.on_save_checkpoint(None, model, ck)
    raw, avg = ck["current_model_state"], ck["state_dict"]
    for name, p in model.named_parameters():
        assert torch.equal(raw[name], p.detach())
        torch.testing.assert_close(avg[name], p.detach() - 0.5)
    assert not avg["net.use_network"] and int(avg["net.fallback"]) == 2
    assert int(ck["averaging_state"]["n_averaged"]) == 2
