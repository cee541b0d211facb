"""Records into checked values: the columns a record needs, its series id, its time and its
values, each refused with a reason (never an exception) when it cannot be read.

The rules (tested in ``tests/forecaster/test_stream_faults.py`` and ``test_stream_fuzz.py``):
- An id is text of 1 to :data:`MAX_ID_LENGTH` characters, printable (no control characters or line
  breaks, valid UTF-8) and not blank, or an integer (written out as text: ``7`` names series
  ``"7"``). An all-digit text id (``"007"`` from a CSV line) names the series training read as
  that number, when there is one.
- A time is read by the one time rule of the data spec (:mod:`forecaster.timeaxis`); a time that
  cannot be read is refused with the value shown.
- A value is a number or null/NaN (missing); a bool, text or anything else is refused. It must be
  finite in float32 both as given (forecasts are float32 in original units) and once scaled by
  its series' scaler.
- Messages echo at most :data:`SHOW` characters of a bad value.
"""

from __future__ import annotations

import math
import unicodedata

import numpy as np
import polars as pl

from forecaster.spec import NO_TIME, TIME_MAX, DataSpec  # noqa: F401 - NO_TIME, TIME_MAX: the stream's too

__all__ = ["MAX_ID_LENGTH", "SHOW", "NO_TIME", "F32_MAX", "TIME_MAX", "show", "id_problem", "RecordReader"]

# Longest series id accepted, in characters. Ids are keys of the state table, repeated in every
# forecast row and in snapshots: a 10 MB id (a whole file pasted into the id field) would cost
# ~700 MB of output per record. Training ids are typically names or codes well under 100.
MAX_ID_LENGTH = 256
# At most this many characters of a bad value or id are echoed in a rejection reason.
SHOW = 60
F32_MAX = float(np.finfo(np.float32).max)


def show(value) -> str:
    """``repr`` of a value for a message, cut to :data:`SHOW` characters (a 10 MB value is not echoed)."""
    if isinstance(value, (str, bytes)) and len(value) > SHOW:
        return f"{value[:SHOW]!r}... ({len(value)} characters)"
    r = repr(value)
    return r if len(r) <= SHOW else f"{r[:SHOW]}... ({len(r)} characters)"


def id_problem(value: str) -> str | None:
    """None when text ``value`` may name a series, else why not (see the module docstring)."""
    if not value:
        return "empty id"
    if len(value) > MAX_ID_LENGTH:
        return f"id of {len(value)} characters: ids are at most MAX_ID_LENGTH = {MAX_ID_LENGTH}"
    if not value.strip():
        return f"blank id {show(value)}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (e.g. a "\udc80" JSON escape): not text
        return f"id {show(value)} is not valid text (not encodable as UTF-8)"
    if not value.isprintable():  # spaces other than " " (a no-break space) are fine; control characters not
        bad = next((c for c in value if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")),
                   None)
        if bad is not None:
            return f"id {show(value)} holds the non-printable character U+{ord(bad):04X}"
    return None


class RecordReader:
    """Reads records of one data spec: columns, ids, times and values (see the module docstring)."""

    def __init__(self, spec: DataSpec):
        self.spec = spec
        self.id_col: str | None = spec.id_col
        self.time_col: str = spec.time_col
        self.value_cols: list[str] = list(spec.value_cols)
        self.future_cols: list[str] = list(spec.future_covariate_cols)
        self.required: list[str] = (([self.id_col] if self.id_col else []) + [self.time_col]
                                    + list(spec.target_cols) + list(spec.past_covariate_cols))

    def columns(self, data) -> tuple[dict[str, list], list[str | None], list[bool]]:
        """Records (a Polars DataFrame, or a list of dicts) -> (column lists (the time column as
        given), per record None or why it cannot be read, per record whether it carries future
        covariates ahead rather than an observation). A record with the id and time, future
        covariate columns and none of the targets and past covariates is such a record (see
        :meth:`StreamingForecaster.observe`). A record of a list that is not a dict or lacks a
        required column is refused on its own (its values are None); a DataFrame must have every
        required column, or be all future covariates (:meth:`check_frame`)."""
        need = self.required
        if isinstance(data, pl.DataFrame):
            ahead = self.frame_is_ahead(data)
            cols = {c: data[c] if c == self.time_col else (data[c].to_list() if c in data.columns
                                                             else [None] * data.height) for c in need}
            for c in self.future_cols:  # optional: absent = missing values
                cols[c] = data[c].to_list() if c in data.columns else [None] * data.height
            return cols, [None] * data.height, [ahead] * data.height
        if isinstance(data, dict):
            data = [data]
        cols: dict[str, list] = {c: [] for c in need + self.future_cols}
        problems, aheads = [], []
        for rec in data:
            ahead = self._ahead(rec)
            why = None if ahead else self._missing(rec)
            problems.append(why)
            aheads.append(ahead)
            for c in need:
                cols[c].append(None if why or c not in rec else rec[c])
            for c in self.future_cols:
                cols[c].append(None if why else rec.get(c))
        return cols, problems, aheads

    @property
    def observed_cols(self) -> list[str]:
        """The columns of an observation beyond its id and time: targets and past covariates."""
        return [c for c in self.required if c not in (self.id_col, self.time_col)]

    def _ahead(self, rec) -> bool:
        return (bool(self.future_cols) and isinstance(rec, dict) and self.time_col in rec
                and (self.id_col is None or self.id_col in rec) and not any(c in rec for c in self.observed_cols)
                and any(c in rec for c in self.future_cols))

    def frame_is_ahead(self, df: pl.DataFrame) -> bool:
        """Whether a DataFrame holds future covariates ahead (id, time and future covariate columns,
        none of the targets and past covariates)."""
        return (bool(self.future_cols) and not any(c in df.columns for c in self.observed_cols)
                and any(c in df.columns for c in self.future_cols))

    def _missing(self, rec) -> str | None:
        if not isinstance(rec, dict):
            return f"record is a {type(rec).__name__}, expected a dict of column -> value"
        missing = [c for c in self.required if c not in rec]
        if missing:
            return (f"record lacks column(s) {missing[:5]}; expected {self.required} (future covariates "
                    f"{self.future_cols} optional)")
        return None

    def check_frame(self, df: pl.DataFrame) -> None:
        """``ValueError`` naming a DataFrame's missing or non-numeric columns."""
        need = [c for c in self.required if c in (self.id_col, self.time_col)] if self.frame_is_ahead(df) \
            else self.required
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"observations lack column(s) {missing}; expected {need} "
                             f"(future covariates {self.future_cols} optional)")
        bad = [c for c in self.value_cols if c in df.columns and not (df.schema[c].is_numeric() or df.schema[c] == pl.Null)]
        if bad:
            raise ValueError(f"column(s) {bad} must be numeric, got {[str(df.schema[c]) for c in bad]}")

    def times(self, raw) -> tuple[np.ndarray, list[str | None]]:
        """Raw times -> (int64 axis (n,), per record None or the reason it cannot be read)."""
        try:
            t, null = self.spec.parse_times(raw, strict=False)
        except Exception:  # noqa: BLE001 - mixed or odd values (a format that cannot be inferred): one by one
            vals = raw.to_list() if isinstance(raw, pl.Series) else list(raw)
            t, null = np.zeros(len(vals), dtype=np.int64), np.ones(len(vals), dtype=bool)
            for i, v in enumerate(vals):
                try:
                    ti, ni = self.spec.parse_times([v], strict=False)
                    t[i], null[i] = ti[0], ni[0]
                except Exception:  # noqa: BLE001 - this record's time cannot be read: it is rejected
                    pass
        null = null | (t == NO_TIME)  # NaT as an int64 is the state table's "no time yet"
        far = ~null & (np.abs(t) > TIME_MAX)
        vals = raw.to_list() if isinstance(raw, pl.Series) else list(raw)
        why = [None if not n and not f else ("null time" if v is None and n else f"time {show(v)} is out of range"
                                             if f else f"time {show(v)} could not be read")
               for v, n, f in zip(vals, null, far)]
        return t, why

    def series_id(self, value, known) -> tuple[str, str | None]:
        """A record's id -> ``(id, None)``, or ``(what to show, why it is refused)``; ``known``: the
        ids of the state table (a container)."""
        if type(value) is str and value in known:  # the common case: a series of the table
            return value, None
        where = f"(column {self.id_col!r})"
        if value is None:
            return "", f"null id {where}"
        if isinstance(value, bool) or not isinstance(value, (str, int, float, np.integer, np.floating)):
            return show(value), f"id {show(value)} {where} is a {type(value).__name__}; ids are text or integers"
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or value != int(value):
                return show(value), f"id {value!r} {where} is not a number that names a series"
            value = int(value)
        if isinstance(value, (int, np.integer)):
            if abs(int(value)) >= 10 ** MAX_ID_LENGTH:  # longer than any id once written out
                return f"an integer of more than {MAX_ID_LENGTH} digits", (
                    f"id of more than {MAX_ID_LENGTH} digits {where}: ids are at most MAX_ID_LENGTH = {MAX_ID_LENGTH}")
            return str(int(value)), None
        why = id_problem(value)
        if why is not None:
            return value[:SHOW] + "..." if len(value) > SHOW else show(value), f"{why} {where}"
        # an all-digit id in text ("007" from a CSV line) names the series training read as a number
        if value not in known and int(self.spec.series_index([value])[0]) < 0 and value.isascii() \
                and value.lstrip("-").isdigit() and int(self.spec.series_index([str(int(value))])[0]) >= 0:
            return str(int(value)), None
        return value, None

    @staticmethod
    def number(value, col: str) -> float:
        """A value as a float (NaN for null); ``ValueError`` for a non-number."""
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"value {show(value)} in column {col!r} is not a number")
        try:
            return float(value)
        except OverflowError:  # an int beyond float64
            raise ValueError(f"value {show(value)} in column {col!r} is too large for a float") from None

    @staticmethod
    def scale(vals: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """``(vals - loc) / scale`` in float32, the model's precision (NaN stays NaN, overflow -> inf)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return ((vals - loc) / scale).astype(np.float32)

    @staticmethod
    def out_of_range(vals: np.ndarray, scaled: np.ndarray) -> np.ndarray:
        """Which values (bool, same shape) cannot be stepped: beyond float32 as given or once scaled."""
        with np.errstate(invalid="ignore"):
            return np.isinf(scaled) | (np.abs(vals) > F32_MAX)

    def scaled_record(self, vals: np.ndarray, params: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        """A record's values (float64 (D,), NaN = missing) and its series' scaler ``params`` (2, D)
        -> (scaled float32 (D,), None) or (None, why they cannot be stepped). Values must be finite
        in float32 both as given (the forecasts are float32 in original units: 1e39 would come out
        as infinity) and once scaled (1e300 overflows to inf and would make the state NaN)."""
        scaled = self.scale(vals, params[0], params[1])
        bad = self.out_of_range(vals, scaled)
        if not bad.any():
            return scaled, None
        cols = self.value_cols
        if np.isinf(vals).any():
            return None, f"infinite value in {[c for c, v in zip(cols, vals) if np.isinf(v)]}"
        j = int(np.flatnonzero(bad)[0])
        if abs(vals[j]) > F32_MAX:
            return None, (f"value {vals[j]:.6g} in column {cols[j]!r} overflows float32 (beyond +-{F32_MAX:.4g}), "
                          "the precision of the model and of its forecasts")
        return None, (f"value {vals[j]:.6g} in column {cols[j]!r} is out of range: scaled by the series' scaler "
                      f"((value - {params[0, j]:.6g}) / {params[1, j]:.6g}) it overflows float32, the model's "
                      "precision")
