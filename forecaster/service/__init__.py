"""The online loop as a service: observations from a broker, forecasts to it, delivery that
survives any crash, series partitioned over workers.

- :mod:`.io`: the source / sink contract (any log-based broker fits it; Kafka's mapping is in
  its docstring), partitions (:func:`~.io.partition_of`: CRC-32 of the id modulo N).
- :mod:`.nats_broker`: NATS JetStream (``nats-py``), the producer (:func:`~.nats_broker.publish_lines`).
- :mod:`.loop`: the loop: one record per ``observe`` as on stdin, acknowledgements after snapshots.
- :mod:`.cli`: ``python -m forecaster stream --source nats://...`` and ``python -m forecaster publish``.

Delivery is at least once and idempotent: a message is acknowledged only after the snapshot that
holds its effect is written, and a redelivered record that the snapshot holds is rejected by the
stream's duplicate rule (counted as ``redelivered``). See docs/streaming.md.
"""

from forecaster.service.io import (BrokerError, BrokerURL, FileSink, Message, Sink, Source, parse_partition,
                                   parse_url, partition_of, partition_subject)

__all__ = ["BrokerError", "BrokerURL", "FileSink", "Message", "Sink", "Source", "parse_partition", "parse_url",
           "partition_of", "partition_subject"]
