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

__all__ = ["CheckpointError", "read_checkpoint"]


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
    return ckpt
