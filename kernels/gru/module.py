"""``FusedGRU``: a drop-in for ``torch.nn.GRU`` (same arguments, parameter names and forward), plus
the reset-before formulation, a per-step mask, a choice of backend and single-step updates of a
state table for streaming."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kernels.gru.backend import check_impl, log_backend, resolve_backend
from kernels.gru.function import gru_sequence
from kernels.gru.step import gru_step_


class FusedGRU(nn.Module):
    """Multi-layer GRU, ``nn.GRU``-compatible, with fused Triton kernels on CUDA.

    Args:
        input_size: I, features per step.
        hidden_size: H.
        num_layers: stacked layers; layer k > 0 takes layer k-1's output.
        bias: learnable biases ``bias_ih_l{k}``, ``bias_hh_l{k}`` of shape (3H,).
        batch_first: input/output (B, T, *) instead of (T, B, *); the state stays (L, B, H).
        dropout: dropout on the output of every layer but the last, in training.
        reset_after: True: PyTorch's/cuDNN's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``;
            False: the classic ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.
        backend: "auto" (Triton for CUDA tensors, torch on the CPU), "triton" or "torch".
        path: which Triton kernel path runs the sequence (``kernels.gru.plan``): "auto", "batch",
            "persistent" or "stepwise". Anything but "auto" needs the Triton backend and raises
            where it cannot run rather than fall back.

    After each forward, ``last_backend`` names what ran ("triton-persistent", "triton-stepwise",
    "triton-batch", "ATen GRU (torch._VF.gru)", "torch loops with hand-written BPTT") and
    ``last_paths`` holds the Triton paths of the forward and, once autograd has run it, the backward.

    Parameters are named as in ``nn.GRU`` (``weight_ih_l0`` (3H, I), ``weight_hh_l0`` (3H, H), ...),
    so ``FusedGRU(...).load_state_dict(nn.GRU(...).state_dict())`` works.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        reset_after: bool = True,
        backend: str = "auto",
        path: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        # a Triton backend fails early here, saying how to install Triton
        check_impl(backend, path, arg="backend", device=torch.device("cuda"))
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.reset_after, self.backend, self.path = reset_after, backend, path
        self.last_backend: str | None = None
        self.last_paths: dict = {}
        self.last_step: str | None = None
        kw = {"device": device, "dtype": dtype}
        H = hidden_size
        for k in range(num_layers):
            in_k = input_size if k == 0 else H
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(3 * H, in_k, **kw)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(3 * H, H, **kw)))
            if bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(3 * H, **kw)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(3 * H, **kw)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.GRU``'s initialisation: every parameter uniform in (-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
            f"batch_first={self.batch_first}, dropout={self.dropout}, reset_after={self.reset_after}, "
            f"backend={self.backend!r}" + ("" if self.path == "auto" else f", path={self.path!r}")
        )

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer ``k``."""
        return (
            getattr(self, f"weight_ih_l{k}"),
            getattr(self, f"weight_hh_l{k}"),
            getattr(self, f"bias_ih_l{k}") if self.bias else None,
            getattr(self, f"bias_hh_l{k}") if self.bias else None,
        )

    def _flat_weights(self) -> list[Tensor]:
        return [w for k in range(self.num_layers) for w in self.layer_weights(k) if w is not None]

    def _check_input(self, x: Tensor, hx: Tensor | None, batch: int, what: str) -> None:
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{what} has {x.shape[-1]} features in its last dimension but the module was built "
                f"with input_size={self.input_size}"
            )
        want = (self.num_layers, batch, self.hidden_size)
        if hx is not None and tuple(hx.shape) != want:
            raise ValueError(f"hx must be (num_layers, B, H) = {want}, got {tuple(hx.shape)}")

    def forward(
        self, input: Tensor, hx: Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the GRU over a sequence.

        Args:
            input: (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I).
            hx: (num_layers, B, H) initial state ((num_layers, H) unbatched), or None for zeros.
            mask: (T, B) ((B, T) with ``batch_first``, (T,) unbatched), bool or {0, 1}, or None.
                Where False the state is carried unchanged (missing observation, ragged end).

        Returns:
            output (T, B, H) (or (B, T, H) / (T, H)): the last layer's state after every step;
            h_n (num_layers, B, H) (or (num_layers, H)): every layer's final state.
        """
        unbatched = input.dim() == 2
        if input.dim() not in (2, 3):
            raise ValueError(
                f"input must be (T, B, I), (B, T, I) with batch_first, or unbatched (T, I); "
                f"got shape {tuple(input.shape)}"
            )
        if unbatched:
            input = input.unsqueeze(1)
            hx = None if hx is None else hx.unsqueeze(1)
            mask = None if mask is None else mask.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
            mask = None if mask is None else mask.transpose(0, 1)
        T, B, _ = input.shape
        self._check_input(input, hx, B, "input")
        if mask is not None and tuple(mask.shape) != (T, B):
            raise ValueError(
                f"mask must match the input's time and batch dimensions {(T, B)} "
                f"(transposed with batch_first), got {tuple(mask.shape)}"
            )

        impl = resolve_backend(self.backend, input.device)
        check_impl(impl, self.path, arg="backend", device=input.device, requested=self.backend)
        dev = input.device.type
        if torch.is_autocast_enabled(dev):
            # Under autocast (e.g. Lightning's bf16-mixed) the Triton kernels compute in the autocast
            # dtype, casting the weights differentiably so float32 master weights get gradients;
            # the torch paths run in the weights' dtype with autocast off.
            if impl == "triton":
                dtype = torch.get_autocast_dtype(dev)
                with torch.autocast(dev, enabled=False):
                    return self._forward(input.to(dtype), hx, mask, impl, unbatched, dtype)
            with torch.autocast(dev, enabled=False):
                return self._forward(input.to(self.weight_ih_l0.dtype), hx, mask, impl, unbatched, None)
        return self._forward(input, hx, mask, impl, unbatched, None)

    def _forward(self, input, hx, mask, impl, unbatched, cast_dtype):
        T, B, _ = input.shape
        if impl == "torch" and self.reset_after and mask is None:
            path = "ATen GRU (torch._VF.gru)"
            h0 = hx if hx is not None else input.new_zeros(self.num_layers, B, self.hidden_size)
            if input.dtype != self.weight_ih_l0.dtype:
                raise ValueError(
                    f"input is {input.dtype} but the module's weights are {self.weight_ih_l0.dtype}; "
                    f"cast one to the other"
                )
            output, h_n = torch._VF.gru(
                input, h0.to(input.dtype), self._flat_weights(), self.bias, self.num_layers,
                self.dropout, self.training, False, False,
            )
        else:
            path = "torch loops with hand-written BPTT"
            info: dict = {}
            output, finals = input, []
            for k in range(self.num_layers):
                if k > 0 and self.dropout > 0 and self.training:
                    output = F.dropout(output, self.dropout, training=True)
                weights = self.layer_weights(k)
                if cast_dtype is not None:
                    weights = [None if w is None else w.to(cast_dtype) for w in weights]
                output, h_k = gru_sequence(
                    output, None if hx is None else hx[k].to(output.dtype), *weights,
                    mask=mask, reset_after=self.reset_after, impl=impl,
                    path=self.path if impl == "triton" else "auto", info=info if impl == "triton" else None,
                )
                finals.append(h_k)
            h_n = torch.stack(finals)
            if impl == "triton":
                path = info["forward"]
                self.last_paths = info
        self.last_backend = path
        log_backend(self.backend, path)

        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n

    @torch.no_grad()
    def step_(
        self,
        state: Tensor,
        idx: Tensor,
        input: Tensor,
        mask: Tensor | None = None,
        assume_unique: bool = False,
        step_path: str = "auto",
    ) -> Tensor:
        """Advance rows ``idx`` of a state table by one step, in place (inference, no autograd).

        Args:
            state: (num_layers, N, H) float32 table of N series' states, updated in place.
            idx: (M,) integer rows to advance, no repeats.
            input: (M, I) this step's input for those rows.
            mask: (M,) bool or {0, 1}, or None; where False the row's state is left unchanged.
            assume_unique: skip the repeated-index check (a device sync on CUDA) when the caller
                guarantees ``idx`` has no repeats.
            step_path: the Triton step variant, see :func:`kernels.gru_step_` ("auto",
                "resident", "streaming"); "auto" on the torch backend.

        Returns:
            (M, H) float32: the last layer's new state of each advanced row (the model's output).
        """
        if state.dim() != 3 or state.shape[0] != self.num_layers or state.shape[2] != self.hidden_size:
            raise ValueError(
                f"state must be (num_layers, N, H) = ({self.num_layers}, N, {self.hidden_size}), "
                f"got {tuple(state.shape)}"
            )
        self._check_input(input, None, input.shape[0], "input")
        impl = resolve_backend(self.backend, input.device)
        info: dict = {}
        x = input
        for k in range(self.num_layers):
            x = gru_step_(
                state[k], idx, x, *self.layer_weights(k), mask=mask,
                reset_after=self.reset_after, impl=impl, assume_unique=assume_unique or k > 0,
                info=info, path=step_path,
            )
            if k + 1 < self.num_layers:
                x = x.to(input.dtype)
        self.last_step = info.get("step", "torch step")
        log_backend(self.backend, self.last_step)
        return x

    @torch.no_grad()
    def step(
        self, input: Tensor, hx: Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One time step for a batch (inference, no autograd).

        Args:
            input: (B, I).
            hx: (num_layers, B, H) or None for zeros.
            mask: (B,) bool or {0, 1}, or None.

        Returns:
            output (B, H) and the new state (num_layers, B, H), in the dtype of ``input``.
        """
        if input.dim() != 2:
            raise ValueError(f"step input must be (B, I), got shape {tuple(input.shape)}")
        B = input.shape[0]
        self._check_input(input, hx, B, "input")
        state = (
            input.new_zeros(self.num_layers, B, self.hidden_size, dtype=torch.float32)
            if hx is None else hx.float().clone()
        )
        idx = torch.arange(B, device=input.device)
        out = self.step_(state, idx, input, mask=mask, assume_unique=True)
        return out.to(input.dtype), state.to(input.dtype)
