"""The online MAE of two replays of the same test period (``stream --replay ... --report``), one
without swaps and one with, over the segments between the swap times: weighted by the values
scored per day (the reports' ``n``), so each segment's MAE is that of all its forecasts.

    python experiments/stream_swap/compare.py noswap.csv swap.csv 2017-11-01 2018-03-01
"""

import sys

import polars as pl


def segments(path: str, cuts: list[str]) -> pl.DataFrame:
    t = pl.read_csv(path, try_parse_dates=True)
    edges = [pl.lit(c).str.to_datetime() for c in cuts]
    seg = pl.lit(0)
    for e in edges:
        seg = seg + (pl.col("period") >= e).cast(pl.Int32)
    w = pl.col("n")
    return (t.with_columns(seg.alias("segment"))
            .group_by("segment").agg(pl.col("period").min().alias("from"), pl.col("period").max().alias("to"),
                                     *[((pl.col(c) * w).sum() / w.sum()).alias(c)
                                       for c in ("mae", "mae_seasonal_naive", "mae_last_value")],
                                     w.sum().alias("n"))
            .sort("segment"))


if __name__ == "__main__":
    noswap, swap, *cuts = sys.argv[1:]
    a, b = segments(noswap, cuts), segments(swap, cuts)
    with pl.Config(tbl_cols=10, tbl_width_chars=160, float_precision=4):
        print(a.select("segment", "from", "to", pl.col("mae").alias("mae_no_swap"),
                       b["mae"].alias("mae_with_swaps"), "mae_seasonal_naive", "mae_last_value", "n"))
