"""Tables of time series -> training windows, in stages (Polars for reading and validation, numpy
index arithmetic for the windows):

1. :mod:`forecaster.data.table`: read a path / frame and validate it (roles, times, duplicates,
   infinities, all-null targets); times go on the axis by the one time rule of
   :mod:`forecaster.timeaxis`.
2. :mod:`forecaster.data.grid`: the frequency (given or inferred), every series on its regular
   grid (missing periods masked, never interpolated), calendar features.
3. :mod:`forecaster.data.scaling`: per-series scalers fitted on the training part.
4. :mod:`forecaster.data.windows`: splits, windows ``(series, start)`` gathered in batches, samplers.
5. :mod:`forecaster.data.build`: a table through the stages, either fitting a
   :class:`forecaster.spec.DataSpec` (``fit_spec``) or applying a checkpoint's (``apply_spec``).
6. :mod:`forecaster.data.module`: :class:`TimeSeriesDataModule`, the ``LightningDataModule`` over them.
"""

from forecaster.data.module import DEFAULT_DATASET, DEFAULT_ROLES, TimeSeriesDataModule
from forecaster.data.windows import WindowDataset

__all__ = ["TimeSeriesDataModule", "WindowDataset", "DEFAULT_DATASET", "DEFAULT_ROLES"]
