"""Unit tests for stream_guard.aggregation (with batch and findings): batch rows to per-window Redis ops."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from stream_guard.aggregation import DEAD_LETTERS, WindowGroups, build_updates, group_rows, window_starts
from stream_guard.batch import EventBatch, to_epoch_ms
from stream_guard.decoding import Decoded, FieldIssue
from stream_guard.errors import UndecodablePayloadError, WireFormatError
from stream_guard.findings import RowFindings, dead_letter_findings, schema_findings
from stream_guard.schemas import SchemaChange
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.ops import Op, split_ops
from stream_guard.state.update import StateUpdate

WINDOW_MS = 10_000
BASE_MS = 1_700_000_000_000  # a multiple of WINDOW_MS
TOPIC = "fraud.inferences"
KEYS = ModelKeys("sg", "fraud")
MAX_EXAMPLES = 3


# --------------------------------------------------------------------------- applying ops


@dataclass
class Applied:
    """What one StateUpdate did to a MemoryState (which runs ops as the Lua script does), numbers parsed."""

    #: The windows the update's ops open, in op order (one opened twice would be here twice).
    windows: list[int] = field(default_factory=list)
    hashes: dict[str, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    #: Example pushes per list key, the ones past the cap included.
    list_pushes: Counter[str] = field(default_factory=Counter)


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def apply_ops(update: StateUpdate) -> Applied:
    """Apply ``update`` to a fresh MemoryState; KEYS[1..4] are fixed, ``update.keys[i]`` is KEYS[i + 5]."""
    state = MemoryState(KEYS, window_ms=WINDOW_MS, lateness_ms=0)
    assert state.apply([update], now_ms=0) == [1]
    out = Applied()
    for op, args in split_ops(update.ops):
        if op is Op.OPEN_WINDOW:
            out.windows.append(args[0])
            continue
        assert isinstance(args[0], int) and args[0] >= 5, f"op refers to fixed key KEYS[{args[0]}]"
        if op is Op.INCR:
            assert isinstance(args[2], int) and args[2] != 0, "zero increments are skipped"
        if op is Op.ADD_EXAMPLE:
            out.list_pushes[update.keys[args[0] - 5]] += 1
    for key in state.key_names():
        if key in (KEYS.applied, KEYS.watermarks, KEYS.watermarks_seen, KEYS.windows):
            continue
        kind = state.key_type(key)
        if kind == "hash":
            out.hashes[key] = {name: _number(value) for name, value in state.hgetall(key).items()}
        elif kind == "list":
            out.lists[key] = [json.loads(item) for item in state.lrange(key)]
    return out


# --------------------------------------------------------------------------- batch fixture


def _make_batch(seed: int = 2024, n: int = 160) -> EventBatch:
    """Two partitions, event times over two 10 s windows, ~15% of rows failed (dead-lettered)."""
    rng = np.random.default_rng(seed)
    partitions = rng.integers(0, 2, n).astype(np.int64)
    offsets = np.empty(n, dtype=np.int64)
    next_offset = {0: 1_000, 1: 50_000}
    for i, p in enumerate(partitions.tolist()):
        offsets[i] = next_offset[p]
        next_offset[p] += int(rng.integers(1, 4))  # gaps, like compacted or transactional topics
    event_time = BASE_MS + rng.integers(0, 2 * WINDOW_MS, n).astype(np.int64)
    failed = rng.random(n) < 0.15
    decoded = [Decoded({}, []) if failed[i] else Decoded({"event_id": f"evt-{i}"}, []) for i in range(n)]
    return EventBatch(
        model="fraud",
        decoded=decoded,
        topics=[TOPIC] * n,
        partitions=partitions,
        offsets=offsets,
        event_time_ms=event_time,
        event_ids=[None if failed[i] else f"evt-{i}" for i in range(n)],
        failed=failed,
    )


def _findings(batch: EventBatch, seed: int = 7) -> list[RowFindings]:
    rng = np.random.default_rng(seed)
    valid = batch.valid_rows
    mismatch_rows = np.sort(rng.choice(valid, size=len(valid) * 2 // 5, replace=False))
    missing_rows = np.sort(rng.choice(valid, size=9, replace=False))
    extra_rows = valid[:2]
    errors: dict[int, Exception] = {
        int(r): (WireFormatError if k % 3 else UndecodablePayloadError)(f"bad payload {int(r)}")
        for k, r in enumerate(np.flatnonzero(batch.failed))
    }
    return [
        RowFindings(
            "type_mismatch", "amount", mismatch_rows, "string", "double", [f"v{int(r)}" for r in mismatch_rows]
        ),
        RowFindings("missing_field", "num_tx_24h", missing_rows, "absent", "int", None),
        RowFindings("unexpected_field", "browser", extra_rows, values=["ff", "ie"], slice="device_type=ios"),
        *dead_letter_findings(batch, errors),
    ]


def _source(batch: EventBatch, row: int) -> str:
    return f"{batch.topics[row]}:{int(batch.partitions[row])}"


def _window(batch: EventBatch, row: int) -> int:
    return int(batch.event_time_ms[row]) // WINDOW_MS * WINDOW_MS


@pytest.fixture
def batch() -> EventBatch:
    return _make_batch()


@pytest.fixture
def findings(batch: EventBatch) -> list[RowFindings]:
    return _findings(batch)


@pytest.fixture
def applied(batch: EventBatch, findings: list[RowFindings]) -> dict[str, tuple[StateUpdate, Applied]]:
    updates = build_updates(batch, findings, KEYS, window_ms=WINDOW_MS, max_examples=MAX_EXAMPLES)
    return {u.source: (u, apply_ops(u)) for u in updates}


# --------------------------------------------------------------------------- build_updates


def test_batch_fixture_is_meaningful(batch: EventBatch) -> None:
    """The seeded batch really has two partitions, two windows and failed rows in each partition."""
    assert set(batch.partitions.tolist()) == {0, 1}
    assert {_window(batch, r) for r in range(len(batch))} == {BASE_MS, BASE_MS + WINDOW_MS}
    assert {int(batch.partitions[r]) for r in np.flatnonzero(batch.failed)} == {0, 1}


def test_one_update_per_source_with_offsets_and_max_event_time(
    batch: EventBatch, applied: dict[str, tuple[StateUpdate, Applied]]
) -> None:
    """build_updates returns one StateUpdate per topic:partition with its min/max offset and max event time."""
    assert set(applied) == {f"{TOPIC}:0", f"{TOPIC}:1"}
    for source, (update, _) in applied.items():
        rows = [r for r in range(len(batch)) if _source(batch, r) == source]
        assert update.first_offset == min(int(batch.offsets[r]) for r in rows)
        assert update.last_offset == max(int(batch.offsets[r]) for r in rows)
        assert update.max_event_ms == max(int(batch.event_time_ms[r]) for r in rows)
        assert all(isinstance(v, int) for v in (update.first_offset, update.last_offset, update.max_event_ms))


def test_windows_opened_once_per_source(batch: EventBatch, applied: dict[str, tuple[StateUpdate, Applied]]) -> None:
    """Each update opens exactly the windows its rows fall in, once each."""
    for source, (_, state) in applied.items():
        expected = {_window(batch, r) for r in range(len(batch)) if _source(batch, r) == source}
        assert sorted(state.windows) == sorted(expected)
        assert len(state.windows) == len(set(state.windows))


def test_window_event_and_dead_letter_counts(
    batch: EventBatch, applied: dict[str, tuple[StateUpdate, Applied]]
) -> None:
    """Window counter n counts valid rows and dl failed rows per (partition, window), summing to the batch."""
    total_n = total_dl = 0
    for source, (_, state) in applied.items():
        for start in state.windows:
            rows = [r for r in range(len(batch)) if _source(batch, r) == source and _window(batch, r) == start]
            want_n = sum(not batch.failed[r] for r in rows)
            want_dl = sum(bool(batch.failed[r]) for r in rows)
            counters = state.hashes[KEYS.window(start)]
            assert counters.get("n", 0) == want_n
            assert counters.get(DEAD_LETTERS, 0) == want_dl
            total_n += counters.get("n", 0)
            total_dl += counters.get(DEAD_LETTERS, 0)
    assert total_n == len(batch.valid_rows)
    assert total_dl == int(batch.failed.sum())


def test_finding_counts_match_brute_force(
    batch: EventBatch, findings: list[RowFindings], applied: dict[str, tuple[StateUpdate, Applied]]
) -> None:
    """The f|<kind>|<feature>|<slice> counter of every window equals a row-by-row count."""
    expected: Counter[tuple[str, int, str]] = Counter()
    for finding in findings:
        for r in finding.rows.tolist():
            expected[(_source(batch, r), _window(batch, r), finding.key)] += 1
    got: Counter[tuple[str, int, str]] = Counter()
    for source, (_, state) in applied.items():
        for start in state.windows:
            for name, value in state.hashes[KEYS.window(start)].items():
                if name.startswith("f|"):
                    got[(source, start, name[2:])] = value
    assert got == expected
    assert any(k[2].startswith("undecodable|") for k in got), "dead letters are counted as findings too"


def test_finding_details_are_stored_when_known(
    findings: list[RowFindings], applied: dict[str, tuple[StateUpdate, Applied]]
) -> None:
    """d|<key> holds JSON [observed, expected] when the finding has them, and is absent otherwise."""
    by_key = {f.key: f for f in findings}
    seen = set()
    for _, state in applied.values():
        for start in state.windows:
            counters = state.hashes[KEYS.window(start)]
            for name in counters:
                if not name.startswith("f|"):
                    continue
                key = name[2:]
                finding = by_key[key]
                if finding.observed or finding.expected:
                    assert json.loads(counters[f"d|{key}"]) == [finding.observed, finding.expected]
                else:
                    assert f"d|{key}" not in counters
                seen.add(key)
    assert "unexpected_field|browser|device_type=ios" in seen


def test_examples_are_capped_and_point_at_finding_rows(
    batch: EventBatch, findings: list[RowFindings], applied: dict[str, tuple[StateUpdate, Applied]]
) -> None:
    """At most max_examples examples per (window, finding) per source, each naming a row of that finding."""
    rows_of_key: dict[str, set[int]] = defaultdict(set)
    values_of: dict[tuple[str, int], Any] = {}
    per_finding: Counter[tuple[str, int, str]] = Counter()
    pushes_expected: Counter[tuple[str, int, str]] = Counter()
    for finding in findings:
        rows_of_key[finding.key].update(finding.rows.tolist())
        rows = finding.rows.tolist()
        counts: Counter[tuple[str, int]] = Counter((_source(batch, r), _window(batch, r)) for r in rows)
        for (source, start), count in counts.items():
            # Each RowFindings pushes at most max_examples examples per (source, window).
            pushes_expected[(source, start, finding.key)] += min(count, MAX_EXAMPLES)
            per_finding[(source, start, finding.key)] += count
        for pos, r in enumerate(finding.rows.tolist()):
            values_of[(finding.key, r)] = None if finding.values is None else finding.values[pos]
    row_of = {(int(batch.partitions[r]), int(batch.offsets[r])): r for r in range(len(batch))}
    checked = 0
    for source, (_, state) in applied.items():
        partition = int(source.rsplit(":", 1)[1])
        for start in state.windows:
            for name, count in state.hashes[KEYS.window(start)].items():
                if not name.startswith("f|"):
                    continue
                key = name[2:]
                list_key = KEYS.examples(start, key)
                assert state.list_pushes[list_key] == pushes_expected[(source, start, key)]
                examples = state.lists[list_key]
                assert len(examples) == min(count, MAX_EXAMPLES)  # what the capped Redis list keeps
                for example in examples:
                    assert example["partition"] == partition
                    row = row_of[(example["partition"], example["offset"])]
                    assert row in rows_of_key[key]
                    assert _window(batch, row) == start
                    assert example["event_id"] == batch.event_ids[row]
                    assert example["value"] == values_of[(key, row)]
                    checked += 1
    assert checked >= 2 * MAX_EXAMPLES
    assert max(per_finding.values()) > MAX_EXAMPLES, "the seeded data must exercise the cap"


def test_example_ops_carry_the_cap(applied: dict[str, tuple[StateUpdate, Applied]]) -> None:
    """Every "L" op carries max_examples as its cap, so Redis also stops at the cap across batches."""
    caps = [args[2] for update, _ in applied.values() for op, args in split_ops(update.ops) if op is Op.ADD_EXAMPLE]
    assert caps and set(caps) == {MAX_EXAMPLES}


def test_example_values_are_shortened() -> None:
    """Example values are strings of at most 80 characters (repr for non-strings, None kept)."""
    n = 3
    batch = EventBatch(
        model="m",
        decoded=[Decoded({}, []) for _ in range(n)],
        topics=[TOPIC] * n,
        partitions=np.zeros(n, dtype=np.int64),
        offsets=np.arange(n, dtype=np.int64),
        event_time_ms=np.full(n, BASE_MS, dtype=np.int64),
        event_ids=["a", "b", "c"],
        failed=np.zeros(n, dtype=bool),
    )
    finding = RowFindings("type_mismatch", "x", np.arange(n), "o", "e", ["y" * 200, 3.25, None])
    (update,) = build_updates(batch, [finding], KEYS, window_ms=WINDOW_MS, max_examples=5)
    examples = apply_ops(update).lists[KEYS.examples(BASE_MS, finding.key)]
    assert [e["value"] for e in examples] == ["y" * 80, "3.25", None]


def test_same_partition_number_on_two_topics_are_two_sources() -> None:
    """Sources are topic:partition, so partition 0 of two topics gets two updates."""
    n = 4
    batch = EventBatch(
        model="m",
        decoded=[Decoded({}, []) for _ in range(n)],
        topics=["a", "b", "a", "b"],
        partitions=np.zeros(n, dtype=np.int64),
        offsets=np.array([5, 7, 6, 9], dtype=np.int64),
        event_time_ms=np.array([BASE_MS, BASE_MS + 1, BASE_MS + 2, BASE_MS + 3], dtype=np.int64),
        event_ids=[None] * n,
        failed=np.zeros(n, dtype=bool),
    )
    updates = {u.source: u for u in build_updates(batch, [], KEYS, window_ms=WINDOW_MS, max_examples=2)}
    assert {s: (u.first_offset, u.last_offset) for s, u in updates.items()} == {"a:0": (5, 6), "b:0": (7, 9)}
    assert apply_ops(updates["a:0"]).hashes[KEYS.window(BASE_MS)] == {"n": 2}


def test_contributors_write_into_the_same_updates(batch: EventBatch) -> None:
    """Contributors get (batch, groups, keys) and their ops land in the per-source updates."""
    calls = []

    def contributor(b: EventBatch, groups: WindowGroups, keys: ModelKeys) -> None:
        calls.append((b, keys))
        counts = groups.counts()
        for g in range(groups.size):
            groups.update_of(g).incr(keys.window(int(groups.starts[g])), "rows", int(counts[g]))

    updates = build_updates(batch, [], KEYS, window_ms=WINDOW_MS, max_examples=1, contributors=[contributor])
    assert calls == [(batch, KEYS)]
    total = sum(h.get("rows", 0) for u in updates for h in apply_ops(u).hashes.values())
    assert total == len(batch)


def test_empty_batch_has_no_updates() -> None:
    """An empty batch produces no updates at all."""
    empty = EventBatch(
        model="m",
        decoded=[],
        topics=[],
        partitions=np.zeros(0, dtype=np.int64),
        offsets=np.zeros(0, dtype=np.int64),
        event_time_ms=np.zeros(0, dtype=np.int64),
        event_ids=[],
    )
    assert build_updates(empty, [], KEYS, window_ms=WINDOW_MS, max_examples=3) == []


def test_key_indexes_start_after_the_fixed_keys() -> None:
    """StateUpdate numbers its own keys from KEYS[5] and reuses the index of a key seen before."""
    update = StateUpdate("t:0", 1, 2, 3)
    update.incr("k1", "a", 1)
    update.incr("k2", "a", 0)  # zero increments add no op and no key
    update.incr("k3", "b", 2)
    update.set("k1", "c", "x")
    assert update.keys == ["k1", "k3"]
    assert update.ops == ["H", 5, "a", 1, "H", 6, "b", 2, "S", 5, "c", "x"]


# --------------------------------------------------------------------------- window_starts / grouping


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0, 1, 9_999, 10_000, 19_999, 20_000], [0, 0, 0, 10_000, 10_000, 20_000]),
        ([-1, -9_999, -10_000, -10_001], [-10_000, -10_000, -10_000, -20_000]),
        ([BASE_MS + 12_345], [BASE_MS + 10_000]),
    ],
)
def test_window_starts_floor(times: list[int], expected: list[int]) -> None:
    """window_starts floors to the window size, also for negative (pre-1970) times."""
    assert window_starts(np.array(times, dtype=np.int64), 10_000).tolist() == expected


def test_group_rows_pairs_sources_and_windows(batch: EventBatch) -> None:
    """group_rows assigns every row the group of its (source, window) pair."""
    groups = group_rows(batch, WINDOW_MS)
    assert groups.group_of_row.shape == (len(batch),)
    assert groups.size == len({(_source(batch, r), _window(batch, r)) for r in range(len(batch))})
    for r in range(len(batch)):
        g = int(groups.group_of_row[r])
        assert groups.sources[g] == _source(batch, r)
        assert int(groups.starts[g]) == _window(batch, r)
    assert int(groups.counts().sum()) == len(batch)


# --------------------------------------------------------------------------- findings


def test_schema_findings_group_issues_and_changes() -> None:
    """schema_findings groups field issues by (kind, field, observed, expected) and writer changes per writer id."""
    amount_changed = (SchemaChange("type_changed", "amount", "double", "string"),)
    dropped = (SchemaChange("field_removed", "num_tx_24h", "int", "absent"),)
    decoded = [
        Decoded({}, [FieldIssue("type_mismatch", "amount", "string", "double", "1.5")], amount_changed, 2),
        Decoded({}, [FieldIssue("missing_field", "num_tx_24h", "absent", "int")], dropped, 3),
        Decoded({}, []),
        Decoded({}, [FieldIssue("type_mismatch", "amount", "string", "double", "2.5")], amount_changed, 2),
        Decoded({}, [FieldIssue("type_mismatch", "amount", "boolean", "double", True)]),
        Decoded({}, [], (SchemaChange("field_added", "channel", "absent", "null|string"),), None),
    ]
    n = len(decoded)
    batch = EventBatch(
        model="m",
        decoded=decoded,
        topics=[TOPIC] * n,
        partitions=np.zeros(n, dtype=np.int64),
        offsets=np.arange(n, dtype=np.int64),
        event_time_ms=np.full(n, BASE_MS, dtype=np.int64),
        event_ids=[None] * n,
        failed=np.zeros(n, dtype=bool),
    )
    got = {(f.kind, f.feature, f.observed, f.expected): (f.rows.tolist(), f.values) for f in schema_findings(batch)}
    assert got == {
        ("type_mismatch", "amount", "string", "double"): ([0, 3], ["1.5", "2.5"]),
        ("schema_change", "amount", "type_changed: writer schema id 2 has string", "double"): ([0, 3], [None, None]),
        ("missing_field", "num_tx_24h", "absent", "int"): ([1], [None]),
        ("schema_change", "num_tx_24h", "field_removed: writer schema id 3 has absent", "int"): ([1], [None]),
        ("type_mismatch", "amount", "boolean", "double"): ([4], [True]),
        ("schema_change", "channel", "field_added: writer schema has null|string", "absent"): ([5], [None]),
    }
    assert all(f.rows.dtype == np.int64 and f.slice == "" for f in schema_findings(batch))


def test_dead_letter_findings_group_by_error_class() -> None:
    """dead_letter_findings makes one undecodable finding per error class (its feature), rows sorted, first message observed."""
    errors: dict[int, Exception] = {
        7: WireFormatError("magic 7"),
        2: UndecodablePayloadError("truncated"),
        4: WireFormatError("magic 9"),
    }
    batch = _make_batch(n=10)
    got = {f.observed.split(":")[0]: f for f in dead_letter_findings(batch, errors)}
    assert set(got) == {"WireFormatError", "UndecodablePayloadError"}
    wire = got["WireFormatError"]
    assert (wire.kind, wire.feature, wire.key) == ("undecodable", "WireFormatError", "undecodable|WireFormatError|")
    assert wire.rows.tolist() == [4, 7]
    assert wire.observed == "WireFormatError: magic 9"
    assert wire.expected == "a record of the model's schema"
    assert wire.values == ["magic 9", "magic 7"]
    assert got["UndecodablePayloadError"].rows.tolist() == [2]
    assert dead_letter_findings(batch, {}) == []


def test_batch_columns_and_numeric(batch: EventBatch) -> None:
    """EventBatch.numeric turns a column into float64 with NaN and a null mask where values are absent."""
    values = [Decoded({"amount": 1.5}, []), Decoded({"amount": None}, []), Decoded({}, []), Decoded({"amount": 3}, [])]
    small = EventBatch(
        model="m",
        decoded=values,
        topics=[TOPIC] * 4,
        partitions=np.zeros(4, dtype=np.int64),
        offsets=np.arange(4, dtype=np.int64),
        event_time_ms=np.zeros(4, dtype=np.int64),
        event_ids=[None] * 4,
        failed=np.array([False, False, True, False]),
    )
    numbers, null = small.numeric("amount")
    assert null.tolist() == [False, True, True, False]
    assert numbers[0] == 1.5 and numbers[3] == 3.0 and np.isnan(numbers[1]) and np.isnan(numbers[2])
    assert small.valid_rows.tolist() == [0, 1, 3]
    assert len(batch.valid_rows) == int((~batch.failed).sum())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000_123, 1_700_000_000_123),
        (1_700_000_000_123.9, 1_700_000_000_123),
        (datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC), 1_700_000_000_123),
        (datetime(2023, 11, 14, 22, 13, 20, 123_000), 1_700_000_000_123),  # naive: taken as UTC
        (True, None),
        (None, None),
        (float("nan"), None),
        ("1700000000000", None),
    ],
)
def test_to_epoch_ms(value: Any, expected: int | None) -> None:
    """to_epoch_ms takes ints as ms, truncates finite floats, converts datetimes, and rejects the rest."""
    assert to_epoch_ms(value) == expected


@pytest.mark.parametrize("ms", [2_147_483_648_002, 547_641_621_915])
def test_to_epoch_ms_is_exact_for_millisecond_datetimes(ms: int) -> None:
    """A datetime with whole milliseconds converts back exactly (no float truncation, e.g. after 2038-01-19)."""
    value = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert to_epoch_ms(value) == ms


def _groups_by_sorting_pairs(batch: EventBatch, window_ms: int) -> tuple[list[int], list[int], list[str]]:
    """group_rows as it was written first: rows' source strings and (source, start) pairs sorted."""
    sources = np.array([f"{t}:{p}" for t, p in zip(batch.topics, batch.partitions.tolist(), strict=True)])
    starts = window_starts(batch.event_time_ms, window_ms)
    names, source_idx = np.unique(sources, return_inverse=True)
    pairs = np.stack([source_idx.reshape(-1), starts], axis=1)
    unique_pairs, group_of_row = np.unique(pairs, axis=0, return_inverse=True)
    return group_of_row.reshape(-1).tolist(), unique_pairs[:, 1].tolist(), [str(names[s]) for s in unique_pairs[:, 0]]


@pytest.mark.parametrize(
    "topics",
    [
        ["events"] * 8,  # one topic: partitions 2 and 10 sort as strings ("events:10" first)
        ["events", "other", "events", "events", "other", "events", "events", "events"],
    ],
)
def test_rows_are_grouped_by_source_and_window_as_sorting_the_pairs_groups_them(topics: list[str]) -> None:
    n = len(topics)
    batch = EventBatch(
        model="m",
        decoded=[Decoded({}, []) for _ in range(n)],
        topics=topics,
        partitions=np.array([2, 10, 2, 3, 10, 10, 2, 3]),
        offsets=np.arange(n) + 100,
        event_time_ms=np.array([5_000, 1_000, 61_000, 1_000, 122_000, 1_500, 5_001, 200_000]),
        event_ids=[None] * n,
    )
    groups = group_rows(batch, 60_000)
    want_groups, want_starts, want_sources = _groups_by_sorting_pairs(batch, 60_000)
    assert groups.group_of_row.tolist() == want_groups
    assert groups.starts.tolist() == want_starts
    assert groups.sources == want_sources
    assert list(groups.updates) == sorted(set(want_sources))
