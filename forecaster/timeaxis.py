"""The time axis: one rule for reading times, the frequency grid and its arithmetic, and the
calendar features of a time. Training, prediction, streaming and the replay all go through here.

**The time rule.** Every time becomes an int64 on one axis:

* datetimes: nanoseconds since 1970-01-01. Time-zone-aware values (a zoned Polars column, an aware
  ``datetime``, an ISO string with an offset such as ``2024-03-31T12:00+02:00``) are converted to
  UTC; naive values are taken as given (their wall clock). Calendar features of aware data are
  therefore UTC-based. Dates are midnight.
* integer time: the integer itself.
* calendar labels: a text column of quarters (``1998 Q1``, ``1998-Q1``, ``1998Q1``, ``Q1 1998``)
  or ISO weeks (``1991 W06``, ``1991-W06``, ``1991W06``) reads as each period's first day (the
  quarter's first day, the week's Monday).

:func:`to_axis` applies it (to a table's column, a stream's records, a cut-off, a future frame).

**Frequencies** (:class:`Frequency`): fixed durations (``"30m"``, ``"1h"``, ``"1d"``, ``"1w"``,
``"1h30m"``), calendar durations (``"1mo"``, ``"1q"`` = 3 months, ``"1y"`` = 12 months, anchored on
the same day of the month or on month ends), business days (``"1bd"``: Monday to Friday) and an
integer step for integer time. Grid arithmetic is relative to a series' origin (any time on its
grid): :meth:`Frequency.index` and :meth:`Frequency.time`.

**Sessions** (business hours): ``"5m@Mon-Fri 09:00-17:00"`` is a 5-minute grid inside the half-open
interval [09:00, 17:00) on Mondays to Fridays (09:00, 09:05, ..., 16:55); the closed hours and days
are not steps at all, so they are not missing data, and a session day is the season (96 steps here).
The days are optional (``"1h@08:00-18:00"`` is every day of the week); they are written ``Mon-Fri``,
``Sun-Thu`` or ``Mon,Wed,Fri``. Times of day are on the axis: naive wall-clock times (zoned data
would be read in UTC, where the session moves with daylight saving, so it is refused). A weekday
without any record (a holiday) is missing data, as on the ``1bd`` grid.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import polars as pl

__all__ = [
    "Frequency", "to_axis", "calendar_features", "calendar_feature_names", "default_calendar",
    "CALENDAR_ENCODINGS", "CALENDAR_PERIODS", "format_time", "DAY_NS",
]

_FIXED_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
             "h": 3_600_000_000_000, "d": 86_400_000_000_000, "w": 7 * 86_400_000_000_000}
_MONTHS = {"mo": 1, "q": 3, "y": 12}
DAY_NS = _FIXED_NS["d"]
_HOUR_NS = _FIXED_NS["h"]
_WEEK_NS = _FIXED_NS["w"]
_TOKEN = re.compile(r"(\d+)(ns|us|ms|mo|bd|s|m|h|d|w|q|y)")

# calendar encodings: each gives a sin and a cos column of a phase in [0, 1)
CALENDAR_ENCODINGS = ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year",
                      "month_of_year")
# the period of each encoding in nanoseconds (months and years at their mean length): a feature is
# only learnable where the training part covers its period several times
CALENDAR_PERIODS = {"minute_of_hour": _HOUR_NS, "hour_of_day": DAY_NS, "day_of_week": _WEEK_NS,
                    "day_of_month": int(30.44 * DAY_NS), "day_of_year": int(365.25 * DAY_NS),
                    "month_of_year": int(365.25 * DAY_NS)}

_FREQ_HELP = ("use a Polars duration: '30m' (minutes), '1h', '1d', '1w', '1mo' (month), '1q' (quarter), "
              "'1y' (year), '1bd' (business day), a session such as '5m@Mon-Fri 09:00-17:00' (business "
              "hours), or an int step for integer time")
# sessions count open days from a date before the axis' range (1677-2262): NumPy counts business
# days backwards from a later date by another rule, so every count runs forwards
_SESSION_EPOCH = np.datetime64("1600-01-03", "D")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SESSION = re.compile(r"^(?P<step>[^@]+)@\s*(?:(?P<days>[A-Za-z][A-Za-z,\- ]*?)\s+)?"
                      r"(?P<open>\d{1,2}:\d{2})\s*-\s*(?P<close>\d{1,2}:\d{2})$")


def _bad_freq(freq, why: str) -> ValueError:
    return ValueError(f"freq={freq!r}: {why}; {_FREQ_HELP}")


@dataclass(frozen=True)
class Frequency:
    """A regular time step.

    Attributes:
        kind: ``"fixed"`` (a duration), ``"month"`` (calendar months), ``"bday"`` (business days),
            ``"session"`` (a fixed step inside open hours on open weekdays) or ``"int"`` (integer time).
        step: nanoseconds (fixed, session), months (month: 1, 3 or 12 for ``1mo``/``1q``/``1y``),
            business days (bday) or the integer step (int).
        month_end: months only: the grid is on the last day of each month (otherwise on the
            origin's day of the month, which must be 1..28).
        session: sessions only: ``(open, close, weekmask)``, the open and close time of day in
            nanoseconds since midnight (steps at ``open, open + step, ...`` before ``close``) and the
            open weekdays as seven ``0``/``1`` characters from Monday (``"1111100"``).
    """

    kind: str
    step: int
    month_end: bool = False
    session: tuple[int, int, str] | None = None

    # ---- construction ----

    @classmethod
    def parse(cls, freq: str | int, time_kind: str = "datetime", month_end: bool = False) -> "Frequency":
        """A frequency string or int step -> :class:`Frequency`; ``ValueError`` naming the fix for
        anything else (``"1M"`` is ambiguous: month is ``1mo``, minute ``1m``)."""
        if isinstance(freq, bool):
            raise _bad_freq(freq, "not a frequency")
        if isinstance(freq, (int, np.integer)) or (isinstance(freq, float) and float(freq).is_integer()):
            n = int(freq)
            if n <= 0:
                raise ValueError(f"freq={freq!r}: an integer time step must be positive")
            if time_kind != "int":
                raise ValueError(f"freq={freq!r} is an integer step but the time column holds datetimes; "
                                 f"{_FREQ_HELP}")
            return cls("int", n)
        s = str(freq).strip()
        if s.lstrip("-").isdigit():
            return cls.parse(int(s), time_kind, month_end)
        if time_kind == "int":
            raise ValueError(f"freq={freq!r} is a duration but the time column is integer; give an int step")
        if "@" in s:
            return cls._parse_session(freq, s)
        if s != s.lower():
            hint = ""
            if s.upper().endswith("M"):
                hint = "; for months write '1mo', for minutes '1m'"
            raise _bad_freq(freq, f"units are lower case (Polars durations){hint}")
        pos, fixed, months, bdays = 0, 0, 0, 0
        for m in _TOKEN.finditer(s):
            if m.start() != pos:
                break
            n, unit = int(m.group(1)), m.group(2)
            if unit in _MONTHS:
                months += n * _MONTHS[unit]
            elif unit == "bd":
                bdays += n
            else:
                fixed += n * _FIXED_NS[unit]
            pos = m.end()
        if pos != len(s) or not s:
            raise _bad_freq(freq, "could not parse it")
        if sum(x > 0 for x in (fixed, months, bdays)) != 1:
            raise _bad_freq(freq, "mix a calendar duration (mo, q, y), business days (bd) and a fixed "
                                  "duration in one frequency is not supported")
        if months:
            return cls("month", months, bool(month_end))
        if bdays:
            return cls("bday", bdays)
        return cls("fixed", fixed)

    @classmethod
    def _parse_session(cls, freq, s: str) -> "Frequency":
        m = _SESSION.match(s)
        if not m:
            raise _bad_freq(freq, "a session is written STEP@[DAYS ]HH:MM-HH:MM, e.g. '5m@Mon-Fri 09:00-17:00'")
        step = cls.parse(m.group("step").strip())
        if step.kind != "fixed" or step.step >= DAY_NS:
            raise _bad_freq(freq, f"a session's step must be a duration under a day, not {m.group('step').strip()!r}")
        open_, close = (_time_of_day(freq, m.group(g)) for g in ("open", "close"))
        if close <= open_:
            raise _bad_freq(freq, "the session must close after it opens on the same day (sessions across "
                                  "midnight are not supported)")
        if (close - open_) % step.step:
            raise _bad_freq(freq, f"the step {step} does not divide the session {m.group('open')}-{m.group('close')}")
        mask = _weekmask(freq, m.group("days"))
        return cls("session", step.step, session=(open_, close, mask))

    @classmethod
    def infer(cls, diffs: np.ndarray, times: np.ndarray | None) -> "Frequency":
        """The frequency of datetime data from its positive time differences between consecutive rows
        of each series (int64 ns) and the times themselves (for month ends and weekdays): the most
        common difference; 28-31 days is monthly, 89-92 days quarterly, 365-366 days yearly, and one
        day on data with no weekend dates and some 3-day steps business-daily."""
        d = np.asarray(diffs, dtype=np.int64)
        if d.size == 0:
            raise ValueError("no series has two distinct times; set freq (e.g. '1h' or an int step)")
        vals, counts = np.unique(d, return_counts=True)
        step = int(vals[counts == counts.max()].min())
        days = step / DAY_NS
        t = None if times is None else np.asarray(times, dtype=np.int64)
        for lo, hi, months in ((28, 31, 1), (89, 92, 3), (365, 366, 12)):
            if lo <= days <= hi and step % DAY_NS == 0:
                return cls("month", months, bool(t is not None and t.size and _is_month_end(t).all()))
        if step == DAY_NS and t is not None and t.size:
            wd = _weekday(t)
            if (wd < 5).all() and np.any(d == 3 * DAY_NS):
                return cls("bday", 1)
        return cls("fixed", step)

    # ---- names ----

    def __str__(self) -> str:
        if self.kind == "int":
            return str(self.step)
        if self.kind == "session":
            open_, close, mask = self.session
            days = _days_text(mask)
            return f"{Frequency('fixed', self.step)}@{days + ' ' if days else ''}{_hhmm(open_)}-{_hhmm(close)}"
        if self.kind == "bday":
            return f"{self.step}bd"
        if self.kind == "month":
            if self.step % 12 == 0:
                return f"{self.step // 12}y"
            if self.step % 3 == 0:
                return f"{self.step // 3}q"
            return f"{self.step}mo"
        for unit in ("w", "d", "h", "m", "s", "ms", "us", "ns"):
            if self.step % _FIXED_NS[unit] == 0:
                return f"{self.step // _FIXED_NS[unit]}{unit}"
        raise AssertionError(self.step)

    @property
    def value(self) -> str | int:
        """As written in configs and specs: the int step for integer time, else the string."""
        return self.step if self.kind == "int" else str(self)

    @property
    def nominal_ns(self) -> int:
        """The mean length of a step in nanoseconds (a month is 30.44 days), for coverage estimates;
        the step itself for integer time."""
        if self.kind == "fixed":
            return self.step
        if self.kind == "month":
            return int(self.step * 30.436875 * DAY_NS)
        if self.kind == "bday":
            return int(self.step * 1.4 * DAY_NS)
        if self.kind == "session":
            return int(_WEEK_NS / (self.session[2].count("1") * self.slots_per_day))
        return self.step

    @property
    def slots_per_day(self) -> int:
        """Sessions: the steps of one open day (96 for ``5m@09:00-17:00``)."""
        open_, close, _ = self.session
        return (close - open_) // self.step

    def default_season_length(self) -> int:
        """Steps per season: per day for sub-daily data (24 hourly, 48 half-hourly) and per session
        day, 7 daily, 5 business-daily, 52 weekly, 12 monthly, 4 quarterly, 1 (none) yearly and for
        integer time."""
        if self.kind == "int":
            return 1
        if self.kind == "session":
            n = self.slots_per_day
            return n if n > 1 else self.session[2].count("1")
        if self.kind == "bday":
            return 5 if self.step == 1 else 1
        if self.kind == "month":
            return 12 // self.step if 12 % self.step == 0 and self.step < 12 else 1
        if self.step < DAY_NS and DAY_NS % self.step == 0:
            return DAY_NS // self.step
        if self.step == DAY_NS:
            return 7
        if self.step == _WEEK_NS:
            return 52
        return 1

    # ---- grid arithmetic (vectorised; times are int64 on the axis) ----

    def time(self, origin, k) -> np.ndarray:
        """Time of grid step ``k`` (int64, any shape, may be negative) of a series whose grid passes
        through ``origin`` (broadcast against ``k``)."""
        o = np.asarray(origin, dtype=np.int64)
        k = np.asarray(k, dtype=np.int64)
        if self.kind in ("fixed", "int"):
            return o + k * self.step
        if self.kind == "session":
            open_, _, mask = self.session
            n = self.slots_per_day
            g = self._slot(o)[0] + k
            d = np.busday_offset(_SESSION_EPOCH, np.floor_divide(g, n), roll="forward", weekmask=mask)
            return d.astype(np.int64) * DAY_NS + open_ + np.remainder(g, n) * self.step
        day = np.floor_divide(o, DAY_NS)
        tod = o - day * DAY_NS
        if self.kind == "bday":
            d = np.busday_offset(day.astype("datetime64[D]"), k * self.step, roll="forward")
            return d.astype(np.int64) * DAY_NS + tod
        month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + k * self.step
        first = month.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        if self.month_end:
            d = (month + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) - 1
        else:
            dom = day - day.astype("datetime64[D]").astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
            d = first + dom
        return d * DAY_NS + tod

    def index(self, origin, t) -> tuple[np.ndarray, np.ndarray]:
        """``(k, on_grid)``: the grid step of times ``t`` relative to ``origin`` (int64, rounded down
        for times between grid points) and whether ``t`` is exactly on the grid."""
        o = np.asarray(origin, dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        if self.kind in ("fixed", "int"):
            d = t - o
            return np.floor_divide(d, self.step), np.remainder(d, self.step) == 0
        if self.kind == "session":
            g, on = self._slot(t)
            return g - self._slot(o)[0], on
        if self.kind == "bday":
            do, dt_ = np.floor_divide(o, DAY_NS), np.floor_divide(t, DAY_NS)
            n = np.busday_count(do.astype("datetime64[D]"), dt_.astype("datetime64[D]"))
            k = np.floor_divide(n, self.step).astype(np.int64)
        else:
            mo = np.floor_divide(o, DAY_NS).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
            mt = np.floor_divide(t, DAY_NS).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
            k = np.floor_divide(mt - mo, self.step)
        at = self.time(o, k)
        k = np.where(at > t, k - 1, k)  # t before its period's grid time: the step before
        return k, at == t

    def absolute_step(self, t) -> np.ndarray:
        """int64 (...): the grid step of axis times ``t`` counted from time 0 (:meth:`index` from
        origin 0): two times of one grid differ by their steps apart, whatever the grid's own
        origin (the phase of a season that does not depend on where a table starts)."""
        t = np.asarray(t, dtype=np.int64)
        return self.index(np.zeros_like(t), t)[0].astype(np.int64)

    def _slot(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sessions: ``(g, on_grid)``, the session slot of times ``t`` counted from
        :data:`_SESSION_EPOCH` (rounded down: a time in the closed hours or on a closed day is the
        last slot before it)."""
        open_, close, mask = self.session
        n = self.slots_per_day
        t = np.asarray(t, dtype=np.int64)
        day = np.floor_divide(t, DAY_NS)
        tod = t - day * DAY_NS
        d64 = day.astype("datetime64[D]")
        D = np.busday_count(_SESSION_EPOCH, d64, weekmask=mask).astype(np.int64)  # open days before
        is_open = np.is_busday(d64, weekmask=mask)
        inside = is_open & (tod >= open_) & (tod < close)
        off = tod - open_
        slot = np.where(inside, np.floor_divide(off, self.step), np.where(is_open & (tod >= close), n - 1, -1))
        return D * n + slot, inside & (np.remainder(off, self.step) == 0)

    def check_anchor(self, origins: np.ndarray) -> None:
        """Months only: every grid must be on month ends or on a day 1..28 (a day 29-31 that is not
        the month's last has no place in shorter months)."""
        if self.kind != "month" or self.month_end:
            return
        o = np.asarray(origins, dtype=np.int64)
        day = np.floor_divide(o, DAY_NS)
        dom = day - day.astype("datetime64[D]").astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + 1
        bad = np.flatnonzero(dom > 28)
        if bad.size:
            raise ValueError(f"freq={self}: the dates fall on day {int(dom[bad[0]])} of the month "
                             f"({format_time(int(o[bad[0]]), 'datetime')}), which shorter months do not have; "
                             "use month-start or month-end dates")


def _time_of_day(freq, text: str) -> int:
    h, m = (int(x) for x in text.split(":"))
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise _bad_freq(freq, f"{text!r} is not a time of day (00:00 to 24:00)")
    return (h * 60 + m) * 60_000_000_000


def _hhmm(ns: int) -> str:
    m = ns // 60_000_000_000
    return f"{m // 60:02d}:{m % 60:02d}"


def _weekmask(freq, days: str | None) -> str:
    """``"Mon-Fri"`` / ``"Sun-Thu"`` / ``"Mon,Wed,Fri"`` (None: every day) -> ``"1111100"``."""
    if days is None:
        return "1" * 7
    on = [False] * 7

    def day(name: str) -> int:
        key = name.strip().lower()[:3]
        if key not in _DAYS or len(name.strip()) < 3:
            raise _bad_freq(freq, f"{name.strip()!r} is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
        return _DAYS.index(key)

    for part in days.replace(" ", "").split(","):
        if "-" in part:
            a, b = (day(x) for x in part.split("-", 1))
            i = a
            while True:
                on[i] = True
                if i == b:
                    break
                i = (i + 1) % 7
        elif part:
            on[day(part)] = True
    if not any(on):
        raise _bad_freq(freq, "a session needs at least one open weekday")
    return "".join("1" if x else "0" for x in on)


def _days_text(mask: str) -> str:
    """``"1111100"`` -> ``"Mon-Fri"``; every day -> ``""``; else a comma list (or a run that wraps)."""
    if mask == "1" * 7:
        return ""
    names = [d.capitalize() for d in _DAYS]
    for start in range(7):  # one run, possibly wrapping past Sunday
        if mask[start] == "1" and mask[start - 1] == "0":
            run = [(start + i) % 7 for i in range(mask.count("1"))]
            if all(mask[j] == "1" for j in run):
                return names[run[0]] if len(run) == 1 else f"{names[run[0]]}-{names[run[-1]]}"
    return ",".join(n for n, b in zip(names, mask) if b == "1")


def _is_month_end(t: np.ndarray) -> np.ndarray:
    day = np.floor_divide(t, DAY_NS).astype("datetime64[D]")
    return (day + 1).astype("datetime64[M]") != day.astype("datetime64[M]")


def _weekday(t: np.ndarray) -> np.ndarray:
    """Monday = 0 (1970-01-01 was a Thursday)."""
    return np.remainder(np.floor_divide(t, DAY_NS) + 3, 7)


# ----------------------------------------------------------------------------------------------
# the time rule
# ----------------------------------------------------------------------------------------------

def _as_series(values) -> pl.Series:
    if isinstance(values, pl.Series):
        return values
    if isinstance(values, np.ndarray):
        return pl.Series(values)
    vals = list(values)
    kinds = {type(v) for v in vals if v is not None}
    if len(kinds) > 1 and str in kinds:  # mixed strings and datetimes: one parser for all
        vals = [v.isoformat() if isinstance(v, (_dt.datetime, _dt.date)) else v for v in vals]
    try:
        return pl.Series(vals, strict=False)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as e:
        raise ValueError(f"times {vals[:3]!r}...: not datetimes, ISO strings or integers ({e})") from None


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})?")
_EPOCH = _dt.datetime(1970, 1, 1)
_DAY_US = 86_400_000_000
_NS_MIN, _NS_MAX = -(2 ** 63) + 1, 2 ** 63 - 1  # int64 nanoseconds: 1677-09-21 .. 2262-04-11
_US_MIN, _US_MAX = _NS_MIN // 1000 + 1, _NS_MAX // 1000  # the same range in microseconds
# Lists up to this long of plain Python values are read without Polars (see to_axis).
_PYTHON_MAX = 256


def _read_python(values, time_kind: str, time_format: str | None):
    """Read a short list of None / datetime / date / ISO string (or int for integer time) in plain
    Python: ``(t, null, zoned)`` before :func:`_on_axis` (datetimes: microseconds since
    1970-01-01, of the UTC time for zone-aware values, of the wall clock for naive ones; dates:
    midnight), or None to leave the values to :func:`_read_polars` (anything else: a Series or
    array, a format, a string only Polars' ISO reader takes, zone-aware mixed with naive)."""
    if isinstance(values, (pl.Series, np.ndarray)) or time_format is not None:
        return None
    vals = list(values)
    if len(vals) > _PYTHON_MAX:
        return None
    t = np.zeros(len(vals), dtype=np.int64)
    null = np.zeros(len(vals), dtype=bool)
    zoned = naive = False
    for i, v in enumerate(vals):
        if v is None:
            null[i] = True
            continue
        if time_kind == "int":
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                t[i] = int(v)
                continue
            return None
        if isinstance(v, str):
            if not _ISO.fullmatch(v):  # only the ISO forms the Polars path reads too
                return None
            try:
                v = _dt.datetime.fromisoformat(v)
            except ValueError:
                return None
        if isinstance(v, _dt.datetime):
            if v.tzinfo is not None:
                zoned = True
                v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
            else:
                naive = True
            d = v - _EPOCH
            t[i] = (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds  # years 1-9999 fit in int64
        elif isinstance(v, _dt.date):  # a date is naive: midnight of its day
            naive = True
            t[i] = (v - _EPOCH.date()).days * _DAY_US
        else:
            return None
    if zoned and naive:  # a mix: the Polars path decides (as it does for a whole column)
        return None
    return t, null, zoned


# Calendar labels as spreadsheets and tsibble write them: a quarter ("1998 Q1", "1998-Q1", "1998Q1",
# "Q1 1998") is its first day, an ISO week ("1991 W06", "1991-W06", "1991W06") its Monday.
_QUARTER = (re.compile(r"\s*(\d{4})\s*[-/ ]?\s*[Qq]([1-4])\s*"), re.compile(r"\s*[Qq]([1-4])\s*[-/ ]?\s*(\d{4})\s*"))
_ISO_WEEK = re.compile(r"\s*(\d{4})\s*-?\s*[Ww](\d{2})\s*")


def _label_date(v: str) -> str | None:
    """A quarter or ISO-week label as an ISO date, else None."""
    m = _QUARTER[0].fullmatch(v)
    if m:
        return f"{m.group(1)}-{3 * int(m.group(2)) - 2:02d}-01"
    m = _QUARTER[1].fullmatch(v)
    if m:
        return f"{m.group(2)}-{3 * int(m.group(1)) - 2:02d}-01"
    m = _ISO_WEEK.fullmatch(v)
    if m:
        try:
            return _dt.date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1).isoformat()
        except ValueError:  # no such week (W53 of a 52-week year)
            return None
    return None


def _calendar_labels(s: pl.Series, what: str, strict: bool) -> pl.Series | None:
    """A text column of quarter or ISO-week labels (its first value one) as ISO dates, else None.
    A value that is no label is an error naming it (``strict``) or null. Labels repeat (one per
    period), so the mapping is over the unique values."""
    nonnull = s.drop_nulls()
    if not nonnull.len() or _label_date(nonnull[0]) is None:
        return None
    u = nonnull.unique()
    if u.len() > 1_000_000:
        return None
    mapping = {v: _label_date(v) for v in u.to_list()}
    bad = next((v for v in nonnull.to_list() if mapping[v] is None), None)
    if bad is not None and strict:
        raise ValueError(f"{what} holds calendar labels such as {nonnull[0]!r} (quarters 'YYYY Qn', ISO weeks "
                         f"'YYYY Www'), but {bad!r} is not one; write every time the same way")
    return s.replace_strict(mapping, default=None, return_dtype=pl.String)


def _read_polars(values, time_kind: str, time_format: str | None, what: str, strict: bool):
    """Read any accepted values with Polars: ``(t, null, zoned, t_ns)`` before :func:`_on_axis`
    (``t`` as in :func:`_read_python`; ``t_ns`` the exact nanoseconds of nanosecond input, else
    None); ``ValueError`` for what cannot be read (or, not ``strict``, null)."""
    s = _as_series(values)
    dt = s.dtype
    zoned = False
    if dt == pl.Null:  # nothing but nulls
        return np.zeros(s.len(), dtype=np.int64), np.ones(s.len(), dtype=bool), False, None
    if time_kind == "int":
        if dt.is_integer():
            out = s.cast(pl.Int64)
        elif dt.is_float():
            s = s.fill_nan(None)
            frac = (s != s.floor()).fill_null(False)
            if strict and frac.any():
                raise ValueError(f"{what}: {s.filter(frac)[0]!r} is not an integer (the time axis is integer)")
            out = s.to_frame("x").select(pl.when(pl.Series(frac)).then(None).otherwise(pl.col("x"))
                                         .cast(pl.Int64)).to_series()
        elif dt == pl.String or dt == pl.Null:
            out = s.cast(pl.Int64, strict=False)
            bad = _first_bad(s, out)
            if bad is not None and strict:
                raise ValueError(f"{what}: {bad!r} is not an integer (the time axis is integer)")
        else:
            raise ValueError(f"{what} is {dt}, but the time axis is integer; give integer times")
        return out.fill_null(0).to_numpy().astype(np.int64, copy=False), out.is_null().to_numpy(), False, None
    if dt == pl.Date:
        s = s.cast(pl.Datetime("us"))  # (years 1-9999; _on_axis says which fit ns)
    elif dt == pl.String or dt == pl.Null:
        raw = s
        labels = _calendar_labels(s, what, strict) if dt == pl.String and time_format is None else None
        if labels is not None:  # "1998 Q1", "1991 W06": the period's first day
            s = labels
        try:  # parsed in microseconds (years 1-9999), then to nanoseconds: out of range -> null, not wrapped
            s = s.str.to_datetime(format=time_format, time_unit="us", strict=False)
        except pl.exceptions.PolarsError:
            first = raw.drop_nulls()
            ex = first[0] if first.len() else None
            raise ValueError(f"{what}: {ex!r} is not an ISO datetime; set time_format to its strptime "
                             "format (e.g. '%b %d %Y' for 'Jan 1 2000')") from None
        bad = _first_bad(raw, s)
        if bad is not None and strict and time_format is None:
            _raise_if_mixed(raw, s, bad, what)
        if bad is not None and strict:
            how = f"with time_format {time_format!r}" if time_format else "as an ISO datetime"
            raise ValueError(f"{what}: value {bad!r} could not be parsed {how}; "
                             + ("check the format" if time_format else
                                "set time_format to its strptime format or give ISO timestamps"))
    elif not isinstance(dt, pl.Datetime):
        kind = "integers" if dt.is_integer() else str(dt)
        raise ValueError(f"{what} holds {kind}, but the time axis is datetime; give datetimes or ISO strings")
    if isinstance(s.dtype, pl.Datetime) and s.dtype.time_zone is not None:
        zoned = True
        s = s.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    us = s.dt.epoch("us")
    ns = s.dt.epoch("ns").fill_null(0).to_numpy() if s.dtype == pl.Datetime("ns") else None
    return us.fill_null(0).to_numpy(), us.is_null().to_numpy(), zoned, ns


def _on_axis(t: np.ndarray, null: np.ndarray, values, what: str, strict: bool, t_ns: np.ndarray | None = None):
    """The last step of the rule for both readers: datetimes (microseconds ``t``, or exactly
    ``t_ns``) outside the years 1677-2262 that int64 nanoseconds hold are errors (``strict``) or
    null, never wrapped around; the rest in nanoseconds, 0 where null."""
    ok = (t >= _US_MIN) & (t <= _US_MAX) | null
    if ok.all():  # (the readers put 0 where null)
        return (t * 1000 if t_ns is None else t_ns), null
    if strict:
        bad = _as_series(values)[int(np.flatnonzero(~ok)[0])]
        raise ValueError(f"{what}: {bad!r} is outside the years 1677-2262 that nanosecond times can hold")
    out = t * 1000 if t_ns is None else t_ns.copy()
    out[~ok] = 0
    return out, null | ~ok


def _first_bad(raw: pl.Series, parsed: pl.Series) -> object | None:
    bad = raw.filter(parsed.is_null() & raw.is_not_null())
    return bad[0] if bad.len() else None


def _raise_if_mixed(raw: pl.Series, parsed: pl.Series, bad: str, what: str) -> None:
    """Polars reads a text column in the ISO form of its first value, so a valid ISO time written
    another way comes back null: say that the column mixes forms, not that the value is unreadable."""
    try:
        alone = pl.Series([bad]).str.to_datetime(time_unit="us", strict=False)
    except pl.exceptions.PolarsError:  # no ISO form reads it
        return
    if alone.null_count():
        return
    first = raw.drop_nulls()[0]
    if (alone.dtype.time_zone is None) != (parsed.dtype.time_zone is None):
        naive, offset = (bad, first) if alone.dtype.time_zone is None else (first, bad)
        raise ValueError(f"{what} mixes naive times (e.g. {naive!r}) and times with a UTC offset (e.g. {offset!r}); "
                         "zone-aware times are converted to UTC and naive ones taken as given, so a column is one or "
                         "the other: give every time an offset, or none")
    raise ValueError(f"{what}: {bad!r} and {first!r} are both ISO times but written differently; write every time "
                     "the same way (or set time_format)")


def to_axis(values, time_kind: str, time_format: str | None = None, *, what: str = "time",
            strict: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """Times -> int64 on the axis (the module docstring's rule).

    Two readers, one rule. A list of up to 256 plain Python values (a stream's record) is read in
    Python (:func:`_read_python`), anything else with Polars (:func:`_read_polars`); the Python
    reader takes only values it reads exactly as Polars does and leaves the rest (and any mix of
    naive and aware times) to Polars; both end in :func:`_on_axis`, which holds the range rule.
    ``tests/forecaster/test_spec.py`` holds the two to the same results, value by value and pair
    by pair. Why two: one ISO string takes 9 us in Python and 0.5 ms through Polars (each Polars
    call costs 50-150 us), and a stream's ``observe`` of one record 0.8 ms against 1.4 ms (2-core
    AMD EPYC, shared, Polars 2.1, medians).

    Args:
        values: a Polars Series, a numpy array or a sequence of datetimes / dates / strings / ints.
        time_kind: ``"datetime"`` or ``"int"``.
        time_format: strptime format of string times (None: ISO, inferred by Polars).
        what: how error messages name the values (e.g. ``"time_col 'ts'"``).
        strict: raise ``ValueError`` for a value that cannot be read; with False it comes back
            as null.

    Returns:
        ``(t, null, zoned)``: int64 array (n,) (0 where null), a bool array (n,), True where the value
        was null or (``strict=False``) unreadable, and whether the values were zone-aware (converted
        to UTC).
    """
    read = _read_python(values, time_kind, time_format)
    t_ns = None
    if read is None:
        *read, t_ns = _read_polars(values, time_kind, time_format, what, strict)
    t, null, zoned = read
    if time_kind == "int":
        return t, null, zoned
    t, null = _on_axis(t, null, values, what, strict, t_ns)
    return t, null, zoned


def format_time(t: int, time_kind: str):
    """An axis value for messages: numpy datetime64 (prints ISO, to the second unless finer) or the int."""
    if time_kind != "datetime":
        return int(t)
    v = np.datetime64(int(t), "ns")
    return v.astype("datetime64[s]") if int(t) % 1_000_000_000 == 0 else v


# ----------------------------------------------------------------------------------------------
# calendar features
# ----------------------------------------------------------------------------------------------

def default_calendar(freq: Frequency) -> list[str]:
    """The calendar encodings that can vary at a frequency (integer time and yearly data: none).
    The data module keeps only those the training part covers often enough."""
    if freq.kind == "int":
        return []
    if freq.kind == "month":
        return ["month_of_year"] if freq.step < 12 else []
    if freq.kind == "bday":
        return ["day_of_week", "day_of_month", "day_of_year"]
    if freq.kind == "session":
        intraday = freq.slots_per_day > 1
        return ((["minute_of_hour"] if intraday and freq.step < _HOUR_NS else [])
                + (["hour_of_day"] if intraday else []) + (["day_of_week"] if freq.session[2].count("1") > 1 else []) + ["day_of_year"])
    step = freq.step
    if step < _HOUR_NS:
        return ["minute_of_hour", "hour_of_day", "day_of_week", "day_of_year"]
    if step < DAY_NS:
        return ["hour_of_day", "day_of_week", "day_of_year"]
    if step < _WEEK_NS:
        return ["day_of_week", "day_of_month", "day_of_year"]
    if step < 365 * DAY_NS:
        return ["day_of_year"]
    return []


def calendar_feature_names(encodings: Sequence[str]) -> list[str]:
    """``["hour_of_day"] -> ["hour_of_day_sin", "hour_of_day_cos"]``."""
    return [f"{e}_{f}" for e in encodings for f in ("sin", "cos")]


def calendar_features(times: np.ndarray, encodings: Sequence[str]) -> np.ndarray:
    """Calendar features of times on the axis, as the model sees them (after the user's future
    covariates).

    Args:
        times: int64 array (n,) of nanoseconds since 1970-01-01 (the axis of :func:`to_axis`).
        encodings: names from :data:`CALENDAR_ENCODINGS`.

    Returns:
        float32 array (n, 2 * len(encodings)): ``sin(2 pi phase), cos(2 pi phase)`` per encoding, in
        the order of :func:`calendar_feature_names`. Phases: minute of hour / 60, (hour + minute/60)
        / 24, weekday (Monday = 0) / 7, (day of month - 1) / 31, (day of year - 1 + fraction of day)
        / 366, (month - 1) / 12.
    """
    enc = list(encodings)
    t = np.asarray(times, dtype=np.int64).reshape(-1)
    out = np.empty((t.shape[0], 2 * len(enc)), dtype=np.float32)
    if not enc:
        return out
    day = np.floor_divide(t, DAY_NS)
    tod = (t - day * DAY_NS).astype(np.float64) / DAY_NS  # fraction of the day in [0, 1)
    dt64 = t.astype("datetime64[ns]")
    for j, e in enumerate(enc):
        if e == "minute_of_hour":
            phase = np.mod(tod * 24.0, 1.0)
        elif e == "hour_of_day":
            phase = tod
        elif e == "day_of_week":
            phase = np.mod(day + 3, 7) / 7.0  # 1970-01-01 was a Thursday (Monday = 0)
        elif e == "day_of_month":
            phase = (dt64.astype("datetime64[D]") - dt64.astype("datetime64[M]")).astype(np.int64) / 31.0
        elif e == "day_of_year":
            doy = (dt64.astype("datetime64[D]") - dt64.astype("datetime64[Y]")).astype(np.int64)
            phase = (doy + tod) / 366.0
        elif e == "month_of_year":
            phase = np.mod(dt64.astype("datetime64[M]").astype(np.int64), 12) / 12.0
        else:
            raise ValueError(f"unknown calendar feature {e!r}; choose from {list(CALENDAR_ENCODINGS)}")
        ang = 2.0 * np.pi * phase
        out[:, 2 * j] = np.sin(ang)
        out[:, 2 * j + 1] = np.cos(ang)
    return out
