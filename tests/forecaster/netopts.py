"""Test helper: flat network settings (as the option tables of the tests list them) -> ``net``."""

from forecaster.nets import StepNet, WindowNet

WINDOW_ONLY = ("decoder", "channel_independent", "revin", "segment_length")


def with_net(kw: dict, **net_defaults) -> dict:
    """GRUForecaster's keyword arguments from ``kw`` with the network's settings among them (as the
    tests' option tables list them) moved into ``net``: a :class:`WindowNet` when a window-model
    setting is there, else a :class:`StepNet`; ``net_defaults`` under them."""
    kw = dict(kw)
    cls = WindowNet if any(k in kw for k in WINDOW_ONLY) else StepNet
    names = cls.settings()
    net = {**net_defaults, **{k: kw.pop(k) for k in list(kw) if k in names}}
    return {**kw, "net": cls(**net)}
