"""Stage 1: read a table and validate it.

:class:`Source` is where a table comes from (a path or an in-memory frame) and reads it;
:func:`scan` opens a path (CSV, Parquet, Arrow IPC, or a glob of them) lazily; :func:`read_table`
checks the column roles, puts the time column on the axis (:func:`forecaster.timeaxis.to_axis`),
sorts by (series, time), and rejects what cannot be a time series, each problem as a ``ValueError``
naming the column, series and time: missing or non-numeric columns, an empty table, null times or
ids, duplicate ``(series, time)`` rows, infinities, all-null targets.
"""

from __future__ import annotations

import difflib
import glob as _glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from forecaster.timeaxis import format_time, to_axis

__all__ = ["Roles", "Table", "Source", "scan", "read_table", "is_csv"]


@dataclass
class Roles:
    """Column roles. ``target_cols`` None = every numeric column not otherwise used."""

    time_col: str
    id_col: str | None = None
    target_cols: list[str] | None = None
    past_covariate_cols: Sequence[str] = ()
    future_covariate_cols: Sequence[str] = ()


@dataclass
class Table:
    """A validated long table, sorted by (series, time).

    ``frame`` columns: ``__id`` (String), ``__s`` (Int32, 0.. in order of the series), ``__t`` (Int64
    axis time), ``__d`` (Int64, time since the series' previous row; null on its first row), then the
    value columns (Float32: targets, past covariates, future covariates).
    """

    frame: pl.DataFrame
    time_kind: str                 # "datetime" | "int"
    time_zone: str | None          # "UTC" when the source times were zone-aware
    target_cols: list[str]
    value_cols: list[str]
    where: str                     # how messages name the source


class Source:
    """Where a table comes from: a path (a file or glob, see :func:`scan`) or an in-memory Polars
    ``DataFrame`` / ``LazyFrame``, and how messages name it (``where``)."""

    def __init__(self, path: str | os.PathLike | None = None, data: pl.DataFrame | pl.LazyFrame | None = None,
                 where: str | None = None):
        if (path is None) == (data is None):
            raise ValueError("give either path or data")
        self.path, self.data = path, data
        self.where = where or ("the given frame" if data is not None else repr(path))
        # a CSV's column types read from every row, not the first 100 (see read)
        self.every_row = False

    def frame(self, time_col: str | None = None, time_format: str | None = None) -> pl.LazyFrame:
        """The table as given (a path scanned lazily, or the in-memory frame), unvalidated."""
        if self.data is not None:
            if isinstance(self.data, pl.DataFrame):
                return self.data.lazy()
            if isinstance(self.data, pl.LazyFrame):
                return self.data
            raise ValueError(f"data must be a polars DataFrame or LazyFrame, got {type(self.data).__name__}")
        return scan(self.path, time_col, time_format, every_row=self.every_row)

    def read(self, roles: Roles, time_format: str | None = None, time_kind: str | None = None) -> Table:
        """:func:`read_table` of :meth:`frame`."""
        try:
            return read_table(self.frame(roles.time_col, time_format), roles, self.where, time_format, time_kind)
        except pl.exceptions.ComputeError:
            # a CSV's column types come from its first 100 rows: a later value of another type (text in a
            # number column, a time with an offset among naive ones) fails the read. Read the types from
            # every row: the value then gets the message it gets in row 12 (or the file simply reads).
            if self.data is not None or not is_csv(self.path) or self.every_row:
                raise
            self.every_row = True
            return read_table(self.frame(roles.time_col, time_format), roles, self.where, time_format, time_kind)


def scan(path: str | os.PathLike, time_col: str | None = None, time_format: str | None = None,
         every_row: bool = False) -> pl.LazyFrame:
    """Lazily scan a CSV / Parquet / Arrow IPC file or glob (one Polars scan over all files). With
    ``time_format``, a CSV's time column is read as text and parsed with that format later. A CSV's
    column types are read from its first 100 rows (of the first 10 files), or with ``every_row``
    from all of them (a second pass over the files)."""
    p = str(path)
    files = sorted(_glob.glob(p)) if any(ch in p for ch in "*?[") else [p]
    if not files:
        raise ValueError(f"path {p!r}: no file matches this glob")
    if not os.path.exists(files[0]):
        raise ValueError(f"path {p!r}: file not found")
    suffix = Path(files[0]).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pl.scan_parquet(p)
    if suffix in (".arrow", ".ipc", ".feather"):
        return pl.scan_ipc(p)
    if suffix in (".csv", ".txt", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        empty = [f for f in files if os.path.exists(f) and os.path.getsize(f) == 0]
        if empty:
            which = ("the file is" if empty == [p] else
                     f"{len(empty)} of its {len(files)} files {'is' if len(empty) == 1 else 'are'}")
            raise ValueError(f"path {p!r}: {which} empty (0 bytes: no header, no rows)"
                             + ("" if empty == [p] else f", e.g. {empty[0]!r}"))
        overrides = {time_col: pl.String} if time_format and time_col else None
        extent = {"infer_schema_length": None, "infer_schema_files": len(files)} if every_row else {}
        return pl.scan_csv(p, try_parse_dates=True, separator=sep, schema_overrides=overrides, **extent)
    raise ValueError(f"path {p!r}: unknown file type {suffix!r}; use .csv, .parquet or .arrow/.ipc")


def is_csv(path: str | os.PathLike) -> bool:
    """Whether :func:`scan` reads ``path`` (a file or glob) as CSV (types inferred from the text)."""
    return Path(str(path)).suffix.lower() in (".csv", ".txt", ".tsv")


_NULL_MARKERS = {"na", "n/a", "nan", "null", "none", "-", "?", "missing", "#n/a"}


def _first_not_number(col: pl.Series) -> str:
    """The first non-blank cell of a text column that does not read as a number."""
    text = col.drop_nulls()
    bad = text.filter(text.str.strip_chars().cast(pl.Float64, strict=False).is_null()
                      & (text.str.strip_chars() != ""))
    return (bad if bad.len() else text).head(1).to_list()[0]


def _closest(name: str, options: Sequence[str]) -> str:
    m = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {m[0]!r}?)" if m else ""


def _time_kind(dtype: pl.DataType, time_col: str, where: str, time_format: str | None) -> str:
    if time_format is not None:
        if dtype != pl.String:
            raise ValueError(f"time_format={time_format!r} is for text times, but time_col {time_col!r} in {where} "
                             f"is {dtype}; leave time_format out")
        return "datetime"
    if dtype == pl.Date or isinstance(dtype, pl.Datetime) or dtype == pl.String:
        return "datetime"
    if dtype.is_integer():
        return "int"
    raise ValueError(f"time_col {time_col!r} in {where} is {dtype}; it must be a datetime, date, "
                     "datetime string (ISO, or set time_format) or integer column")


def read_table(lf: pl.LazyFrame, roles: Roles, where: str, time_format: str | None = None,
               time_kind: str | None = None) -> Table:
    """Check roles and values, put times on the axis, sort. ``time_kind`` (from a checkpoint's spec)
    requires that kind of time column."""
    schema = lf.collect_schema()
    names = schema.names()

    def need(col: str, role: str) -> None:
        if col not in names:
            raise ValueError(f"{role} column {col!r} not found in {where}{_closest(col, names)}; "
                             f"columns are {names}")

    tc, ic = roles.time_col, roles.id_col
    need(tc, "time_col")
    if ic is not None:
        need(ic, "id_col")
    past, future = list(roles.past_covariate_cols), list(roles.future_covariate_cols)
    targets = roles.target_cols
    if targets is None:
        used = {tc, ic, *past, *future}
        targets = [c for c in names if c not in used and schema[c].is_numeric()]
        if not targets:
            if lf.head(1).collect().height == 0:
                raise ValueError(f"{where} is empty: it has a header but no rows, no data to build series from")
            raise ValueError(f"no numeric target column in {where}: every column but the time and id columns reads "
                             f"as text (or is blank); set target_cols to the column to forecast (columns: {names})")
    targets = list(targets)
    if not targets:
        raise ValueError("target_cols is empty; give at least one target column")
    for role, cols in (("target", targets), ("past covariate", past), ("future covariate", future)):
        for c in cols:
            need(c, role)
    value_cols = [*targets, *past, *future]
    dup = sorted({c for c in value_cols if value_cols.count(c) > 1})
    if dup:
        raise ValueError(f"column(s) {dup} have more than one role (target/past/future covariate)")
    if tc in value_cols or (ic is not None and ic in value_cols):
        raise ValueError("time_col / id_col cannot also be a value column")
    kind = _time_kind(schema[tc], tc, where, time_format)
    if time_kind is not None and kind != time_kind:
        raise ValueError(f"time_col {tc!r} in {where} holds {'integers' if kind == 'int' else 'datetimes'}, but the "
                         f"model was trained on {'integer' if time_kind == 'int' else 'datetime'} time")

    idexpr = (pl.col(ic).cast(pl.String) if ic is not None else pl.lit("0")).alias("__id")
    df = lf.select(idexpr, pl.col(tc).alias("__raw_t"), *[pl.col(c) for c in value_cols]).collect()
    if df.height == 0:
        raise ValueError(f"{where} is empty: it has a header but no rows, no data to build series from")
    for role, cols in (("target", targets), ("past covariate", past), ("future covariate", future)):
        for c in cols:
            dt = df.schema[c]
            if dt.is_numeric():
                continue
            if dt == pl.Null or (dt == pl.String and df[c].null_count() == df.height):
                raise ValueError(f"{role} column {c!r} in {where} is empty (every cell is blank); fill it or "
                                 "choose another column")
            if dt == pl.String:
                ex = _first_not_number(df[c])
                hint = (f" ({ex!r} looks like a missing-value marker: leave those cells empty)"
                        if ex.strip().lower() in _NULL_MARKERS else "")
                raise ValueError(f"{role} column {c!r} in {where} is String, not numeric: {ex[:40]!r} is not a "
                                 f"number{hint}; clean or cast it to a number, or choose another column")
            raise ValueError(f"{role} column {c!r} in {where} is {dt}, not numeric; cast it to a number or "
                             "choose another column")
    t, tnull, zoned = to_axis(df["__raw_t"], kind, time_format, what=f"time_col {tc!r}")
    df = df.drop("__raw_t").with_columns(
        pl.Series("__t", t, dtype=pl.Int64), *[pl.col(c).cast(pl.Float32) for c in value_cols])
    if tnull.any():
        nt = int(tnull.sum())
        ex = df.filter(pl.Series(tnull)).row(0, named=True)["__id"]
        raise ValueError(f"time_col {tc!r} has {nt} null value(s) (e.g. in series {ex!r}); drop or fill those rows")
    if df["__id"].null_count():
        raise ValueError(f"id_col {ic!r} has null values; every row needs a series id")
    show = lambda v: format_time(v, kind)  # noqa: E731

    # -- sort (unsorted input is not an error); from here rows are grouped by series, time-ordered --
    same = (pl.col("__id") == pl.col("__id").shift(1)).fill_null(False)
    in_order = df["__id"].is_sorted() and df.select((~same | (pl.col("__t") >= pl.col("__t").shift(1))).all()).item()
    if not in_order:  # sort on (integer code of the id, time): ~2x faster than on the strings
        uniq = df["__id"].unique().sort()
        code = pl.col("__id").replace_strict(uniq, pl.Series(np.arange(len(uniq), dtype=np.int32)))
        df = df[df.select(pl.arg_sort_by(code, "__t")).to_series()]
    df = df.with_columns(pl.col("__id").rle_id().cast(pl.Int32).alias("__s"))
    first_row = (pl.col("__s") != pl.col("__s").shift(1)).fill_null(True)
    df = df.with_columns(pl.when(first_row).then(None).otherwise(pl.col("__t") - pl.col("__t").shift(1)).alias("__d"))
    df = df.select("__id", "__s", "__t", "__d", *value_cols)

    dups = df.filter(pl.col("__d") == 0)
    if dups.height:
        ex = dups.unique(["__s", "__t"], maintain_order=True).head(3)
        pairs = [f"({i!r}, {show(t)})" for i, t in zip(ex["__id"].to_list(), ex["__t"].to_list())]
        raise ValueError(f"{dups.height} duplicate (series, {tc}) rows in {where}, e.g. {', '.join(pairs)}; "
                         "aggregate or drop duplicates first")

    has_inf = df.select([pl.col(c).is_infinite().any().alias(c) for c in value_cols]).row(0, named=True)
    for c in value_cols:
        if has_inf[c]:
            inf = df.filter(pl.col(c).is_infinite())
            r = inf.row(0, named=True)
            raise ValueError(f"column {c!r} has {inf.height} infinite value(s), first in series {r['__id']!r} "
                             f"at {tc}={show(r['__t'])}; replace them with null")
    counts = df.group_by("__s", maintain_order=True).agg(
        pl.col("__id").first(), *[(pl.col(c).is_not_null() & pl.col(c).is_not_nan()).sum().alias(c) for c in targets])
    for c in targets:
        bad = counts.filter(pl.col(c) == 0)["__id"].to_list()
        if len(bad) == counts.height:
            raise ValueError(f"target column {c!r} is entirely null/NaN in {where}; nothing to learn")
        if bad:
            raise ValueError(f"target {c!r} is all null/NaN in series {bad[:5]}{' ...' if len(bad) > 5 else ''}; "
                             "drop these series or fill the target")
    return Table(frame=df, time_kind=kind, time_zone="UTC" if zoned else None, target_cols=targets, value_cols=value_cols,
                 where=where)
