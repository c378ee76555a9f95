"""Learning a :class:`~stream_guard.profile.BaselineProfile` from a reference frame.

:func:`learn_profile` summarises a reference :class:`pandas.DataFrame` (typically the
training data): per-feature rates, range, quantiles, frequent values, a drift
histogram, category frequencies, and how the rates vary between consecutive chunks.

Missing-value rule (numeric features)
-------------------------------------
* ``nan``: a float NaN stored *as a value*: NaN in a NumPy float column, a NaN inside a
  pyarrow-backed float column, or a float NaN object in an ``object`` column.
* ``null``: an absent value: ``None``, ``pd.NA``, a masked entry of a nullable
  (``Int64``/``Float64``/``boolean``) or pyarrow column, a missing string in a string
  column. (pandas' own ``Float64`` turns NaN into NA, so there it counts as null.)

:func:`read_reference` reads files with pyarrow-backed dtypes so that missing cells
become nulls, as a missing field does on the live stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from stream_guard.errors import ReferenceDataUnusableError
from stream_guard.profile import (
    N_BINS,
    N_TOP_VALUES,
    PROFILE_FORMAT_VERSION,
    QUANTILE_KEYS,
    BaselineProfile,
    CategoricalProfile,
    CountVariability,
    FeatureProfile,
    NumericProfile,
    RateVariability,
    category_key,
    value_key,
)


def learn_profile(
    frame: pd.DataFrame,
    *,
    model: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    source: str = "dataframe",
    chunk_size: int | None = None,
    max_categories: int = 1000,
    on_field: Callable[[int], None] | None = None,
) -> BaselineProfile:
    """Learn a baseline profile from reference data.

    Parameters
    ----------
    frame
        Reference rows, e.g. the training data. Row order defines the chunks.
    model, source
        Recorded in the profile; ``source`` is free text saying where rows came from.
    numeric, categorical
        Feature columns to profile. Bool columns belong in ``numeric`` (values 0/1).
    chunk_size
        Rows per chunk for the variability estimates; default
        ``max(1000, len(frame) // 50)``, capped at ``len(frame)``. Rows are split into
        consecutive chunks and a trailing partial chunk is merged into the previous one,
        so no chunk is short.
    max_categories
        Most frequent categories kept per categorical feature.
    on_field
        Called with the number of fields profiled so far after each one (progress).

    Raises
    ------
    ReferenceDataUnusableError
        (a ``ValueError``) If the frame is empty, no feature is listed, a column is listed twice or is
        absent from the frame, or a numeric column cannot be converted to numbers.
    """
    names = [*numeric, *categorical]
    if not names:
        raise ReferenceDataUnusableError("no feature columns listed")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ReferenceDataUnusableError(f"columns listed more than once: {', '.join(map(str, duplicates))}")
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ReferenceDataUnusableError(f"columns not in the reference frame: {', '.join(map(str, missing))}")
    n_rows = len(frame)
    if n_rows == 0:
        raise ReferenceDataUnusableError("the reference frame has no rows")
    if chunk_size is None:
        chunk_size = max(1000, n_rows // 50)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if max_categories < 0:
        raise ValueError(f"max_categories must be >= 0, got {max_categories}")

    chunk_size = min(chunk_size, n_rows)  # record the size actually used
    chunks = _Chunks(n_rows, chunk_size)
    features: dict[str, FeatureProfile] = {}
    for name in numeric:
        features[name] = _learn_numeric(_column(frame, name), name, chunks)
        if on_field is not None:
            on_field(len(features))
    for name in categorical:
        features[name] = _learn_categorical(_column(frame, name), name, chunks, max_categories)
        if on_field is not None:
            on_field(len(features))
    return BaselineProfile(
        model=model,
        format_version=PROFILE_FORMAT_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        source=source,
        row_count=n_rows,
        chunk_size=chunk_size,
        features=features,
    )


def read_reference(path: str | Path) -> pd.DataFrame:
    """Read reference data from ``.parquet``, ``.csv`` or ``.jsonl`` (chosen by suffix).

    Columns get pyarrow-backed dtypes, so missing cells are nulls (not NaN) while NaN
    stored in a Parquet float column stays NaN.

    Raises
    ------
    ReferenceDataUnusableError
        (a ``ValueError``) If the file does not exist or the suffix is not supported.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {
        ".parquet": lambda: pd.read_parquet(path, dtype_backend="pyarrow"),
        ".csv": lambda: pd.read_csv(path, dtype_backend="pyarrow"),
        ".jsonl": lambda: pd.read_json(path, lines=True, dtype_backend="pyarrow"),
    }
    if suffix not in readers:
        raise ReferenceDataUnusableError(
            f"unsupported reference file type {suffix!r} for {path} (use .parquet, .csv or .jsonl)"
        )
    if not path.is_file():
        raise ReferenceDataUnusableError(f"reference file not found: {path}")
    return readers[suffix]()


class _Chunks:
    """Consecutive row chunks; the trailing partial chunk is merged into the previous one."""

    def __init__(self, n_rows: int, chunk_size: int) -> None:
        self.size = chunk_size
        n_chunks = max(1, n_rows // chunk_size)
        self.starts = np.arange(n_chunks) * chunk_size
        self.lengths = np.diff(np.append(self.starts, n_rows))
        self.n_rows = n_rows

    @property
    def count(self) -> int:
        return len(self.starts)

    def row_chunk(self) -> np.ndarray:
        """Chunk index of every row."""
        return np.minimum(np.arange(self.n_rows) // self.size, self.count - 1)

    def rate_variability(self, mask: np.ndarray) -> RateVariability:
        rates = np.add.reduceat(mask, self.starts, dtype=np.int64) / self.lengths
        return RateVariability(*_mean_std(rates), n_chunks=self.count, chunk_size=self.size)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    column = frame[name]
    if isinstance(column, pd.DataFrame):
        raise ReferenceDataUnusableError(f"column {name!r} appears more than once in the reference frame")
    return column


def _numeric_values(series: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Return (float64 values, null mask, dtype label) following the module's missing-value rule."""
    dtype = series.dtype
    types = pd.api.types
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        label = {"b": "bool", "f": "float"}.get(dtype.kind, "int")
        return series.to_numpy(dtype=np.float64), np.zeros(len(series), dtype=bool), label
    if types.is_datetime64_any_dtype(dtype) or types.is_timedelta64_dtype(dtype):
        raise ReferenceDataUnusableError(f"numeric column {name!r} cannot be converted to numbers (dtype {dtype})")
    null = series.isna().to_numpy(dtype=bool, copy=True)
    if types.is_bool_dtype(dtype) or types.is_numeric_dtype(dtype):  # nullable / pyarrow numbers
        label = "bool" if types.is_bool_dtype(dtype) else "int" if types.is_integer_dtype(dtype) else "float"
        return series.to_numpy(dtype=np.float64, na_value=np.nan), null, label
    if dtype == np.dtype(object):
        # isna() lumps float NaN objects with None/pd.NA; the rule counts them as nan.
        idx = np.flatnonzero(null)
        if idx.size:
            raw = series.to_numpy(dtype=object)[idx]
            is_nan = np.fromiter((isinstance(v, (float, np.floating)) for v in raw), bool, idx.size)
            null[idx[is_nan]] = False
    try:
        converted = pd.to_numeric(series, errors="raise")
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise ReferenceDataUnusableError(f"numeric column {name!r} cannot be converted to numbers: {exc}") from None
    label = {"boolean": "bool", "integer": "int"}.get(types.infer_dtype(series, skipna=True), "float")
    return values, null, label


def _learn_numeric(series: pd.Series, name: str, chunks: _Chunks) -> NumericProfile:
    values, null, dtype = _numeric_values(series, name)
    n = len(values)
    # One sort serves quantiles, histogram and value counts.
    finite = np.sort(values[np.isfinite(values)])

    quantiles: dict[str, float] = {}
    interior = np.empty(0)
    lo = hi = mean = std = None
    top_values: list[tuple[float, float]] = []
    if finite.size:
        levels = [float(k) for k in QUANTILE_KEYS] + [i / N_BINS for i in range(1, N_BINS)]
        qs = np.quantile(finite, levels)
        quantiles = {k: float(q) for k, q in zip(QUANTILE_KEYS, qs, strict=False)}
        interior = np.unique(qs[len(QUANTILE_KEYS) :])
        lo, hi = float(finite[0]), float(finite[-1])
        mean, std = _finite_or_none(finite.mean()), _finite_or_none(finite.std())
        top_values = _top_values(finite, n)

    # Values below each interior edge, differenced: bins are [e_i, e_i+1).
    below = np.searchsorted(finite, interior, side="left")
    counts = np.diff(np.concatenate(([0], below, [finite.size])))
    freqs = counts / finite.size if finite.size else counts.astype(np.float64)
    return NumericProfile(
        name=name,
        kind="numeric",
        dtype=dtype,  # type: ignore[arg-type]
        count=n,
        null_rate=float(null.mean()),
        nan_rate=float((np.isnan(values) & ~null).mean()),
        inf_rate=float(np.isinf(values).mean()),
        min=lo,
        max=hi,
        quantiles=quantiles,
        mean=mean,
        std=std,
        top_values=top_values,
        bin_edges=[-math.inf, *map(float, interior), math.inf],
        bin_freqs=[float(f) for f in freqs],
        null_rate_variability=chunks.rate_variability(null),
        top_value_variability={value_key(v): chunks.rate_variability(values == v) for v, _ in top_values},
    )


def _top_values(ordered: np.ndarray, n_rows: int) -> list[tuple[float, float]]:
    """Up to N_TOP_VALUES most frequent values seen at least twice, ties by ascending value.

    ``ordered`` holds the finite values, sorted.
    """
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    freq = np.diff(np.append(starts, ordered.size))
    repeated = freq >= 2
    values, freq = ordered[starts[repeated]], freq[repeated]
    if len(freq) > N_TOP_VALUES:
        keep = freq >= np.partition(freq, -N_TOP_VALUES)[-N_TOP_VALUES]
        values, freq = values[keep], freq[keep]
    order = np.lexsort((values, -freq))[:N_TOP_VALUES]
    return [(float(values[i]) + 0.0, float(freq[i] / n_rows)) for i in order]


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _learn_categorical(series: pd.Series, name: str, chunks: _Chunks, max_categories: int) -> CategoricalProfile:
    n = len(series)
    raw_codes, uniques = pd.factorize(series, use_na_sentinel=True)
    # Several raw values can share a key (1 and 1.0): re-factorize on the keys.
    key_codes, keys = pd.factorize(np.array([category_key(u) for u in uniques], dtype=object))
    null = raw_codes < 0
    codes = key_codes[raw_codes[~null]]
    n_keys = len(keys)
    n_valid = len(codes)

    counts = np.bincount(codes, minlength=n_keys)
    order = np.lexsort((np.asarray(keys, dtype=str), -counts))
    kept = order[:max_categories]
    frequencies = {str(keys[i]): float(counts[i] / n_valid) for i in kept}
    other = int(counts[order[max_categories:]].sum())

    # Distinct (chunk, key) pairs, counted per chunk.
    pairs = chunks.row_chunk()[~null].astype(np.int64) * max(n_keys, 1) + codes
    distinct_chunks = pd.unique(pairs) // max(n_keys, 1)
    per_chunk = np.bincount(distinct_chunks, minlength=chunks.count).astype(np.float64)
    return CategoricalProfile(
        name=name,
        kind="categorical",
        count=n,
        null_rate=float(null.mean()),
        frequencies=frequencies,
        other_rate=float(other / n_valid) if n_valid else 0.0,
        cardinality=n_keys,
        chunk_cardinality=CountVariability(*_mean_std(per_chunk), n_chunks=chunks.count, chunk_size=chunks.size),
        null_rate_variability=chunks.rate_variability(null),
    )
