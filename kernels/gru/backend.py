"""Which backend runs where, said out loud: never a silent fallback.

- ``"triton"``: the fused Triton kernels. Needs Triton, and a CUDA tensor or Triton's interpreter
  (``TRITON_INTERPRET=1`` set before ``triton`` is first imported) for CPU tensors.
- ``"torch"``: ATen's own GRU (``torch._VF.gru``, what ``nn.GRU`` runs) for the reset-after
  formulation without a mask; otherwise torch loops with a hand-written backward through time.
- ``"auto"``: Triton for CUDA tensors when Triton is importable, torch everywhere else.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import torch

log = logging.getLogger("kernels")

BACKENDS = ("auto", "triton", "torch")
#: what runs the recurrence once "auto" is resolved (``gru_sequence``'s and ``gru_step_``'s ``impl``)
IMPLS = ("triton", "torch")
_logged: set[tuple[str, str]] = set()


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """True when Triton's interpreter runs kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def require_triton(device: torch.device) -> None:
    """Raise ``ValueError`` saying why the Triton backend cannot run on ``device``."""
    if not triton_available():
        raise ValueError(
            "backend='triton' needs the triton package, which is not installed (Triton publishes "
            "wheels for Linux only); install it with `pip install triton`, or use backend='torch'"
        )
    if device.type != "cuda" and not interpreter_enabled():
        raise ValueError(
            f"backend='triton' got tensors on {device}, but Triton kernels run on CUDA devices; move "
            f"the module and inputs to a GPU, use backend='torch' (or 'auto') on the CPU, or set "
            f"TRITON_INTERPRET=1 before importing triton to run the kernels in Triton's interpreter"
        )


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``backend`` ("auto", "triton", "torch") to the one that runs on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        require_triton(device)
    return backend


def check_impl(
    impl: str,
    path: str,
    *,
    step: bool = False,
    arg: str = "impl",
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    requested: str | None = None,
) -> None:
    """Raise ``ValueError`` saying what to change where an implementation choice cannot run: the one
    check of ``gru_sequence``, ``gru_step_`` and ``FusedGRU`` (construction and forward).

    Args:
        impl: "triton" or "torch" (``IMPLS``); with ``arg="backend"`` also "auto" (``BACKENDS``).
        path: a Triton kernel path, one of ``plan.PATHS`` (sequence) or, with ``step``,
            ``plan.STEP_PATHS``; anything but "auto" needs ``impl="triton"``.
        step: ``path`` is a step path.
        arg: the caller's name for ``impl`` in the messages: "impl" or "backend".
        device: where the Triton kernels would run (:func:`require_triton`: Triton installed, a
            CUDA device or the interpreter), or None to skip that check.
        dtype: the input dtype, or None; the Triton kernels take no float64.
        requested: the backend the caller asked for, when ``impl`` is what it resolved to ("auto"
            runs torch on the CPU); named in the message where ``path`` then cannot run.
    """
    from kernels.gru.plan import check_path, check_step_path

    choices = BACKENDS if arg == "backend" else IMPLS
    if impl not in choices:
        raise ValueError(f"{arg} must be one of {choices}, got {impl!r}")
    (check_step_path if step else check_path)(path)
    if impl == "torch" and path != "auto":
        if requested is not None and requested != impl:
            raise ValueError(
                f"path={path!r} asks for a Triton kernel path, but {arg}={requested!r} runs the torch backend on "
                f"{device}; use {arg}='triton' (CUDA tensors, or TRITON_INTERPRET=1 on the CPU) or path='auto'"
            )
        what, kind = ("step path", "variant") if step else ("path", "path")
        raise ValueError(f"{what}={path!r} selects a Triton kernel {kind}; {arg}='torch' takes only path='auto'")
    if impl == "triton":
        if device is not None:
            require_triton(device)
        if dtype == torch.float64:
            raise ValueError(f"the triton backend takes float32, bfloat16 or float16; use {arg}='torch' for float64")


def log_backend(requested: str, path: str) -> None:
    """Log once per (requested backend, code path) which implementation ran."""
    key = (requested, path)
    if key not in _logged:
        _logged.add(key)
        log.info("GRU backend %r runs %s", requested, path)


def check_barriers(device: torch.device | str | None = None) -> None:
    """Wait for ``device`` (every device used so far when None) and raise ``RuntimeError`` if a grid
    barrier of a persistent Triton launch timed out since the last report. The launchers check
    without a per-launch host sync (the next persistent launch reports a time-out once a copy of
    the device's count has arrived; ``KERNELS_GRU_BARRIER_CHECK=sync`` checks after every launch):
    call this where a result must be known valid now, e.g. after replaying a CUDA graph."""
    if not triton_available():
        return  # no Triton: no persistent launch ran
    from kernels.gru.fused_recurrent import check_barriers as check

    check(device)
