"""Errors of the window state (under the one root, :class:`~stream_guard.errors.StreamGuardError`)."""

from __future__ import annotations

from stream_guard.errors import StreamGuardError


class StateOpUnknownError(StreamGuardError):
    """A state update carries an op letter outside :class:`~stream_guard.state.ops.Op`.

    Only a StateUpdate whose ops were written by hand (or by a newer version) has one;
    the stores report it as the apply script does (``unknown op <letter>``).
    """
