"""Which River drift detector to run: :class:`DetectorSpec`, validated by building it.

A spec is a setting (``[drift.detector]``, ``concept_detector``); building one is how its
kind and parameters are checked, so the check lives with the declaration.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, TypeAlias

from stream_guard.errors import DetectorSpecInvalidError

if TYPE_CHECKING:
    from river import base as river_base

__all__ = ["Detector", "DetectorSpec"]

# River's binary detectors (DDM, EDDM, HDDM_A...) do not subclass DriftDetector.
Detector: TypeAlias = "river_base.DriftDetector | river_base.BinaryDriftDetector"


@cache
def _detector_classes() -> dict[str, type[Detector]]:
    """Concrete detector classes of ``river.drift`` and ``river.drift.binary`` by name.

    River is imported here, not at module level: reading settings (``--help``,
    ``check-config``) should not pay for loading every detector.
    """
    from river import base as river_base
    from river import drift as river_drift

    classes: dict[str, type[Detector]] = {}
    for module in (river_drift, river_drift.binary):
        for name in dir(module):
            obj = getattr(module, name)
            if (
                isinstance(obj, type)
                and issubclass(obj, (river_base.DriftDetector, river_base.BinaryDriftDetector))
                and not inspect.isabstract(obj)
            ):
                classes[name] = obj
    return classes


def _normalise_kind(kind: str) -> str:
    return kind.replace("_", "").upper()


def _resolve_kind(kind: str) -> type[Detector]:
    """Find a detector class by exact name, else ignoring case and underscores.

    The fallback accepts the literature's spellings ``HDDM_A``/``HDDM_W`` for
    River's ``HDDMA``/``HDDMW``.
    """
    classes = _detector_classes()
    if kind in classes:
        return classes[kind]
    matches = [cls for name, cls in classes.items() if _normalise_kind(name) == _normalise_kind(kind)]
    if len(matches) == 1:
        return matches[0]
    raise DetectorSpecInvalidError(f"unknown drift detector kind {kind!r}; valid kinds: {', '.join(sorted(classes))}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _probe(cls: type[Detector], params: Mapping[str, Any]) -> Detector:
    """Construct and feed one value, since some detectors only reject a bad value on update."""
    detector = cls(**params)
    detector.update(0)  # type: ignore[arg-type]  # River's binary detectors annotate x as bool; 0/1 work
    return detector


@dataclass(frozen=True)
class DetectorSpec:
    """Which River drift detector to run, and its constructor arguments.

    Attributes
    ----------
    kind
        Class name in ``river.drift`` or ``river.drift.binary``: ``"ADWIN"``,
        ``"PageHinkley"``, ``"KSWIN"``, ``"DDM"``, ``"EDDM"``, ``"FHDDM"``,
        ``"HDDMA"``/``"HDDM_A"``, ``"HDDMW"``/``"HDDM_W"``... Matching falls
        back to ignoring case and underscores.
    params
        Keyword arguments passed verbatim to the class, e.g. ``{"delta": 0.002}``
        for ADWIN or ``{"alpha": 0.005, "window_size": 100, "seed": 1}`` for KSWIN
        (give KSWIN a ``seed``, or its sampling is not reproducible).
    """

    kind: str = "ADWIN"
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def build(self) -> Detector:
        """Return a fresh detector.

        Raises
        ------
        DetectorSpecInvalidError
            (a ``ValueError``) If ``kind`` is unknown (the message lists the valid kinds), a
            parameter name is not accepted by the class, or River rejects a
            value (the message names the parameter when it alone is at fault).
        """
        cls = _resolve_kind(self.kind)
        params = dict(self.params)
        signature = inspect.signature(cls)
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        unknown = sorted(set(params) - set(signature.parameters))
        if unknown and not takes_kwargs:
            raise DetectorSpecInvalidError(
                f"{cls.__name__} does not accept parameter(s) {', '.join(map(repr, unknown))}; "
                f"valid parameters: {', '.join(signature.parameters) or '(none)'}"
            )
        # Some detectors only use a parameter after a warm-up (PageHinkley's threshold), so a
        # wrong type would surface mid-stream; numeric defaults tell us what is expected.
        for name, value in params.items():
            default = signature.parameters[name].default if name in signature.parameters else None
            if _is_number(default) and not _is_number(value):
                raise DetectorSpecInvalidError(
                    f"{cls.__name__} parameter {name}={value!r} must be a number (default {default!r})"
                )
        try:
            _probe(cls, params)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise DetectorSpecInvalidError(_describe_rejection(cls, params, exc)) from exc
        return cls(**params)


def _describe_rejection(cls: type[Detector], params: Mapping[str, Any], exc: Exception) -> str:
    """Name the parameter(s) River rejected, by trying each one on its own."""
    culprits = []
    for name, value in params.items():
        try:
            _probe(cls, {name: value})
        except Exception:  # noqa: BLE001 -- River raises anything on a bad parameter; we name it
            culprits.append(f"{name}={value!r}")
    if culprits:
        return f"{cls.__name__} rejected parameter {', '.join(culprits)}: {exc}"
    return f"{cls.__name__} rejected the combination of parameters {dict(params)!r}: {exc}"
