import pytest
import torch

from kernels import triton_available

# dtype -> (relative RMS error bound) for kernel-vs-reference comparisons; the reference runs in
# float32 on the same (rounded) half-precision inputs. float32 parity uses IEEE dots (TF32 off).
REL_RMS_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}

requires_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


def rel_rms(result: torch.Tensor, expected: torch.Tensor) -> float:
    """RMS of the difference over RMS of the expected values (robust for half precision)."""
    result, expected = result.double(), expected.double()
    return ((result - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt().clamp_min(1e-12)).item()


def gru_params(I: int, H: int, dtype=torch.float32, device="cpu", bias=True, scale=0.5):
    """(weight_ih, weight_hh, bias_ih, bias_hh) with values large enough to saturate some gates."""
    g = torch.Generator().manual_seed(1234)
    ps = [torch.randn(3 * H, I, generator=g) * scale, torch.randn(3 * H, H, generator=g) * scale / H**0.5 * 2]
    ps += [torch.randn(3 * H, generator=g) * 0.3, torch.randn(3 * H, generator=g) * 0.3] if bias else [None, None]
    return [None if p is None else p.to(device=device, dtype=dtype).requires_grad_() for p in ps]


@pytest.fixture(autouse=True)
def _ieee_fp32():
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = prev
