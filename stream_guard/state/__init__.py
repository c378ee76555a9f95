"""Window state: the key layout, the state operations, and the two stores of one interface.

* :mod:`~stream_guard.state.keys`: every Redis key name (:class:`ModelKeys`, :class:`Fence`);
* :mod:`~stream_guard.state.ops`: the op vocabulary (:class:`Op`), declared once;
* :mod:`~stream_guard.state.update`: :class:`StateUpdate` (what a batch writes) and
  :class:`WindowSnapshot` (what a closed window reads);
* :mod:`~stream_guard.state.protocol`: the interface (:class:`ModelState` and its parts);
* :mod:`~stream_guard.state.window_store`: :class:`WindowStore`, in Redis;
* :mod:`~stream_guard.state.memory`: :class:`MemoryState`, in process memory;
* :mod:`~stream_guard.state.closing`: :func:`close_due_windows`, over either store.
"""

from typing import TYPE_CHECKING

from stream_guard.state.closing import ClosedWindows, close_due_windows
from stream_guard.state.keys import Fence, ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.ops import Op
from stream_guard.state.protocol import FencedState, IncidentState, LabelState, ModelState, WindowState
from stream_guard.state.update import StateUpdate, WindowSnapshot
from stream_guard.state.window_store import WindowStore

__all__ = [
    "ClosedWindows",
    "Fence",
    "FencedState",
    "IncidentState",
    "LabelState",
    "MemoryState",
    "ModelKeys",
    "ModelState",
    "Op",
    "StateUpdate",
    "WindowSnapshot",
    "WindowState",
    "WindowStore",
    "close_due_windows",
]

if TYPE_CHECKING:

    def _both_stores_implement_the_interface(memory: MemoryState, on_redis: WindowStore) -> list[ModelState]:
        """Never called: mypy checks here that each store is a ModelState."""
        return [memory, on_redis]
