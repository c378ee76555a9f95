"""Files shipped with stream_guard: the Avro schemas of alerts and of the sample model."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def schema_dir() -> Path:
    """``schemas/``: inside an installed wheel, or beside the package in a source checkout."""
    for candidate in (_PACKAGE / "schemas", _PACKAGE.parent / "schemas"):
        if (candidate / "alert.avsc").is_file():
            return candidate
    raise FileNotFoundError("stream_guard's schemas/ directory is missing from the installation")
