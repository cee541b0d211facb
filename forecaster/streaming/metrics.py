"""What a running stream measures of itself (:class:`StreamMetrics`): records per second, lag,
rejections by reason, and the online error of the model beside the naive baselines, as
Prometheus metrics (``stream --metrics_port N`` serves ``/metrics`` on 127.0.0.1; needs the
``service`` extra, ``prometheus-client``) and as a dict for the end-of-input summary.

The online error scores each forecast the stream issued against the observation that arrives
later. Per series it keeps the point forecast of the latest origin (``horizon`` x targets) and the
last season of observed targets; an observation ``k`` periods after that origin (1 <= k <=
horizon) is scored against the forecast's step ``k``, and beside it the seasonal-naive forecast
from the same origin (the value a whole season before the observation's time, taken at or before
the origin; the last value where that one is missing) and the last value observed at or before
the origin. So each observation costs O(targets), each series ``(horizon + season + 1) *
targets`` numbers, and at most ``max_series`` series are kept (the least recently seen leave
first, as in the stream). The running error is the MAE since the start and over the last
``window`` scored values (a ring: O(1) per value); per model (weights digest) since its swap.

**Retraining policy (drift)**: once ``window`` values are scored, the model is *drifting* while
its MAE over the window exceeds the better of the two baselines' (seasonal naive, last value) by
more than ``margin`` (relative): the network no longer earns its keep. A gauge
(``forecaster_retrain_advised``) and one stderr line when it starts. The stream does not
train: the job that watches the gauge (or the line) runs ``fit --warm_start`` on newer data,
writes the checkpoint the stream ``--watch``-es, and the swap picks it up.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np

from forecaster.streaming.records import NO_TIME

__all__ = ["StreamMetrics", "OnlineError", "reason_of", "REASONS", "serve_metrics"]

# Rejection reasons as a few fixed labels (a Prometheus label must not take the text of a record).
REASONS = (
    ("duplicate", re.compile(r"^duplicate timestamp")),
    ("out_of_order", re.compile(r"^out-of-order timestamp")),
    ("off_grid", re.compile(r"off the .* grid")),
    ("gap_too_long", re.compile(r"max_gap|too far after")),
    ("bad_time", re.compile(r"time .*(could not be read|out of range)|^null time")),
    ("bad_id", re.compile(r"\bid\b")),
    ("unknown_series", re.compile(r"^unknown series")),
    ("bad_value", re.compile(r"not a number|infinite value|overflows float32|out of range|is not a number")),
    ("non_finite_state", re.compile(r"non-finite")),
    ("missing_column", re.compile(r"lacks column|expected a dict")),
)


def reason_of(text: str) -> str:
    """A rejection's reason (the text of :class:`~forecaster.streaming.Rejected`) -> one of the
    labels of :data:`REASONS`, else ``"other"``."""
    for label, pattern in REASONS:
        if pattern.search(text):
            return label
    return "other"


MODELS = ("network", "seasonal_naive", "last_value")
# the per-series arrays' empty values: no time, no value, never seen
_FILL = {"origin": NO_TIME, "first": NO_TIME, "fc": np.nan, "season": np.nan, "season_t": NO_TIME, "last": np.nan,
         "seen": 0}


class OnlineError:
    """The running MAE of the network and the two baselines: since the start, per model segment,
    and over a ring of the last ``window`` scored values (O(1) per value)."""

    def __init__(self, window: int):
        self.window = int(window)
        self.ring = np.zeros((self.window, 3))
        self.pos = 0
        self.filled = 0
        self.win_sum = np.zeros(3)
        self.total = np.zeros(3)
        self.n = 0
        self.since_recompute = 0

    def add(self, errors: np.ndarray) -> None:
        """Absolute errors (k, 3) of k scored values: network, seasonal naive, last value."""
        for e in errors:
            old = self.ring[self.pos].copy() if self.filled == self.window else 0.0
            self.ring[self.pos] = e
            self.win_sum += e - old
            self.pos = (self.pos + 1) % self.window
            self.filled = min(self.window, self.filled + 1)
            self.total += e
            self.n += 1
            self.since_recompute += 1
        if self.since_recompute >= self.window:  # subtraction drifts: the sum from the ring once per window
            self.win_sum = self.ring[:self.filled].sum(axis=0)
            self.since_recompute = 0

    def mae(self) -> dict:
        """``{"network", "seasonal_naive", "last_value"}`` since the start (None before any value)."""
        return {k: (float(self.total[i] / self.n) if self.n else None) for i, k in enumerate(MODELS)}

    def window_mae(self) -> dict:
        """The same over the last ``window`` values (None before any value)."""
        return {k: (float(self.win_sum[i] / self.filled) if self.filled else None) for i, k in enumerate(MODELS)}


class StreamMetrics:
    """A stream worker's metrics (see the module docstring).

    Args:
        stream: the :class:`~forecaster.StreamingForecaster` (its spec, horizon, targets and
            ``max_series`` size what is kept).
        worker: the worker's label in every Prometheus metric (a partition's number, say).
        window: the scored values of the windowed MAE and of the drift rule (default 1,000).
        margin: the drift rule's margin over the better baseline (0.1: 10 % worse).
        registry: a ``prometheus_client.CollectorRegistry`` to publish in; None: no Prometheus
            metrics (the summary still has them all); ``"new"``: a registry of its own
            (:attr:`registry`, what :func:`serve_metrics` serves).
        err: where the drift line goes (a file; None: nowhere).
    """

    def __init__(self, stream, worker: str = "0", window: int = 1000, margin: float = 0.1, registry=None,
                 err=None):
        if not (isinstance(window, int) and window >= 1):
            raise ValueError(f"window must be an int >= 1 (scored values), got {window!r}")
        if not (isinstance(margin, (int, float)) and margin >= 0 and math.isfinite(margin)):
            raise ValueError(f"margin must be a number >= 0 (relative to the better baseline), got {margin!r}")
        spec = stream.spec
        self.freq, self.H, self.C = spec.freq, int(spec.horizon), len(spec.target_cols)
        self.m = max(1, int(spec.season_length))
        self.target_cols = list(spec.target_cols)
        self.max_series = stream.max_series
        self.worker, self.margin, self.err = str(worker), float(margin), err
        self.start = time.monotonic()
        self.records = 0
        self.rejected: dict[str, int] = {}
        self.malformed = 0
        self.lag: float | None = None
        self.pending: int | None = None
        self.error = OnlineError(window)
        self.segments: list[dict] = []  # per model since its swap: {"model", "since", OnlineError}
        self.drifting = False
        self.drift_events = 0
        self.row: dict[str, int] = {}  # series -> row of the arrays
        self.ids: list[str] = []
        self.seen = np.zeros(0, np.int64)
        self.clock = 0
        self._alloc(64)
        self.registry = None
        self.start_model(stream._digest)
        if registry is not None:
            self._publish(registry)

    # ---- per-series memory -------------------------------------------------------------------

    def _alloc(self, cap: int) -> None:
        H, C, m, n = self.H, self.C, self.m, len(self.ids)
        shapes = {"origin": (), "first": (), "fc": (H, C), "season": (m, C), "season_t": (m,), "last": (C,), "seen": ()}
        new = {k: np.full((cap, *shape), _FILL[k], dtype=np.float32 if k in ("fc", "season", "last") else np.int64)
               for k, shape in shapes.items()}
        if n:
            for k, v in new.items():
                v[:n] = self.a[k][:n]
        self.a = new

    def _row(self, sid: str) -> int:
        r = self.row.get(sid)
        if r is None:
            r = len(self.ids)
            if r >= len(self.a["origin"]):
                self._alloc(2 * len(self.a["origin"]))
            self.row[sid] = r
            self.ids.append(sid)
        self.clock += 1
        self.a["seen"][r] = self.clock
        return r

    def forget(self, ids) -> None:
        """Drop series (evicted by the stream): O(1) each (the last row moves into the freed one)."""
        for sid in ids:
            r = self.row.pop(sid, None)
            if r is None:
                continue
            last = len(self.ids) - 1
            if r != last:
                moved = self.ids[last]
                for v in self.a.values():
                    v[r] = v[last]
                self.ids[r] = moved
                self.row[moved] = r
            self.ids.pop()
            for k, v in self.a.items():
                v[last] = _FILL[k]

    def _bound(self) -> None:
        if self.max_series is not None and len(self.ids) > self.max_series:
            n = len(self.ids)
            k = n - self.max_series
            victims = np.argpartition(self.a["seen"][:n], k - 1)[:k]
            self.forget([self.ids[i] for i in victims])

    # ---- events ------------------------------------------------------------------------------

    def observed(self, sid: str, time_: int, values, forecast: np.ndarray | None) -> None:
        """An applied observation: series ``sid`` at axis time ``time_`` (int64, the stream's
        ``table.t["last"]``) with target ``values`` (C,) in original units (NaN: missing); then
        the forecast the stream issued from it, ``(horizon, C)`` point values (None: none). The
        earlier forecast of the series is scored first (O(C))."""
        self.records += 1
        r = self._row(sid)
        a = self.a
        y = np.asarray(values, dtype=np.float64).reshape(self.C)
        origin = int(a["origin"][r])
        if origin != NO_TIME:
            k, on = self.freq.index(origin, time_)
            k = int(k)
            if on and 1 <= k <= self.H:
                self._score(r, y, origin, int(time_), k)
        # this observation joins the series' last season (by its period number) and its last value
        if a["first"][r] == NO_TIME:
            a["first"][r] = time_
        pos = int(self.freq.index(int(a["first"][r]), time_)[0]) % self.m
        a["season"][r, pos] = y
        a["season_t"][r, pos] = time_
        obs = ~np.isnan(y)
        a["last"][r] = np.where(obs, y, a["last"][r])
        if forecast is None:
            a["origin"][r] = NO_TIME
        else:
            a["origin"][r] = time_
            a["fc"][r] = np.asarray(forecast, dtype=np.float32).reshape(self.H, self.C)
        self._bound()
        if self.registry is not None:
            self._m_records.inc()

    def _score(self, r: int, y: np.ndarray, origin: int, t: int, k: int) -> None:
        a, m = self.a, self.m
        seen = ~np.isnan(y)
        if not seen.any():
            return
        fc = a["fc"][r, k - 1].astype(np.float64)
        # seasonal naive: the value a whole season before t, at or before the origin (k > m: seasons back)
        back = m * ((k + m - 1) // m)
        want = int(self.freq.time(t, -back))
        pos = int(self.freq.index(int(a["first"][r]), want)[0]) % m if want >= a["first"][r] else -1
        last = a["last"][r].astype(np.float64)
        sn = a["season"][r, pos].astype(np.float64) if pos >= 0 and a["season_t"][r, pos] == want else \
            np.full(self.C, np.nan)
        sn = np.where(np.isnan(sn), last, sn)
        e = np.stack([np.abs(fc - y), np.abs(sn - y), np.abs(last - y)], axis=1)[seen]  # (k, 3)
        e = e[np.isfinite(e).all(axis=1)]
        if not len(e):
            return
        self.error.add(e)
        self.segments[-1]["error"].add(e)
        if self.registry is not None:
            for i, name in enumerate(MODELS):
                self._m_abs.labels(self.worker, name).inc(float(e[:, i].sum()))
            self._m_scored.inc(len(e))
            for name, v in self.error.window_mae().items():
                self._m_mae.labels(self.worker, name).set(v)
        self._drift()

    def _drift(self) -> None:
        w = self.error.window_mae()
        full = self.error.filled == self.error.window
        best = min(w["seasonal_naive"], w["last_value"]) if full else None
        now = bool(full and w["network"] > (1 + self.margin) * best)
        if now and not self.drifting:
            self.drift_events += 1
            if self.err is not None:
                which = "seasonal naive" if w["seasonal_naive"] <= w["last_value"] else "last value"
                try:
                    print(f"drift: online MAE {w['network']:.4g} over the last {self.error.window:,} scored values "
                          f"exceeds the better baseline's ({which}, {best:.4g}) by more than {self.margin:.0%}: "
                          "retrain (fit --warm_start on newer data); --watch swaps to the new checkpoint",
                          file=self.err, flush=True)
                except (OSError, ValueError):
                    pass
        self.drifting = now
        if self.registry is not None:
            self._m_drift.set(1 if now else 0)

    def rejected_record(self, reason: str) -> None:
        """A record the stream rejected, with its reason's text."""
        self._reject(reason_of(reason))

    def malformed_line(self) -> None:
        """A line that was not a record (unreadable, not JSON, no CSV row)."""
        self._reject("malformed")

    def _reject(self, label: str) -> None:
        self.rejected[label] = self.rejected.get(label, 0) + 1
        if self.registry is not None:
            self._m_rejected.labels(self.worker, label).inc()

    def set_lag(self, seconds: float) -> None:
        """The lag of the record being processed: seconds from its arrival to its processing (the
        stdin loop measures it; a broker source may feed its own)."""
        self.lag = float(seconds)
        if self.registry is not None:
            self._m_lag.set(self.lag)

    def set_pending(self, n: int) -> None:
        """Records waiting at the source (when the source can tell: a broker's pending count)."""
        self.pending = int(n)
        if self.registry is not None:
            self._m_pending.set(self.pending)

    def start_model(self, digest: str) -> None:
        """A new model serves from now on (a swap): its own error segment."""
        self.segments.append({"model": digest, "since_record": self.records, "error": OnlineError(self.error.window)})
        if self.registry is not None:
            self._m_swaps.inc()

    # ---- output ------------------------------------------------------------------------------

    def summary(self) -> dict:
        """Everything as plain JSON: records, records/s, lag, pending, rejections by reason, the
        online MAE (since the start and over the window) of the network and both baselines, the
        drift flag and the same MAE per model since its swap."""
        secs = time.monotonic() - self.start
        return {
            "records": self.records, "seconds": round(secs, 3),
            "records_per_second": round(self.records / secs, 2) if secs > 0 else None,
            "lag_seconds": self.lag, "pending": self.pending, "rejected_by_reason": dict(sorted(self.rejected.items())),
            "scored": self.error.n, "online_mae": self.error.mae(),
            f"online_mae_last_{self.error.window}": self.error.window_mae(),
            "drifting": self.drifting, "drift_events": self.drift_events,
            "models": [{"model": s["model"], "since_record": s["since_record"], "scored": s["error"].n,
                        "online_mae": s["error"].mae()} for s in self.segments],
        }

    def _publish(self, registry) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        if registry == "new":
            registry = CollectorRegistry()
        self.registry = registry
        w = ("worker",)
        kw = {"registry": registry}
        self._m_records = Counter("forecaster_records", "records applied", w, **kw).labels(self.worker)
        self._m_rejected = Counter("forecaster_rejected", "records and lines rejected, by reason", w + ("reason",),
                                   **kw)
        self._m_scored = Counter("forecaster_scored_values", "forecast values scored against observations", w,
                                 **kw).labels(self.worker)
        self._m_abs = Counter("forecaster_absolute_error", "sum of absolute errors of the scored values, by model "
                              "(network, seasonal_naive, last_value); rate over forecaster_scored_values_total = MAE",
                              w + ("model",), **kw)
        self._m_mae = Gauge("forecaster_online_mae", "MAE over the last window of scored values, by model",
                            w + ("model",), **kw)
        self._m_lag = Gauge("forecaster_lag_seconds", "seconds from a record's arrival to its processing", w,
                            **kw).labels(self.worker)
        self._m_pending = Gauge("forecaster_pending_records", "records waiting at the source (when it can tell)", w,
                                **kw).labels(self.worker)
        self._m_drift = Gauge("forecaster_retrain_advised", "1 while the windowed online MAE exceeds the better "
                              "baseline's by more than the margin", w, **kw).labels(self.worker)
        self._m_swaps = Counter("forecaster_model_swaps", "models swapped in (the first counts)", w,
                                **kw).labels(self.worker)
        rps = Gauge("forecaster_records_per_second", "records applied per second since the start", w, **kw)
        rps.labels(self.worker).set_function(lambda: self.records / max(1e-9, time.monotonic() - self.start))
        self._m_swaps.inc(len(self.segments))


def serve_metrics(metrics: StreamMetrics, port: int, addr: str = "127.0.0.1"):
    """Serve ``metrics``' registry at ``http://addr:port/metrics`` from a daemon thread; returns
    the server (``shutdown()`` stops it). ``port`` 0: any free port (``server.server_port``)."""
    from prometheus_client import start_http_server

    if metrics.registry is None:
        metrics._publish("new")
    server, _ = start_http_server(port, addr=addr, registry=metrics.registry)
    return server


def record_targets(rec: dict, target_cols: list[str]) -> np.ndarray:
    """A record's targets as float64 (C,), NaN where missing or not a number (the record was
    accepted: its values are numbers or missing)."""
    out = np.full(len(target_cols), np.nan)
    for j, c in enumerate(target_cols):
        v = rec.get(c)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[j] = float(v)
        elif isinstance(v, str):
            try:
                out[j] = float(v)
            except ValueError:
                pass
    return out


def drift_points(errors, window: int = 1000, margin: float = 0.1, step: int = 1) -> list:
    """When the drift rule of :class:`StreamMetrics` fires on a replay's errors (the ``errors``
    table of :class:`~forecaster.evaluation.ReplayResult`): over the scored values of horizon step
    ``step`` in time order (what the live stream scores when each series' observations come
    period after period), the origins at which the MAE of the last ``window`` values starts to
    exceed the better baseline's (seasonal naive or last value) by more than ``margin``."""
    import polars as pl

    e = errors.filter(pl.col("step") == step).sort("origin", "series", "target")
    if e.height < window:
        return []
    net = (e["forecast"] - e["actual"]).abs().to_numpy()
    sums = []
    for col in ("forecast", "seasonal_naive", "last_value"):
        c = np.concatenate([[0.0], np.cumsum((e[col] - e["actual"]).abs().to_numpy())])
        sums.append(c[window:] - c[:-window])  # sums over values [i - window + 1, i]
    on = sums[0] > (1 + margin) * np.minimum(sums[1], sums[2])
    starts = np.flatnonzero(on & ~np.concatenate([[False], on[:-1]]))
    origins = e["origin"]
    return [origins[int(i) + window - 1] for i in starts]
