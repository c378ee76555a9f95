"""Errors of the window state (under the one root, :class:`~stream_guard.errors.StreamGuardError`)."""

from __future__ import annotations

from stream_guard.errors import StreamGuardError


class StateOpUnknownError(StreamGuardError):
    """A state update carries an op letter outside :class:`~stream_guard.state.ops.Op`.

    Only a StateUpdate whose ops were written by hand (or by a newer version) has one;
    the stores report it as the apply script does (``unknown op <letter>``).
    """


class StateUpdateInvalidError(StreamGuardError):
    """A state update was given an argument no store could apply (a non-finite float increment).

    Raised while the update is built, before anything is written: a stage that derives such
    an increment from one record makes that record a dead letter instead of the batch's
    apply failing.
    """
