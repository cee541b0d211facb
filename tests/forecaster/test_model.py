"""StepForecastNet / WindowForecastNet / GRUForecaster: shapes, non-crossing quantiles, forking loss over every origin,
baselines and metrics on hand-made windows, checkpoint round trip in a fresh process, plain
``lightning.Trainer`` use (the README snippet)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from forecaster.lightning_module import FORMAT_VERSION, CheckpointMismatchError, GRUForecaster
from forecaster.metrics import (MeanAbsoluteScaledError, last_value_forecast, seasonal_naive_forecast,
                                seasonal_scale)
from forecaster.nets import StepForecastNet, StepNet, WindowForecastNet, WindowNet, future_ahead, monotone_quantiles
from forecaster.nets.common import relative_features
from tests.forecaster.netopts import with_net

B, CTX, H, C, P, F = 3, 12, 4, 2, 1, 3
REPO = Path(__file__).resolve().parents[2]


def synthetic_batch(b=B, ctx=CTX, h=H, c=C, p=P, f=F):
    L = ctx + h
    g = torch.Generator().manual_seed(1)
    obs = (torch.rand(b, L, c, generator=g) > 0.1).float()
    return {
        "target": torch.randn(b, L, c, generator=g) * obs,
        "observed": obs,
        "past_cov": torch.randn(b, L, p, generator=g),
        "future_cov": torch.randn(b, L, f, generator=g),
        "loc": torch.randn(b, c, generator=g),
        "scale": torch.rand(b, c, generator=g) + 0.5,
        "baseline": torch.stack([torch.rand(b, c, generator=g) * 0.5, torch.rand(b, c, generator=g) * 0.5,
                                 torch.randn(b, c, generator=g)], dim=-1),
        "series": torch.zeros(b, dtype=torch.int64),
        "start": torch.arange(b, dtype=torch.int64),
    }


def small_model(**kw):
    args = dict(n_targets=C, n_past_covariates=P, n_future_covariates=F, context_length=CTX, horizon=H,
                seasonal_period=3, min_origin=2)
    args.update(kw)
    return GRUForecaster(**with_net(args, hidden_size=8, d_model=8, head_hidden=16))


def test_shapes_and_last_origin_matches_forking():
    m = small_model().eval()
    batch = synthetic_batch()
    out = m(batch)
    assert out.shape == (B, CTX, H, C, 3)
    last = m.net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], CTX,
                               batch["baseline"])
    torch.testing.assert_close(last, out[:, -1])
    fc = m.forecast(batch)
    torch.testing.assert_close(fc, out[:, -1] * batch["scale"][:, None, :, None] + batch["loc"][:, None, :, None])
    point = small_model(loss="mae")
    assert point(batch).shape == (B, CTX, H, C, 1)


@pytest.mark.parametrize("loss,delta", [("mae", 1.0), ("mse", 1.0), ("huber", 1.0), ("huber", 0.3)])
def test_point_losses_are_their_formulas_weighted_by_observed(loss, delta):
    """_loss = sum(w * elementwise) / sum(w); Huber: e^2/2 below delta, delta * (|e| - delta/2) above."""
    m = small_model(loss=loss, huber_delta=delta)
    pred = torch.tensor([0.1, -2.0, 0.5, 3.0]).view(4, 1)
    y = torch.tensor([0.0, 0.0, 0.6, 0.0])
    w = torch.tensor([1.0, 1.0, 1.0, 0.0])  # the last element is unobserved: its error of 3 must not count
    e = (pred[:, 0] - y).abs()
    el = {"mae": e, "mse": e ** 2,
          "huber": torch.where(e <= delta, 0.5 * e ** 2, delta * (e - 0.5 * delta))}[loss]
    torch.testing.assert_close(m._loss(pred, y, w), el[:3].mean())
    if loss == "huber":  # between the two: quadratic near zero, linear in the tails
        assert el[0] == pytest.approx(0.5 * 0.1 ** 2) and el[1] == pytest.approx(delta * (2.0 - delta / 2))


def test_future_ahead_is_the_next_horizon_steps():
    fc = torch.arange(2 * (CTX + H) * F, dtype=torch.float32).reshape(2, CTX + H, F)
    fa = future_ahead(fc, CTX, H)
    assert fa.shape == (2, CTX, H * F)
    for t in (0, 5, CTX - 1):
        torch.testing.assert_close(fa[:, t], fc[:, t + 1:t + 1 + H].reshape(2, -1))


def test_step_and_decode_reproduce_the_sequence_forecast():
    """The streaming path (features -> step_ per step -> decode) equals the window forward."""
    m = small_model(num_layers=2).eval()
    batch = synthetic_batch()
    net = m.net
    state = net.init_state(B)
    idx = torch.arange(B)
    values = relative_features(batch["target"][:, :CTX], batch["observed"][:, :CTX], CTX)  # inputs="relative"
    for t in range(CTX):
        h = net.step_(state, idx, values[:, t], batch["observed"][:, t], batch["past_cov"][:, t],
                      batch["future_cov"][:, t])
    fa = batch["future_cov"][:, CTX:CTX + H].reshape(B, -1)
    result = net.add_baseline(net.decode(h, fa), batch["target"][:, :CTX], batch["observed"][:, :CTX],
                              batch["baseline"])
    torch.testing.assert_close(result, m(batch)[:, -1], atol=1e-5, rtol=1e-4)


def test_quantiles_never_cross():
    raw = torch.randn(1000, 5) * 50
    q = monotone_quantiles(raw, anchor=2)
    assert (q.diff(dim=-1) >= 0).all()
    assert (monotone_quantiles(torch.randn(1000, 5), anchor=2).diff(dim=-1) > 0).all()
    torch.testing.assert_close(q[:, 2], raw[:, 2])
    m = small_model(quantiles=[0.05, 0.25, 0.5, 0.75, 0.95])
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 3)  # wild weights still give ordered quantiles
    out = m(synthetic_batch())
    assert (out.diff(dim=-1) >= 0).all()
    with pytest.raises(ValueError, match="sorted"):
        small_model(quantiles=[0.9, 0.1])


@pytest.mark.parametrize("loss", ["quantile", "mae", "mse", "huber"])
def test_forking_loss_covers_every_origin_from_min_origin(loss):
    m = small_model(loss=loss, min_origin=3)
    batch = synthetic_batch()
    batch["observed"] = torch.ones_like(batch["observed"])
    kept = {}
    orig_forward = m.net.forward

    def forward(*a, **k):
        out = orig_forward(*a, **k)
        out.retain_grad()
        kept["pred"] = out
        return out

    m.net.forward = forward
    m._shared_forking_loss(batch).backward()
    g = kept["pred"].grad.abs().sum(dim=(0, 2, 3, 4))  # per origin
    assert (g[:3] == 0).all() and (g[3:] > 0).all(), g
    # the target one step after an early origin enters the loss (as origin 3's first future step)
    base = m._shared_forking_loss(batch).item()
    pert = {k: v.clone() for k, v in batch.items()}
    pert["target"][:, CTX + H - 1] += 5.0  # only the LAST origin forecasts the window's last step
    assert m._shared_forking_loss(pert).item() != base
    pert = {k: v.clone() for k, v in batch.items()}
    pert["target"][:, 4] += 5.0
    pert["observed"][:, 4] = 0.0  # unobserved targets are ignored as labels (and as inputs: x*observed)
    assert m._shared_forking_loss(pert).item() == pytest.approx(
        m._shared_forking_loss({**batch, "observed": pert["observed"]}).item())


def test_baselines_on_a_hand_made_window():
    # one series, one target, context of 7 steps, season 3, horizon 4
    ctx = torch.tensor([1.0, 2, 3, 4, 5, 6, 7]).view(1, 7, 1)
    obs = torch.ones_like(ctx)
    sn = seasonal_naive_forecast(ctx, 4, 3)
    # y[7] = y[4] = 5, y[8] = y[5] = 6, y[9] = y[6] = 7, y[10] = y[10-6] = y[4] = 5
    assert sn.view(-1).tolist() == [5.0, 6.0, 7.0, 5.0]
    obs2 = obs.clone()
    obs2[0, 6, 0] = 0  # last step missing: last value falls back to the last observed one
    assert last_value_forecast(ctx, obs2, 2).view(-1).tolist() == [6.0, 6.0]
    assert last_value_forecast(ctx, obs, 2).view(-1).tolist() == [7.0, 7.0]
    # seasonal differences are all 3 -> scale 3; with step 6 missing, pairs (3,6) drop out, still 3
    assert seasonal_scale(ctx, obs, 3).item() == pytest.approx(3.0)
    ctx2 = torch.tensor([0.0, 0, 0, 1, 2, 0, 1]).view(1, 7, 1)
    assert seasonal_scale(ctx2, obs, 3).item() == pytest.approx((1 + 2 + 0 + 0) / 4)
    mase = MeanAbsoluteScaledError()
    mase.update(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 2.0]]), torch.tensor([[2.0, 4.0]]))
    assert mase.compute().item() == pytest.approx((0.5 + 0.0) / 2)


def test_mase_without_a_usable_scale_is_nan_and_a_short_context_scales_by_steps():
    # a context no longer than a season has no seasonal pair: one-step differences (all 1 here)
    ctx = torch.tensor([1.0, 2, 3, 4, 5, 6, 7]).view(1, 7, 1)
    assert seasonal_scale(ctx, torch.ones_like(ctx), 7).item() == pytest.approx(1.0)
    assert seasonal_scale(ctx, torch.ones_like(ctx), 9).item() == pytest.approx(1.0)
    # every scale unusable (constant contexts, none observed): NaN, never 0 (a perfect score)
    mase = MeanAbsoluteScaledError()
    mase.update(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 2.0]]), torch.tensor([[0.0, float("nan")]]))
    assert torch.isnan(mase.compute())
    with pytest.warns(UserWarning, match="use context_length > 12"):
        small_model(seasonal_period=CTX)


def test_evaluation_logs_model_and_baseline_metrics_on_the_last_origin():
    m = small_model().eval()
    batch = synthetic_batch()
    batch["observed"] = torch.ones_like(batch["observed"])
    logged = {}
    m.log = lambda name, value, **kw: logged.__setitem__(name, value)
    m._evaluate(batch, "test")
    res = {k: v.compute().item() if hasattr(v, "compute") else float(v.detach()) for k, v in logged.items()}
    y = batch["target"][:, CTX:] * batch["scale"][:, None] + batch["loc"][:, None]
    point = m.forecast(batch)[..., 1]
    assert res["test/mae"] == pytest.approx((point - y).abs().mean().item(), rel=1e-5)
    ctx = batch["target"][:, :CTX] * batch["scale"][:, None] + batch["loc"][:, None]
    sn = seasonal_naive_forecast(ctx, H, 3)
    assert res["test/mae_seasonal_naive"] == pytest.approx((sn - y).abs().mean().item(), rel=1e-5)
    for name in ("mae", "rmse", "smape", "mase"):
        for suffix in ("", "_seasonal_naive", "_last_value"):
            assert np.isfinite(res[f"test/{name}{suffix}"])


# ---- with the real data module ----

def tiny_frame(n=400, series=("a", "b")):
    t = np.arange(n)
    rows = []
    for k, s in enumerate(series):
        rows.append(pl.DataFrame({
            "id": [s] * n,
            "time": pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 1) + pl.duration(hours=n - 1),
                                      "1h", eager=True),
            "y": (10 * k + np.sin(2 * np.pi * t / 24) + 0.1 * np.cos(t)).astype(np.float32),
            "x": np.cos(2 * np.pi * t / 24).astype(np.float32),
        }))
    return pl.concat(rows)


def tiny_dm(frame=None, **kw):
    from forecaster.data import TimeSeriesDataModule

    args = dict(time_col="time", id_col="id", target_cols=["y"], past_covariate_cols=["x"],
                context_length=48, horizon=12, batch_size=16)
    args.update(kw)
    return TimeSeriesDataModule(data=tiny_frame() if frame is None else frame, **args)


def model_for(dm, **kw):
    return GRUForecaster(n_targets=dm.n_targets, n_past_covariates=dm.n_past_covariates,
                         n_future_covariates=dm.n_future_covariates, context_length=dm.context_length,
                         horizon=dm.horizon, seasonal_period=dm.season_length, data_spec=dm.spec.to_dict(),
                         **kw, net=StepNet(hidden_size=8, d_model=8, head_hidden=16))


def test_checkpoint_round_trip_in_a_fresh_process(tmp_path):
    import lightning as L

    dm = tiny_dm()
    m = model_for(dm)
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    batch = dm.predict_batch()
    torch.save(batch, tmp_path / "batch.pt")
    m.eval()
    expected = m.forecast(batch)
    torch.save(expected, tmp_path / "expected.pt")
    code = textwrap.dedent(f"""
        import torch
        from forecaster import GRUForecaster
        m = GRUForecaster.load_from_checkpoint({str(ckpt)!r}, map_location="cpu").eval()
        batch = torch.load({str(tmp_path / 'batch.pt')!r})
        got = m.forecast(batch)
        exp = torch.load({str(tmp_path / 'expected.pt')!r})
        assert torch.equal(got, exp), (got - exp).abs().max()
        spec = m.data_spec
        assert spec["target_cols"] == ["y"] and spec["freq"] == "1h" and set(spec["scalers"]) == {{"a", "b"}}
        assert m.hparams.net["init_args"]["hidden_size"] == 8 and m.quantiles == [0.1, 0.5, 0.9]
        print("OK")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]

    # another format version / another shape -> one clear error
    raw = torch.load(ckpt, weights_only=False)
    assert raw["forecaster_format_version"] == FORMAT_VERSION
    raw["forecaster_format_version"] = FORMAT_VERSION + 1
    torch.save(raw, tmp_path / "v2.ckpt")
    with pytest.raises(CheckpointMismatchError, match="format version"):
        GRUForecaster.load_from_checkpoint(tmp_path / "v2.ckpt")
    with pytest.raises(CheckpointMismatchError, match="'hidden_size': 8"):
        GRUForecaster.load_from_checkpoint(ckpt, net=StepNet(hidden_size=16, d_model=8, head_hidden=16))


def test_predict_uses_the_checkpoint_scalers_on_new_data():
    """Forecasting a longer table with the checkpoint's spec (TimeSeriesDataModule.from_spec) gives the
    same forecast for the same window as the training data module, although that table's own split
    would fit other scalers; a series the model never saw gets the spec's pooled scalers."""
    import lightning as L

    from forecaster.data import TimeSeriesDataModule

    dm = tiny_dm()
    m = model_for(dm).eval()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (a,) = trainer.predict(m, datamodule=dm)
    frame = tiny_frame()
    grown = pl.concat([frame, frame.filter(pl.col("time") == pl.col("time").max())
                      .with_columns(pl.col("time") + pl.duration(hours=1), pl.lit(None, pl.Float32).alias("y"))])
    assert tiny_dm(grown, val_size=0.3).spec.to_dict()["scalers"] != dm.spec.to_dict()["scalers"]
    dm2 = TimeSeriesDataModule.from_spec(m.spec, data=grown, val_size=0.3)  # last observed step unchanged
    assert dm2.spec.to_dict()["scalers"] == dm.spec.to_dict()["scalers"]
    (b,) = trainer.predict(m, datamodule=dm2)
    torch.testing.assert_close(b["forecast"], a["forecast"], rtol=1e-4, atol=1e-4)
    new = pl.concat([grown, frame.filter(pl.col("id") == "a").with_columns(pl.lit("c").alias("id"))])
    dm3 = TimeSeriesDataModule.from_spec(m.spec, data=new)
    loc, scale = dm3.spec.scaler("c", ["y", "x"])
    np.testing.assert_allclose(loc, np.median([m.spec.scaler(s, ["y", "x"])[0] for s in ("a", "b")], axis=0))
    fc = m.forecast_frame(dm3)
    assert fc.columns == ["series", "origin", "time", "step", "target", "value", "q0.1", "q0.5", "q0.9"]
    assert fc["series"].unique().sort().to_list() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="target_cols=\\['x'\\] differs from the checkpoint's"):
        TimeSeriesDataModule.from_spec(m.spec, data=new, target_cols=["x"])


def test_plain_lightning_trainer_fit_and_test(tmp_path):
    """The README's 'use from Python' snippet, on tiny settings."""
    import lightning as L

    from forecaster import GRUForecaster, ParameterEMA, TimeSeriesDataModule

    dm = TimeSeriesDataModule(context_length=48, horizon=12, batch_size=16)  # embedded weather data
    model = GRUForecaster.from_datamodule(dm, net=StepNet(hidden_size=16, d_model=16, head_hidden=32))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, limit_test_batches=2,
                        default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        callbacks=[ParameterEMA(decay=0.95)])
    trainer.fit(model, dm)
    (res,) = trainer.test(model, dm, verbose=False)
    for k in ("test/mae", "test/mae_seasonal_naive", "test/mae_last_value", "test/rmse", "test/smape",
              "test/mase", "test/loss"):
        assert np.isfinite(res[k]), k
    fc = model.forecast(dm.predict_batch())  # (series, horizon, targets, quantiles), original units
    assert fc.shape == (2, 12, 3, 3)
    assert model.hparams.n_past_covariates == dm.n_past_covariates and model.data_spec == dm.spec.to_dict()


# ---- long-look-back options (channel_independent, revin, segment_length, decoder="last", head_dropout) ----

SEG = dict(n_past_covariates=0, n_future_covariates=0, channel_independent=True, revin="last", segment_length=4,
           decoder="last", head_dropout=0.5, head_hidden=0, loss="mae", baseline="none")


def no_cov(batch):
    b = dict(batch)
    b["past_cov"] = batch["past_cov"][..., :0]
    b["future_cov"] = batch["future_cov"][..., :0]
    return b


def last_fc(m, batch):
    return m.net.forecast_last(batch["target"], batch["observed"], batch["past_cov"], batch["future_cov"], CTX,
                               batch.get("baseline"))


@pytest.mark.parametrize("opts", [
    dict(channel_independent=True, n_past_covariates=0, n_future_covariates=0, decoder="last"),
    dict(revin="last", decoder="last"),
    dict(revin="mean", decoder="last"),
    dict(revin="std", decoder="last"),
    dict(segment_length=3, decoder="last"),
    dict(decoder="last", head_dropout=0.3),
    SEG,
    {**SEG, "loss": "quantile"},
    {**SEG, "decoder": "pmf"},
    {**SEG, "decoder": "pmf", "loss": "quantile", "num_layers": 2},
    dict(n_past_covariates=0, n_future_covariates=0, segment_length=2, decoder="pmf", revin="mean"),
])
def test_option_shapes(opts):
    m = small_model(**opts).eval()
    batch = synthetic_batch() if opts.get("n_past_covariates", P) else no_cov(synthetic_batch())
    Q = 3 if opts.get("loss", "quantile") == "quantile" else 1
    assert last_fc(m, batch).shape == (B, H, C, Q)
    assert m.forecast(batch).shape == (B, H, C, Q)
    assert isinstance(m.net, WindowForecastNet)
    with pytest.raises(ValueError, match="use forecast"):
        m(batch)
    if Q > 1:
        assert (last_fc(m, batch).diff(dim=-1) >= 0).all()


def test_defaults_keep_the_old_parameters():
    m = small_model()
    assert isinstance(m.net, StepForecastNet)
    assert sorted(k for k in m.state_dict()) == sorted(
        ["net.input_proj.0.weight", "net.input_proj.0.bias", "net.head.0.weight", "net.head.0.bias",
         "net.head.2.weight", "net.head.2.bias", "net.use_network", "net.fallback",  # + the validation's choice
         *[k for k in m.state_dict() if k.startswith("net.gru.")]])


@pytest.mark.parametrize("revin", ["last", "mean", "std"])
def test_revin_makes_the_forecast_shift_equivariant(revin):
    m = small_model(**{**SEG, "revin": revin, "loss": "quantile"}).eval()
    batch = no_cov(synthetic_batch())
    batch["observed"][:, CTX - 1] = 1.0
    shifted = dict(batch)
    shifted["target"] = (batch["target"] + 3.7) * batch["observed"]  # unobserved entries stay 0
    a, b = last_fc(m, batch), last_fc(m, shifted)
    torch.testing.assert_close(b, a + 3.7, atol=1e-4, rtol=1e-4)
    # without revin the network does see the level
    m0 = small_model(**{**SEG, "revin": "none"}).eval()  # baseline none: the network alone
    assert not torch.allclose(last_fc(m0, shifted), last_fc(m0, batch) + 3.7, atol=1e-3)


def test_revin_std_makes_the_forecast_scale_equivariant():
    """revin='std': scaling a window's context by a and shifting it by b scales and shifts every
    forecast (and quantile) the same way; 'last' only undoes shifts."""
    batch = no_cov(synthetic_batch())
    scaled = dict(batch)
    scaled["target"] = (batch["target"] * 2.5 - 1.3) * batch["observed"]
    m = small_model(**{**SEG, "revin": "std", "loss": "quantile"}).eval()
    torch.testing.assert_close(last_fc(m, scaled), last_fc(m, batch) * 2.5 - 1.3, atol=1e-4, rtol=1e-4)
    m_last = small_model(**{**SEG, "revin": "last", "loss": "quantile"}).eval()
    assert not torch.allclose(last_fc(m_last, scaled), last_fc(m_last, batch) * 2.5 - 1.3, atol=1e-3)


def test_revin_std_statistics_by_hand():
    from forecaster.nets.revin import REVIN_EPS, revin_stats

    t = torch.tensor([[[1.0, 5.0], [2.0, 7.0], [6.0, 0.0]]])  # (1, 3, 2); the last 0.0 is unobserved
    o = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]])
    loc, scale = revin_stats(t, o, "std")
    torch.testing.assert_close(loc, torch.tensor([[3.0, 6.0]]))
    # population variance of the observed values: (4 + 1 + 9) / 3 and (1 + 1) / 2
    torch.testing.assert_close(scale, torch.sqrt(torch.tensor([[14.0 / 3, 1.0]]) + REVIN_EPS))
    loc, scale = revin_stats(t, o, "last")
    torch.testing.assert_close(loc, torch.tensor([[6.0, 7.0]]))
    torch.testing.assert_close(scale, torch.ones(1, 2))
    # a never-observed target: loc 0, the smallest scale, no NaN
    loc, scale = revin_stats(t, torch.zeros_like(o), "std")
    torch.testing.assert_close(loc, torch.zeros(1, 2))
    torch.testing.assert_close(scale, torch.full((1, 2), REVIN_EPS ** 0.5))


def test_revin_last_uses_the_last_observed_value():
    from forecaster.nets.revin import revin_base

    t = torch.tensor([[[1.0, 5.0], [2.0, 6.0], [3.0, 0.0]]])  # (1, 3, 2)
    o = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]])
    torch.testing.assert_close(revin_base(t, o, "last"), torch.tensor([[3.0, 6.0]]))
    torch.testing.assert_close(revin_base(t, o, "mean"), torch.tensor([[2.0, 5.5]]))
    torch.testing.assert_close(revin_base(t, torch.zeros_like(o), "last"), torch.zeros(1, 2))


def test_segments_match_a_hand_computation():
    """segment_length w: each w-step segment's features (step-major) -> Linear + ReLU -> one GRU step;
    the head reads the final state."""
    w = 4
    m = small_model(n_past_covariates=0, n_future_covariates=0, segment_length=w, decoder="last", head_hidden=0,
                    loss="mae", baseline="none").eval()
    net = m.net
    batch = no_cov(synthetic_batch())
    x = torch.cat([batch["target"][:, :CTX] * batch["observed"][:, :CTX], batch["observed"][:, :CTX]], -1)
    segs = x.reshape(B, CTX // w, w * 2 * C)
    lin = net.input_proj[0]
    z = torch.relu(segs @ lin.weight.T + lin.bias)
    gru = torch.nn.GRU(z.shape[-1], net.gru.hidden_size, batch_first=True)
    gru.load_state_dict({k: v for k, v in net.gru.state_dict().items() if k in gru.state_dict()})
    _, hn = gru(z)
    expect = (hn[-1] @ net.head.weight.T + net.head.bias).reshape(B, H, C, 1)
    torch.testing.assert_close(last_fc(m, batch), expect, atol=1e-5, rtol=1e-4)


def test_pmf_decoder_matches_a_hand_computation():
    """decoder="pmf": output segment m of channel c is ONE step of the same GRU from the encoder's final
    state, with input cat(pos_emb[m], channel_emb[c]), then the head -> that segment's w steps."""
    w = 2
    m = small_model(**{**SEG, "segment_length": w, "decoder": "pmf", "head_dropout": 0.0, "revin": "none"}).eval()
    net = m.net
    batch = no_cov(synthetic_batch())
    assert net.pos_emb.shape == (H // w, net.gru.input_size - net.gru.input_size // 2)
    assert net.channel_emb.shape == (C, net.gru.input_size // 2)
    gru = torch.nn.GRU(net.gru.input_size, net.gru.hidden_size, batch_first=True)
    gru.load_state_dict({k: v for k, v in net.gru.state_dict().items() if k in gru.state_dict()})
    expect = torch.empty(B, H, C, 1)
    for b in range(B):
        for c in range(C):
            x = torch.stack([batch["target"][b, :CTX, c] * batch["observed"][b, :CTX, c], batch["observed"][b, :CTX, c]], -1)
            z = net.input_proj(x.reshape(1, CTX // w, 2 * w))
            _, hn = gru(z)
            for s in range(H // w):
                inp = torch.cat([net.pos_emb[s], net.channel_emb[c]]).view(1, 1, -1)
                out, _ = gru(inp, hn)
                expect[b, s * w:(s + 1) * w, c, 0] = net.head(out[0, 0])
    torch.testing.assert_close(last_fc(m, batch), expect, atol=1e-5, rtol=1e-4)


def test_pmf_without_channel_independence_has_no_channel_embedding():
    m = small_model(n_past_covariates=0, n_future_covariates=0, segment_length=2, decoder="pmf", loss="mae").eval()
    assert m.net.channel_emb is None and m.net.pos_emb.shape == (H // 2, m.net.gru.input_size)
    assert m.net.head[-1].out_features == 2 * C  # one segment of 2 steps of every target


def test_channel_independent_is_each_channel_alone_with_the_same_weights():
    m = small_model(**{**SEG, "head_dropout": 0.0}).eval()
    batch = no_cov(synthetic_batch())
    out = last_fc(m, batch)
    for c in range(C):
        one = {k: (v[..., c:c + 1] if k in ("target", "observed") else v) for k, v in batch.items()}
        m1 = small_model(**{**SEG, "head_dropout": 0.0, "n_targets": 1}).eval()
        m1.load_state_dict(m.state_dict())  # same shapes: the weights do not depend on C
        torch.testing.assert_close(last_fc(m1, one), out[..., c:c + 1, :])


@pytest.mark.parametrize("kw,match", [
    (dict(channel_independent=True, decoder="last"), "covariates"),
    (dict(channel_independent=True, n_past_covariates=0, decoder="last"), "n_future_covariates=3"),
    (dict(segment_length=5, decoder="last"), "multiple of segment_length"),
    (dict(revin="median", decoder="last"), "revin"),
    (dict(decoder="seq2seq"), "decoder"),
    (dict(decoder="pmf"), "n_future_covariates=3"),
    (dict(n_future_covariates=0, decoder="pmf", segment_length=3), "horizon=4 must be a multiple"),
    (dict(decoder="last", head_dropout=1.0), "head_dropout"),
    (dict(segment_length=0, decoder="last"), "segment_length"),
    (dict(lr_decay=0.0), "lr_decay"),
    (dict(loss="huber", huber_delta=0.0), "huber_delta=0.0: must be > 0"),
    (dict(loss="l2"), "choose one of"),
])
def test_invalid_option_combinations_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        small_model(**kw)


def test_the_per_step_model_has_no_window_settings():
    """The window model's settings are WindowNet's alone: StepNet refuses them by name (the CLI:
    ``--model.net.revin`` without ``--model.net WindowNet`` is an unknown option)."""
    for opt in (dict(revin="last"), dict(segment_length=4), dict(channel_independent=True), dict(decoder="pmf")):
        with pytest.raises(TypeError, match=next(iter(opt))):
            StepNet(**opt)
    with pytest.raises(TypeError, match="inputs"):
        WindowNet(inputs="level")


def test_net_config_round_trip_and_refusals():
    """A config's plain-data form rebuilds an equal config; class paths outside the library's two
    networks and unknown settings are refused in one line, importing nothing."""
    from forecaster.nets import net_config

    for cfg in (StepNet(hidden_size=8, inputs="level"), WindowNet(decoder="pmf", segment_length=2, revin="std")):
        d = cfg.to_dict()
        assert d["class_path"] == f"forecaster.nets.{type(cfg).__name__}" and net_config(d) == cfg
        assert net_config({"class_path": type(cfg).__name__, "init_args": d["init_args"]}) == cfg
    assert net_config(None) == StepNet()
    for bad, match in (({"class_path": "os.system", "init_args": {}}, "not a network of this library"),
                       ({"class_path": "evil.StepNet", "init_args": {}}, "not a network of this library"),
                       ({"class_path": "forecaster.nets.StepNet", "init_args": {"revin": "std"}}, "no setting 'revin'"),
                       ({"class_path": "forecaster.nets.StepNet", "init_args": [1]}, "must be a dict"),
                       ({"init_args": {}}, "class_path"), ("StepNet", "pass a network config")):
        with pytest.raises(ValueError, match=match) as e:
            net_config(bad)
        assert "\n" not in str(e.value)


def test_last_decoder_trains_on_the_last_origin_only():
    m = small_model(**{**SEG, "head_dropout": 0.0}).eval()
    batch = no_cov(synthetic_batch())
    base = m.training_step(batch, 0).item()
    pert = {k: v.clone() for k, v in batch.items()}
    pert["target"][:, CTX + H - 1] += 5.0  # the window's last step is a label of the last origin
    assert m.training_step(pert, 0).item() != base


def test_lr_decay_is_an_exponential_schedule():
    conf = small_model(lr_decay=0.9).configure_optimizers()
    assert isinstance(conf["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ExponentialLR)
    assert conf["lr_scheduler"]["interval"] == "epoch"
    assert isinstance(small_model().configure_optimizers(), torch.optim.Optimizer)


@pytest.mark.parametrize("decoder", ["last", "pmf"])
def test_tiny_fit_with_etth1_like_options_and_scaled_metrics(tmp_path, decoder):
    """Channel-independent SegGRU (revin last, segments, last decoder, L1, lr decay) fits and tests on a
    synthetic wide series; the scaled MSE/MAE are logged and equal a hand computation."""
    import lightning as L

    from forecaster import TimeSeriesDataModule

    n = 600
    t = np.arange(n)
    rng = np.random.default_rng(0)
    df = pl.DataFrame({"t": t, **{f"y{i}": np.sin(2 * np.pi * t / 24 + i) * (i + 1) + 10 * i
                                  + 0.1 * rng.standard_normal(n) for i in range(3)}})
    dm = TimeSeriesDataModule(data=df, time_col="t", target_cols=["y0", "y1", "y2"], calendar_features="none",
                              context_length=48, horizon=12, train_size=400, val_size=100, test_size=100,
                              eval_stride=1, batch_size=32, season_length=24)
    model = GRUForecaster.from_datamodule(dm, loss="mae", lr=1e-3, lr_decay=0.9,
                                          net=WindowNet(channel_independent=True,
                                                        revin="last", segment_length=6, decoder=decoder,
                                                        head_dropout=0.5, hidden_size=16, d_model=16, head_hidden=0))
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, dm)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.9 ** 2)
    (res,) = trainer.test(model, dm, verbose=False)
    for k in ("test/mse_scaled", "test/mae_scaled", "test/mse_scaled_seasonal_naive", "test/mae_scaled_last_value",
              "test/mae"):
        assert np.isfinite(res[k]), k
    # hand computation of the scaled metrics over every test window, step and column
    model.eval()
    se = ae = cnt = 0.0
    with torch.no_grad():
        for b in dm.test_dataloader():
            p = model.net.forecast_last(b["target"], b["observed"], b["past_cov"], b["future_cov"], 48,
                                        b["baseline"])[..., 0]
            y = b["target"][:, 48:]
            se += ((p - y) ** 2).sum().item()
            ae += (p - y).abs().sum().item()
            cnt += y.numel()
    assert res["test/mse_scaled"] == pytest.approx(se / cnt, rel=1e-4)
    assert res["test/mae_scaled"] == pytest.approx(ae / cnt, rel=1e-4)


def test_seasonal_naive_skips_missing_steps_back_to_an_observed_season():
    """A holiday on a business-day grid (a missing step) is not read as the training mean: the
    same phase a season earlier, else the last observed value."""
    ctx = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]).unsqueeze(-1)  # (1, 6, 1), m = 2
    obs = torch.ones_like(ctx)
    obs[0, 4] = 0.0  # t=4 missing: step 1 (lag t=4) takes t=2's value
    sn = seasonal_naive_forecast(ctx, 2, 2, obs)
    assert sn[0, :, 0].tolist() == [3.0, 6.0]
    obs[0, [0, 2, 4]] = 0.0  # no observed value at that phase: the last observed value
    assert seasonal_naive_forecast(ctx, 2, 2, obs)[0, :, 0].tolist() == [6.0, 6.0]
    assert seasonal_naive_forecast(ctx, 2, 2)[0, :, 0].tolist() == [5.0, 6.0]  # no mask: as given
