"""Baseline profiles ("learned ranges"): what each feature looked like in reference data.

:func:`learn_profile` summarises a reference :class:`pandas.DataFrame` (typically the
training data) into a :class:`BaselineProfile`: per-feature null/NaN/inf rates, range,
quantiles, frequent values, a drift histogram, category frequencies, and how much the
rates vary between consecutive chunks of the reference (so checks can derive their
tolerance from observed variability instead of a guessed constant, as NannyML does).

The profile is saved as versioned, human-readable JSON meant to be reviewed, edited by
hand (e.g. to widen a range) and committed; workers load it at start-up.

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

import itertools
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd

from stream_guard.errors import StreamGuardError

PROFILE_FORMAT_VERSION = 1

QUANTILE_KEYS = ("0.001", "0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99", "0.999")
N_BINS = 10  # drift histogram: decile edges, i.e. 9 interior edges before deduplication
N_TOP_VALUES = 10
MIN_RATE_STD = 0.001  # floor on a rate's std: 0.1 percentage point
MIN_COUNT_STD = 1.0  # floor on a per-chunk distinct-count std: one category


class ProfileFormatError(StreamGuardError, ValueError):
    """A profile file or dict is malformed; the message names the offending key."""


@dataclass
class RateVariability:
    """How a rate (share of rows) varies across consecutive chunks of the reference.

    ``std`` is the sample standard deviation over chunks (0 when there is one chunk).
    It is stored as measured; the thresholds floor it at :data:`MIN_RATE_STD` (0.001)
    so that a rate that was always 0 (or constant) in the reference still tolerates a
    little noise: with ``z=3`` a never-null column may reach 0.3 % nulls.
    """

    mean: float
    std: float
    n_chunks: int
    chunk_size: int

    def upper_threshold(self, z: float) -> float:
        """Return ``mean + z * max(std, MIN_RATE_STD)`` clipped to [0, 1]."""
        return min(1.0, max(0.0, self.mean + z * max(self.std, MIN_RATE_STD)))

    def lower_threshold(self, z: float) -> float:
        """Return ``mean - z * max(std, MIN_RATE_STD)`` clipped to [0, 1]."""
        return min(1.0, max(0.0, self.mean - z * max(self.std, MIN_RATE_STD)))


@dataclass
class CountVariability:
    """How a per-chunk count (distinct categories) varies across reference chunks.

    Same fields and methods as :class:`RateVariability`, but the values are counts, so
    thresholds are not clipped to 1 and ``std`` is floored at :data:`MIN_COUNT_STD`.
    Counts depend on the chunk size: compare with windows of ``chunk_size`` rows.
    """

    mean: float
    std: float
    n_chunks: int
    chunk_size: int

    def upper_threshold(self, z: float) -> float:
        """Return ``mean + z * max(std, MIN_COUNT_STD)`` (at least 0)."""
        return max(0.0, self.mean + z * max(self.std, MIN_COUNT_STD))

    def lower_threshold(self, z: float) -> float:
        """Return ``mean - z * max(std, MIN_COUNT_STD)`` (at least 0)."""
        return max(0.0, self.mean - z * max(self.std, MIN_COUNT_STD))


@dataclass
class NumericProfile:
    """Reference summary of a numeric (int, float or bool) feature.

    Rates are shares of all ``count`` rows. ``min``/``max``/``mean``/``std`` (population
    std), ``quantiles`` (NumPy's linear method) and ``top_values`` use finite values
    only; they are ``None``/empty when there are none. ``top_values`` skips values seen
    only once. Histogram bin ``i`` is ``[bin_edges[i], bin_edges[i+1])`` (as
    :func:`numpy.histogram` for finite values); ``bin_freqs`` are all 0 when the
    reference has no finite value.
    """

    name: str
    kind: Literal["numeric"]
    dtype: Literal["int", "float", "bool"]
    count: int
    null_rate: float
    nan_rate: float
    inf_rate: float
    min: float | None
    max: float | None
    quantiles: dict[str, float]
    mean: float | None
    std: float | None
    top_values: list[tuple[float, float]]
    bin_edges: list[float]
    bin_freqs: list[float]
    null_rate_variability: RateVariability
    top_value_variability: dict[str, RateVariability]

    def _margin(self, tolerance: float) -> float:
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        assert self.min is not None and self.max is not None
        span = self.max - self.min
        if span == 0:
            # A constant column has no spread to scale by: use its magnitude, or 1.
            span = abs(self.min) or 1.0
        return tolerance * span

    def lower_bound(self, tolerance: float) -> float:
        """Lowest acceptable value: ``min - tolerance * (max - min)``.

        For a constant column the span is ``abs(min)``, or 1.0 when ``min == 0``.
        Returns ``-inf`` when the reference had no finite value.
        """
        return -math.inf if self.min is None else self.min - self._margin(tolerance)

    def upper_bound(self, tolerance: float) -> float:
        """Highest acceptable value: ``max + tolerance * (max - min)``; see :meth:`lower_bound`."""
        return math.inf if self.max is None else self.max + self._margin(tolerance)

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Count the finite ``values`` into this profile's histogram bins (same convention)."""
        values = np.asarray(values, dtype=np.float64)
        return _histogram(values[np.isfinite(values)], np.asarray(self.bin_edges[1:-1]))


@dataclass
class CategoricalProfile:
    """Reference summary of a categorical feature.

    Values are keyed by :func:`category_key`. ``frequencies`` are shares of non-null
    rows for the ``max_categories`` most frequent values; ``other_rate`` is the share
    of the rest. ``cardinality`` counts distinct non-null values in the whole
    reference; ``chunk_cardinality`` the distinct values per chunk.
    """

    name: str
    kind: Literal["categorical"]
    count: int
    null_rate: float
    frequencies: dict[str, float]
    other_rate: float
    cardinality: int
    chunk_cardinality: CountVariability
    null_rate_variability: RateVariability


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass
class BaselineProfile:
    """A model's baseline: one profile per feature, plus where it was learned from."""

    model: str
    format_version: int
    created_at: str
    source: str
    row_count: int
    chunk_size: int
    features: dict[str, FeatureProfile]

    def to_dict(self) -> dict[str, Any]:
        """Return a strict-JSON-safe dict (infinite bin edges become ``"-inf"``/``"inf"``)."""
        features: dict[str, Any] = {}
        for name, feature in self.features.items():
            d = asdict(feature)
            if isinstance(feature, NumericProfile):
                d["top_values"] = [[v, r] for v, r in feature.top_values]
                d["bin_edges"] = [_encode_edge(e) for e in feature.bin_edges]
            features[name] = d
        return {
            "format_version": self.format_version,
            "model": self.model,
            "created_at": self.created_at,
            "source": self.source,
            "row_count": self.row_count,
            "chunk_size": self.chunk_size,
            "features": features,
        }

    @classmethod
    def from_dict(cls, d: Any) -> BaselineProfile:
        """Build a profile from :meth:`to_dict` output, validating it.

        Raises
        ------
        ProfileFormatError
            On an unsupported ``format_version`` or a missing/mistyped key; the one-line
            message names the key, e.g. ``features.amount.bin_edges[2]: ...``.
        """
        version = _get(d, "format_version", "")
        if isinstance(version, bool) or version != PROFILE_FORMAT_VERSION:
            raise ProfileFormatError(
                f"format_version: unsupported value {version!r} (expected {PROFILE_FORMAT_VERSION})"
            )
        raw_features = _get(d, "features", "")
        if not isinstance(raw_features, dict):
            raise ProfileFormatError("features: expected an object")
        features: dict[str, FeatureProfile] = {}
        for name, fd in raw_features.items():
            path = f"features.{name}"
            kind = _get(fd, "kind", path)
            if kind == "numeric":
                features[name] = _numeric_from_dict(fd, path)
            elif kind == "categorical":
                features[name] = _categorical_from_dict(fd, path)
            else:
                raise ProfileFormatError(f"{path}.kind: expected 'numeric' or 'categorical', got {kind!r}")
            if features[name].name != name:
                raise ProfileFormatError(f"{path}.name: {features[name].name!r} does not match its key")
        return cls(
            model=_str(d, "model", ""),
            format_version=PROFILE_FORMAT_VERSION,
            created_at=_str(d, "created_at", ""),
            source=_str(d, "source", ""),
            row_count=_int(d, "row_count", ""),
            chunk_size=_int(d, "chunk_size", ""),
            features=features,
        )

    def save(self, path: str | Path) -> None:
        """Write pretty, strict JSON atomically (temporary file, then :func:`os.replace`)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> BaselineProfile:
        """Read a profile written by :meth:`save` (or edited by hand).

        Raises ``FileNotFoundError`` for a missing file and :class:`ProfileFormatError`
        for invalid JSON or content.
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileFormatError(f"{path}: not valid JSON: {exc}") from None
        return cls.from_dict(data)


# --------------------------------------------------------------------------- learning


def learn_profile(
    frame: pd.DataFrame,
    *,
    model: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    source: str = "dataframe",
    chunk_size: int | None = None,
    max_categories: int = 1000,
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

    Raises
    ------
    ValueError
        If the frame is empty, no feature is listed, a column is listed twice or is
        absent from the frame, or a numeric column cannot be converted to numbers.
    """
    names = [*numeric, *categorical]
    if not names:
        raise ValueError("no feature columns listed")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"columns listed more than once: {', '.join(map(str, duplicates))}")
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"columns not in the reference frame: {', '.join(map(str, missing))}")
    n_rows = len(frame)
    if n_rows == 0:
        raise ValueError("the reference frame has no rows")
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
    for name in categorical:
        features[name] = _learn_categorical(_column(frame, name), name, chunks, max_categories)
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
    ValueError
        If the file does not exist or the suffix is not supported.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {
        ".parquet": lambda: pd.read_parquet(path, dtype_backend="pyarrow"),
        ".csv": lambda: pd.read_csv(path, dtype_backend="pyarrow"),
        ".jsonl": lambda: pd.read_json(path, lines=True, dtype_backend="pyarrow"),
    }
    if suffix not in readers:
        raise ValueError(f"unsupported reference file type {suffix!r} for {path} (use .parquet, .csv or .jsonl)")
    if not path.is_file():
        raise ValueError(f"reference file not found: {path}")
    return readers[suffix]()


def value_key(value: float) -> str:
    """Key of a numeric value in ``top_value_variability``: ``repr`` of the float (-0.0 as 0.0)."""
    return repr(float(value) + 0.0)


def category_key(value: Any) -> str:
    """Key of a category: ``str(value)``, with integral numbers as ints (``1.0`` -> ``"1"``).

    Integral floats are normalised because int codes read from a file with missing
    cells arrive as floats, while the live stream sends them as ints.
    """
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


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
        raise ValueError(f"column {name!r} appears more than once in the reference frame")
    return column


def _numeric_values(series: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Return (float64 values, null mask, dtype label) following the module's missing-value rule."""
    dtype = series.dtype
    types = pd.api.types
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        label = {"b": "bool", "f": "float"}.get(dtype.kind, "int")
        return series.to_numpy(dtype=np.float64), np.zeros(len(series), dtype=bool), label
    if types.is_datetime64_any_dtype(dtype) or types.is_timedelta64_dtype(dtype):
        raise ValueError(f"numeric column {name!r} cannot be converted to numbers (dtype {dtype})")
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
        raise ValueError(f"numeric column {name!r} cannot be converted to numbers: {exc}") from None
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


def _histogram(finite: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """Counts per bin ``[e_i, e_i+1)`` with outer edges -inf/+inf (matches numpy.histogram)."""
    return np.bincount(np.searchsorted(interior, finite, side="right"), minlength=len(interior) + 1)


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


# ------------------------------------------------------------------ JSON (de)serialising


def _encode_edge(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _get(d: Any, key: str, path: str) -> Any:
    if not isinstance(d, dict):
        raise ProfileFormatError(f"{path or 'profile'}: expected an object")
    if key not in d:
        raise ProfileFormatError(f"{_at(path, key)}: missing")
    return d[key]


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@overload
def _check_float(v: Any, where: str, *, none_ok: Literal[False] = False, edge: bool = False) -> float: ...
@overload
def _check_float(v: Any, where: str, *, none_ok: bool, edge: bool = False) -> float | None: ...
def _check_float(v: Any, where: str, *, none_ok: bool = False, edge: bool = False) -> float | None:
    if v is None and none_ok:
        return None
    if edge and v in ("inf", "-inf"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        expected = 'a number or "inf"/"-inf"' if edge else "a finite number"
        raise ProfileFormatError(f"{where}: expected {expected}, got {v!r}")
    return float(v)


def _float(d: Any, key: str, path: str, *, none_ok: bool = False, rate: bool = False) -> Any:
    value = _check_float(_get(d, key, path), _at(path, key), none_ok=none_ok)
    if rate and value is not None and not 0.0 <= value <= 1.0:
        raise ProfileFormatError(f"{_at(path, key)}: expected a rate in [0, 1], got {value!r}")
    return value


def _int(d: Any, key: str, path: str) -> int:
    v = _get(d, key, path)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ProfileFormatError(f"{_at(path, key)}: expected a non-negative integer, got {v!r}")
    return v


def _str(d: Any, key: str, path: str) -> str:
    v = _get(d, key, path)
    if not isinstance(v, str):
        raise ProfileFormatError(f"{_at(path, key)}: expected a string, got {v!r}")
    return v


def _typed(d: Any, key: str, path: str, kind: type) -> Any:
    v = _get(d, key, path)
    if not isinstance(v, kind):
        raise ProfileFormatError(f"{_at(path, key)}: expected {'an object' if kind is dict else 'a list'}")
    return v


def _variability(d: Any, key: str, path: str, cls: type) -> Any:
    vd, where = _get(d, key, path), _at(path, key)
    return cls(
        mean=_float(vd, "mean", where),
        std=_float(vd, "std", where),
        n_chunks=_int(vd, "n_chunks", where),
        chunk_size=_int(vd, "chunk_size", where),
    )


def _numeric_from_dict(d: dict[str, Any], path: str) -> NumericProfile:
    dtype = _get(d, "dtype", path)
    if dtype not in ("int", "float", "bool"):
        raise ProfileFormatError(f"{path}.dtype: expected 'int', 'float' or 'bool', got {dtype!r}")
    lo, hi = _float(d, "min", path, none_ok=True), _float(d, "max", path, none_ok=True)
    if (lo is None) != (hi is None) or (lo is not None and lo > hi):
        raise ProfileFormatError(f"{path}.min: must be <= max (both numbers, or both null)")
    raw_quantiles = _typed(d, "quantiles", path, dict)
    quantiles = {str(k): _check_float(v, f"{path}.quantiles.{k}") for k, v in raw_quantiles.items()}
    top_values: list[tuple[float, float]] = []
    for i, pair in enumerate(_typed(d, "top_values", path, list)):
        where = f"{path}.top_values[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise ProfileFormatError(f"{where}: expected a [value, rate] pair")
        top_values.append((_check_float(pair[0], where), _check_float(pair[1], where)))
    edges = [
        _check_float(e, f"{path}.bin_edges[{i}]", edge=True) for i, e in enumerate(_typed(d, "bin_edges", path, list))
    ]
    if len(edges) < 2 or any(a >= b for a, b in itertools.pairwise(edges)):
        raise ProfileFormatError(f"{path}.bin_edges: expected at least 2 strictly increasing edges")
    raw_freqs = _typed(d, "bin_freqs", path, list)
    freqs = [_check_float(f, f"{path}.bin_freqs[{i}]") for i, f in enumerate(raw_freqs)]
    if len(freqs) != len(edges) - 1:
        raise ProfileFormatError(f"{path}.bin_freqs: expected {len(edges) - 1} values (one per bin), got {len(freqs)}")
    tvv_path, tvv = f"{path}.top_value_variability", _typed(d, "top_value_variability", path, dict)
    return NumericProfile(
        name=_str(d, "name", path),
        kind="numeric",
        dtype=dtype,
        count=_int(d, "count", path),
        null_rate=_float(d, "null_rate", path, rate=True),
        nan_rate=_float(d, "nan_rate", path, rate=True),
        inf_rate=_float(d, "inf_rate", path, rate=True),
        min=lo,
        max=hi,
        quantiles=quantiles,
        mean=_float(d, "mean", path, none_ok=True),
        std=_float(d, "std", path, none_ok=True),
        top_values=top_values,
        bin_edges=edges,
        bin_freqs=freqs,
        null_rate_variability=_variability(d, "null_rate_variability", path, RateVariability),
        top_value_variability={str(k): _variability(tvv, k, tvv_path, RateVariability) for k in tvv},
    )


def _categorical_from_dict(d: dict[str, Any], path: str) -> CategoricalProfile:
    frequencies = {
        str(k): _float({k: v}, k, f"{path}.frequencies", rate=True)
        for k, v in _typed(d, "frequencies", path, dict).items()
    }
    return CategoricalProfile(
        name=_str(d, "name", path),
        kind="categorical",
        count=_int(d, "count", path),
        null_rate=_float(d, "null_rate", path, rate=True),
        frequencies=frequencies,
        other_rate=_float(d, "other_rate", path, rate=True),
        cardinality=_int(d, "cardinality", path),
        chunk_cardinality=_variability(d, "chunk_cardinality", path, CountVariability),
        null_rate_variability=_variability(d, "null_rate_variability", path, RateVariability),
    )
