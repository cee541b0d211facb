"""Reading checkpoint files without running code: the one loader of the CLI and the library.

A checkpoint of :class:`forecaster.GRUForecaster` holds tensors and plain data only (str, int,
float, bool, None, and lists, tuples and dicts of them; the data spec is such a dict), so it is
read with ``torch.load(weights_only=True)``: the unpickler builds those types and nothing else. A
file that asks for any other object (a pickled class whose ``__reduce__`` would call ``exec``, a
bare pickle, a whole pickled model) is refused in one line before anything in it is built.

Everything that reads a checkpoint goes through :func:`read_checkpoint`: ``predict``, ``test``,
``validate``, ``fit --ckpt_path`` (the CLI reads the hyperparameters, then Lightning restores the
weights with ``weights_only=True``), ``stream``, ``stream --replay``,
:meth:`forecaster.StreamingForecaster.from_checkpoint` and
:func:`forecaster.lightning_module.load_checkpoint`.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from forecaster.snapshot import check_zip

__all__ = ["CheckpointError", "read_checkpoint", "check_sizes", "LIMITS"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely (missing, damaged, not a checkpoint, or holding
    objects that could run code); the message is one line."""


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a Lightning checkpoint as tensors and plain data.

    Args:
        path: the ``.ckpt`` file.
        map_location: where its tensors go (``torch.load``'s ``map_location``).

    Returns:
        The checkpoint dict (``state_dict``, ``hyper_parameters``, ...), not yet checked against a
        model (:func:`forecaster.lightning_module.check_checkpoint` does that).

    Raises:
        CheckpointError: the file is missing, is not a readable checkpoint, or holds anything but
            tensors and plain data (refused without running it).
    """
    where = f"checkpoint {str(path)!r}"
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{where} not found")
    with open(p, "rb") as f:
        head = f.read(2)
        if head == b"PK":  # torch's zip format: no compressed entries (a small file must not inflate to gigabytes)
            f.seek(0)
            check_zip(f, p.stat().st_size, where, CheckpointError)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        with open(p, "rb") as f:
            head = f.read(2)
        if head != b"PK" and head[:1] != b"\x80":  # neither torch's zip nor a pickle: junk bytes (refused alike)
            raise CheckpointError(f"cannot read {where}: not a checkpoint file (it starts with {head!r})") from None
        # weights_only refuses every global (and opcode) it was not told is safe; its message names it
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f" (it asks for {found.group(1)[:100]})" if found else ""
        raise CheckpointError(f"{where} holds objects other than tensors and plain data{what}; refused without "
                              "loading it, since loading such a file can run code. Use a checkpoint written by "
                              "`python -m forecaster fit`") from None
    except Exception as e:  # noqa: BLE001 - a truncated zip, a text file, a foreign format: one line
        raise CheckpointError(f"cannot read {where}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{where} is not a Lightning checkpoint (no state_dict)")
    sd, hp = ckpt["state_dict"], ckpt.get("hyper_parameters", {})
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{where} is not a Lightning checkpoint (its state_dict is not names -> tensors)")
    if not isinstance(hp, dict) or not all(isinstance(k, str) for k in hp):
        raise CheckpointError(f"{where} is not a Lightning checkpoint (its hyper_parameters are not a dict)")
    return ckpt


# Upper bounds on the sizes a checkpoint's settings may ask for before a model is built from them:
# far above any real model, far below what would exhaust memory while building it.
LIMITS = {"n_targets": 100_000, "n_past_covariates": 100_000, "n_future_covariates": 100_000,
          "context_length": 10_000_000, "horizon": 1_000_000, "seasonal_period": 10_000_000, "hidden_size": 65_536,
          "num_layers": 64, "d_model": 65_536, "head_hidden": 1_000_000, "segment_length": 1_000_000, "members": 64,
          "min_origin": 10_000_000, "train_windows": 10 ** 15}


def check_sizes(hp: dict, where: str = "the checkpoint") -> None:
    """:class:`CheckpointError` (one line) for a size setting that is not a sane whole number (a
    crafted ``hidden_size=2**40`` would try to allocate it), the model's or its network's
    (``hp["net"]["init_args"]``), or a network that is not one of the library's
    (:func:`forecaster.nets.net_config`); other values are the model's to check."""
    net = hp.get("net")
    if net is not None:
        from forecaster.nets.config import net_config

        try:  # the class path is looked up among the library's networks, never imported
            net_config(net)
        except ValueError as e:
            raise CheckpointError(f"{where}: {e}") from None
        hp = {**hp, **(net.get("init_args") or {})}  # the network's sizes are checked like the model's
    for k, top in LIMITS.items():
        v = hp.get(k)
        if v is None or (k == "members" and v == "auto"):
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
            raise CheckpointError(f"{where} has {k}={str(v)[:40]}: not a whole number in [0, {top:,}]; "
                                  "it was not written by `python -m forecaster fit`")
    q = hp.get("quantiles")
    if q is not None and (not isinstance(q, (list, tuple)) or len(q) > 1000):
        raise CheckpointError(f"{where} has quantiles that are not a short list")
