"""The alert record, mirroring ``schemas/alert.avsc``."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from stream_guard.batch import to_epoch_ms
from stream_guard.settings.kinds import Severity

__all__ = ["CONFIRMED", "REFUTED", "Alert", "Example", "Related", "Severity", "stable_id"]

#: Outcomes of a finding the realised labels settled (``Alert.outcome``).
CONFIRMED, REFUTED = "CONFIRMED", "REFUTED"


@dataclass(frozen=True)
class Example:
    partition: int
    offset: int
    event_id: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class Related:
    """A finding of the same cause, carried by the primary's alert instead of published on its own."""

    kind: str
    feature: str | None
    slice: str
    count: int
    value: float | None = None
    threshold: float | None = None
    severity: Severity | None = None


def stable_id(*parts: object) -> str:
    """A short hex id that is the same for the same parts, on every worker and replay."""
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Alert:
    model: str
    kind: str
    feature: str | None
    slice: str
    severity: Severity
    window_start: int
    window_end: int
    count: int
    total: int
    observed: str
    expected: str
    detector: str
    message: str
    examples: tuple[Example, ...] = ()
    value: float | None = None
    threshold: float | None = None
    status: str = "FIRING"
    emitted_at: int = 0
    rate: float = field(default=0.0)
    #: The incident of the cause this alert stands for (the id of its first primary's incident).
    cause_id: str | None = None
    #: The other findings of the cause in this window (evidence), primary order.
    related: tuple[Related, ...] = ()
    #: How the realised labels settled a finding made before them: ``CONFIRMED`` or ``REFUTED`` (else None).
    outcome: str | None = None

    @property
    def incident_id(self) -> str:
        return stable_id(self.model, self.kind, self.feature or "", self.slice)

    @property
    def alert_id(self) -> str:
        """Same model, kind, feature, slice, window start and status (and outcome, if any): same id."""
        parts: tuple[object, ...] = (self.model, self.kind, self.feature or "", self.slice, self.window_start)
        return stable_id(*parts, self.status, *((self.outcome,) if self.outcome is not None else ()))

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["severity"] = self.severity.value
        record["alert_id"] = self.alert_id
        record["incident_id"] = self.incident_id
        record["examples"] = [asdict(e) for e in self.examples]
        record["related"] = [{**asdict(r), "severity": r.severity and r.severity.value} for r in self.related]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Alert:
        values = {k: v for k, v in record.items() if k not in ("alert_id", "incident_id")}
        values["severity"] = Severity(values["severity"])
        values["examples"] = tuple(Example(**e) for e in values["examples"])
        values["related"] = tuple(
            Related(**{**r, "severity": r.get("severity") and Severity(r["severity"])})
            for r in values.get("related") or ()
        )
        for name in ("window_start", "window_end", "emitted_at"):
            values[name] = to_epoch_ms(values[name])
        return cls(**values)
