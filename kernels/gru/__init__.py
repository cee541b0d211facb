"""GRU recurrence: reference, fused Triton kernels, autograd wrapper and nn.GRU-compatible module."""

from kernels.gru.backend import BACKENDS, check_barriers, interpreter_enabled, resolve_backend, triton_available
from kernels.gru.function import gru_sequence
from kernels.gru.module import FusedGRU
from kernels.gru.naive import gru_cell_reference, gru_reference
from kernels.gru.step import gru_step_

__all__ = [
    "BACKENDS",
    "FusedGRU",
    "check_barriers",
    "gru_cell_reference",
    "gru_reference",
    "gru_sequence",
    "gru_step_",
    "interpreter_enabled",
    "resolve_backend",
    "triton_available",
]
