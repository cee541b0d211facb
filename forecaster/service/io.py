"""What a broker gives the service loop and takes from it: a :class:`Source` of observation
messages that are acknowledged once their effect is on disk, and a :class:`Sink` of forecast lines.

The contract, which any log-based broker meets:

- :meth:`Source.poll` returns the next messages *in the order the broker holds them* (per
  partition), each the bytes of one observation line (what one line of stdin would hold) and a
  token. A message delivered a second time is flagged: ``seen`` (this worker processed it already:
  skip it) or ``maybe_applied`` (an earlier worker of the partition may have, before it stopped;
  its effect may be in the snapshot, so a duplicate rejection of it is expected).
- :meth:`Source.ack` ``(token)`` tells the broker that every message up to that one is done: a
  restart resumes after it. The loop calls it only after the snapshot holding those messages'
  effect was written, so delivery is at least once and nothing acknowledged is ever lost.
- When the source sees that a message was lost on the way (a reconnect dropped a delivery), it
  sets ``rewind_wanted`` and returns nothing more; the loop snapshots and acknowledges what it
  processed, then calls :meth:`Source.rewind`, and delivery restarts after the last message
  processed, in order. So a series never skips a record.
- :meth:`Sink.write` queues one record's forecast lines; :meth:`Sink.sync` returns once every
  queued line is with the broker (or raises :class:`BrokerError`), and is called before a
  snapshot is acknowledged: forecasts are delivered at least once too.

Kafka (``confluent-kafka``) maps onto the same calls: ``poll`` is ``Consumer.consume(n,
timeout)`` on the partition, the token the ``(partition, offset)``, ``ack`` a synchronous
``commit`` of ``offset + 1``, ``rewind`` a ``seek`` to the committed offset (Kafka's fetches
cannot skip a message, so it would never ask); ``Sink.sync`` is ``Producer.flush``. No Kafka
source ships: none would be tested against a real broker. NATS JetStream is in
:mod:`forecaster.service.nats_broker`.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Message", "Source", "Sink", "FileSink", "BrokerError", "BrokerURL", "parse_url", "parse_partition", "probe",
           "partition_of", "partition_subject"]


class BrokerError(Exception):
    """A broker that cannot be reached or refused a request; the message is one line."""


@dataclass
class Message:
    """One observation message.

    Attributes:
        data: the line's bytes (an NDJSON object or a CSV row, as on stdin).
        token: what :meth:`Source.ack` takes to acknowledge this message and every one before it.
        where: how messages name it (e.g. ``"obs.2 seq 1234"``).
        seen: delivered and processed before by this worker (a redelivery): skip it.
        maybe_applied: delivered to an earlier worker of the partition that may have applied it.
    """

    data: bytes
    token: object
    where: str
    seen: bool = False
    maybe_applied: bool = False


@runtime_checkable
class Source(Protocol):
    """A partition's observation messages, in order (see the module docstring)."""

    rewind_wanted: bool

    def poll(self, timeout: float) -> list[Message]:
        """The next messages (an empty list when none came within ``timeout`` seconds, or the broker
        is unreachable for now: it reconnects on its own)."""

    def ack(self, token: object) -> None:
        """Acknowledge every message up to the one of ``token``; :class:`BrokerError` when the broker
        did not confirm it (the loop retries at the next snapshot)."""

    def rewind(self) -> None:
        """Restart delivery after the last message returned by :meth:`poll` (everything returned must
        have been acknowledged)."""

    def close(self) -> None:
        """Release the connection."""


@runtime_checkable
class Sink(Protocol):
    """Where forecast lines go. ``write`` and ``flush`` are what the loop calls per record (a text
    file is a sink); :meth:`sync` is called before a snapshot is acknowledged."""

    def write(self, text: str) -> None:
        """Queue one record's forecast: NDJSON lines, each ending in a newline."""

    def flush(self) -> None:
        """Per record; may do nothing (the broker sink publishes at :meth:`sync`)."""

    def sync(self) -> None:
        """Return once every line written is with its reader; :class:`BrokerError` otherwise."""

    def close(self) -> None:
        """Release the connection (nothing is synced)."""


class FileSink:
    """A text file (stdout) as a :class:`Sink`: lines are written and flushed as they come."""

    def __init__(self, f):
        self.f = f

    def write(self, text: str) -> None:
        self.f.write(text)

    def flush(self) -> None:
        self.f.flush()

    def sync(self) -> None:
        try:
            self.f.flush()
        except (OSError, ValueError):  # the loop reported it when the line was written
            pass

    def close(self) -> None:
        pass


# ---- addresses and partitions --------------------------------------------------------------------

_SUBJECT = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


@dataclass(frozen=True)
class BrokerURL:
    """``nats://HOST:PORT/SUBJECT`` read: ``server`` is ``nats://HOST:PORT``."""

    scheme: str
    host: str
    port: int
    subject: str

    @property
    def server(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_url(url: str, what: str = "--source") -> BrokerURL:
    """``nats://HOST:PORT/SUBJECT`` (port 4222 when left out) -> :class:`BrokerURL`; ``ValueError``
    saying what is wrong otherwise. A subject is dot-separated tokens of letters, digits, ``_``
    and ``-`` (no wildcards: the partition suffix ``.K`` is added to it)."""
    m = re.fullmatch(r"(nats)://([^/:\s]+)(?::(\d+))?/(.*)", url or "")
    if not m:
        raise ValueError(f"{what} {url!r} is not a broker address; give nats://HOST:PORT/SUBJECT, e.g. "
                         "nats://127.0.0.1:4222/observations")
    scheme, host, port, subject = m.groups()
    if not _SUBJECT.fullmatch(subject):
        raise ValueError(f"{what} {url!r}: subject {subject!r} must be dot-separated tokens of letters, digits, "
                         "'_' and '-' (no spaces or wildcards), e.g. observations or shop.sales")
    port_n = int(port) if port else 4222
    if not 0 < port_n < 65536:
        raise ValueError(f"{what} {url!r}: port {port_n} is not between 1 and 65535")
    return BrokerURL(scheme, host, port_n, subject)


def probe(url: BrokerURL, timeout: float = 3.0) -> None:
    """:class:`BrokerError` (one line) when nothing accepts a TCP connection at ``url``'s host and port."""
    import socket

    try:
        socket.create_connection((url.host, url.port), timeout=timeout).close()
    except OSError as e:
        raise BrokerError(f"cannot reach the broker at {url.server}: {e.strerror or e}; start it (nats-server -js) "
                          "or fix the address") from None


def parse_partition(text: str) -> tuple[int, int]:
    """``"K/N"`` (worker K of N, 0 <= K < N) -> ``(K, N)``; ``ValueError`` otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--partition {text!r}: give K/N with 0 <= K < N, e.g. 0/3 for the first of three workers")
    return int(m.group(1)), int(m.group(2))


def partition_of(series_id, n: int) -> int:
    """The partition (0 .. n - 1) of a series: CRC-32 of its id as text (an integer id as its
    decimal digits), modulo ``n``. Stable across processes, machines and Python versions (unlike
    ``hash``). The id is taken as the record writes it: write each series' id the same way."""
    if isinstance(series_id, bool) or not isinstance(series_id, (str, int)):
        series_id = str(series_id)
    text = series_id if isinstance(series_id, str) else str(int(series_id))
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) % n


def partition_subject(subject: str, k: int | None) -> str:
    """The subject of partition ``k`` of ``subject`` (``SUBJECT.K``; ``SUBJECT`` itself when
    unpartitioned, ``k=None``)."""
    return subject if k is None else f"{subject}.{k}"
