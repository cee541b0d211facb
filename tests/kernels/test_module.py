"""FusedGRU as a drop-in for torch.nn.GRU, its backends, and its streaming step."""

import logging

import pytest
import torch

import kernels
from kernels import FusedGRU
from kernels.gru import backend as backend_mod
from tests.kernels.conftest import requires_triton

BACKENDS = [pytest.param("triton", marks=requires_triton), "torch"]


def pair(I, H, num_layers=1, batch_first=False, bias=True, backend="torch", reset_after=True):
    ref = torch.nn.GRU(I, H, num_layers=num_layers, batch_first=batch_first, bias=bias)
    mod = FusedGRU(I, H, num_layers=num_layers, batch_first=batch_first, bias=bias, backend=backend,
                   reset_after=reset_after)
    mod.load_state_dict(ref.state_dict())
    return ref, mod


def test_parameter_names_and_shapes_match_nn_gru():
    ref = torch.nn.GRU(3, 5, num_layers=2)
    mod = FusedGRU(3, 5, num_layers=2)
    assert {k: v.shape for k, v in mod.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "all_ones_mask"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_two_layers_match_nn_gru(backend, use_mask, batch_first):
    T, B, I, H = 5, 3, 4, 17
    ref, mod = pair(I, H, num_layers=2, batch_first=batch_first, backend=backend)
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    hx = torch.randn(2, B, H)
    mask = torch.ones(B, T) if batch_first else torch.ones(T, B)
    x_ref, x_mod = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected_out, expected_hn = ref(x_ref, hx)
    result_out, result_hn = mod(x_mod, hx, mask=mask if use_mask else None)
    torch.testing.assert_close(result_out, expected_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result_hn, expected_hn, rtol=1e-5, atol=1e-5)
    (expected_out.sum() + expected_hn.square().sum()).backward()
    (result_out.sum() + result_hn.square().sum()).backward()
    torch.testing.assert_close(x_mod.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    for (name, p_ref), p_mod in zip(ref.named_parameters(), mod.parameters()):
        torch.testing.assert_close(p_mod.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_backend_paths_are_logged_and_recorded(caplog):
    _, mod = pair(2, 4)
    x = torch.randn(3, 2, 2)
    backend_mod._logged.clear()
    with caplog.at_level(logging.INFO, logger="kernels"):
        mod(x)
        assert mod.last_backend == "ATen GRU (torch._VF.gru)"
        mod(x, mask=torch.ones(3, 2))
        assert mod.last_backend == "torch loops with hand-written BPTT"
    assert "ATen GRU" in caplog.text and "hand-written BPTT" in caplog.text


def test_auto_backend_runs_torch_on_cpu():
    mod = FusedGRU(2, 4, backend="auto")
    mod(torch.randn(3, 2, 2))
    assert mod.last_backend.startswith("ATen")


@requires_triton
def test_triton_backend_runs_triton_kernels_and_records_the_paths(caplog):
    _, mod = pair(2, 16, backend="triton")
    backend_mod._logged.clear()
    with caplog.at_level(logging.INFO, logger="kernels"):
        out, hn = mod(torch.randn(3, 2, 2))
        # under the interpreter, auto takes the batch path where H allows (no grid barrier there)
        assert mod.last_backend == "triton-batch" and mod.last_paths["forward"] == "triton-batch"
        assert "backward" not in mod.last_paths
        (out.sum() + hn.sum()).backward()
    assert mod.last_paths["backward"] == "triton-batch"
    assert "triton-batch (forward, H=16" in caplog.text and "triton-batch (backward, H=16" in caplog.text


@requires_triton
def test_explicit_path_runs_or_raises():
    mod = FusedGRU(2, 17, backend="triton", path="stepwise")
    mod(torch.randn(3, 2, 2))
    assert mod.last_backend == "triton-stepwise"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        FusedGRU(2, 17, backend="triton", path="persistent")(torch.randn(3, 2, 2))
    with pytest.raises(ValueError, match="backend='torch' takes only path='auto'"):
        FusedGRU(2, 17, backend="torch", path="batch")
    with pytest.raises(ValueError, match="path must be one of"):
        FusedGRU(2, 17, path="fast")


def test_explicit_path_with_auto_backend_on_cpu_is_an_error():
    mod = FusedGRU(2, 17, backend="auto", path="stepwise")
    with pytest.raises(ValueError, match="asks for a Triton kernel path, but backend='auto' runs the torch backend"):
        mod(torch.randn(3, 2, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_nan_input_at_masked_step_gives_the_gradients_of_a_zero_input(backend, reset_after):
    # issue 16, item 10: a masked-out step must add exactly nothing, even where its input is NaN
    T, B, I, H = 5, 3, 2, 8
    mod = FusedGRU(I, H, num_layers=2, batch_first=True, backend=backend, reset_after=reset_after)
    x = torch.randn(B, T, I)
    mask = torch.rand(B, T) > 0.4
    mask[0, 2] = False
    poisoned = x.masked_fill(~mask.unsqueeze(-1), float("nan"))
    zeroed = x.masked_fill(~mask.unsqueeze(-1), 0.0)

    def run(inp):
        mod.zero_grad()
        inp = inp.clone().requires_grad_()
        out, hn = mod(inp, mask=mask)
        (out.square().sum() + hn.sum()).backward()
        return [out.detach(), hn.detach(), inp.grad] + [p.grad.clone() for p in mod.parameters()]

    result, expected = run(poisoned), run(zeroed)
    for r, e in zip(result, expected):
        assert torch.isfinite(r).all()
        torch.testing.assert_close(r, e, rtol=0, atol=0)


def test_triton_on_cpu_without_interpreter_is_an_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(backend_mod, "triton_available", lambda: True)
    mod = FusedGRU(2, 4, backend="triton")
    with pytest.raises(ValueError, match="Triton kernels run on CUDA devices"):
        mod(torch.randn(3, 2, 2))


def test_triton_missing_is_an_error(monkeypatch):
    monkeypatch.setattr(backend_mod, "triton_available", lambda: False)
    with pytest.raises(ValueError, match="needs the triton package"):
        FusedGRU(2, 4, backend="triton")
    # "auto" on a CUDA device is the case where a missing Triton changes the answer (on the CPU it is
    # "torch" either way); resolve_backend reads only the device type, so no GPU is needed
    assert backend_mod.resolve_backend("auto", torch.device("cuda")) == "torch"
    monkeypatch.setattr(backend_mod, "triton_available", lambda: True)
    assert backend_mod.resolve_backend("auto", torch.device("cuda")) == "triton"
    assert backend_mod.resolve_backend("auto", torch.device("cpu")) == "torch"


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_before_module_matches_reference(backend):
    T, B, I, H = 4, 3, 2, 16
    mod = FusedGRU(I, H, reset_after=False, backend=backend)
    x, h0 = torch.randn(T, B, I), torch.randn(1, B, H)
    expected_out, expected_hn = kernels.gru_reference(x, h0[0], *mod.layer_weights(0), reset_after=False)
    result_out, result_hn = mod(x, h0)
    torch.testing.assert_close(result_out, expected_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result_hn[0], expected_hn, rtol=1e-5, atol=1e-5)


def test_unbatched_input_like_nn_gru():
    ref, mod = pair(3, 5)
    x, h = torch.randn(4, 3), torch.randn(1, 5)
    expected = ref(x, h)
    result = mod(x, h)
    torch.testing.assert_close(result[0], expected[0])
    torch.testing.assert_close(result[1], expected[1])


def test_dropout_between_layers_only_in_training():
    mod = FusedGRU(3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(6, 4, 3)
    mod.eval()
    torch.testing.assert_close(mod(x)[0], mod(x)[0])
    mod.train()
    assert (mod(x)[0] - mod(x)[0]).abs().max() > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_step_by_step_equals_sequence(backend, reset_after):
    T, B, I, H = 6, 5, 3, 17
    mod = FusedGRU(I, H, num_layers=2, reset_after=reset_after, backend=backend)
    x, mask = torch.randn(T, B, I), torch.rand(T, B) > 0.3
    expected_out, expected_hn = mod(x, mask=mask)
    h = None
    for t in range(T):
        out, h = mod.step(x[t], h, mask=mask[t])
        torch.testing.assert_close(out, expected_out[t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, expected_hn, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_on_state_table_advances_only_given_rows(backend):
    N, I, H = 30, 2, 16
    mod = FusedGRU(I, H, num_layers=2, backend=backend)
    state = torch.randn(2, N, H)
    before = state.clone()
    idx = torch.tensor([4, 17, 2])
    x = torch.randn(3, I)
    expected_out, expected_hn = mod(x.unsqueeze(0), before[:, idx].contiguous())
    result = mod.step_(state, idx, x)
    torch.testing.assert_close(result, expected_out[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state[:, idx], expected_hn, rtol=1e-5, atol=1e-5)
    others = torch.ones(N, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(state[:, others], before[:, others])
    with pytest.raises(ValueError, match="repeated rows"):
        mod.step_(state, torch.tensor([1, 1]), torch.randn(2, I))


def test_module_errors():
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        FusedGRU(3, 0)
    with pytest.raises(ValueError, match="dropout must be in"):
        FusedGRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        FusedGRU(3, 4, backend="cudnn")
    mod = FusedGRU(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="input_size=3"):
        mod(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"hx must be \(num_layers, B, H\)"):
        mod(torch.randn(5, 2, 3), torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="input must be"):
        mod(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="mask must match"):
        mod(torch.randn(5, 2, 3), mask=torch.ones(5, 3))
    with pytest.raises(ValueError, match="weights are torch.float32"):
        mod(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"state must be \(num_layers, N, H\)"):
        mod.step_(torch.zeros(1, 5, 4), torch.tensor([0]), torch.randn(1, 3))


def test_torch_backend_under_autocast_runs_in_weight_dtype():
    ref, mod = pair(3, 8)
    x = torch.randn(4, 2, 3)
    expected = ref(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = mod(x)[0]
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected)


@requires_triton
def test_triton_backend_under_autocast_computes_in_bf16_with_fp32_master_grads():
    ref, mod = pair(3, 16, backend="triton")
    x = torch.randn(4, 2, 3)
    expected = ref(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = mod(x)[0]
    assert result.dtype == torch.bfloat16
    err = ((result.float() - expected).norm() / expected.norm()).item()
    assert err < 3e-2
    result.float().sum().backward()
    assert mod.weight_hh_l0.grad is not None and mod.weight_hh_l0.grad.dtype == torch.float32
    assert mod.weight_hh_l0.grad.abs().sum() > 0
