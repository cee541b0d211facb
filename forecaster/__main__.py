"""``python -m forecaster {fit,validate,test,predict,stream,bench} ...`` (see :mod:`forecaster.cli`).

The top-level help and the ``stream`` / ``bench`` commands are dispatched here, before Lightning
is imported, so that ``python -m forecaster --help`` costs about what starting Python does."""

import sys

HELP = """usage: python -m forecaster COMMAND [options]

Streaming time-series forecasting with a GRU (fused Triton kernels on a GPU, ATen on a CPU).

commands:
  fit        train on a CSV/Parquet table (default: the embedded weather data), then test the best
             checkpoint beside seasonal naive and the last value
  validate   evaluate a checkpoint on the validation part
  test       evaluate a checkpoint on the test part
  predict    forecast from each series' last observation to --output (.parquet or .csv)
  stream     the online loop: observations in (stdin, a file, a NATS subject), forecasts out, state kept
  publish    send NDJSON observations to a NATS subject, each series to its worker's partition
  bench      speed (kernels vs torch.nn.GRU, the stream vs re-running the window, snapshots, data)
             and accuracy (the zoo of public datasets)

`python -m forecaster COMMAND --help` lists a command's options; fit, validate, test and predict
take --config FILE.yaml (configs/ has examples) and --verbose (Lightning's own messages).
Try: python -m forecaster fit --data.path my.csv --data.time_col time --data.target_cols '[y]'
"""


def main(argv=None) -> int:
    given = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0 if argv else 2
    if argv[0] == "stream":  # neither needs Lightning to start
        from forecaster.stream_cli import main as stream_main

        return int(stream_main(argv[1:]) or 0)
    if argv[0] == "publish":
        from forecaster.service.cli import publish_main

        return int(publish_main(argv[1:]) or 0)
    if argv[0] == "bench":
        from forecaster.bench import main as bench_main

        return int(bench_main(argv[1:]) or 0)
    from forecaster.cli import main as cli_main

    return cli_main(given)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    sys.exit(main())
