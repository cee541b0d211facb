"""Recurrent ops for PyTorch with fused Triton kernels. Knows nothing about forecasting.

``import kernels`` works without Triton: then only the torch backend exists.
"""

from kernels.gru import (
    BACKENDS,
    FusedGRU,
    check_barriers,
    gru_cell_reference,
    gru_reference,
    gru_sequence,
    gru_step_,
    interpreter_enabled,
    resolve_backend,
    triton_available,
)

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
