"""Alerts: what a closed window's findings become, and how they reach the alerts topic."""

from stream_guard.alerts.model import Alert, Example, Severity

__all__ = ["Alert", "Example", "Severity"]
