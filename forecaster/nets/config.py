"""Which network to train: :class:`StepNet` or :class:`WindowNet`, passed to
:class:`forecaster.GRUForecaster` as ``net`` (Lightning's dependency injection).

A config holds what the user chooses about the network (its widths, the GRU's formulation and
backend, and for the window model its decoder, segments and RevIN); what the data fixes (targets,
covariates, horizon, context, season, quantiles, baseline) comes from the Lightning module when it
builds the network (:meth:`NetConfig.build`). On the command line::

    python -m forecaster fit --model.net.hidden_size 128                 # the per-step model (default)
    python -m forecaster fit --model.net WindowNet --model.net.revin std # the window model

and in a YAML config::

    model:
      net:
        class_path: forecaster.nets.WindowNet
        init_args: {decoder: pmf, segment_length: 24}

A checkpoint stores the config as plain data, ``{"class_path": ..., "init_args": {...}}``
(:meth:`NetConfig.to_dict`); :func:`net_config` turns that back into a config, resolving the
class path against :data:`NET_CONFIGS` only (a checkpoint never chooses what is imported).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, Mapping, Sequence

from torch import nn

__all__ = ["NetConfig", "StepNet", "WindowNet", "NET_CONFIGS", "net_config"]


class NetConfig:
    """What a network of :mod:`forecaster.nets` is built from, apart from the data's shapes.

    Subclasses take their settings as keyword arguments (kept as attributes of the same names) and
    implement :meth:`_build`; the networks check the values when they are built (one place for
    every check). Configs compare equal when their class and settings are equal."""

    def __init__(self, hidden_size: int, num_layers: int, d_model: int, head_hidden: int, dropout: float,
                 reset_after: bool, backend: str, head_dropout: float) -> None:
        self.hidden_size, self.num_layers, self.d_model, self.head_hidden = hidden_size, num_layers, d_model, head_hidden
        self.dropout, self.reset_after, self.backend, self.head_dropout = dropout, reset_after, backend, head_dropout

    # ---- plain data ----

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The names of the settings (the ``__init__`` parameters)."""
        return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")

    def init_args(self) -> dict[str, Any]:
        """The settings as plain data."""
        return {k: getattr(self, k) for k in self.settings()}

    def to_dict(self) -> dict[str, Any]:
        """``{"class_path": "forecaster.nets.<Name>", "init_args": {...}}``: what a checkpoint and a
        YAML config hold (the form Lightning's CLI writes)."""
        return {"class_path": f"forecaster.nets.{type(self).__name__}", "init_args": self.init_args()}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.init_args() == self.init_args()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.init_args().items())})"

    # ---- building ----

    def build(self, n_targets: int, n_past_covariates: int, n_future_covariates: int, horizon: int,
              context_length: int, *, quantiles: Sequence[float] | None, baseline: str, season_length: int,
              members: int = 1) -> nn.Module:
        """The network for data of these shapes; ``members`` K > 1: an
        :class:`~forecaster.nets.EnsembleNet` of K of them, initialised one after the other from
        torch's random state."""
        from forecaster.nets.ensemble import EnsembleNet

        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"members={members!r}: the number of networks averaged, an int >= 1 (1: a single "
                             "network; GRUForecaster also takes 'auto', by the size of the training part)")
        shape = dict(n_targets=n_targets, n_past_covariates=n_past_covariates, n_future_covariates=n_future_covariates,
                     horizon=horizon, context_length=context_length, quantiles=quantiles, baseline=baseline,
                     season_length=season_length)
        if members > 1:
            return EnsembleNet([self._build(**shape) for _ in range(members)])
        return self._build(**shape)

    def _build(self, **shape) -> nn.Module:
        raise NotImplementedError

    def _common(self) -> dict[str, Any]:
        """The settings both networks have (NetConfig's own parameters)."""
        return {k: getattr(self, k) for k in NetConfig.settings()}


class StepNet(NetConfig):
    """The per-step model (the default): trains on every origin, streams one observation at a time.

    Builds :class:`~forecaster.nets.StepForecastNet`: each step's features go through a projection
    into the GRU, and every origin forecasts the next ``horizon`` steps from its state.

    Args:
        hidden_size: the GRU's hidden units H.
        num_layers: stacked GRU layers.
        d_model: width of the input projection in front of the GRU.
        head_hidden: hidden width of the forecast head (an MLP; 0: one linear layer).
        dropout: dropout between GRU layers (with num_layers > 1), in [0, 1).
        reset_after: the GRU formulation: True applies the reset gate after the recurrent matmul
            (PyTorch and cuDNN), False before it (the classic GRU).
        backend: where the GRU runs: ``auto`` (the Triton kernels on CUDA tensors when Triton is
            installed, else PyTorch), ``torch`` or ``triton`` (never a silent fallback).
        head_dropout: dropout in front of the head, in [0, 1).
        inputs: what the network reads of each target: ``relative`` (the change since the previous
            observation and the deviation from the look-back's mean: shift-invariant, so a series
            that trends beyond its training range stays in known territory; the level comes in
            through the baseline) or ``level`` (the scaled value).
    """

    def __init__(self, hidden_size: int = 64, num_layers: int = 1, d_model: int = 32, head_hidden: int = 128,
                 dropout: float = 0.0, reset_after: bool = True, backend: Literal["auto", "torch", "triton"] = "auto",
                 head_dropout: float = 0.0, inputs: Literal["relative", "level"] = "relative") -> None:
        super().__init__(hidden_size, num_layers, d_model, head_hidden, dropout, reset_after, backend, head_dropout)
        self.inputs = inputs

    def _build(self, **shape) -> nn.Module:
        from forecaster.nets.step import StepForecastNet

        return StepForecastNet(**shape, **self._common(), inputs=self.inputs)


class WindowNet(NetConfig):
    """The window model, for long look-backs: the GRU reads the context, the head its final state.

    Builds :class:`~forecaster.nets.WindowForecastNet` (SegRNN's design with a GRU); it forecasts
    from whole windows (a stream keeps each series' look-back and runs it).

    Args:
        hidden_size: the GRU's hidden units H.
        num_layers: stacked GRU layers.
        d_model: width of the input projection in front of the GRU.
        head_hidden: hidden width of the forecast head (an MLP; 0: one linear layer).
        dropout: dropout between GRU layers (with num_layers > 1), in [0, 1).
        reset_after: the GRU formulation: True applies the reset gate after the recurrent matmul
            (PyTorch and cuDNN), False before it (the classic GRU).
        backend: where the GRU runs: ``auto`` (the Triton kernels on CUDA tensors when Triton is
            installed, else PyTorch), ``torch`` or ``triton`` (never a silent fallback).
        head_dropout: dropout in front of the head, in [0, 1).
        decoder: ``last`` (the final state -> the head) or ``pmf`` (SegRNN's parallel multi-step
            decoder: one GRU step per output segment of ``segment_length`` steps; no future
            covariates).
        channel_independent: targets as univariate series sharing weights (no covariates).
        revin: ``none``, ``last``, ``mean`` or ``std``: each window's level (and for std its scale)
            removed before the network and restored after.
        segment_length: steps per GRU input (the context length must be a multiple).
    """

    def __init__(self, hidden_size: int = 64, num_layers: int = 1, d_model: int = 32, head_hidden: int = 128,
                 dropout: float = 0.0, reset_after: bool = True, backend: Literal["auto", "torch", "triton"] = "auto",
                 head_dropout: float = 0.0, decoder: Literal["last", "pmf"] = "last",
                 channel_independent: bool = False, revin: Literal["none", "last", "mean", "std"] = "none",
                 segment_length: int = 1) -> None:
        super().__init__(hidden_size, num_layers, d_model, head_hidden, dropout, reset_after, backend, head_dropout)
        self.decoder, self.channel_independent = decoder, channel_independent
        self.revin, self.segment_length = revin, segment_length

    def _build(self, **shape) -> nn.Module:
        from forecaster.nets.window import WindowForecastNet

        return WindowForecastNet(**shape, **self._common(), decoder=self.decoder,
                                 channel_independent=self.channel_independent, revin=self.revin,
                                 segment_length=self.segment_length)


NET_CONFIGS: dict[str, type[NetConfig]] = {"StepNet": StepNet, "WindowNet": WindowNet}


def net_config(net: NetConfig | Mapping | None) -> NetConfig:
    """A :class:`NetConfig` from a config, its plain-data form (``{"class_path": ..., "init_args":
    {...}}``, as a checkpoint or the CLI holds it; the class path ``forecaster.nets.StepNet``,
    ``forecaster.nets.config.StepNet`` or ``StepNet``), or None (the default :class:`StepNet`).

    Raises:
        ValueError: one line, for a class path that is not one of :data:`NET_CONFIGS` (nothing is
            imported from it) or settings the class does not have.
    """
    if net is None:
        return StepNet()
    if isinstance(net, NetConfig):
        return net
    if not isinstance(net, Mapping):
        raise ValueError(f"net={str(net)[:80]!r}: pass a network config (forecaster.nets.StepNet(...) or "
                         "WindowNet(...)) or its dict form {'class_path': ..., 'init_args': {...}}")
    unknown = set(net) - {"class_path", "init_args"}
    path = net.get("class_path")
    if unknown or not isinstance(path, str):
        raise ValueError(f"net: a dict with 'class_path' (one of {sorted(NET_CONFIGS)}) and 'init_args', got keys "
                         f"{sorted(map(str, net))[:5]}")
    name = path.rsplit(".", 1)[-1]
    if name not in NET_CONFIGS or path not in (name, f"forecaster.nets.{name}", f"forecaster.nets.config.{name}"):
        raise ValueError(f"net: class_path {path[:80]!r} is not a network of this library; choose one of "
                         f"{[f'forecaster.nets.{n}' for n in NET_CONFIGS]}")
    cls = NET_CONFIGS[name]
    args = net.get("init_args") or {}
    if not isinstance(args, Mapping):
        raise ValueError(f"net: init_args of {name} must be a dict of settings")
    extra = [str(k) for k in args if k not in cls.settings()]
    if extra:
        raise ValueError(f"net: {name} has no setting {extra[0][:40]!r} (its settings: {list(cls.settings())})")
    try:
        return cls(**args)
    except TypeError as e:  # a value of the wrong type deep in a check
        raise ValueError(f"net: {name}: {' '.join(str(e).split())[:160]}") from None
