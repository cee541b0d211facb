"""Build ``forecaster/datasets/tmy3_weather.parquet``, the embedded default dataset (provenance).

Source: the two hourly TMY3 (Typical Meteorological Year 3) files that pvlib ships in
``pvlib/data`` (public-domain NREL data; pvlib is BSD-3-Clause):

* ``723170TYA.CSV``: Greensboro Piedmont Triad Intl, NC, USA (UTC-5)
* ``703165TY.csv``: Sand Point, AK, USA (UTC-9)

Each has 8760 hourly rows stamped ``MM/DD/YYYY, HH:MM`` in local standard time, hour-ending
(01:00 ... 24:00); a TMY stitches twelve typical months taken from different years, so the year
is coerced to 1990 (a non-leap year, as pvlib's ``coerce_year`` does): row ``i`` is stamped
1990-01-01 01:00 + i hours (the last is 1991-01-01 00:00). Nothing is interpolated; missing
values (-9900) become nulls.

Run it with pvlib installed (a dev tool only, not a runtime dependency)::

    python scripts/make_default_dataset.py
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl

STATIONS = {"greensboro_nc": "723170TYA.CSV", "sand_point_ak": "703165TY.csv"}
# TMY3 header -> our column name
COLUMNS = {
    "Dry-bulb (C)": "temp_air",
    "RHum (%)": "relative_humidity",
    "GHI (W/m^2)": "ghi",
    "DNI (W/m^2)": "dni",
    "DHI (W/m^2)": "dhi",
    "Dew-point (C)": "dew_point",
    "Pressure (mbar)": "pressure",
    "Wspd (m/s)": "wind_speed",
}
OUT = Path(__file__).resolve().parents[1] / "forecaster" / "datasets" / "tmy3_weather.parquet"


def read_station(station: str, path: str) -> pl.DataFrame:
    raw = pl.read_csv(path, skip_rows=1, infer_schema_length=0)  # all strings; line 1 is metadata
    if raw.height != 8760:
        raise ValueError(f"{path}: expected 8760 hourly rows, got {raw.height}")
    return raw.select(
        pl.lit(station).alias("station"),
        pl.datetime_range(dt.datetime(1990, 1, 1, 1), dt.datetime(1991, 1, 1, 0), "1h",
                          time_unit="us", eager=True).alias("time"),
        *[pl.col(src).cast(pl.Float64).replace(-9900.0, None).cast(pl.Float32).alias(dst)
          for src, dst in COLUMNS.items()],
    )


def main() -> None:
    import pvlib  # dev-time only

    data_dir = os.path.join(os.path.dirname(pvlib.__file__), "data")
    df = pl.concat([read_station(s, os.path.join(data_dir, f)) for s, f in STATIONS.items()])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(OUT, compression="zstd", statistics=True)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB): {df.shape}")
    print(df.describe())


if __name__ == "__main__":
    main()
