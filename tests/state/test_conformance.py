"""Conformance of the window-state stores: the same sequences give the same results on each.

Every test runs three times, through the ``store_type`` fixture: on a :class:`MemoryState`, on
a :class:`WindowStore` over a real redis-server and on one over a real 3-node Redis Cluster
(the session fixtures of tests/conftest.py start them on free ports; those cases are marked
``integration``); each test's model has its own name, so on the Cluster their slots spread
over the three nodes. Each test pins its results explicitly, so every store is held to the
same values; besides, every test ends
by comparing the whole key space with what the memory store holds after the same steps
(:func:`run_on_both`, redis and cluster cases).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from stream_guard.alerts.lifecycle import IncidentTracker, LifecycleSettings
from stream_guard.alerts.model import Alert, Severity
from stream_guard.metrics import store as s
from stream_guard.metrics.labels import Label, LabelJoiner
from stream_guard.metrics.slices import MetricsSettings
from stream_guard.state import (
    Fence,
    MemoryState,
    ModelKeys,
    ModelState,
    Op,
    StateUpdate,
    WindowSnapshot,
    WindowStore,
    close_due_windows,
)
from stream_guard.state.client import RedisClient
from stream_guard.state.incident import Observation
from stream_guard.state.ops import split_ops

WINDOW_MS = 10_000
LATENESS_MS = 2_000
IDLE_MS = 5_000
RETENTION_S = 3_600
BASE_MS = 1_700_000_000_000  # a multiple of WINDOW_MS
A, B = "fraud.inferences:0", "fraud.inferences:1"
LABELS = "fraud.labels:0"
LEASE_MS = 60_000


# --------------------------------------------------------------------------- the two stores


@dataclass
class Harness:
    """One store under test, and a reader of its whole key space."""

    store: ModelState
    keys: ModelKeys
    client: RedisClient | None = None
    #: The same server without decoding (HyperLogLogs are binary strings).
    raw: RedisClient | None = None
    #: Every step's observable result, in order (compared across stores).
    log: list[Any] = field(default_factory=list)

    def dump(self) -> dict[str, tuple[str, Any, bool]]:
        """key -> (type, value, has a TTL); HyperLogLogs by their count."""
        out: dict[str, tuple[str, Any, bool]] = {}
        if self.client is None:
            assert isinstance(self.store, MemoryState)
            mem = self.store
            for key in mem.key_names():
                kind = mem.key_type(key)
                value: Any = {
                    "hash": mem.hgetall,
                    "list": mem.lrange,
                    "zset": mem.zrange,
                    "string": mem.get,
                    "hll": mem.pfcount,
                }[kind](key)
                out[key] = (kind, value, mem.deadline(key) is not None)
            return out
        client = self.client
        for key in sorted(client.scan_iter(match=f"{self.keys.base}*", count=1000)):
            kind = client.type(key)
            if kind == "hash":
                value = client.hgetall(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "zset":
                value = [(m, float(sc)) for m, sc in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "string":
                raw = self.raw.get(key) if self.raw is not None else None
                if raw is not None and raw.startswith(b"HYLL"):
                    kind, value = "hll", client.pfcount(key)
                else:
                    value = client.get(key)
            else:
                raise AssertionError(f"unexpected type {kind} of {key}")
            out[key] = (kind, value, client.pttl(key) > 0)
        return out

    def apply(self, updates: list[StateUpdate], now_ms: int) -> Any:
        """Apply, logging and returning the result or the error (normalised across stores)."""
        try:
            result: Any = list(self.store.apply(updates, now_ms))
        except ResponseError as exc:
            result = error_text(exc)
        self.log.append(("apply", result))
        return result


def error_text(exc: ResponseError) -> str:
    """The store's own message, without what redis-py and the script runner wrap around it."""
    text = str(exc)
    for pattern in (
        r"FENCE \S+ applied up to \d+, batch starts at \d+",
        r"unknown op \S+",
        r"WRONGTYPE",
        r"hash value is not an integer",
        r"hash value is not a float",
        r"value is NaN or Infinity",
    ):
        match = re.search(pattern, text)
        if match:
            return match.group(0)
    return text


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ]
)
def store_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Factory = Callable[..., Harness]


def _factory(store_type: str, request: pytest.FixtureRequest) -> Factory:
    client = raw = None
    if store_type == "redis":
        server = request.getfixturevalue("redis_server")
        client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
        raw = redis.Redis(host="127.0.0.1", port=server.port)
    elif store_type == "cluster":
        nodes = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(nodes.url, decode_responses=True)
        raw = RedisCluster.from_url(nodes.url)

    def make(*, idle_ms: int = IDLE_MS, window_ms: int = WINDOW_MS, model: str | None = None) -> Harness:
        keys = ModelKeys("sgc", model or f"m{uuid.uuid4().hex[:8]}")
        settings: dict[str, Any] = {
            "window_ms": window_ms,
            "lateness_ms": LATENESS_MS,
            "idle_ms": idle_ms,
            "retention_s": RETENTION_S,
            "worker_id": "w1",
        }
        if client is None:
            return Harness(MemoryState(keys, **settings), keys)
        return Harness(WindowStore(client, keys, **settings), keys, client, raw)

    return make


@pytest.fixture
def make_store(store_type: str, request: pytest.FixtureRequest) -> Factory:
    """Builds stores of ``store_type``, each on its own model keys."""
    return _factory(store_type, request)


Scenario = Callable[[Harness], None]


def run_on_both(
    request: pytest.FixtureRequest, scenario: Scenario, backend: str = "redis", **settings: Any
) -> tuple[Harness, Harness]:
    """Run ``scenario`` on a fresh store in memory and on ``backend`` (``redis`` or ``cluster``);
    their logs and key spaces must agree."""
    model = f"m{uuid.uuid4().hex[:8]}"  # the same name in both, as results may carry key names
    memory = _factory("memory", request)(model=model, **settings)
    on_redis = _factory(backend, request)(model=model, **settings)
    scenario(memory)
    scenario(on_redis)
    assert memory.log == on_redis.log
    assert memory.dump() == on_redis.dump()
    return memory, on_redis


@pytest.fixture
def check(store_type: str, request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """On the redis run, also run the scenario on both stores and compare everything they did."""

    def compare(scenario: Scenario, **settings: Any) -> None:
        if store_type != "memory":
            run_on_both(request, scenario, store_type, **settings)

    return compare


def update(
    first: int,
    last: int,
    max_event_ms: int,
    source: str = A,
    *,
    fence: Fence = Fence.EVENTS,
) -> StateUpdate:
    return StateUpdate(source, first, last, max_event_ms, fence=fence)


def counted(keys: ModelKeys, first: int, last: int, event_ms: int, source: str = A) -> StateUpdate:
    """A batch of events of one window: opens it and counts ``last - first + 1`` events."""
    u = update(first, last, event_ms, source)
    start = (event_ms // WINDOW_MS) * WINDOW_MS
    u.open_window(start)
    u.incr(keys.window(start), "n", last - first + 1)
    return u


def snap(snapshot: WindowSnapshot) -> tuple[int, int, dict[str, str], dict[str, list[dict[str, Any]]]]:
    return snapshot.start_ms, snapshot.end_ms, snapshot.fields, snapshot.examples


# --------------------------------------------------------------------------- every op


def every_op(h: Harness) -> None:
    k = h.keys
    w = k.window(BASE_MS)
    u = update(0, 9, BASE_MS + 100)
    u.open_window(BASE_MS)
    u.incr(w, "n", 10)
    u.incr(w, "f|range|amount|*", 3)
    u.incr_float(w, "sum", 1.5)
    u.incr_float(w, "sum", 0.25)
    u.incr_many(w, [("n", 2), ("sum", 0.5), ("zero", 0), ("m", -3)])
    u.incr_many(w, [("m", 4)])
    u.set(w, "d|range|amount|*", json.dumps([5.0, 1.0]))
    for i in range(4):
        u.add_example(k.examples(BASE_MS, "range|amount|*"), {"offset": i}, 3)
    u.add_distinct(k.cardinality(BASE_MS, "country"), ["de", "fr", "de"])
    u.set(w, "hll|card|country", k.cardinality(BASE_MS, "country"))
    u.set_once(k.prediction("e1"), "first", 600, k.bucket(BASE_MS), ["*|st", "a=1|st"])
    u.set_once(k.prediction("e1"), "second", 600, k.bucket(BASE_MS), ["*|st"])
    u.set_once(k.prediction("e2"), "other", 600, k.bucket(BASE_MS), ["*|st"])
    u.delete(k.prediction("e2"))
    # e1 is there already and e4 comes twice: only e4's first and e5 count, once each.
    u.set_once_counted(
        [
            (k.prediction("e1"), "again", [0, 1]),
            (k.prediction("e4"), "fourth", [0, 2]),
            (k.prediction("e4"), "twice", [0, 2]),
            (k.prediction("e5"), "fifth", [0]),
        ],
        600,
        [(k.bucket(BASE_MS), "*|st"), (k.bucket(BASE_MS), "a=1|st"), (k.bucket(BASE_MS), "b=2|st")],
    )
    u.delete_all([k.prediction("e5"), k.prediction("e2")])
    u.expire(k.bucket(BASE_MS), 7200)
    u.zadd(k.metrics_index, BASE_MS - 60_000, str(BASE_MS - 60_000))
    u.zadd(k.metrics_index, BASE_MS, str(BASE_MS))
    u.ztrim_below(k.metrics_index, BASE_MS)
    u.add_finding(
        w,
        "f|nulls|x|*",
        2,
        cap=5,
        overflow=("f|nulls|*overflow*|*", "d|nulls|*overflow*|*", "capped"),
        detail=("d|nulls|x|*", "[1, 2]"),
        examples=(k.examples(BASE_MS, "nulls|x|*"), [{"offset": 7}], 3),
    )
    later = k.bucket(BASE_MS + 60_000)
    u.set_once(k.held("h1"), "held", 600, later, ["*|lh"])
    u.zadd(k.held_index, BASE_MS, "h1")
    u.set_once(k.prediction("e3"), "third", 600, later, ["*|st"])
    u.set_once(k.held("h2"), "held", 600, later, ["*|lh"])
    u.zadd(k.held_index, BASE_MS, "h2")
    taken = [(k.held("h1"), k.prediction("e3"), "h1"), (k.held("h2"), k.held("h2"), "h2")]
    u.take(taken, k.held_index, later, [("*|lm", 1), ("*|ae", 0.5)])
    u.take(taken[:1], k.held_index, later, [("*|lm", 1), ("*|ae", 0.5)])
    assert {op for op, _ in split_ops(u.ops)} == set(Op), "the scenario uses every op"
    h.apply([u], now_ms=BASE_MS)
    h.log.append(("snapshot", snap(h.store.snapshot(BASE_MS))))


def test_every_op_does_the_same(make_store: Factory, check: Callable[..., None]) -> None:
    """Each op of the vocabulary (W H F M S L P E X O D K Z R C T) writes the same keys, values and TTLs."""
    h = make_store()
    every_op(h)
    k = h.keys
    assert h.log[0] == ("apply", [1])
    start, end, fields, examples = h.log[1][1]
    assert (start, end) == (BASE_MS, BASE_MS + WINDOW_MS)
    assert fields == {
        "n": "12",
        "f|range|amount|*": "3",
        "sum": "2.25",
        "m": "1",
        "d|range|amount|*": "[5.0, 1.0]",
        "hll|card|country": k.cardinality(BASE_MS, "country"),
        "card|country": "2",
        "fk": "1",
        "f|nulls|x|*": "2",
        "d|nulls|x|*": "[1, 2]",
    }
    assert examples == {"range|amount|*": [{"offset": 0}, {"offset": 1}, {"offset": 2}], "nulls|x|*": [{"offset": 7}]}
    dump = h.dump()
    assert dump[k.prediction("e1")] == ("string", "first", True)
    assert dump[k.prediction("e4")] == ("string", "fourth", True)
    assert k.prediction("e2") not in dump and k.prediction("e5") not in dump
    assert dump[k.bucket(BASE_MS)] == ("hash", {"*|st": "4", "a=1|st": "1", "b=2|st": "1"}, True)
    assert dump[k.metrics_index] == ("zset", [(str(BASE_MS), float(BASE_MS))], True)
    assert dump[k.windows] == ("zset", [(str(BASE_MS), float(BASE_MS))], False)
    assert dump[k.applied] == ("hash", {A: "9"}, False)
    # T took both held labels once (amounts times two): the second take found h1 gone and counted nothing.
    assert dump[k.bucket(BASE_MS + 60_000)] == ("hash", {"*|lh": "2", "*|st": "1", "*|lm": "2", "*|ae": "1"}, True)
    assert not {k.held("h1"), k.held("h2"), k.prediction("e3"), k.held_index} & set(dump)
    check(every_op)


def ttls(h: Harness, now_ms: int) -> dict[str, int | None]:
    """Remaining TTL of every key, in whole hundreds of seconds (None: no TTL)."""
    out: dict[str, int | None] = {}
    for key in h.dump():
        if h.client is not None:
            ms = h.client.pttl(key)
            out[key] = None if ms < 0 else round(ms / 100_000)
        else:
            assert isinstance(h.store, MemoryState)
            deadline = h.store.deadline(key)
            out[key] = None if deadline is None else round((deadline - now_ms) / 100_000)
    return out


def test_keys_get_the_retention_unless_they_have_their_own_ttl(make_store: Factory) -> None:
    """Retention on every touched key; E's own TTL; X's and O's EX; an update's ttl_s replaces the retention."""
    h = make_store()
    k = h.keys
    now = BASE_MS
    every_op(h)
    u = StateUpdate(LABELS, 0, 0, BASE_MS, fence=Fence.LABELS, ttl_s=900)
    u.incr(k.bucket(BASE_MS + 60_000), "*|lu", 1)
    h.apply([u], now_ms=now)
    assert ttls(h, now) == {
        k.applied: None,
        k.watermarks: None,
        k.watermarks_seen: None,
        k.windows: None,
        k.window(BASE_MS): 36,
        k.examples(BASE_MS, "range|amount|*"): 36,
        k.examples(BASE_MS, "nulls|x|*"): 36,
        k.cardinality(BASE_MS, "country"): 36,
        k.prediction("e1"): 6,
        k.prediction("e4"): 6,
        k.bucket(BASE_MS): 72,
        k.metrics_index: 36,
        k.labels_applied: None,
        k.labels_watermarks: None,
        k.labels_seen: None,
        k.bucket(BASE_MS + 60_000): 9,
    }


# --------------------------------------------------------------------------- the fence


def fence_sequence(h: Harness) -> None:
    k = h.keys
    h.apply([counted(k, 0, 9, BASE_MS + 100), counted(k, 0, 4, BASE_MS + 200, B)], now_ms=1_000)
    # Redelivered: skipped whole, nothing counted twice.
    h.apply([counted(k, 0, 9, BASE_MS + 900), counted(k, 5, 9, BASE_MS + 300, B)], now_ms=2_000)
    # Overlapping A (5-14 after 9 applied) fails; B's next batch in the same call still applies.
    h.apply([counted(k, 5, 14, BASE_MS + 400), counted(k, 10, 11, BASE_MS + 150, B)], now_ms=3_000)
    h.log.append(("offsets", h.store.applied_offsets([A, B, "fraud.inferences:9"])))
    h.log.append(("snapshot", snap(h.store.snapshot(BASE_MS))))
    h.log.append(("watermark", h.store.global_watermark(3_000)))


def test_redeliveries_are_skipped_and_overlaps_fail(make_store: Factory, check: Callable[..., None]) -> None:
    """A redelivered batch applies nothing (0); an overlapping one fails with FENCE, the others apply."""
    h = make_store()
    fence_sequence(h)
    assert h.log == [
        ("apply", [1, 1]),
        ("apply", [0, 1]),
        ("apply", f"FENCE {A} applied up to 9, batch starts at 5"),
        ("offsets", {A: 9, B: 11}),
        ("snapshot", (BASE_MS, BASE_MS + WINDOW_MS, {"n": "22"}, {})),
        # B's watermark stays at its largest event time (300), A's at 100.
        ("watermark", float(BASE_MS + 100)),
    ]
    check(fence_sequence)


def test_labels_have_their_own_fence(make_store: Factory) -> None:
    """A labels update moves the labels fence and watermarks only: the events' windows do not see it."""
    h = make_store()
    k = h.keys
    h.apply([counted(k, 0, 9, BASE_MS + 100)], now_ms=0)
    label = update(0, 3, BASE_MS + 50_000, A, fence=Fence.LABELS)
    label.incr(k.bucket(BASE_MS), "*|lm", 4)
    assert h.apply([label], now_ms=0) == [1]
    assert h.store.applied_offsets([A]) == {A: 9}
    assert h.store.applied_offsets([A], Fence.LABELS) == {A: 3}
    assert h.store.global_watermark(0) == BASE_MS + 100
    assert h.apply([update(2, 5, BASE_MS, A, fence=Fence.LABELS)], now_ms=0) == (
        f"FENCE {A} applied up to 3, batch starts at 2"
    )


def test_errors_are_the_same(make_store: Factory) -> None:
    """An unknown op and an op on a key of another type fail alike; nothing of a failed update stays."""
    h = make_store()
    k = h.keys
    bad = update(0, 0, BASE_MS)
    bad.incr(k.window(BASE_MS), "n", 1)
    bad.ops += ["Q", 5]
    assert h.apply([bad], now_ms=0) == "unknown op Q"
    assert h.store.snapshot(BASE_MS).fields == {}
    assert h.store.applied_offsets([A]) == {}
    first = update(0, 0, BASE_MS)
    first.incr(k.window(BASE_MS), "n", 1)
    assert h.apply([first], now_ms=0) == [1]
    wrong = update(1, 1, BASE_MS)
    wrong.add_example(k.window(BASE_MS), {"x": 1}, 3)
    assert h.apply([wrong], now_ms=0) == "WRONGTYPE"
    text = update(2, 2, BASE_MS)
    text.set(k.window(BASE_MS), "d|x", "abc")
    text.incr(k.window(BASE_MS), "d|x", 1)
    assert h.apply([text], now_ms=0) == "hash value is not an integer"
    assert h.store.snapshot(BASE_MS).fields == {"n": "1"}
    assert h.store.applied_offsets([A]) == {A: 0}


def failing_step_sequence(h: Harness) -> None:
    k = h.keys
    first = counted(k, 0, 4, BASE_MS + 100)
    first.set(k.window(BASE_MS), "d|x", "abc")
    h.apply([first], now_ms=0)
    # A later step of the batch fails (a float sum on text, an infinite increment written by
    # hand, an integer increment on text, a list op on a hash): nothing of it may stay.
    for i, step in enumerate(("F", "F-inf", "H", "L")):
        bad = counted(k, 5, 9, BASE_MS + 200 + i)
        bad.incr(k.bucket(BASE_MS), "*|n", 5)
        bad.zadd(k.metrics_index, BASE_MS, str(BASE_MS))
        if step == "F":
            bad.incr_float(k.window(BASE_MS), "d|x", 1.5)
        elif step == "F-inf":
            bad.ops += [Op.INCR_FLOAT.value, 5, "sum", "inf"]
        elif step == "H":
            bad.incr(k.window(BASE_MS), "d|x", 1)
        else:
            bad.add_example(k.window(BASE_MS), {"x": 1}, 3)
        h.apply([bad], now_ms=1_000)
        h.log.append(
            (step, h.store.applied_offsets([A]), h.store.snapshot(BASE_MS).fields, h.store.global_watermark(0))
        )
    # The retry of the same offsets, without the failing op, applies whole.
    retry = counted(k, 5, 9, BASE_MS + 200)
    retry.incr(k.bucket(BASE_MS), "*|n", 5)
    h.apply([retry], now_ms=1_000)
    h.log.append(
        ("retry", h.store.applied_offsets([A]), h.store.snapshot(BASE_MS).fields, h.dump().get(k.bucket(BASE_MS)))
    )


def test_a_batch_whose_step_fails_applies_nothing_and_its_retry_applies(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """A failing op leaves no write of its batch, not even the fence: the retry is counted, not fenced out."""
    h = make_store()
    failing_step_sequence(h)
    before = {A: 4}, {"n": "5", "d|x": "abc"}, float(BASE_MS + 100)
    assert [entry[0] for entry in h.log] == [
        "apply",
        "apply",
        "F",
        "apply",
        "F-inf",
        "apply",
        "H",
        "apply",
        "L",
        "apply",
        "retry",
    ]
    assert [entry[1] for entry in h.log[1:9:2]] == [
        "hash value is not a float",
        "value is NaN or Infinity",
        "hash value is not an integer",
        "WRONGTYPE",
    ]
    assert [entry[1:] for entry in h.log[2:9:2]] == [before] * 4
    assert h.log[-1] == ("retry", {A: 9}, {"n": "10", "d|x": "abc"}, ("hash", {"*|n": "5"}, True))
    check(failing_step_sequence)


# --------------------------------------------------------------------------- windows


def window_sequence(h: Harness) -> None:
    k, store = h.keys, h.store
    store.register_sources([A, B], now_ms=0)
    h.log.append(("held by a registered source", store.global_watermark(0), store.due_windows(0)))
    h.apply([counted(k, 0, 9, BASE_MS + 500)], now_ms=0)
    h.apply([counted(k, 10, 19, BASE_MS + 2 * WINDOW_MS + 100)], now_ms=0)
    h.log.append(("B not yet sent", store.due_windows(1_000)))
    # B reaches the end of the first window plus the lateness: it is due, the second is not.
    h.apply([counted(k, 0, 4, BASE_MS + WINDOW_MS + LATENESS_MS, B)], now_ms=1_000)
    h.log.append(("due", store.due_windows(1_000), store.open_windows()))
    # A late event of the first window, after the watermark passed it: counted in its window.
    h.apply([counted(k, 5, 5, BASE_MS + 1, B)], now_ms=1_500)
    h.log.append(("late", snap(store.snapshot(BASE_MS))))
    # Registering again (a rebalance) keeps the watermarks a source already has.
    store.register_sources([A], now_ms=1_500)
    h.log.append(("registered again", store.global_watermark(1_500)))
    # B goes idle while A keeps sending: A alone holds the watermark.
    h.apply([counted(k, 20, 20, BASE_MS + 2 * WINDOW_MS + 50)], now_ms=6_000)
    h.log.append(("B idle", store.global_watermark(6_600), store.due_windows(6_600)))
    # Everyone idle: the stream stopped, every window is due.
    h.log.append(("all idle", store.global_watermark(10 * IDLE_MS), store.due_windows(10 * IDLE_MS)))


def test_due_windows_follow_the_slowest_active_source(make_store: Factory, check: Callable[..., None]) -> None:
    """Registered sources hold windows; due = watermark past end + lateness; idle sources stop holding."""
    h = make_store()
    window_sequence(h)
    late = BASE_MS + 2 * WINDOW_MS
    assert [entry for entry in h.log if entry[0] != "apply"] == [
        ("held by a registered source", 0.0, []),
        ("B not yet sent", []),
        ("due", [BASE_MS], [BASE_MS, BASE_MS + WINDOW_MS, late]),
        ("late", (BASE_MS, BASE_MS + WINDOW_MS, {"n": "11"}, {})),
        ("registered again", float(BASE_MS + WINDOW_MS + LATENESS_MS)),
        ("B idle", float(late + 100), [BASE_MS]),
        ("all idle", math.inf, [BASE_MS, BASE_MS + WINDOW_MS, late]),
    ]
    check(window_sequence)


def closing_sequence(h: Harness) -> None:
    k, store = h.keys, h.store
    h.apply([counted(k, 0, 9, BASE_MS + 500)], now_ms=0)
    h.log.append(("claim", store.claim(BASE_MS, LEASE_MS), store.claim(BASE_MS, LEASE_MS)))
    snapshot = store.snapshot(BASE_MS)
    # Events arrived after the snapshot: finish keeps the window open (and drops the lease).
    h.apply([counted(k, 10, 11, BASE_MS + 600)], now_ms=0)
    store.finish(snapshot)
    h.log.append(("finish with new events", store.open_windows(), store.claim(BASE_MS, LEASE_MS)))
    snapshot = store.snapshot(BASE_MS)
    store.finish(snapshot)
    h.log.append(("finish without", store.open_windows(), snap(snapshot)))
    # A late event for the closed window opens it again, on top of the counts it had.
    h.apply([counted(k, 12, 12, BASE_MS + 700)], now_ms=0)
    h.log.append(("reopened", store.open_windows(), store.snapshot(BASE_MS).fields))
    assert store.claim(BASE_MS, LEASE_MS)
    store.finish(store.snapshot(BASE_MS))
    # A window of dead letters only has no "n": it closes too.
    dead = update(13, 13, BASE_MS + WINDOW_MS)
    dead.open_window(BASE_MS + WINDOW_MS)
    dead.incr(k.window(BASE_MS + WINDOW_MS), "dl", 1)
    h.apply([dead], now_ms=0)
    assert store.claim(BASE_MS + WINDOW_MS, LEASE_MS)
    store.finish(store.snapshot(BASE_MS + WINDOW_MS))
    h.log.append(("dead letters only", store.open_windows()))


def test_finish_closes_unless_events_arrived(make_store: Factory, check: Callable[..., None]) -> None:
    """A claimed window cannot be claimed again; finish drops it unless its n changed, and drops the lease."""
    h = make_store()
    closing_sequence(h)
    assert h.log == [
        ("apply", [1]),
        ("claim", True, False),
        ("apply", [1]),
        ("finish with new events", [BASE_MS], True),
        ("finish without", [], (BASE_MS, BASE_MS + WINDOW_MS, {"n": "12"}, {})),
        ("apply", [1]),
        ("reopened", [BASE_MS], {"n": "13"}),
        ("apply", [1]),
        ("dead letters only", []),
    ]
    assert h.keys.lease(BASE_MS) not in h.dump()
    check(closing_sequence)


def close_loop_sequence(h: Harness) -> None:
    k, store = h.keys, h.store
    h.apply([counted(k, 0, 9, BASE_MS + 1), counted(k, 10, 10, BASE_MS + 3 * WINDOW_MS)], now_ms=0)
    h.apply([counted(k, 11, 11, BASE_MS + WINDOW_MS + 5)], now_ms=0)
    assert store.claim(BASE_MS + WINDOW_MS, LEASE_MS)  # another worker holds this one
    closed = close_due_windows(store, lambda snapshot: snapshot.events, now_ms=0, lease_ms=LEASE_MS)
    h.log.append(("due", closed.starts, closed.outputs, store.open_windows()))
    final = close_due_windows(store, lambda snapshot: snapshot.events, now_ms=0, lease_ms=LEASE_MS, final=True)
    h.log.append(("final", final.starts, final.outputs, store.open_windows()))


def test_close_due_windows_closes_claimable_due_windows(make_store: Factory, check: Callable[..., None]) -> None:
    """close_due_windows: due windows oldest first, skipping held leases; final closes every open one."""
    h = make_store()
    close_loop_sequence(h)
    assert h.log[2] == ("due", [BASE_MS], [10], [BASE_MS + WINDOW_MS, BASE_MS + 3 * WINDOW_MS])
    assert h.log[3] == ("final", [BASE_MS + 3 * WINDOW_MS], [1], [BASE_MS + WINDOW_MS])
    check(close_loop_sequence)


# --------------------------------------------------------------------------- labels

SETTINGS = MetricsSettings(bucket_s=60, retention_s=7_200)


def store_predictions(h: Harness) -> None:
    k = h.keys
    u = update(0, 3, BASE_MS)
    bucket = (BASE_MS // 60_000) * 60_000
    for i, score in enumerate([0.9, 0.2, 0.7, 0.4]):
        u.set_once(
            k.prediction(f"e{i}"),
            s.encode_prediction(bucket, ["a=1"], int(score > 0.5), score),
            600,
            k.bucket(bucket),
            ["*|st", "a=1|st"],
        )
    h.apply([u], now_ms=0)


def join_result(h: Harness, labels: list[Label], now_ms: int) -> tuple[Any, ...]:
    result = LabelJoiner(h.keys, SETTINGS).join(labels, h.store, now_ms=now_ms)
    out = (
        result.matched,
        result.unmatched,
        result.skipped,
        result.invalid,
        result.event_ids,
        result.errors.tolist(),
        result.last_offsets,
    )
    h.log.append(("join", out))
    return out


def label_sequence(h: Harness) -> None:
    store_predictions(h)
    first = [
        Label("e0", 1, LABELS, 0, BASE_MS + 1_000),
        Label("e1", 1, LABELS, 1, BASE_MS + 1_000),
        Label("nobody", 0, LABELS, 2, BASE_MS + 120_000),
        Label(None, None, LABELS, 3, None),
        Label("e0", 0, LABELS, 4, BASE_MS + 1_000),  # a second label of e0: unmatched
    ]
    join_result(h, first, BASE_MS + 200_000)
    join_result(h, first, BASE_MS + 200_000)  # redelivered: all skipped
    overlap = [*first[3:], Label("e2", 1, LABELS, 5, BASE_MS + 2_000)]
    join_result(h, overlap, BASE_MS + 200_000)
    h.log.append(("fence", h.store.applied_offsets([LABELS], Fence.LABELS), h.store.applied_offsets([LABELS])))


def test_label_joins_are_fenced_and_count_alike(make_store: Factory, check: Callable[..., None]) -> None:
    """Labels join stored predictions once, count unmatched ones, skip redeliveries, on the labels fence."""
    h = make_store()
    label_sequence(h)
    k = h.keys
    bucket = (BASE_MS // 60_000) * 60_000
    assert h.log[1:] == [
        ("join", (2, 2, 0, 1, ["e0", "e1"], [0, 1], {LABELS: 4})),
        ("join", (0, 0, 5, 0, [], [], {LABELS: 4})),
        ("join", (1, 0, 2, 0, ["e2"], [0], {LABELS: 5})),
        ("fence", {LABELS: 5}, {}),
    ]
    dump = h.dump()
    assert dump[k.bucket(bucket)][1] == {
        "*|st": "4",
        "a=1|st": "4",
        "*|lm": "3",
        "a=1|lm": "3",
        "*|tp": "2",
        "a=1|tp": "2",
        "*|fn": "1",
        "a=1|fn": "1",
        "*|lu": "1",
        "_v": "3",  # the three updates that wrote it (the first join's counters and its unmatched label, e2's join)
    }
    assert dump[k.bucket(bucket + 120_000)][1] == {"*|lu": "1", "_v": "1"}
    assert [key for key in dump if ":pred:" in key] == [k.prediction("e3")]
    assert dump[k.metrics_index][1] == [(str(bucket), float(bucket)), (str(bucket + 120_000), float(bucket + 120_000))]
    check(label_sequence)


REGRESSION = MetricsSettings(bucket_s=60, retention_s=7_200, task="regression")


def regression_sequence(h: Harness) -> None:
    k = h.keys
    bucket = (BASE_MS // 60_000) * 60_000
    u = update(0, 2, BASE_MS)
    for i, predicted in enumerate([1.5, 4.0, 2.0]):
        u.set_once(
            k.prediction(f"r{i}"), s.encode_prediction(bucket, [], predicted, None), 600, k.bucket(bucket), ["*|st"]
        )
    h.apply([u], now_ms=0)
    labels = [
        Label("r0", 1.0, LABELS, 0, BASE_MS),
        Label("r1", 4.75, LABELS, 1, BASE_MS),
        Label("r2", "x", LABELS, 2, BASE_MS),
    ]
    result = LabelJoiner(k, REGRESSION, error_tolerance=0.6).join(labels, h.store, now_ms=BASE_MS)
    h.log.append(("join", result.matched, result.invalid, result.errors.tolist(), result.abs_errors.tolist()))
    h.log.append(("bucket", h.dump()[k.bucket(bucket)][1]))


def test_regression_labels_sum_float_errors_alike(make_store: Factory, check: Callable[..., None]) -> None:
    """Regression labels add absolute and squared errors (F ops through the labels fence) the same way."""
    h = make_store()
    regression_sequence(h)
    assert h.log[1:] == [
        ("join", 2, 1, [0, 1], [0.5, 0.75]),
        ("bucket", {"*|st": "3", "*|lm": "2", "*|ae": "1.25", "*|se": "0.8125", "_v": "1"}),
    ]
    check(regression_sequence)


# --------------------------------------------------------------------------- incidents

# remind_after_s = cooldown_s: an open incident is reminded once the cooldown passed (the
# timer these scenarios pin); escalations have scenarios of their own below.
LIFECYCLE = LifecycleSettings(cooldown_s=60, resolve_after_s=30, remind_after_s=60)


def alert(window_start: int, count: int = 5, kind: str = "range") -> Alert:
    return Alert(
        model="fraud",
        kind=kind,
        feature="amount",
        slice="*",
        severity=Severity.WARNING,
        window_start=window_start,
        window_end=window_start + WINDOW_MS,
        count=count,
        total=100,
        observed="x",
        expected="y",
        detector="test",
        message="m",
    )


def incident_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=LIFECYCLE)

    def window(start: int, *alerts: Alert) -> None:
        raised = list(alerts)
        published = tracker.publishable(raised)
        resolved = tracker.resolved(start + WINDOW_MS, {a.incident_id for a in raised})
        tracker.delivered(start + WINDOW_MS)
        h.log.append(
            (
                start - BASE_MS,
                [a.window_start - BASE_MS for a in published],
                [(r.status, r.window_start - BASE_MS, r.window_end - BASE_MS, r.count, r.observed) for r in resolved],
            )
        )

    window(BASE_MS, alert(BASE_MS))  # opens
    window(BASE_MS + WINDOW_MS, alert(BASE_MS + WINDOW_MS, 3))  # within the cooldown: suppressed
    window(BASE_MS + WINDOW_MS, alert(BASE_MS + WINDOW_MS, 3))  # the same window again: suppressed, not counted
    window(BASE_MS, alert(BASE_MS))  # the opening window retried: published again
    window(BASE_MS + 6 * WINDOW_MS, alert(BASE_MS + 6 * WINDOW_MS, 2))  # cooldown over: a reminder
    window(BASE_MS + 7 * WINDOW_MS, alert(BASE_MS + 7 * WINDOW_MS, 1, kind="nulls"))  # another incident opens
    window(BASE_MS + 9 * WINDOW_MS)  # 30 s after range's last window: range resolves
    window(BASE_MS + 9 * WINDOW_MS)  # nothing left to resolve twice
    window(BASE_MS + 20 * WINDOW_MS)  # nulls resolves


def test_incidents_open_remind_and_resolve_alike(make_store: Factory, check: Callable[..., None]) -> None:
    """Incident decisions (open, suppress, repeat, remind after the cooldown, resolve once) match."""
    h = make_store()
    incident_sequence(h)
    w = WINDOW_MS
    assert h.log == [
        (0, [0], []),
        (w, [], []),
        (w, [], []),
        (0, [0], []),
        (6 * w, [6 * w], []),
        (7 * w, [7 * w], []),
        (9 * w, [], [("RESOLVED", 0, 7 * w, 10, f"clear since {BASE_MS + 7 * w} (event time), 3 windows affected")]),
        (9 * w, [], []),
        (
            20 * w,
            [],
            [("RESOLVED", 7 * w, 8 * w, 1, f"clear since {BASE_MS + 8 * w} (event time), 1 windows affected")],
        ),
    ]
    # Resolved incidents leave tombstones (with the retention's TTL), no open ones.
    tombstones = {key: value for key, value in h.dump().items() if ":incident" in key}
    assert tombstones == {
        h.keys.incident(alert(BASE_MS).incident_id): ("hash", {"resolved_through": str(BASE_MS + 7 * w)}, True),
        h.keys.incident(alert(BASE_MS, kind="nulls").incident_id): (
            "hash",
            {"resolved_through": str(BASE_MS + 8 * w)},
            True,
        ),
    }
    check(incident_sequence)


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["redis", "cluster"])
def test_incident_tracker_on_a_redis_client_is_the_store_s(request: pytest.FixtureRequest, backend: str) -> None:
    """IncidentTracker(client, keys, settings), as the worker builds it, decides as on the store."""
    h = _factory(backend, request)()
    assert h.client is not None
    tracker = IncidentTracker(h.client, h.keys, LIFECYCLE)
    first = alert(BASE_MS)
    assert tracker.publishable([first]) == [dataclasses.replace(first, cause_id=first.incident_id)]
    assert IncidentTracker(h.store, settings=LIFECYCLE).publishable([alert(BASE_MS + WINDOW_MS)]) == []


def reopened_window_sequence(h: Harness) -> None:
    tracker = IncidentTracker(
        h.store, settings=LifecycleSettings(cooldown_s=0, resolve_after_s=3_600, remind_after_s=0)
    )
    for start in (BASE_MS, BASE_MS + WINDOW_MS, BASE_MS):
        h.log.append([a.window_start - BASE_MS for a in tracker.publishable([alert(start)])])


def test_a_window_closed_again_after_a_later_one_published_is_published_again(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """A late event reopens window 0 after window 1 published: its alert is published again (repeat).

    The incident remembers its published windows, so the complete counts of a reopened
    window reach the alerts topic under the same alert id, whichever window published last.
    """
    h = make_store()
    reopened_window_sequence(h)
    assert h.log == [[0], [WINDOW_MS], [0]]
    check(reopened_window_sequence)


def suppressed_window_sequence(h: Harness) -> None:
    tracker = IncidentTracker(
        h.store, settings=LifecycleSettings(cooldown_s=600, resolve_after_s=3_600, remind_after_s=600)
    )
    for start in (BASE_MS, BASE_MS + WINDOW_MS, BASE_MS + WINDOW_MS):
        h.log.append([a.window_start - BASE_MS for a in tracker.publishable([alert(start)])])


def test_a_window_suppressed_by_the_cooldown_stays_suppressed_when_closed_again(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """Only windows that were published are republished: one held back by the cooldown is not."""
    h = make_store()
    suppressed_window_sequence(h)
    assert h.log == [[0], [], []]
    check(suppressed_window_sequence)


def cooldown_both_sides_sequence(h: Harness) -> None:
    tracker = IncidentTracker(
        h.store, settings=LifecycleSettings(cooldown_s=60, resolve_after_s=3_600, remind_after_s=60)
    )
    w = WINDOW_MS
    # 0 opens; 12w is past the cooldown; 3w closes late, within the cooldown of 0; 6w closes
    # late too, at least the cooldown from both published windows; then the onset -7w shows up.
    for start in (BASE_MS, BASE_MS + 12 * w, BASE_MS + 3 * w, BASE_MS + 6 * w, BASE_MS - 7 * w):
        h.log.append([a.window_start - BASE_MS for a in tracker.publishable([alert(start)])])
    record = h.store.resolve_incident(alert(BASE_MS).incident_id, BASE_MS + 20 * WINDOW_MS)
    assert record is not None
    h.log.append([int(record["opened_start"]) - BASE_MS, int(record["last_published_end"]) - BASE_MS])


def test_windows_closed_out_of_order_follow_the_cooldown_on_both_sides(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """A late window is published when no published window is within the cooldown, earlier or later.

    In order this is the usual rule (a reminder once the cooldown passed). Out of order, an
    onset window closed after later ones is published and becomes the incident's start.
    """
    h = make_store()
    cooldown_both_sides_sequence(h)
    w = WINDOW_MS
    assert h.log == [[0], [12 * w], [], [6 * w], [-7 * w], [-7 * w, 13 * w]]
    check(cooldown_both_sides_sequence)


def resolution_retry_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=LIFECYCLE)
    end = BASE_MS + 10 * WINDOW_MS

    def resolved() -> list[tuple[str, int, int, str]]:
        return [
            (r.status, r.window_start - BASE_MS, r.window_end - BASE_MS, r.alert_id)
            for r in tracker.resolved(end, set())
        ]

    tracker.publishable([alert(BASE_MS)])
    h.log.append(("first close", resolved()))
    # The worker died before the broker acknowledged the RESOLVED alert: the window is closed again.
    h.log.append(("closed again", resolved()))
    # Another window meanwhile does not resolve it a second time.
    h.log.append(("another window", [r.alert_id for r in tracker.resolved(end + WINDOW_MS, set())]))
    tracker.delivered(end)
    h.log.append(("after delivery", resolved(), tracker.resolved(end + WINDOW_MS, set())))


def test_a_resolution_is_kept_until_its_alert_was_delivered(make_store: Factory, check: Callable[..., None]) -> None:
    """Resolving is two-phase: the incident is marked, and only deleted once its RESOLVED alert was delivered."""
    h = make_store()
    resolution_retry_sequence(h)
    first = h.log[0][1]
    assert len(first) == 1 and first[0][:3] == ("RESOLVED", 0, WINDOW_MS)
    assert h.log == [
        ("first close", first),
        ("closed again", first),
        ("another window", []),
        ("after delivery", [], []),
    ]
    check(resolution_retry_sequence)


def resolved_then_older_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=LIFECYCLE)
    for start in (BASE_MS, BASE_MS + WINDOW_MS, BASE_MS + 2 * WINDOW_MS):
        tracker.publishable([alert(start)])
    end = BASE_MS + 10 * WINDOW_MS
    h.log.append(("resolved", [r.status for r in tracker.resolved(end, set())]))
    tracker.delivered(end)
    # A successor closes an older window again (its lease expired): the incident stays resolved.
    h.log.append(
        ("older window", [a.window_start - BASE_MS for a in tracker.publishable([alert(BASE_MS + WINDOW_MS)])])
    )
    h.log.append(("nothing to resolve", tracker.resolved(end + WINDOW_MS, set())))
    # The problem coming back after the resolution opens a new incident.
    h.log.append(("new", [a.window_start - BASE_MS for a in tracker.publishable([alert(BASE_MS + 12 * WINDOW_MS)])]))


def test_closing_an_older_window_after_a_resolution_does_not_reopen_the_incident(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """An alert of a window the resolved incident already covered is not a new incident; a later one is."""
    h = make_store()
    resolved_then_older_sequence(h)
    assert h.log == [
        ("resolved", ["RESOLVED"]),
        ("older window", []),
        ("nothing to resolve", []),
        ("new", [12 * WINDOW_MS]),
    ]
    check(resolved_then_older_sequence)


def out_of_order_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=LIFECYCLE)
    # Two workers: the one closing window 4 is faster than the one closing window 3, the onset.
    for start in (BASE_MS + 4 * WINDOW_MS, BASE_MS + 3 * WINDOW_MS, BASE_MS + 2 * WINDOW_MS, BASE_MS + 5 * WINDOW_MS):
        h.log.append([a.window_start - BASE_MS for a in tracker.publishable([alert(start)])])
    end = BASE_MS + 12 * WINDOW_MS
    h.log.append([(r.status, r.window_start - BASE_MS, r.window_end - BASE_MS) for r in tracker.resolved(end, set())])


def test_windows_closed_out_of_order_publish_the_onset(make_store: Factory, check: Callable[..., None]) -> None:
    """An alert of a window before the one that opened the incident is published (onset); the resolution starts there."""
    h = make_store()
    out_of_order_sequence(h)
    w = WINDOW_MS
    assert h.log == [[4 * w], [3 * w], [2 * w], [], [("RESOLVED", 2 * w, 6 * w)]]
    check(out_of_order_sequence)


# --------------------------------------------------------------------------- escalation and causes


def finding(
    window_start: int,
    kind: str,
    feature: str = "amount",
    *,
    value: float | None = None,
    threshold: float | None = None,
    severity: Severity = Severity.WARNING,
    count: int = 5,
) -> Alert:
    return dataclasses.replace(
        alert(window_start, count, kind),
        feature=feature,
        slice="",
        severity=severity,
        value=value,
        threshold=threshold,
        rate=count / 100,
    )


ESCALATING = LifecycleSettings(cooldown_s=20, resolve_after_s=30, remind_after_s=200, escalation_factor=2.0)


def escalation_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=ESCALATING)
    w = WINDOW_MS
    # (window, magnitude |value - threshold|, severity): a drift whose threshold is 0.1.
    steps = [
        (0, 0.1, Severity.WARNING),  # opens
        (3, 0.15, Severity.WARNING),  # grows, not twice: nothing
        (4, 0.2, Severity.WARNING),  # twice the published magnitude: escalates
        (5, 2.0, Severity.WARNING),  # ten times, but within the cooldown of window 4: nothing
        (7, 2.0, Severity.WARNING),  # the cooldown passed, still twice 0.2: escalates
        (10, 2.0, Severity.CRITICAL),  # a higher severity: escalates
        (13, 2.0, Severity.CRITICAL),  # nothing new
        (33, 2.0, Severity.CRITICAL),  # 200 s without a publication: a reminder
        (34, 1.0, Severity.WARNING),  # calmer: nothing
    ]
    for n, size, severity in steps:
        raised = [finding(BASE_MS + n * w, "data_drift", value=0.1 + size, threshold=0.1, severity=severity)]
        h.log.append((n, [a.window_start - BASE_MS for a in tracker.publishable(raised)]))
    record = h.store.open_incidents()[raised[0].incident_id]
    h.log.append({k: v for k, v in record.items() if k.startswith("peak_")})


def test_an_open_incident_is_published_again_only_when_it_escalates_or_after_the_reminder(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """Escalation (severity, or magnitude by the factor) or remind_after publish; the cooldown spaces them."""
    h = make_store()
    escalation_sequence(h)
    w = WINDOW_MS
    assert h.log[:-1] == [
        (0, [0]),
        (3, []),
        (4, [4 * w]),
        (5, []),
        (7, [7 * w]),
        (10, [10 * w]),
        (13, []),
        (33, [33 * w]),
        (34, []),
    ]
    # The peak rank is the lifecycle's level: 2 x severity rank (CRITICAL 2), + 1 with a performance finding.
    assert h.log[-1] == {"peak_rank": "4", "peak_magnitude": "2.0", "peak_rate": "0.05"}
    check(escalation_sequence)


def rate_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=ESCALATING)
    for n, count in ((0, 4), (5, 7), (6, 8), (7, 30), (9, 30)):
        raised = [finding(BASE_MS + n * WINDOW_MS, "out_of_range", count=count)]
        h.log.append((n, [a.window_start - BASE_MS for a in tracker.publishable(raised)]))


def test_a_finding_without_a_value_escalates_on_its_rate(make_store: Factory, check: Callable[..., None]) -> None:
    """Row findings have no value: twice the published rate escalates (8 of 100 after 4), not within the cooldown."""
    h = make_store()
    rate_sequence(h)
    w = WINDOW_MS
    assert h.log == [(0, [0]), (5, []), (6, [6 * w]), (7, []), (9, [9 * w])]
    check(rate_sequence)


def informational_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=ESCALATING)
    w = WINDOW_MS
    for n, count in ((2, 1), (2, 1), (5, 50), (40, 50), (1, 1), (41, 50)):
        severity = Severity.CRITICAL if n == 41 else Severity.INFO
        raised = [finding(BASE_MS + n * w, "known_bias", "recall", count=count, severity=severity)]
        h.log.append((n, [a.window_start - BASE_MS for a in tracker.publishable(raised)]))


def test_an_informational_incident_is_published_once(make_store: Factory, check: Callable[..., None]) -> None:
    """INFO: open (and its retry), never a reminder, an escalation by rate or an onset; a higher severity is news."""
    h = make_store()
    informational_sequence(h)
    w = WINDOW_MS
    assert h.log == [(2, [2 * w]), (2, [2 * w]), (5, []), (40, []), (1, []), (41, [41 * w])]
    check(informational_sequence)


def cause_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=ESCALATING)
    w = WINDOW_MS

    def window(n: int, *raised: Alert) -> None:
        published = tracker.publishable(list(raised))
        resolved = tracker.resolved(BASE_MS + (n + 1) * w, {a.incident_id for a in raised})
        tracker.delivered(BASE_MS + (n + 1) * w)
        h.log.append(
            (
                n,
                [
                    (a.status, a.kind, a.feature, a.cause_id, [(r.kind, r.feature, r.count) for r in a.related])
                    for a in [*published, *resolved]
                ],
            )
        )

    start = BASE_MS
    # A unit change on amount: four kinds in one window, one incident led by out_of_range.
    window(
        0,
        finding(start, "data_drift", value=0.4, threshold=0.1),
        finding(start, "out_of_range", count=30, severity=Severity.CRITICAL),
        finding(start, "online_drift"),
        finding(start, "null_rate", "age"),  # another feature: its own incident
    )
    # The next window: sentinel_spike on amount (adjacent, same feature) and the score's drift
    # following the shift: both join; out_of_range is gone, the incident goes on.
    window(1, finding(start + w, "sentinel_spike"), finding(start + w, "prediction_drift", "score"))
    window(2, finding(start + 2 * w, "prediction_drift", "score"))  # evidence alone keeps it open
    for n in (3, 4, 5, 6):
        window(n)
    # Window 1 closed again after the resolution: its findings open nothing.
    window(1, finding(start + w, "sentinel_spike"), finding(start + w, "prediction_drift", "score"))
    # Much later, the score drifts on its own: a new incident of its own.
    window(20, finding(start + 20 * w, "prediction_drift", "score"))


def test_findings_of_one_cause_are_one_incident(make_store: Factory, check: Callable[..., None]) -> None:
    """Kinds on one feature, and the prediction drift after them, are one incident; evidence keeps it open."""
    h = make_store()
    cause_sequence(h)
    amount = finding(BASE_MS, "out_of_range").incident_id
    age = finding(BASE_MS, "null_rate", "age").incident_id
    score = finding(BASE_MS, "prediction_drift", "score").incident_id
    related = [("data_drift", "amount", 5), ("online_drift", "amount", 5)]
    assert h.log == [
        (0, [("FIRING", "out_of_range", "amount", amount, related), ("FIRING", "null_rate", "age", age, [])]),
        (1, []),
        (2, []),
        (3, [("RESOLVED", "null_rate", "age", age, [])]),
        (4, []),
        (
            5,
            [
                (
                    "RESOLVED",
                    "out_of_range",
                    "amount",
                    amount,
                    [
                        ("data_drift", "amount", 0),
                        ("online_drift", "amount", 0),
                        ("prediction_drift", "score", 0),
                        ("sentinel_spike", "amount", 0),
                    ],
                )
            ],
        ),
        (6, []),
        (1, []),
        (20, [("FIRING", "prediction_drift", "score", score, [])]),
    ]
    check(cause_sequence)


def burst_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=ESCALATING)
    w = WINDOW_MS
    for n, raised in (
        (0, [finding(BASE_MS, "undecodable", "WireFormatError"), finding(BASE_MS, "undecodable", "EOFError")]),
        (1, [finding(BASE_MS + w, "undecodable", "EOFError"), finding(BASE_MS + w, "type_mismatch", "amount")]),
        (
            5,
            [
                finding(BASE_MS + 5 * w, "schema_change", "amount"),
                finding(BASE_MS + 5 * w, "unexpected_field", "amount_str", severity=Severity.INFO),
                finding(BASE_MS + 5 * w, "null_rate", "amount"),
            ],
        ),
    ):
        published = tracker.publishable(raised)
        h.log.append(
            (n, [(a.kind, a.feature, a.cause_id, [(r.kind, r.feature) for r in a.related]) for a in published])
        )


def test_a_schema_or_decoding_burst_is_one_incident(make_store: Factory, check: Callable[..., None]) -> None:
    """Undecodable error classes are one burst; a schema change takes in its fields' findings."""
    h = make_store()
    burst_sequence(h)
    eof = finding(BASE_MS, "undecodable", "EOFError").incident_id
    types = finding(BASE_MS, "type_mismatch", "amount").incident_id
    change = finding(BASE_MS, "schema_change", "amount").incident_id
    assert h.log == [
        (0, [("undecodable", "EOFError", eof, [("undecodable", "WireFormatError")])]),
        (1, [("type_mismatch", "amount", types, [])]),
        (5, [("schema_change", "amount", change, [("unexpected_field", "amount_str"), ("null_rate", "amount")])]),
    ]
    check(burst_sequence)


def touch_sequence(h: Harness) -> None:
    k, store = h.keys, h.store
    store.register_sources([A, B], now_ms=0)
    h.apply([counted(k, 0, 9, BASE_MS + 3 * WINDOW_MS)], now_ms=0)
    h.log.append(("both idle", store.due_windows(10 * IDLE_MS)))
    # B has a backlog: the worker owning it marks it active; its watermark (0: nothing sent) holds.
    store.touch_sources([B], now_ms=10 * IDLE_MS)
    h.log.append(("B lagging", store.global_watermark(10 * IDLE_MS), store.due_windows(10 * IDLE_MS)))
    store.touch_sources([], now_ms=10 * IDLE_MS)


def test_a_touched_source_holds_the_watermark(make_store: Factory, check: Callable[..., None]) -> None:
    """touch_sources marks sources active without moving their watermarks (a partition with a backlog)."""
    h = make_store()
    touch_sequence(h)
    assert h.log[1:] == [("both idle", [BASE_MS + 3 * WINDOW_MS]), ("B lagging", 0.0, [])]
    check(touch_sequence)


def capped_findings_sequence(h: Harness) -> None:
    k = h.keys
    w = k.window(BASE_MS)

    def finding(u: StateUpdate, name: str, amount: int) -> None:
        u.add_finding(
            w,
            f"f|unexpected_field|{name}|",
            amount,
            cap=2,
            overflow=("f|unexpected_field|*overflow*|", "d|unexpected_field|*overflow*|", '["capped", ""]'),
            detail=(f"d|unexpected_field|{name}|", '["present", "absent"]'),
            examples=(k.examples(BASE_MS, f"unexpected_field|{name}|"), [{"offset": amount}], 3),
        )

    first = update(0, 0, BASE_MS)
    finding(first, "a", 1)
    finding(first, "b", 2)
    h.apply([first], now_ms=0)
    second = update(1, 1, BASE_MS)
    finding(second, "c", 4)  # a third distinct finding in the window: overflow
    finding(second, "a", 8)  # one the window holds: counted
    h.apply([second], now_ms=0)
    snapshot = h.store.snapshot(BASE_MS)
    h.log.append(("window", snapshot.fields, snapshot.examples))


def test_a_window_holds_at_most_cap_distinct_findings(make_store: Factory, check: Callable[..., None]) -> None:
    """C: distinct finding fields of a window stop at the cap; later ones add to the overflow, with no detail or examples."""
    h = make_store()
    capped_findings_sequence(h)
    assert h.log[-1] == (
        "window",
        {
            "fk": "2",
            "f|unexpected_field|a|": "9",
            "d|unexpected_field|a|": '["present", "absent"]',
            "f|unexpected_field|b|": "2",
            "d|unexpected_field|b|": '["present", "absent"]',
            "f|unexpected_field|*overflow*|": "4",
            "d|unexpected_field|*overflow*|": '["capped", ""]',
        },
        {
            "unexpected_field|a|": [{"offset": 1}, {"offset": 8}],
            "unexpected_field|b|": [{"offset": 2}],
            "unexpected_field|*overflow*|": [],
        },
    )
    assert not [key for key in h.dump() if key.endswith(":x:unexpected_field|c|")]
    check(capped_findings_sequence)


# --------------------------------------------------------------------------- held labels

HOLD_S = 60


def hold_sequence(h: Harness) -> None:
    """Labels before their predictions: held, released by the events batch, expired, redelivered."""
    k = h.keys
    joiner = LabelJoiner(k, SETTINGS, hold_s=HOLD_S)
    bucket = (BASE_MS // 60_000) * 60_000

    def join(labels: list[Label]) -> None:
        r = joiner.join(labels, h.store, now_ms=BASE_MS)
        h.log.append(("join", r.matched, r.unmatched, r.held, r.skipped, r.event_ids))

    def release(event_ids: list[str]) -> None:
        r = joiner.release(event_ids, h.store, now_ms=BASE_MS)
        h.log.append(("release", r.released, r.expired, r.event_ids))

    early = [
        Label("e0", 1, LABELS, 0, BASE_MS + 1_000),
        Label("e1", 0, LABELS, 1, BASE_MS + 2_000),
        Label("e0", 0, LABELS, 2, BASE_MS + 1_000),  # a second label of e0, which one already waits for
    ]
    join(early)
    join(early)  # redelivered labels batch: fenced, nothing held twice
    join([Label("e0", 1, LABELS, 3, BASE_MS + 1_000)])  # e0 is held already: unmatched
    u = update(0, 0, BASE_MS + 500)
    u.set_once(k.prediction("e0"), s.encode_prediction(bucket, ["a=1"], 1, 0.9), 600, k.bucket(bucket), ["*|st"])
    h.apply([u], now_ms=BASE_MS)
    release(["e0"])  # e0's prediction arrived: its held label joins it
    release(["e0"])  # the events batch redelivered: nothing is held for e0 any more
    h.apply([update(1, 1, BASE_MS + 2_000 + HOLD_S * 1000 - 1)], now_ms=BASE_MS)
    release([])  # the events' watermark is not past e1's hold yet
    h.apply([update(2, 2, BASE_MS + 2_000 + HOLD_S * 1000)], now_ms=BASE_MS)
    release([])  # now it is: e1 expires
    release([])  # and only once
    h.log.append(("left", sorted(key for key in h.dump() if ":held" in key or ":pred:" in key)))


def test_held_labels_are_released_or_expire_once_alike(make_store: Factory, check: Callable[..., None]) -> None:
    """A label before its prediction is held, joined when the prediction is stored, or expired
    once the events' watermark passed its time plus hold_s; redeliveries on either side count nothing twice."""
    h = make_store()
    hold_sequence(h)
    k = h.keys
    bucket = (BASE_MS // 60_000) * 60_000
    assert h.log[:3] == [
        ("join", 0, 1, 2, 0, []),
        ("join", 0, 0, 0, 3, []),
        ("join", 0, 1, 0, 0, []),
    ]
    assert [x for x in h.log if x[0] in ("release", "left")] == [
        ("release", 1, 0, ["e0"]),
        ("release", 0, 0, []),
        ("release", 0, 0, []),
        ("release", 0, 1, []),
        ("release", 0, 0, []),
        ("left", []),
    ]
    dump = h.dump()
    assert dump[k.bucket(bucket)][1] == {
        "*|st": "1",
        "*|lh": "2",
        "*|lu": "2",
        "*|lm": "1",
        "a=1|lm": "1",
        "*|tp": "1",
        "a=1|tp": "1",
        "*|lr": "1",
        "a=1|lr": "1",
        "*|lx": "1",
        "_v": "6",
    }
    check(hold_sequence)


def test_a_held_regression_label_adds_its_errors_alike(make_store: Factory, check: Callable[..., None]) -> None:
    """A released regression label adds absolute and squared errors (floats through T) as a direct join does."""

    def sequence(h: Harness) -> None:
        k = h.keys
        joiner = LabelJoiner(k, REGRESSION, hold_s=HOLD_S)
        bucket = (BASE_MS // 60_000) * 60_000
        joiner.join([Label("r0", 1.0, LABELS, 0, BASE_MS)], h.store, now_ms=BASE_MS)
        u = update(0, 0, BASE_MS)
        u.set_once(k.prediction("r0"), s.encode_prediction(bucket, [], 2.5, None), 600, k.bucket(bucket), ["*|st"])
        h.apply([u], now_ms=BASE_MS)
        released = joiner.release(["r0"], h.store, now_ms=BASE_MS)
        h.log.append(("bucket", released.released, h.dump()[k.bucket(bucket)][1]))

    h = make_store()
    sequence(h)
    assert h.log[-1] == (
        "bucket",
        1,
        {"*|lh": "1", "*|st": "1", "*|lm": "1", "*|ae": "1.5", "*|se": "2.25", "*|lr": "1", "_v": "2"},
    )
    check(sequence)


def label_watermark_sequence(h: Harness) -> None:
    store = h.store
    h.log.append(("none known", store.label_watermark(0)))
    store.register_sources([LABELS, "fraud.labels:1"], 0, Fence.LABELS)
    h.apply([update(0, 4, BASE_MS + 5_000, LABELS, fence=Fence.LABELS)], now_ms=0)
    h.log.append(("slowest", store.label_watermark(0), store.global_watermark(0)))
    h.apply([update(0, 1, BASE_MS + 9_000, "fraud.labels:1", fence=Fence.LABELS)], now_ms=0)
    h.log.append(("both", store.label_watermark(0)))
    store.touch_sources([LABELS], IDLE_MS + 1, Fence.LABELS)
    h.log.append(("one idle", store.label_watermark(IDLE_MS + 1)))
    h.log.append(("all idle", store.label_watermark(10 * IDLE_MS)))


def test_the_label_watermark_follows_the_slowest_active_labels_partition(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """The label watermark: min over active labels partitions (registered ones hold it at 0), apart
    from the events' watermark; -inf before any is known, inf once all are idle."""
    h = make_store()
    label_watermark_sequence(h)
    assert [x for x in h.log if x[0] != "apply"] == [
        ("none known", -math.inf),
        ("slowest", 0.0, math.inf),
        ("both", float(BASE_MS + 5_000)),
        ("one idle", float(BASE_MS + 5_000)),
        ("all idle", math.inf),
    ]
    check(label_watermark_sequence)


def stored_twice_sequence(h: Harness) -> None:
    k = h.keys
    bucket = k.bucket(BASE_MS)
    counters = [(bucket, "*|st"), (bucket, "a=1|st"), (bucket, "a=2|st")]
    first = update(0, 1, BASE_MS)
    first.set_once_counted([(k.prediction("e1"), "p1", [0, 1]), (k.prediction("e2"), "p2", [0, 2])], 600, counters)
    # A later batch (new offsets) with e2 again, and e3 twice.
    second = update(2, 4, BASE_MS)
    entries = [(k.prediction("e2"), "p2 again", [0, 2]), (k.prediction("e3"), "p3", [0, 1])]
    second.set_once_counted([*entries, (k.prediction("e3"), "p3 again", [0, 1])], 600, counters)
    h.apply([first, second], now_ms=BASE_MS)


def test_a_prediction_stored_in_two_batches_counts_once(make_store: Factory, check: Callable[..., None]) -> None:
    """O's per-batch sums take back the counters of keys already stored: st counts distinct predictions."""
    h = make_store()
    stored_twice_sequence(h)
    k = h.keys
    dump = h.dump()
    assert dump[k.bucket(BASE_MS)][1] == {"*|st": "3", "a=1|st": "2", "a=2|st": "1"}
    assert [dump[k.prediction(x)][1] for x in ("e1", "e2", "e3")] == ["p1", "p2", "p3"]
    check(stored_twice_sequence)


def many_counters_sequence(h: Harness) -> None:
    """M over fields repeated in one op, stored by other ops, past 2^53 and in the thousands."""
    k = h.keys
    b = k.bucket(BASE_MS)
    u = update(0, 0, BASE_MS)
    u.incr(b, "h", 5)
    u.set_once_counted([(k.prediction("e1"), "p1", [0])], 600, [(b, "st")])
    u.incr_many(b, [("h", 2), ("st", 3), ("x", 1), ("x", 4), ("f", 1), ("f", 0.5), ("neg", -7)])
    u.incr_many(b, [("big", 2**53 - 1)])
    u.incr_many(b, [("big", 2), ("huge", 9_000_000_000_000_000_000), ("x", 1)])
    u.incr_many(b, [(f"c{i}", i + 1) for i in range(1200)])
    u.incr_many(b, [(f"c{i}", 1) for i in range(0, 1200, 7)])
    h.log.append(("apply", h.store.apply([u], BASE_MS)))
    h.log.append(("fields", h.dump()[b][1]))


def test_many_counters_of_a_hash_sum_exactly(make_store: Factory, check: Callable[..., None]) -> None:
    """M sums integers to the last unit (past 2^53 too), beside the other ops on the hash and its floats."""
    h = make_store()
    many_counters_sequence(h)
    fields = h.log[-1][1]
    assert {f: fields[f] for f in ("h", "st", "x", "f", "neg", "big", "huge")} == {
        "h": "7",
        "st": "4",
        "x": "6",
        "f": "1.5",
        "neg": "-7",
        "big": str(2**53 + 1),
        "huge": "9000000000000000000",
    }
    assert [fields[f"c{i}"] for i in (0, 1, 7, 1199)] == ["2", "2", "9", "1200"]
    check(many_counters_sequence)


def outcome_sequence(h: Harness) -> None:
    tracker = IncidentTracker(h.store, settings=LIFECYCLE)
    tracker.publishable([alert(BASE_MS)])
    confirmed = dataclasses.replace(alert(BASE_MS), outcome="CONFIRMED")
    end = BASE_MS + 2 * WINDOW_MS

    def settle(at: int, *raised: Alert) -> list[tuple[str, str | None]]:
        out = tracker.publishable(list(raised)) + tracker.resolved(at, set())
        return [(a.status, a.outcome) for a in out]

    h.log.append(("confirmed", settle(end, alert(BASE_MS + WINDOW_MS), confirmed)))
    h.log.append(("closed again", settle(end, alert(BASE_MS + WINDOW_MS), confirmed)))
    tracker.delivered(end)
    h.log.append(("later", settle(end + WINDOW_MS, alert(BASE_MS + 2 * WINDOW_MS), confirmed)))
    tracker.delivered(end + WINDOW_MS)
    h.log.append(("direct", h.store.confirm_incident(alert(BASE_MS).incident_id, end)))
    h.log.append(("not open", h.store.confirm_incident("nothing", end)))


def test_an_incident_is_confirmed_once_and_again_only_by_the_same_window(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """confirm_incident: True for the first window and for it closed again; False for another or a closed incident."""
    h = make_store()
    outcome_sequence(h)
    assert h.log == [
        ("confirmed", [("FIRING", "CONFIRMED")]),
        ("closed again", [("FIRING", "CONFIRMED")]),
        ("later", []),
        ("direct", True),
        ("not open", False),
    ]
    check(outcome_sequence)


def early_sequence(h: Harness) -> None:
    """Early alerts (IncidentTracker.early): fire, retry, claim, the window's update, resolution, tombstone."""
    tracker = IncidentTracker(h.store, settings=LIFECYCLE)
    w = WINDOW_MS

    def bad(start: int, count: int, feature: str = "WireFormatError") -> Alert:
        return dataclasses.replace(alert(start, count, kind="undecodable"), feature=feature, severity=Severity.CRITICAL)

    def early(*alerts: Alert, deliver: bool = True) -> None:
        fired = tracker.early(list(alerts))
        if deliver:
            tracker.early_delivered()
        h.log.append(("early", [(a.alert_id, a.count, a.window_start - BASE_MS) for a in fired]))

    def close(start: int, *alerts: Alert) -> None:
        published = tracker.publishable(list(alerts))
        resolved = tracker.resolved(start + w, {a.incident_id for a in alerts})
        tracker.delivered(start + w)
        h.log.append(("close", [(a.alert_id, a.count, a.status) for a in published + resolved]))

    early(bad(BASE_MS, 2), deliver=False)  # fires; the broker's ack never came
    early(bad(BASE_MS, 2))  # the retry fires it again, acknowledged
    early(bad(BASE_MS, 3))  # open: nothing
    h.log.append(("resolve before close", h.store.resolve_incident(bad(BASE_MS, 1).incident_id, BASE_MS + 9 * w)))
    other = bad(BASE_MS, 1, "NotARecordError")
    seen = Observation(BASE_MS, BASE_MS + w, 1, "{}", 2, members={other.incident_id: "undecodable|NotARecordError|"})
    h.log.append(("claimed", h.store.fire_early(other.incident_id, seen, ["burst:0"])))
    close(BASE_MS, bad(BASE_MS, 5), dataclasses.replace(other, count=7))  # the update, full counts
    close(BASE_MS, bad(BASE_MS, 5), dataclasses.replace(other, count=7))  # closed again: the same
    close(BASE_MS + w, bad(BASE_MS + w, 1))  # within the cooldown
    close(BASE_MS + 5 * w)  # resolves
    h.log.append(("covered", h.store.fire_early(bad(BASE_MS, 1).incident_id, seen, [])))
    early(bad(BASE_MS + 6 * w, 1))  # back after the resolution: a new incident fires early


def test_early_alerts_fire_once_and_their_window_updates_them_alike(
    make_store: Factory, check: Callable[..., None]
) -> None:
    """fire_early / early_delivered and the early window's update decide the same on both stores."""
    h = make_store()
    early_sequence(h)
    first = dataclasses.replace(alert(BASE_MS, kind="undecodable"), feature="WireFormatError")
    again = dataclasses.replace(first, window_start=BASE_MS + 6 * WINDOW_MS)
    assert h.log == [
        ("early", [(first.alert_id, 2, 0)]),
        ("early", [(first.alert_id, 2, 0)]),
        ("early", []),
        ("resolve before close", None),
        ("claimed", "claimed"),
        ("close", [(first.alert_id, 5, "FIRING")]),
        ("close", [(first.alert_id, 5, "FIRING")]),
        ("close", []),
        # The incident's events count each window's primary (7, then 1), as for any incident.
        ("close", [(dataclasses.replace(first, status="RESOLVED").alert_id, 8, "RESOLVED")]),
        ("covered", "resolved"),
        ("early", [(again.alert_id, 1, 6 * WINDOW_MS)]),
    ]
    check(early_sequence)


def test_held_inputs_read_a_held_label_and_none_once_the_index_is_empty(make_store: Factory) -> None:
    """The held labels of an events batch are read while one is indexed; taken, none is read back."""
    h = make_store()
    k = h.keys
    bucket = (BASE_MS // 60_000) * 60_000
    empty = h.store.held_inputs(["e0", "e1"], BASE_MS)
    assert (empty.held, empty.predictions, empty.oldest_ms) == ([None, None], [None, None], None)
    u = StateUpdate(LABELS, 0, 0, BASE_MS, fence=Fence.LABELS, ttl_s=600)
    u.set_once(k.held("e1"), "held", 600, k.bucket(bucket), ["*|lh"])
    u.zadd(k.held_index, BASE_MS + 7, "e1")
    h.store.apply([u], BASE_MS)
    stored = StateUpdate(A, 0, 0, BASE_MS)
    stored.set_once(k.prediction("e1"), "pred", 600, k.bucket(bucket), ["*|st"])
    h.store.apply([stored], BASE_MS)
    found = h.store.held_inputs(["e0", "e1"], BASE_MS)
    assert (found.held, found.predictions, found.oldest_ms) == ([None, "held"], [None, "pred"], BASE_MS + 7)
    taken = StateUpdate("", 0, 0, 0, fence=Fence.LABELS, ttl_s=600)
    taken.take([(k.held("e1"), k.prediction("e1"), "e1")], k.held_index, k.bucket(bucket), [("*|lr", 1)])
    h.store.apply([taken], BASE_MS)
    after = h.store.held_inputs(["e0", "e1"], BASE_MS)
    assert (after.held, after.predictions, after.oldest_ms) == ([None, None], [None, None], None)
