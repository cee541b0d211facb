"""The service's command lines.

``python -m forecaster stream --ckpt_path M --state S --source nats://HOST:PORT/SUBJECT
[--partition K/N] [--sink nats://HOST:PORT/FORECASTS]``: a worker (:func:`run_worker`, called by
:mod:`forecaster.stream_cli`). Without ``--sink`` forecasts go to stdout as on stdin.

``python -m forecaster publish --to nats://HOST:PORT/SUBJECT [--partitions N --id_col ID]
[--input FILE]``: the producer (:func:`publish_main`): NDJSON observation lines from a file or
stdin to their partition's subject, with JetStream acknowledgements.

Exit status of both: 0; 2 for a bad argument; 3 when the last snapshot could not be written; 4
when the broker cannot be reached at start (one line, no traceback) or did not confirm the last
acknowledgement (the records since are delivered again and skipped as already applied).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from forecaster.service.io import BrokerError, FileSink, parse_partition, parse_url

__all__ = ["check_args", "run_worker", "publish_main"]


def check_args(args) -> tuple[int, str] | None:
    """The stream command's broker options checked before the checkpoint is loaded: None, or
    ``(exit status, what is wrong)``: 2 for a bad argument, 4 for a broker that does not answer
    (a TCP probe of every address given)."""
    if args.source is None:
        if args.sink or args.partition:
            return 2, f"{'--sink' if args.sink else '--partition'} needs --source (a broker); on stdin forecasts go " \
                      "to stdout"
        return None
    try:
        urls = [parse_url(args.source, "--source")] + ([parse_url(args.sink, "--sink")] if args.sink else [])
        if args.partition:
            parse_partition(args.partition)
    except ValueError as e:
        return 2, str(e)
    if not args.state:
        return 2, ("--source needs --state PATH: a message is acknowledged only once the snapshot holding its "
                   "effect is written")
    if args.replay or args.input != "-":
        return 2, "--source reads the broker: leave out --input and --replay"
    from forecaster.service.io import probe

    for url in urls:
        try:
            probe(url)
        except BrokerError as e:
            return 4, str(e)
    return None


def run_worker(stream, args, err=None, metrics=None, watcher=None) -> int:
    """Run the stream loop on ``args.source`` (see the module docstring); ``stream`` has its state
    restored and its state file locked; ``metrics`` and ``watcher`` as for the stdin loop
    (``--metrics_port``, ``--watch``). Returns the exit status."""
    from forecaster.service.loop import PartitionedParser, serve_source
    from forecaster.service.nats_broker import NatsConnection, NatsSink, NatsSource

    err = err or sys.stderr
    src = parse_url(args.source, "--source")
    k, n = parse_partition(args.partition) if args.partition else (None, None)
    if n is not None and n > 1 and not stream.id_col:
        stream.close()
        print("error: --partition splits series by id, and this model has a single series (no id column)", file=err)
        return 2
    conns = []
    try:
        conns.append(NatsConnection(src, err, name=f"forecaster-worker-{args.partition or 'all'}"))
        ack_wait = max(60.0, 3 * args.snapshot_every + 30)
        source = NatsSource(conns[0], src.subject, k, n, ack_wait=ack_wait)
        if args.sink:
            dst = parse_url(args.sink, "--sink")
            if dst.server != src.server:
                conns.append(NatsConnection(dst, err, name="forecaster-sink"))
            sink = NatsSink(conns[-1], dst.subject)
        else:
            sink = FileSink(sys.stdout)
    except BrokerError as e:
        for c in conns:
            c.close()
        stream.close()
        print(f"error: {e}", file=err)
        return 4
    print(f"consuming {source.subject} (stream {source.stream}, consumer {source.durable}) after stream sequence "
          f"{source.resumed_after}; forecasts to {args.sink or 'stdout'}", file=err, flush=True)
    parser = None
    if n is not None:
        keys = tuple(c for c in (stream.id_col, stream.time_col) if c)
        parser = PartitionedParser(args.format, stream.required_columns, keys, stream.id_col, k, n)
    try:
        counts = serve_source(stream, source, sink, err, args.state, args.format, args.snapshot_every, parser,
                              metrics, watcher)
    finally:
        for c in conns:
            c.close()
    if metrics is not None:
        counts["metrics"] = metrics.summary()
    sig = counts.pop("signal")
    how = f"stopped by {signal.Signals(sig).name}" if sig else "stopped"
    summary = {"event": "stopped", "signal": signal.Signals(sig).name if sig else None, **counts}
    print(f"{how}: {json.dumps(summary)}", file=err, flush=True)
    if not counts["state_saved"]:
        print(f"error: the last snapshot to {args.state} was not written: the records since the last "
              "acknowledgement will be delivered again", file=err)
        return 3
    if not counts["acked"]:
        print("error: the broker did not confirm the last acknowledgement: the records since will be delivered "
              "again and skipped as already applied", file=err)
        return 4
    return 0


def build_publish_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m forecaster publish", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--to", required=True, metavar="nats://HOST:PORT/SUBJECT", help="where to publish")
    p.add_argument("--input", default="-", help="NDJSON observations, one a line (default: stdin)")
    p.add_argument("--partitions", type=int, help="N: publish each series to SUBJECT.K, K = its partition "
                                                  "(CRC-32 of the id modulo N); workers run --partition K/N")
    p.add_argument("--id_col", help="with --partitions: the id column of the records (the model's id column)")
    return p


def publish_main(argv: list[str] | None = None) -> int:
    from forecaster.service.nats_broker import publish_lines

    p = build_publish_parser()
    args = p.parse_args(argv)
    try:
        url = parse_url(args.to, "--to")
    except ValueError as e:
        p.error(str(e))
    if args.partitions is not None and (args.partitions < 1 or not args.id_col):
        p.error("--partitions N needs N >= 1 and --id_col (the records' id column)")
    try:
        f = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    except OSError as e:
        print(f"error: --input {args.input!r}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        with f:
            counts = publish_lines(url, f, args.id_col, args.partitions)
    except BrokerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    print(f"published: {json.dumps(counts)}", file=sys.stderr)
    return 0
