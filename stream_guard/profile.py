"""Baseline profiles ("learned ranges"): what each feature looked like in reference data.

A :class:`BaselineProfile` holds, per feature, null/NaN/inf rates, range, quantiles,
frequent values, a drift histogram, category frequencies, and how much the rates varied
between consecutive chunks of the reference (so checks can derive their tolerance from
observed variability instead of a guessed constant, as NannyML does).
:func:`stream_guard.learning.learn_profile` computes one from reference data.

The profile is saved as versioned, human-readable JSON meant to be reviewed, edited by
hand (e.g. to widen a range) and committed; workers load it at start-up, and
:meth:`BaselineProfile.from_dict` rejects a malformed file with a
:class:`~stream_guard.errors.ProfileFormatError` naming the offending key.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from stream_guard.errors import ProfileFormatError
from stream_guard.profile_performance import ReferencePerformance

#: Version 2 adds the optional ``performance`` section (labelled reference); version 1 files still load.
PROFILE_FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)

QUANTILE_KEYS = ("0.001", "0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99", "0.999")
N_BINS = 10  # drift histogram: decile edges, i.e. 9 interior edges before deduplication
N_TOP_VALUES = 10
MIN_RATE_STD = 0.001  # floor on a rate's std: 0.1 percentage point
MIN_COUNT_STD = 1.0  # floor on a per-chunk distinct-count std: one category


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
    """A model's baseline: one profile per feature, plus where it was learned from.

    ``performance`` is the model's per-slice performance on the reference when it was
    learned with labels (``stream-guard learn --label-column``), else ``None``.
    """

    model: str
    format_version: int
    created_at: str
    source: str
    row_count: int
    chunk_size: int
    features: dict[str, FeatureProfile]
    performance: ReferencePerformance | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a strict-JSON-safe dict (infinite bin edges become ``"-inf"``/``"inf"``)."""
        features: dict[str, Any] = {}
        for name, feature in self.features.items():
            d = asdict(feature)
            if isinstance(feature, NumericProfile):
                d["top_values"] = [[v, r] for v, r in feature.top_values]
                d["bin_edges"] = [_encode_edge(e) for e in feature.bin_edges]
            features[name] = d
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "model": self.model,
            "created_at": self.created_at,
            "source": self.source,
            "row_count": self.row_count,
            "chunk_size": self.chunk_size,
            "features": features,
        }
        if self.performance is not None:
            out["performance"] = self.performance.to_dict()
        return out

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
        if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
            expected = " or ".join(map(str, SUPPORTED_FORMAT_VERSIONS))
            raise ProfileFormatError(f"format_version: unsupported value {version!r} (expected {expected})")
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
            performance=ReferencePerformance.from_dict(d["performance"]) if "performance" in d else None,
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


def _histogram(finite: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """Counts per bin ``[e_i, e_i+1)`` with outer edges -inf/+inf (matches numpy.histogram)."""
    return np.bincount(np.searchsorted(interior, finite, side="right"), minlength=len(interior) + 1)


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
