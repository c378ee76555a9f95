"""The settings layer stays below every stage, and alert kind names are declared once."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import stream_guard
from stream_guard.alerts.evaluate import DEFAULT_SEVERITY
from stream_guard.settings import ALERT_KINDS, CHECKS

PACKAGE = Path(stream_guard.__file__).parent
SETTINGS = PACKAGE / "settings"


def _stream_guard_imports(path: Path) -> set[str]:
    """Modules of stream_guard that ``path`` imports, at any level (function-local and TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                found.add("stream_guard.settings." + (node.module or ""))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name == "stream_guard" or name.startswith("stream_guard.")}


def test_settings_import_nothing_of_stream_guard_but_errors() -> None:
    """stream_guard.settings imports only itself and stream_guard.errors: the stages import it, never the reverse."""
    files = sorted(SETTINGS.glob("*.py"))
    assert files, SETTINGS
    outside = {
        f"{path.name}: {name}"
        for path in files
        for name in _stream_guard_imports(path)
        if name != "stream_guard.errors" and not name.startswith("stream_guard.settings")
    }
    assert outside == set()


def test_errors_imports_nothing_of_stream_guard() -> None:
    """stream_guard.errors, the one module settings may import, imports nothing of ours either."""
    assert _stream_guard_imports(PACKAGE / "errors.py") == set()


def test_every_alert_kind_raised_is_declared() -> None:
    """Kinds written as literals in the stages (kind="...") and the schema findings are all in ALERT_KINDS."""
    literal = re.compile(r'\bkind="([a-z_]+)"')
    used = {m for path in PACKAGE.rglob("*.py") for m in literal.findall(path.read_text())}
    used -= {"stable", "numeric", "categorical"}  # numpy sort kinds and profile kinds, not alerts
    assert used <= set(ALERT_KINDS), used - set(ALERT_KINDS)
    assert set(DEFAULT_SEVERITY) <= set(ALERT_KINDS)
    assert set(CHECKS) <= set(ALERT_KINDS)
    assert len(set(ALERT_KINDS)) == len(ALERT_KINDS)


def test_importing_settings_loads_no_stage() -> None:
    """In a fresh interpreter, importing stream_guard.settings loads no other stream_guard module."""
    code = "import sys, stream_guard.settings; print(' '.join(m for m in sys.modules if m.startswith('stream_guard')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {m for m in loaded if not m.startswith("stream_guard.settings")} == {"stream_guard", "stream_guard.errors"}
