"""``python -m forecaster``: LightningCLI for :class:`GRUForecaster` on :class:`TimeSeriesDataModule`.

Subcommands: ``fit`` (then ``test`` with the best checkpoint, printing metrics beside the baselines),
``validate``, ``test``, ``predict`` (forecasts to ``--output`` .parquet/.csv), plus ``bench``
(``forecaster.bench.main``) and ``stream`` (``forecaster.stream_cli.main``).

Mistakes a user can make (unknown config key, missing file or column, a checkpoint that does not
fit) end with one ``error: ...`` line on stderr and exit code 2; set ``FORECASTER_DEBUG=1`` to get
the traceback instead.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, EarlyStopping, ModelCheckpoint
from jsonargparse import lazy_instance
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.trainer.states import TrainerStatus

from forecaster.averaging import ParameterEMA
from forecaster.checkpoint import CheckpointError, check_sizes, read_checkpoint
from forecaster.forecasts import predictions_frame
from forecaster.lightning_module import (ENSEMBLE_WINDOWS, MAX_AUTO_MEMBERS, CheckpointMismatchError, GRUForecaster,
                                         check_checkpoint, checkpoint_hparams)
from forecaster.metrics import METRICS
from forecaster.nets.config import StepNet, net_config

__all__ = ["main", "ForecasterCLI", "ForecastWriter", "format_metrics"]

# Settings the no-argument run uses (CLI defaults; configs/default.yaml spells out the same values).
# An epoch is every training window once (no batch cap). Validation every 50 training steps, across
# epoch boundaries, so small and large data alike are checked often; training stops when the
# validation loss has not improved for 10 checks (max_epochs is only a ceiling); progress bars only
# on a terminal.
TRAINER_DEFAULTS = {
    "max_epochs": 1000,
    "val_check_interval": 50,
    "check_val_every_n_epoch": None,
    "gradient_clip_val": 1.0,
    "default_root_dir": "runs",
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
    "log_every_n_steps": 20,
    "enable_model_summary": False,  # --verbose shows it
}
DATA_DEFAULTS = {"context_length": "auto", "batch_size": 32}
_LINKED = ("n_targets", "n_past_covariates", "n_future_covariates", "context_length", "horizon",
           "seasonal_period", "data_spec", "train_windows")


def complete_checkpoint(path: str) -> str:
    """``path`` if it is a complete checkpoint, else the newest other complete one in its folder
    ("" if none). ``ModelCheckpoint`` names a new best before it writes it and deletes the previous
    best after: a Ctrl-C in between leaves the named one missing or cut short and the previous one
    on disk."""
    from forecaster.checkpoint import read_checkpoint

    def complete(p: Path) -> bool:
        try:
            read_checkpoint(p)
            return True
        except Exception:  # noqa: BLE001 - missing, cut short, not a checkpoint: not this one
            return False

    if complete(Path(path)):
        return path
    folder = Path(path).parent
    others = sorted((p for p in folder.glob("*.ckpt") if p != Path(path) and p.is_file()),
                    key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    return next((str(p) for p in others if complete(p)), "")


class UserError(Exception):
    """A mistake in the user's input, reported as one line."""


def _spec_of(dm) -> dict:
    return dm.spec.to_dict()


class ForecasterCLI(LightningCLI):
    """LightningCLI with the data -> model links, default callbacks and logger, fit -> test, and a
    Polars prediction writer."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.mode": "min", "checkpoint.save_top_k": 1,
                             "checkpoint.filename": "best-{epoch}-{step}"})
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/loss_network", "early_stopping.mode": "min",
                             "early_stopping.patience": 10})
        parser.add_lightning_class_args(ParameterEMA, "weight_averaging")
        parser.set_defaults({"weight_averaging.decay": None})  # off unless asked for (forecaster/averaging.py)
        parser.add_argument("--cpu_threads", type=Optional[int], default=1,
                            help="torch intra-op threads for CPU work (torch.set_num_threads); the small default "
                                 "GRU trains fastest on one, several times faster on a busy machine; null = "
                                 "torch's default")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="fit: evaluate the best checkpoint on the test part when training ends; false "
                                 "evaluates it on the validation part instead, for choosing hyperparameters "
                                 "without looking at the test part")
        parser.add_argument("--warm_start", type=Optional[str], default=None,
                            help="fit: start from this checkpoint's weights and settings on the data given (newer "
                                 "data of the same columns): a new run, with a fresh optimizer, schedule and early "
                                 "stopping (--ckpt_path resumes an interrupted run of the same data instead; with "
                                 "other data it warm-starts too)")
        parser.add_argument("--warm_start_scalers", type=Literal["keep", "refit"], default="keep",
                            help="fit --warm_start: keep the checkpoint's per-series scalers and baseline blends "
                                 "(default; new series get the pooled ones) or fit them anew on the new data")
        parser.add_argument("--output", type=Optional[str], default="runs/forecasts.parquet",
                            help="predict: where to write the forecasts (.parquet or .csv)")
        parser.add_argument("--plot", type=Optional[str], default=None,
                            help="predict: also draw history, actuals, point forecast and quantile band of a few "
                                 "series to this image (PNG); needs matplotlib")
        for src, dst in (("n_targets", "n_targets"), ("n_past_covariates", "n_past_covariates"),
                         ("n_future_covariates", "n_future_covariates"), ("context_length", "context_length"),
                         ("horizon", "horizon"), ("season_length", "seasonal_period"),
                         ("train_windows", "train_windows")):
            parser.link_arguments(f"data.{src}", f"model.{dst}", apply_on="instantiate")
        parser.link_arguments("data", "model.data_spec", compute_fn=_spec_of, apply_on="instantiate")
        parser.set_defaults({"seed_everything": 0, "model.net": lazy_instance(StepNet)})
        parser.set_defaults({f"data.{k}": v for k, v in DATA_DEFAULTS.items()})
        if not str(parser.prog).endswith(("test", "validate")):  # those have Lightning's own --verbose
            parser.add_argument("--verbose", type=bool, default=False,
                                help="show Lightning's own messages: devices, tips, the model summary, its warnings")

    def parse_arguments(self, parser, args) -> None:
        """As LightningCLI's, but a bad argument or config key is one ``error:`` line and exit 2 (no
        usage dump: the parsers are made with ``exit_on_error=False``, see :func:`main`)."""
        from jsonargparse import ArgumentError

        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            sub = f" {self._subcommand_of(args)}" if self._subcommand_of(args) else ""
            msg = _net_message(" ".join(str(e).split()))
            raise UserError(f"{msg} (see: python -m forecaster{sub} --help)") from None

    @staticmethod
    def _subcommand_of(args) -> str:
        argv = sys.argv[1:] if args is None else list(args)
        return next((a for a in argv if a in ("fit", "validate", "test", "predict")), "")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        n = cfg.get("cpu_threads")
        if n:
            torch.set_num_threads(int(n))
        trainer = cfg["trainer"]
        if trainer.get("enable_checkpointing") is False:
            # --trainer.enable_checkpointing false: the default ModelCheckpoint (a configurable callback)
            # stays, saving nothing, so that Lightning's check of the flag against it passes
            trainer["enable_checkpointing"] = True
            cfg["checkpoint.save_top_k"], cfg["checkpoint.save_last"] = 0, False
        if self.subcommand != "fit" and _is_default_logger(trainer.get("logger")):
            trainer["logger"] = False  # evaluating or predicting writes no log folder unless a logger is asked for
        if cfg.get("verbose") and self.subcommand in ("fit", "predict"):
            trainer["enable_model_summary"] = True

    # -- test / validate: --verbose also brings Lightning's own metrics table (ours is printed anyway) --
    def test(self, **kwargs) -> None:
        self.trainer.test(**{**kwargs, "verbose": VERBOSE["on"]})

    def validate(self, **kwargs) -> None:
        self.trainer.validate(**{**kwargs, "verbose": VERBOSE["on"]})

    # -- fit: Ctrl-C (SIGINT) stops training, then the best checkpoint so far is tested and reported --
    warm: tuple[str, dict] | None = None  # (checkpoint, its state_dict): fit starts from its weights

    def fit(self, model, **kwargs) -> None:
        if self.warm is not None:
            path, state = self.warm
            model.load_state_dict(state)
            kept = "refitted on these data" if self.config[self.subcommand].get("warm_start_scalers") == "refit" \
                else "the checkpoint's (--warm_start_scalers refit fits them anew)"
            print(f"warm start from {path}: its weights and settings; the optimizer, the schedule, early stopping "
                  f"and the best checkpoint start anew; scalers {kept}", flush=True)
        try:
            self.trainer.fit(model, **kwargs)
        except SystemExit:  # Lightning's answer to a KeyboardInterrupt: graceful shutdown, then exit(1)
            if not self.trainer.interrupted:
                raise
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores further Ctrl-C
            cb = self.trainer.checkpoint_callback
            named = getattr(cb, "best_model_path", "") if cb is not None else ""
            best = complete_checkpoint(named) if named else ""
            if not best or not self.trainer.is_global_zero:
                print("interrupted before the first validation: no checkpoint to test", file=sys.stderr)
                raise SystemExit(130) from None
            if best != named:  # Ctrl-C while a new best was being written: it is incomplete
                print(f"interrupted while writing {named}, which is incomplete: the previous best is the best "
                      "checkpoint so far", file=sys.stderr)
                cb.best_model_path = best
            print(f"interrupted: evaluating the best checkpoint so far ({best})", file=sys.stderr, flush=True)
            self.trainer.should_stop, self.trainer.state.status = False, TrainerStatus.FINISHED
            self.after_fit(interrupted=False)
            raise SystemExit(130) from None

    # -- a checkpoint's hyperparameters and data roles become the defaults of test/validate/predict --
    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        if "weights_only" in cfg and cfg.get("weights_only") is None:
            cfg["weights_only"] = True  # Lightning's own restore: tensors and plain data, as read_checkpoint
        warm = cfg.get("warm_start") if sub == "fit" else None
        ckpt_path = warm or cfg.get("ckpt_path")
        if not ckpt_path or ckpt_path in ("best", "last", "hpc", "registry"):
            return
        try:
            ckpt = read_checkpoint(ckpt_path)  # tensors and plain data only: a crafted file runs no code
        except CheckpointError as e:
            raise UserError(str(e)) from None
        check_checkpoint(ckpt)
        hp = checkpoint_hparams(ckpt)
        try:
            check_sizes(hp, f"checkpoint {ckpt_path!r}")
        except CheckpointError as e:
            raise UserError(str(e)) from None
        if sub == "fit" and not warm and _other_data(ckpt, cfg):  # fit --ckpt_path OLD --data.path NEW
            warm = ckpt_path
        if warm:  # a new run from the checkpoint's weights: Lightning must not resume its loop and optimizer
            cfg["ckpt_path"] = None
            self.warm = (warm, ckpt["state_dict"])
        for k, v in hp.items():
            if k not in _LINKED and f"model.{k}" in cfg:
                cfg[f"model.{k}"] = _net_namespace(v) if k == "net" else v
        spec = hp.get("data_spec")
        if spec and warm and cfg.get("warm_start_scalers") == "refit":
            # the checkpoint's roles and axis, scalers and baseline blends fitted anew on the new data
            for key, value in _roles_of(spec).items():
                cfg[f"data.{key}"] = value
        elif spec:  # the data are read with the checkpoint's roles, axis and scalers
            cfg["data.spec"] = spec
            for key in ("context_length", "horizon"):  # the data module's recorded arguments agree with the spec
                if cfg.get(f"data.{key}") == DATA_DEFAULTS.get(key, cfg.get(f"data.{key}")):
                    cfg[f"data.{key}"] = spec[key]

    # -- the data summary first; an empty validation part fails here with what to change, not later
    #    inside a callback --
    def before_fit(self) -> None:
        dm, trainer = self.datamodule, self.trainer
        if trainer.is_global_zero and hasattr(dm, "summary"):
            print(dm.summary(), flush=True)
            if isinstance(self.model, GRUForecaster):
                print(members_line(self.model), flush=True)
        self._validate_before_the_end(dm, trainer)
        if hasattr(dm, "test_dataset") and self.config[self.subcommand].get("test_after_fit", True) \
                and trainer.limit_test_batches != 0 and len(dm.test_dataset()) == 0:
            raise UserError(
                f"the test part has no window (a window needs horizon = {dm.horizon} steps in it; test_size = "
                f"{dm.test_size!r}), so fit could not test its best checkpoint: enlarge --data.test_size (or leave "
                "it a fraction: at least one window), or fit without the test: --test_after_fit false")
        if not hasattr(dm, "val_dataset") or trainer.limit_val_batches == 0 or len(dm.val_dataset()) > 0:
            return
        monitors = sorted({cb.monitor for cb in trainer.callbacks if isinstance(cb, (EarlyStopping, ModelCheckpoint))
                           and cb.monitor and cb.monitor.startswith("val/")})
        if monitors:
            raise UserError(
                f"the validation part has no window (a window needs horizon = {dm.horizon} steps in it; "
                f"val_size = {dm.val_size!r}), but {', '.join(monitors)} is monitored: enlarge --data.val_size, "
                "or train without validation: --trainer.limit_val_batches 0 --checkpoint.monitor train/loss_epoch "
                "--early_stopping.monitor train/loss_epoch")

    @staticmethod
    def _validate_before_the_end(dm, trainer) -> None:
        """Validation every N steps across epochs (the default) never runs in a run shorter than N
        steps (a smoke run, a tiny dataset with few epochs): then validate at its last step, so there
        is a best checkpoint."""
        every = trainer.val_check_interval
        if trainer.check_val_every_n_epoch is not None or not isinstance(every, int) or not hasattr(dm, "train_dataset"):
            return
        per_epoch = -(-len(dm.train_dataset()) // (dm.batch_size * max(1, trainer.world_size)))
        limit = trainer.limit_train_batches
        per_epoch = min(per_epoch, int(limit)) if isinstance(limit, int) else max(1, int(per_epoch * float(limit)))
        total = per_epoch * (trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1000)
        if trainer.max_steps and trainer.max_steps > 0:
            total = min(total, trainer.max_steps)
        if 0 < total < every:
            trainer.val_check_interval = total

    # -- fit runs test with the best checkpoint; test prints the metrics beside the baselines --
    def after_fit(self, interrupted: bool | None = None) -> None:
        if self.trainer.interrupted if interrupted is None else interrupted:
            return
        cb = self.trainer.checkpoint_callback
        ckpt = "best" if cb is not None and getattr(cb, "best_model_path", "") else None
        if self.config[self.subcommand].get("test_after_fit", True):
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
            self._print_metrics(ckpt=cb.best_model_path if ckpt else None)
        else:
            self.trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False,
                                  weights_only=True)
            self._print_metrics(stage="val", ckpt=cb.best_model_path if ckpt else None)

    def after_test(self) -> None:
        self._print_metrics()

    def after_validate(self) -> None:
        self._print_metrics(stage="val")

    def _print_metrics(self, stage: str = "test", ckpt: str | None = None) -> None:
        if not self.trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        print(format_metrics(m, stage))
        if ckpt:
            print(f"best checkpoint: {ckpt}")

    def before_predict(self) -> None:
        out = self.config[self.subcommand].get("output")
        if out:
            suffix = Path(out).suffix.lower()
            if suffix not in (".parquet", ".csv"):
                raise UserError(f"--output {out!r}: use a .parquet or .csv file name")
            self.trainer.callbacks.append(ForecastWriter(out))

    def after_predict(self) -> None:
        path = self.config[self.subcommand].get("plot")
        preds = self.trainer.predict_loop.predictions
        if not path or not preds or not self.trainer.is_global_zero:
            return
        from forecaster.plot import MISSING_MATPLOTLIB, plot_forecasts

        try:
            import matplotlib  # noqa: F401
        except ImportError:  # the forecasts are written; only the picture is missing
            out = self.config[self.subcommand].get("output")
            raise UserError(f"--plot: {MISSING_MATPLOTLIB}; the forecasts were written to {out}") from None
        if isinstance(preds[0], list):  # several dataloaders
            preds = [p for dl in preds for p in dl]
        dm = self.datamodule
        fc = predictions_frame(dm, preds, self.model.quantiles, self.model.net.anchor)
        plot_forecasts(dm.frame(), fc, time_col=dm.time_col, id_col=dm.id_col, time_format=dm.time_format,
                       title="Forecasts from the last observation", path=path)
        print(f"wrote forecast plot to {path}")


def members_line(model: GRUForecaster) -> str:
    """One line: how many networks the model averages and why (printed by ``fit``)."""
    k, n = model.n_members, model.hparams.get("train_windows")
    what = f"model: {k} networks averaged" if k > 1 else "model: 1 network"
    if not model.members_auto:
        return f"{what} (members={k})"
    if n is None:
        return f"{what} (members=auto without the number of training windows)"
    if k > 1:
        return (f"{what} (members=auto: {n:,} training windows, {ENSEMBLE_WINDOWS:,} // {n:,} networks, at most "
                f"{MAX_AUTO_MEMBERS}; --model.members sets the number)")
    return f"{what} (members=auto: {n:,} training windows; an ensemble up to {ENSEMBLE_WINDOWS // 2:,})"


def format_metrics(m: dict[str, float], stage: str = "test") -> str:
    """A small table: metric rows, model / seasonal naive / last value columns."""
    if f"{stage}/mae" not in m:
        return f"(no {stage} metrics)"
    lines = [f"{stage} metrics, original scale (lower is better)",
             f"{'metric':<8}{'model':>14}{'seasonal_naive':>16}{'last_value':>14}"]
    for name in METRICS:
        vals = [m.get(f"{stage}/{name}{s}", math.nan) for s in ("", "_seasonal_naive", "_last_value")]
        lines.append(f"{name:<8}" + "".join(f"{v:>{w}.4g}" for v, w in zip(vals, (14, 16, 14))))
    if f"{stage}/mse_scaled" in m:
        lines.append("scaled units (the data module's scaling, e.g. z-scores with scaling: standard)")
        for name in ("mse_scaled", "mae_scaled"):
            vals = [m.get(f"{stage}/{name}{s}", math.nan) for s in ("", "_seasonal_naive", "_last_value")]
            lines.append(f"{name:<11}" + "".join(f"{v:>{w}.4f}" for v, w in zip(vals, (11, 16, 14))))
    targets = list(dict.fromkeys(k.split("@", 1)[1] for k in m if k.startswith(f"{stage}/mae@")))
    if targets:  # several targets, maybe in different units: each on its own
        lines.append(f"{'per target':<26}{'model':>14}{'seasonal_naive':>16}{'last_value':>14}")
        for t in targets:
            for name in ("mae", "mase"):
                vals = [m.get(f"{stage}/{name}{s}@{t}", math.nan) for s in ("", "_seasonal_naive", "_last_value")]
                cells = "".join(f"{v:>{w}.4g}" for v, w in zip(vals, (14, 16, 14)))
                lines.append(f"{(t[:20] + ' ' + name):<26}{cells}")
    mae, sn = m.get(f"{stage}/mae", math.nan), m.get(f"{stage}/mae_seasonal_naive", math.nan)
    verdict = "beats" if mae < sn else "does NOT beat"
    lines.append(f"model {verdict} seasonal naive on {stage} MAE ({mae:.4g} vs {sn:.4g})")
    return "\n".join(lines)


class ForecastWriter(BasePredictionWriter):
    """Writes all forecasts of a predict run to one Parquet or CSV file through Polars (with several
    processes each writes ``<name>.rank<r><suffix>``)."""

    def __init__(self, output: str) -> None:
        super().__init__(write_interval="epoch")
        self.output = str(output)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if predictions and isinstance(predictions[0], list):  # several dataloaders
            predictions = [p for dl in predictions for p in dl]
        if not predictions:
            return
        df = predictions_frame(trainer.datamodule, predictions, pl_module.quantiles, pl_module.net.anchor)
        path = Path(self.output)
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".csv":
            df.write_csv(path)
        else:
            df.write_parquet(path)
        print(f"wrote {df.height} forecast rows to {path}")


def _net_namespace(net) -> Any:
    """A checkpoint's ``net`` (checked by ``check_sizes``: one of the library's networks) as the
    parsed config holds a class: ``class_path`` and ``init_args``, canonical (the config dumps it)."""
    from jsonargparse import Namespace

    d = net_config(net).to_dict()
    return Namespace(class_path=d["class_path"], init_args=Namespace(**d["init_args"]))


def _net_message(msg: str) -> str:
    """jsonargparse's message for a setting the chosen network lacks (it lists every Union member's
    complaint) -> one sentence naming the setting and the network that has it."""
    import re

    if not msg.startswith('Parser key "model.net"'):
        return msg
    from forecaster.nets.config import NET_CONFIGS

    found = re.search(r"Problem with given class_path '([\w.]+)': (?:Option|Key) '([\w.]+)' is not accepted", msg)
    if not found:
        given = re.search(r"Given value: (\S+)", msg)
        if given and ("subclass of NetConfig" in msg or "Expected a dot import path" in msg):
            return f"model.net: {given.group(1)[:60]!r} is not a network: choose one of {list(NET_CONFIGS)}"
        return msg

    name, key = found.group(1).rsplit(".", 1)[-1], found.group(2).rsplit(".", 1)[-1]
    others = [n for n, c in NET_CONFIGS.items() if n != name and key in c.settings()]
    hint = f"; it is a setting of {others[0]}: choose that network first, --model.net {others[0]}" if others else ""
    return f"model.net: {name} has no setting {key!r}{hint}"


def _friendly(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    first = msg[0] if msg else type(e).__name__
    return f"error: {first}"


_USER_ERRORS: tuple[type[BaseException], ...] = (UserError, CheckpointMismatchError, ValueError, FileNotFoundError,
                                                 KeyError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m forecaster``; returns the exit code."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from forecaster.bench import main as bench_main

        return int(bench_main(argv[1:]) or 0)
    if argv and argv[0] == "stream":
        try:
            from forecaster.stream_cli import main as stream_main
        except ImportError as e:
            print(f"error: the streaming predictor is not available ({e})", file=sys.stderr)
            return 2
        return int(stream_main(argv[1:]) or 0)
    debug = bool(os.environ.get("FORECASTER_DEBUG"))
    VERBOSE["on"] = any(a.lower() in ("--verbose=true",) for a in argv) \
        or any(a == "--verbose" and b.lower() == "true" for a, b in zip(argv, argv[1:]))
    quiet(VERBOSE["on"])
    try:
        ForecasterCLI(
            GRUForecaster, _data_module_class(), args=None if from_sys else argv, save_config_kwargs={"overwrite": True},
            # a run's config.yaml beside its logs is for training; evaluating or predicting writes no files of its own
            save_config_callback=SaveConfigCallback if (argv[:1] or ["fit"])[0] == "fit" else None,
            trainer_defaults={**TRAINER_DEFAULTS, "enable_progress_bar": sys.stderr.isatty(),
                              "callbacks": [ProgressLine()]},
            parser_kwargs={"exit_on_error": False, **{c: {"exit_on_error": False, "prog": f"python -m forecaster {c}"}
                                                     for c in ("fit", "validate", "test", "predict")}},
            auto_configure_optimizers=True,
        )
    except SystemExit as e:  # argument errors: jsonargparse already printed the message
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        return code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except _USER_ERRORS as e:
        if debug:
            raise
        print(_friendly(e) + "  (FORECASTER_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except Exception as e:  # polars' own errors (missing files/columns) are user mistakes too
        if debug or not type(e).__module__.startswith("polars"):
            raise
        print(_friendly(e), file=sys.stderr)
        return 2
    return 0


# Lightning's messages a forecasting user does not act on (shown with --verbose): device lines,
# tips, "Seed set", checkpoint restore notes, and warnings about its own internals.
VERBOSE = {"on": False}  # --verbose true on the command line (read before Lightning is set up)
_QUIET_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)", r"The number of training batches .* is smaller than the "
                   r"logging interval", r"The dirpath has changed from", r"LightningCLI's args parameter is intended",
                   r"It is recommended to use `self.log\(.*sync_dist=True\)`")  # the deciding metrics are torchmetrics (synced); train/loss is per process


def quiet(verbose: bool = False) -> None:
    """Lightning's info messages and the warnings about its internals off (``verbose``: on)."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        for message in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)


def _other_data(ckpt: dict, cfg) -> bool:
    """Whether ``fit``'s data are not the checkpoint's (another file): then ``--ckpt_path`` warm-starts."""
    theirs = (ckpt.get("datamodule_hyper_parameters") or {}).get("path")
    mine = cfg.get("data.path")
    if mine is None or theirs is None:
        return (mine is None) != (theirs is None)
    return os.path.realpath(str(mine)) != os.path.realpath(str(theirs))


def _roles_of(spec: dict) -> dict:
    """The data module arguments that rebuild a spec's roles, axis and windows (not its scalers)."""
    keys = ("time_col", "id_col", "target_cols", "past_covariate_cols", "future_covariate_cols", "time_format",
            "freq", "season_length", "context_length", "horizon", "scaling")
    out = {k: spec[k] for k in keys if k in spec}
    out["calendar_features"] = list(spec.get("calendar") or []) or "none"
    return out


def _is_default_logger(logger) -> bool:
    if logger is None or isinstance(logger, bool):
        return False
    d = logger.as_dict() if hasattr(logger, "as_dict") else logger
    default = TRAINER_DEFAULTS["logger"]
    return isinstance(d, dict) and d.get("class_path") == default["class_path"] and \
        (d.get("init_args") or {}).get("save_dir") == default["init_args"]["save_dir"]


class ProgressLine(Callback):
    """One line per validation on stderr when training shows no progress bar (a log file, CI):
    step, epoch, the validation loss and the best so far, and the time since training began."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.best = math.inf
        self.on = False

    def on_fit_start(self, trainer, pl_module) -> None:
        self.start, self.best = time.monotonic(), math.inf
        self.on = trainer.progress_bar_callback is None

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self.on or trainer.sanity_checking or not trainer.is_global_zero:
            return
        loss = trainer.callback_metrics.get("val/loss")
        if loss is None:
            return
        loss = float(loss)
        if not math.isfinite(loss):  # forecaster.guard stops the fit with the reason
            return
        self.best = min(self.best, loss)
        uses = trainer.callback_metrics.get("val/uses_network")
        which = "" if uses is None else ("  (network)" if float(uses) > 0 else "  (a baseline is better)")
        print(f"step {trainer.global_step}  epoch {trainer.current_epoch}  val/loss {loss:.4f}  best {self.best:.4f}"
              f"{which}  {time.monotonic() - self.start:.0f} s", file=sys.stderr, flush=True)


def _data_module_class():
    from forecaster.data import TimeSeriesDataModule

    return TimeSeriesDataModule
