"""Reversible instance normalisation (RevIN, Kim et al. 2022, without the affine part): each window
is normalised by statistics of its own observed context, and every forecast (and quantile) is
mapped back.

Modes: ``"last"`` subtracts the context's last observed value, ``"mean"`` the mean of its observed
values (both shift-equivariant); ``"std"`` subtracts the mean and divides by ``sqrt(var + 1e-5)``
(shift- and scale-equivariant up to the 1e-5); ``"none"`` is the identity.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["RevIN", "REVIN_MODES", "REVIN_EPS", "RevinMode", "revin_stats", "revin_base"]

RevinMode = Literal["none", "last", "mean", "std"]
REVIN_MODES = ("none", "last", "mean", "std")
REVIN_EPS = 1e-5  # added to the window variance before the square root (as in RevIN)


def revin_base(target: Tensor, observed: Tensor, mode: str) -> Tensor:
    """(B, T, C) context and observed mask -> (B, C): the last observed value (``"last"``) or the mean of
    the observed values (``"mean"``); 0 where a target was never observed."""
    if mode == "last":
        T = target.shape[1]
        pos = torch.arange(T, device=target.device).view(1, T, 1).expand_as(target)
        last = torch.where(observed > 0, pos, torch.full_like(pos, -1)).amax(dim=1)  # (B, C)
        val = target.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)
        return torch.where(last >= 0, val, torch.zeros_like(val))
    if mode == "mean":
        n = observed.sum(1)
        return (target * observed).sum(1) / n.clamp_min(1.0)
    raise ValueError(f"revin={mode!r}: choose one of {list(REVIN_MODES)}")


def revin_stats(target: Tensor, observed: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(B, T, C) context and observed mask -> (loc, scale), each (B, C): the network sees
    ``(target - loc) / scale`` and its forecasts are mapped back by ``* scale + loc``.

    ``loc`` is :func:`revin_base` (of ``"mean"`` for ``"std"``); ``scale`` is ``sqrt(var + 1e-5)`` of
    the observed values for ``"std"`` (``sqrt(1e-5)`` for a constant or never observed context) and 1
    for ``"last"`` / ``"mean"``."""
    loc = revin_base(target, observed, "mean" if mode == "std" else mode)
    if mode != "std":
        return loc, torch.ones_like(loc)
    var = revin_base((target - loc.unsqueeze(1)) ** 2, observed, "mean")  # the masked mean of the squares
    return loc, torch.sqrt(var + REVIN_EPS)


class RevIN(nn.Module):
    """No parameters: ``normalize`` a context, ``denormalize`` the forecasts made from it.

    Args:
        mode: see the module docstring.
    """

    def __init__(self, mode: RevinMode = "none") -> None:
        super().__init__()
        if mode not in REVIN_MODES:
            raise ValueError(f"revin={mode!r}: choose one of {list(REVIN_MODES)}")
        self.mode = mode

    def normalize(self, target: Tensor, observed: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Context (B, T, C) and mask -> the normalised context (missing steps stay 0) and the
        detached (loc, scale), each (B, C) (None for mode "none")."""
        if self.mode == "none":
            return target, None
        loc, scale = revin_stats(target, observed, self.mode)
        base = (loc.detach(), scale.detach())
        return (target - base[0].unsqueeze(1)) / base[1].unsqueeze(1) * observed, base

    @staticmethod
    def denormalize(y: Tensor, base: tuple[Tensor, Tensor] | None) -> Tensor:
        """Forecasts (B, ..., C, Q) -> ``y * scale + loc`` broadcast over the middle dimensions."""
        if base is None:
            return y
        B, C = base[0].shape
        shape = (B, *([1] * (y.dim() - 3)), C, 1)
        return y * base[1].view(shape).to(y.dtype) + base[0].view(shape).to(y.dtype)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
