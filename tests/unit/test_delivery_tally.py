"""DeliveryTracker: each thread's flush answers for the messages that thread produced.

No broker: a client of an address nobody listens on, whose messages time out quickly, so
every delivery report is a failure.
"""

from __future__ import annotations

import threading

import pytest

from stream_guard.errors import DeliveryError
from stream_guard.kafka import DeliveryTracker

_NOWHERE = {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 200, "socket.timeout.ms": 100}


def test_a_failed_delivery_is_raised_by_the_flush_of_the_thread_that_produced_it() -> None:
    tracker = DeliveryTracker(_NOWHERE)
    raised: list[BaseException] = []
    other = threading.Event()
    done = threading.Event()

    def commit_thread() -> None:
        tracker.produce("dead-letters", b"x", b"k")
        other.set()
        done.wait(10)  # the loop's flush serves this thread's report meanwhile
        try:
            tracker.flush(2)
        except DeliveryError as exc:
            raised.append(exc)

    thread = threading.Thread(target=commit_thread)
    thread.start()
    assert other.wait(10)
    tracker.flush(2)  # this thread produced nothing: the other's failure is not its own
    done.set()
    thread.join(10)
    assert len(raised) == 1 and "dead-letters" in str(raised[0]), raised
    tracker.flush(0.1)  # reported once
    tracker.close(0.1)


def test_a_thread_whose_own_message_failed_raises_once() -> None:
    tracker = DeliveryTracker(_NOWHERE)
    tracker.produce("alerts", b"x", b"k")
    with pytest.raises(DeliveryError, match="alerts"):
        tracker.flush(2)
    tracker.flush(0.1)
    tracker.close(0.1)
