"""Issue 24, case 1: a checkpoint file cannot run code. A valid checkpoint with one extra pickled
object whose ``__reduce__`` calls ``exec``, and a bare pickle that is no checkpoint at all, go
through every entry point that reads a checkpoint; each refuses it in one line and the code never
runs (the positive control shows that a plain ``torch.load`` does run it)."""

from __future__ import annotations

import pickle

import lightning as L
import pytest
import torch

from forecaster import GRUForecaster
from forecaster.checkpoint import CheckpointError, read_checkpoint
from forecaster.cli import main
from forecaster.data import DEFAULT_DATASET, TimeSeriesDataModule
from forecaster.lightning_module import load_checkpoint
from forecaster.nets import StepNet
from forecaster.streaming import StreamingForecaster


class Evil:
    """Unpickles as ``exec(code)``, which writes ``marker``: any process that loads it runs code."""

    def __init__(self, marker):
        self.code = f"open({str(marker)!r}, 'w').write('code ran')"

    def __reduce__(self):
        return exec, (self.code,)


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    dm = TimeSeriesDataModule(context_length=48, horizon=6, batch_size=32)
    model = GRUForecaster(n_targets=dm.n_targets, n_past_covariates=dm.n_past_covariates,
                          n_future_covariates=dm.n_future_covariates, context_length=48, horizon=6,
                          seasonal_period=dm.season_length, members=1,
                          data_spec=dm.spec.to_dict(), net=StepNet(hidden_size=8, d_model=8, head_hidden=8))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(root))
    trainer.fit(model, datamodule=dm)
    path = root / "good.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(params=["checkpoint_with_an_extra_object", "bare_pickle"])
def evil(request, good_ckpt, tmp_path):
    """(path of a file that runs code when unpickled, marker path that the code writes)."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    if request.param == "bare_pickle":
        path.write_bytes(pickle.dumps(Evil(marker)))
    else:
        ckpt = torch.load(good_ckpt, weights_only=True)
        ckpt["callbacks"] = {"Surprise": Evil(marker)}
        torch.save(ckpt, path)
    return path, marker


def test_the_evil_file_does_run_code_when_loaded_the_unsafe_way(evil):
    path, marker = evil
    try:
        torch.load(path, weights_only=False)
    except Exception:  # noqa: BLE001 - the bare pickle is no checkpoint; the code ran before that mattered
        pass
    assert marker.read_text() == "code ran"


CLI = {
    "predict": ["predict", "--output", "{tmp}/fc.parquet"],
    "test": ["test"],
    "validate": ["validate"],
    "fit_resume": ["fit", "--trainer.max_epochs", "1"],
    "stream": ["stream"],
    "stream_replay": ["stream", "--replay", str(DEFAULT_DATASET), "--max_steps", "2"],
}


@pytest.mark.parametrize("command", list(CLI), ids=list(CLI))
def test_every_command_refuses_it_in_one_line_without_running_it(evil, command, tmp_path, capsys):
    path, marker = evil
    args = [a.format(tmp=tmp_path) for a in CLI[command]] + ["--ckpt_path", str(path)]
    if command not in ("stream", "stream_replay"):
        args += ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "refused without loading it" in lines[0] or "not a checkpoint file" in lines[0], lines[0]
    assert not marker.exists()


def test_the_library_entry_points_refuse_it_without_running_it(evil):
    path, marker = evil
    for load in (read_checkpoint, load_checkpoint, StreamingForecaster.from_checkpoint):
        with pytest.raises(CheckpointError, match="refused without loading it|not a checkpoint file") as e:
            load(path)
        assert "\n" not in str(e.value)
    with pytest.raises(Exception):  # Lightning's own loader reads with weights_only=True too
        GRUForecaster.load_from_checkpoint(path)
    assert not marker.exists()


def test_a_good_checkpoint_still_loads_everywhere(good_ckpt):
    model, ckpt = load_checkpoint(good_ckpt)
    assert ckpt["forecaster_format_version"] and model.spec is not None
    stream = StreamingForecaster.from_checkpoint(good_ckpt)
    assert stream.horizon == 6
    assert GRUForecaster.load_from_checkpoint(good_ckpt).hparams.horizon == 6


CRAFTED = {
    "hparams_list": lambda ck: ck.update(hyper_parameters=[1, 2]),
    "state_dict_list": lambda ck: ck.update(state_dict=[1]),
    "extra_weight": lambda ck: ck["state_dict"].update(surprise=torch.zeros(3)),
    "hidden_2e40": lambda ck: ck["hyper_parameters"]["net"]["init_args"].update(hidden_size=2 ** 40),
    "net_foreign_class": lambda ck: ck["hyper_parameters"]["net"].update(class_path="os.system"),
    "net_unknown_setting": lambda ck: ck["hyper_parameters"]["net"]["init_args"].update(shell="rm -rf /"),
    "members_1e9": lambda ck: ck["hyper_parameters"].update(members=10 ** 9),
    "context_1e12": lambda ck: ck["hyper_parameters"].update(context_length=10 ** 12),
}


@pytest.mark.parametrize("change", list(CRAFTED), ids=list(CRAFTED))
def test_a_crafted_checkpoint_is_a_one_line_refusal_not_a_traceback_or_an_allocation(good_ckpt, tmp_path, change,
                                                                                    capsys):
    ck = torch.load(good_ckpt, weights_only=True)
    CRAFTED[change](ck)
    path = tmp_path / "crafted.ckpt"
    torch.save(ck, path)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    for args in (["stream", "--ckpt_path", str(path)],
                 ["predict", "--ckpt_path", str(path), "--output", str(tmp_path / "f.csv"), "--trainer.logger",
                  "false"]):
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
