"""``members``: an ensemble of independently initialised networks whose forecasts are averaged
(forecaster/nets/ensemble.py). Its forecast is the members' mean for every decoder (quantiles and the
validation's choice included), each member trains exactly as it would alone (its own loss, its own
gradient clipping), and an ensemble fits, checkpoints, predicts and streams through the CLI."""

from __future__ import annotations

import pytest
import torch

from forecaster.baseline import BASELINES
from forecaster.cli import members_line
from forecaster.lightning_module import GRUForecaster
from forecaster.nets import EnsembleNet, StepForecastNet, StepNet, WindowForecastNet
from tests.forecaster.test_model import synthetic_batch, small_model

DECODERS = {"forking": {}, "last-revin": {"decoder": "last", "revin": "std"},
            "pmf": {"decoder": "pmf", "segment_length": 2, "n_future_covariates": 0}}


def _randomise_heads(net):
    with torch.no_grad():
        for m in net.members:
            for p in m.head.parameters():
                p.normal_(0, 0.3)


@pytest.mark.parametrize("name", list(DECODERS))
def test_forecast_is_the_members_mean_on_the_ensembles_baseline(name):
    torch.manual_seed(0)
    model = small_model(members=3, **DECODERS[name]).eval()
    net = model.net
    assert isinstance(net, EnsembleNet) and net.n_members == 3
    kind = StepForecastNet if name == "forking" else WindowForecastNet
    assert all(type(m) is kind for m in net.members)
    _randomise_heads(net)
    b = synthetic_batch(f=model.hparams.n_future_covariates)
    args = (b["target"], b["observed"], b["past_cov"], b["future_cov"], model.context_length)
    T = model.context_length
    with torch.no_grad():
        # each member's own network part, then the baseline of the window once
        res = torch.stack([m.forecast_last(*args, None, residual=True) for m in net.members])
        assert not torch.allclose(res[0], res[1])  # the members differ (independent initialisations)
        expected = net.add_baseline(res.mean(0), b["target"][:, :T], b["observed"][:, :T], b["baseline"])
        torch.testing.assert_close(net.forecast_last(*args, b["baseline"]), expected)
        torch.testing.assert_close(net.forecast_last(*args, b["baseline"], each=True)[1],
                                   net.add_baseline(res[1], b["target"][:, :T], b["observed"][:, :T], b["baseline"]))
        q = net.forecast_last(*args, b["baseline"])
        assert (q.diff(dim=-1) >= 0).all()  # a mean of non-crossing quantiles does not cross
        # the validation's choice is the ensemble's: the plain last value, the members' mean spread around it
        net.use_network.fill_(False)
        net.fallback.fill_(BASELINES.index("last"))
        plain = net.forecast_last(*args, b["baseline"])
        spread = res.mean(0) - res.mean(0)[..., net.anchor:net.anchor + 1]
        torch.testing.assert_close(plain, net.add_baseline(spread, b["target"][:, :T], b["observed"][:, :T],
                                                           b["baseline"], mode="last"))
        assert not any(hasattr(m, "use_network") for m in net.members)  # one choice, not K
        if name == "forking":
            every = net(*args, b["baseline"], residual=True)  # (B, T, h, C, Q), every origin
            torch.testing.assert_close(every, torch.stack([m(*args, None, residual=True) for m in net.members]).mean(0))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")
def test_each_member_trains_as_it_would_alone():
    """The ensemble's gradient is every member's gradient as a single model on the same batch, and
    the clipping is member by member."""
    torch.manual_seed(0)
    ens = small_model(members=2)
    b = synthetic_batch()
    _randomise_heads(ens.net)
    loss = ens.training_step(b, 0)
    loss.backward()
    singles = []
    for member in ens.net.members:
        one = small_model()
        state = {k: v for k, v in member.state_dict().items()}
        state.update(use_network=one.net.use_network, fallback=one.net.fallback)
        one.net.load_state_dict(state)
        one.training_step(b, 0).backward()
        singles.append(one)
        for (k, p), (_, q) in zip(member.named_parameters(), one.net.named_parameters()):
            torch.testing.assert_close(p.grad, q.grad, msg=k)
    # clipping at a value both members exceed: each member's norm is clipped alone
    norms = [torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.parameters()])) for m in ens.net.members]
    clip = 0.5 * float(min(norms))
    ens.configure_gradient_clipping(None, clip, "norm")
    for m, one in zip(ens.net.members, singles):
        torch.nn.utils.clip_grad_norm_(one.parameters(), clip)
        for p, q in zip(m.parameters(), one.net.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
    for m in ens.net.members:  # each at the clip (clipping the whole ensemble would leave each below it)
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.parameters()]))
        torch.testing.assert_close(norm, torch.tensor(clip))


def test_members_in_state_dict_and_checked():
    torch.manual_seed(0)
    model = small_model(members=2)
    keys = list(model.state_dict())
    assert "net.use_network" in keys and "net.members.1.gru.weight_hh_l0" in keys
    assert not any(k.startswith("net.members.0.use") for k in keys)
    assert "net.gru.weight_hh_l0" in small_model().state_dict()  # one network: the old keys
    for bad in (0, -1, True, 2.5, "3"):
        with pytest.raises(ValueError, match=r"members=.*an int >= 1"):
            small_model(members=bad)
    shape = dict(n_targets=1, n_past_covariates=0, n_future_covariates=0, horizon=4, context_length=12, quantiles=None,
                 baseline="none", season_length=1)
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleNet([StepNet().build(**shape)])
    with pytest.raises(ValueError, match="one class with the same shapes"):
        EnsembleNet([StepNet().build(**shape), StepNet(hidden_size=8).build(**shape)])


def test_auto_members_follow_the_training_windows():
    from forecaster.lightning_module import ENSEMBLE_WINDOWS, MAX_AUTO_MEMBERS, resolve_members

    assert resolve_members("auto", None) == 1 and resolve_members("auto", 0) == 1
    assert resolve_members("auto", 1) == MAX_AUTO_MEMBERS
    assert resolve_members("auto", ENSEMBLE_WINDOWS // 3) == 3
    assert resolve_members("auto", ENSEMBLE_WINDOWS // 2) == 2 and resolve_members("auto", ENSEMBLE_WINDOWS // 2 + 1) == 1
    assert resolve_members(4, 10**6) == 4  # a number is kept
    model = small_model(train_windows=ENSEMBLE_WINDOWS // 4)
    assert model.n_members == 4 and model.hparams.members == 4  # the checkpoint holds the number
    assert "4 networks averaged (members=auto: 500 training windows" in members_line(model)
    assert members_line(small_model(train_windows=ENSEMBLE_WINDOWS)) == \
        "model: 1 network (members=auto: 2,000 training windows; an ensemble up to 1,000)"
    assert members_line(small_model(members=1, train_windows=10)) == "model: 1 network (members=1)"


def _short_series(path):
    import datetime as dt

    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    t0 = dt.datetime(2024, 1, 1)
    pl.DataFrame({"time": [t0 + dt.timedelta(hours=i) for i in range(160)],
                  "y": np.sin(np.arange(160) * 2 * np.pi / 24) * 3 + rng.normal(size=160) * 0.3}).write_csv(path)


def test_a_small_dataset_fits_an_ensemble_that_predicts_and_streams_and_old_checkpoints_are_refused(tmp_path, capsys):
    """``fit`` with the defaults on a short series picks an ensemble (and says so); its checkpoint
    predicts and streams; a checkpoint written before ``members`` existed loads as one network even
    where ``auto`` would pick several."""
    import polars as pl

    from forecaster.cli import main
    from forecaster.lightning_module import load_checkpoint
    from forecaster.streaming import StreamingForecaster

    csv = tmp_path / "short.csv"
    _short_series(csv)
    common = ["--data.path", str(csv), "--data.time_col", "time", "--data.target_cols", "[y]",
              "--data.context_length", "24", "--data.horizon", "6"]
    tiny = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--model.net.hidden_size", "8", "--model.net.d_model", "8",
            "--model.net.head_hidden", "16", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger.init_args.save_dir", str(tmp_path)]
    assert main(["fit", *common, *tiny]) == 0
    out = capsys.readouterr().out
    assert "model: 5 networks averaged (members=auto: " in out, out
    ckpt = next(tmp_path.rglob("*.ckpt"))
    model, raw = load_checkpoint(ckpt)
    assert isinstance(model.net, EnsembleNet) and model.net.n_members == 5 and raw["hyper_parameters"]["members"] == 5
    assert main(["predict", "--ckpt_path", str(ckpt), "--data.path", str(csv), "--output", str(tmp_path / "f.csv"),
                 "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]) == 0
    fc = pl.read_csv(tmp_path / "f.csv")
    stream = StreamingForecaster.from_checkpoint(ckpt)
    stream.observe(pl.read_csv(csv, try_parse_dates=True))
    streamed = stream.forecast()
    assert streamed.height == fc.height == 6 and stream.info()["memory_bytes"][0] > 5 * 8 * 4

    # a checkpoint of before `members`: refused in one line (one checkpoint format; train it again)
    raw["hyper_parameters"].pop("members")
    torch.save(raw, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=r"predates the settings \['members'\].*train it again"):
        load_checkpoint(tmp_path / "old.ckpt")
    assert main(["predict", "--ckpt_path", str(tmp_path / "old.ckpt"), "--data.path", str(csv), "--output",
                 str(tmp_path / "g.csv"), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]) == 2
    assert "predates the settings" in capsys.readouterr().err


def test_train_windows_count_the_data_whatever_the_stride():
    from tests.forecaster.test_baseline import tiny_dm

    one, every_day = tiny_dm(), tiny_dm(stride=24)
    assert len(every_day.train_dataset()) < len(one.train_dataset()) == one.train_windows == every_day.train_windows
    assert GRUForecaster.from_datamodule(one, train_windows=5000).n_members == 1  # a keyword overrides the data's


def test_clipping_is_lightnings_own_under_other_precision_plugins_and_fused_optimizers():
    """Per-member clipping under the plain precision plugins; under any other plugin (FSDP,
    DeepSpeed: their own clipping) and for a fused optimizer under 16-bit AMP (which Lightning
    refuses to clip) the whole model goes through Lightning's clip_gradients."""
    from types import SimpleNamespace

    from lightning.pytorch.plugins.precision import MixedPrecision, Precision

    model = small_model(members=2)
    calls = []
    model.clip_gradients = lambda *a, **k: calls.append(a)
    opt = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for plugin, whole in ((None, False), (Precision(), False), (object(), True),
                          (MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu")), False)):
        model._trainer = None if plugin is None else SimpleNamespace(precision_plugin=plugin)
        calls.clear()
        model.configure_gradient_clipping(opt, 1.0, "norm")
        assert bool(calls) == whole, plugin
    fused = torch.optim.AdamW(model.parameters(), fused=True)
    model._trainer = SimpleNamespace(precision_plugin=MixedPrecision("16-mixed", "cpu",
                                                                     scaler=torch.amp.GradScaler("cpu")))
    calls.clear()
    model.configure_gradient_clipping(fused, 1.0, "norm")
    assert calls  # Lightning's own path, which raises its error for this optimizer
    model._trainer = None


def test_the_stream_bench_measures_ensembles_beside_one_network():
    from forecaster.bench import stream_bench

    rows = stream_bench.run(n_series=6, hidden=8, context=24, horizon=6, members=[1, 2])
    labels = [(r["bench"], r["model"]) for r in rows]
    assert ("throughput", "step") in labels and ("throughput", "step, 2 networks") in labels
    assert ("latency", "window, 2 networks") in labels and len(rows) == 12
    assert all(r.get("stream_obs_per_s", 1) > 0 for r in rows)
