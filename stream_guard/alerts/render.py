"""Alerts for people: one or two readable lines each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _clock(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%H:%M:%S")
    return datetime.fromtimestamp(int(value) / 1000, UTC).strftime("%H:%M:%S")


def render_alert(record: dict[str, Any]) -> str:
    """``CRITICAL fraud type_mismatch amount [12:00:00-12:00:10] ...`` from a decoded alert record."""
    where = record["feature"] or "-"
    if record.get("slice"):
        where += f" @ {record['slice']}"
    examples = ", ".join(
        f"p{e['partition']}@{e['offset']}" + (f"={e['value']}" if e.get("value") else "")
        for e in record["examples"][:3]
    )
    related = ", ".join(
        f"{r['kind']} {r['feature'] or '-'}" + (f" @ {r['slice']}" if r.get("slice") else "") + f" ({r['count']})"
        for r in record.get("related") or []
    )
    status = "" if record["status"] == "FIRING" else f" {record['status']}"
    if record.get("outcome"):
        status += f" {record['outcome']}"
    return (
        f"ALERT {record['severity']:<8}{status} {record['model']} {record['kind']} {where} "
        f"[{_clock(record['window_start'])}-{_clock(record['window_end'])}] "
        f"{record['count']}/{record['total']} events: {record['message']}"
        + (f"\n        examples: {examples}" if examples else "")
        + (f"\n        related: {related}" if related else "")
    )
