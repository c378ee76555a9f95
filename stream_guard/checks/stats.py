"""The statistics of the window checks: thresholds from reference variability, p-values, BH."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from stream_guard.profile import N_TOP_VALUES, CountVariability, NumericProfile, RateVariability, value_key

#: Relative standard error of a Redis HyperLogLog count.
HLL_RELATIVE_ERROR = 0.0081


def binomial_p_values(count: np.ndarray, total: np.ndarray, p0: np.ndarray) -> np.ndarray:
    """One-sided p-values of ``H0: rate <= p0`` given ``count`` successes in ``total`` trials.

    ``P(X >= count)`` for ``X ~ Binomial(total, p0)``; 1 where ``count`` is 0 or ``p0 >= 1``.
    """
    count = np.asarray(count, dtype=np.int64)
    total = np.asarray(total, dtype=np.int64)
    p0 = np.clip(np.asarray(p0, dtype=np.float64), 0.0, 1.0)
    p = stats.binom.sf(count - 1, total, p0)
    return np.where((count <= 0) | (p0 >= 1.0), 1.0, p)


def bh_adjusted(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (scipy's ``false_discovery_control``), in the input order.

    A NaN p-value (a test that could not be computed) counts as 1, and rounding that put a
    p-value a hair outside [0, 1] is clipped: scipy refuses both.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return np.zeros(0)
    return np.asarray(stats.false_discovery_control(np.clip(np.nan_to_num(p, nan=1.0), 0.0, 1.0), method="bh"))


def benjamini_hochberg(p_values: np.ndarray, q: float) -> np.ndarray:
    """Mask of the hypotheses rejected by the Benjamini-Hochberg step-up procedure at level ``q``."""
    return bh_adjusted(p_values) <= q


def value_share_variability(profile: NumericProfile, value: float, chunk_size: int) -> RateVariability:
    """Reference share (and its chunk variability) of one numeric value.

    * a top value: its measured ``top_value_variability`` (or its share, binomial std);
    * a value outside ``[min, max]`` (or not finite, or fractional for an int feature):
      never seen, so 0;
    * any other value: at most the smallest listed top share when the list is full,
      else the value was seen at most once (top values keep every repeated value).
      Its std is the binomial std of that bound on ``chunk_size`` rows.
    """
    known = profile.top_value_variability.get(value_key(value))
    if known is not None:
        return known
    listed = dict(profile.top_values)
    if value in listed:
        return _binomial_variability(listed[value], chunk_size)
    never_seen = (
        profile.min is None
        or profile.max is None
        or not math.isfinite(value)
        or not profile.min <= value <= profile.max
        or (profile.dtype != "float" and not float(value).is_integer())
    )
    if never_seen:
        return RateVariability(0.0, 0.0, 0, chunk_size)
    if len(profile.top_values) >= N_TOP_VALUES:
        bound = min(share for _, share in profile.top_values)
    else:
        bound = 1.0 / max(profile.count, 1)
    return _binomial_variability(bound, chunk_size)


def _binomial_variability(share: float, chunk_size: int) -> RateVariability:
    std = math.sqrt(share * (1.0 - share) / max(chunk_size, 1))
    return RateVariability(share, std, 0, chunk_size)


def distinct_threshold(chunks: CountVariability, cardinality: int, rows: int, n: int, z: float) -> float:
    """Highest distinct-value count expected in a window of ``n`` rows.

    The reference gives distinct counts at two sizes: per chunk (``chunks``, mean and
    std over chunks of ``chunk_size`` rows) and over the whole reference (``cardinality``
    in ``rows`` rows). The distinct count of ``n`` rows never exceeds that of more rows,
    and is at most the sum over the ``n / size`` blocks it splits into. So each size
    gives an upper bound, and the smaller one wins:

    * chunks: ``k * mean + z * sqrt(k) * std`` with ``k = max(1, n / chunk_size)``;
    * whole reference: ``r * cardinality + z * sqrt(r) * std`` with ``r = max(1, n / rows)``.

    ``std`` is the chunk std floored at 1 category. A saturated feature (all its
    categories appear in every chunk) gets ``mean + z`` whatever the window size; a
    high-cardinality one gets a bound growing linearly with the window.
    """
    std = max(chunks.std, 1.0)
    k = max(1.0, n / max(chunks.chunk_size, 1))
    r = max(1.0, n / max(rows, 1))
    return min(k * chunks.mean + z * math.sqrt(k) * std, r * cardinality + z * math.sqrt(r) * std)


def distinct_p_value(observed: int, threshold: float) -> float:
    """p-value of ``H0: distinct <= threshold`` given a HyperLogLog estimate ``observed``.

    Only the estimation error is random here (the threshold already holds the
    reference's variability), so this is close to a hard threshold.
    """
    if observed <= threshold:
        return 1.0
    scale = HLL_RELATIVE_ERROR * max(threshold, 1.0)
    return float(stats.norm.sf((observed - threshold) / scale))
