"""Streaming: every series' state kept between observations, so a new observation costs one
recurrent step whatever the length of the history (:class:`StreamingForecaster`).

Stream semantics (each tested in ``tests/forecaster/test_streaming.py``,
``test_stream_faults.py``, ``test_stream_fuzz.py`` and ``test_state_file.py``):

- Times are read by the one time rule of the data spec (:mod:`forecaster.timeaxis`): zone-aware
  times (aware ``datetime``, zoned columns, ISO strings with an offset) are converted to UTC, naive
  ones taken as given: the same instant lands on the same step as in training.
- The state of a series advances once per period of the data's frequency. A record whose
  time skips k periods first advances the k - 1 missing periods as steps with every target
  unobserved (observed mask 0, covariates 0, calendar features of the missing time), exactly as
  the data module encodes gaps for training; then the record's own step.
- Long gaps: a record more than ``context_length`` periods after its series' last time restarts
  the series from the zero state and steps only the last ``context_length - 1`` missing periods
  before it (see :meth:`StreamingForecaster.observe`), so no record costs more than
  ``context_length`` steps. A record more than ``max_gap`` periods after its series' last time
  (default ``2 * context_length``; ``None``: no limit) is rejected: a mistyped year would
  otherwise move the series a year ahead and every correct record after it would be out of order.
- Every record is applied or rejected with a reason, whatever it holds (:mod:`.records` has the
  rules for ids, times and values): a record at or before the series' last time (out of order,
  or a duplicate), off the frequency grid, with an unreadable, null or NaT time, a bad id, a value
  that is not a number, or one beyond float32 as given or once scaled, is rejected; the series'
  state is unchanged; the other records are still processed. Records are applied in the order
  given. A DataFrame with missing or non-numeric columns raises ``ValueError`` (nothing applied).
- A null or NaN target or covariate is a missing observation (observed mask 0), not an error.
  Should a record's values still drive the state to a non-finite value, that series is left as it
  was before the call and its records of the call are rejected: a state is never NaN.
- ``observe`` is atomic under exceptions: an interrupt (``KeyboardInterrupt``) or error while
  stepping puts every series it touched back as it was before the call.
- A series never seen before starts from the zero state (as every training window does). Its
  scaler is its own when the checkpoint was trained on it, otherwise (``new_series="pooled"``,
  the default) the spec's pooled scalers (the median over the training series);
  ``new_series="reject"`` rejects records of unknown series instead.
- Memory is bounded: at most ``max_series`` series (default 100,000) are kept; the least recently
  seen are evicted after the call that exceeds it, and reported.
- Snapshots (:meth:`StreamingForecaster.save_state`) append what changed since the last one to a
  checksummed log that a crash cannot damage, held by one writer at a time (:mod:`.statefile`,
  :mod:`forecaster.snapshot`).
- A running stream swaps to a compatible newer network (:meth:`StreamingForecaster.swap`,
  :class:`CheckpointWatcher`), re-warming every carried state from its look-back, atomically
  (:mod:`.swap`, ``test_stream_swap.py``); it measures itself (:class:`StreamMetrics`,
  :mod:`.metrics`, ``test_stream_metrics.py``).

Lightning stays off the per-observation path: a list of dicts is parsed in plain Python, features
are numpy, the recurrence is ``StepForecastNet.step_`` on a state table under
``torch.inference_mode``.
"""

from forecaster.snapshot import SnapshotError, StateLockedError
from forecaster.streaming.plan import ObserveReport, Rejected
from forecaster.streaming.records import MAX_ID_LENGTH, id_problem, show
from forecaster.streaming.statefile import STATE_FORMAT_VERSION
from forecaster.streaming.stream import MAX_SERIES, StreamingForecaster
from forecaster.streaming.swap import CheckpointWatcher, SwapError, SwapReport
from forecaster.streaming.metrics import StreamMetrics

__all__ = ["StreamingForecaster", "ObserveReport", "Rejected", "STATE_FORMAT_VERSION", "MAX_ID_LENGTH", "MAX_SERIES",
           "SnapshotError", "StateLockedError", "id_problem", "show", "SwapError", "SwapReport", "CheckpointWatcher",
           "StreamMetrics"]
