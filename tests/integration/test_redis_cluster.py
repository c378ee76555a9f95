"""The key layout on a real Redis Cluster: three redis-server nodes started by the session fixture.

A worker on the embedded broker writes two models to the Cluster, with ``[redis] cluster = true``;
their rolling metrics, read back through the Python API and the ``metrics`` CLI, equal the input
counts, and every key of a model hashes to its model's one slot, on the node that owns it, the
two models on different nodes. The conformance suite (tests/state/test_conformance.py) runs every
store sequence on the Cluster too; the tests here cover what only a Cluster has: scripts a node
lost, keys of two slots in one script, and a client of the wrong kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from streamtest import new_worker, produce, run_until, window_totals, write_config

from stream_guard.assembly import metrics_reader
from stream_guard.dashboard.views import read_model_view, window_starts
from stream_guard.errors import ConfigError
from stream_guard.metrics.buckets import RedisBucketReads
from stream_guard.resources import schema_dir
from stream_guard.settings import RedisConfig
from stream_guard.state import Fence, ModelKeys, StateUpdate, WindowStore
from stream_guard.state.client import cluster_mode_problem, connect, describe_error, pipeline
from stream_guard.tools.embedded import ClusterServer, Server, create_topics
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # an hour boundary
HOUR_MS = 3_600_000
REPO = Path(__file__).resolve().parents[2]
N_FRAUD, N_OTHER = 1500, 900
#: (predicted, actual) of each cell of ``SliceMetrics.confusion``: tp, fp, tn, fn.
CELLS = ((True, True), (True, False), (False, False), (False, True))


@pytest.fixture
def cluster_client(redis_cluster: ClusterServer) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    yield client
    client.close()


def _node_of(client: RedisCluster, model: str) -> str:
    return str(client.get_node_from_key(f"x:{{{model}}}:y").name)


def _other_model(client: RedisCluster, model: str) -> str:
    """A model name whose slot a node other than ``model``'s owns."""
    return next(f"loans{i}" for i in range(100) if _node_of(client, f"loans{i}") != _node_of(client, model))


def _keys_by_node(client: RedisCluster, match: str) -> dict[str, list[str]]:
    """Every key matching ``match``, scanned node by node."""
    out: dict[str, list[str]] = {}
    for node in client.get_primaries():
        found = [str(k) for k in client.scan_iter(match=match, count=1000, target_nodes=node)]
        if found:
            out[node.name] = found
    return out


def _flush_scripts(client: RedisCluster) -> None:
    """Empty every node's script cache, as a restart or a failover to a replica does."""
    for node in client.get_primaries():
        node.redis_connection.script_flush()


def _slice_counts(records: list[dict[str, object]]) -> dict[str, int]:
    frame = pd.DataFrame.from_records(records)
    expected = {"*": len(frame)}
    for name in ("device_type", "country"):
        for value, count in frame[name].value_counts().items():
            expected[f"{name}={value}"] = int(count)
    return expected


def test_a_worker_on_a_cluster_counts_each_model_exactly_in_its_own_slot(
    tmp_path: Path, bootstrap: str, redis_cluster: ClusterServer, cluster_client: RedisCluster, unique: str
) -> None:
    """Two models through a real worker onto the Cluster: metrics equal the input, each model's keys share one slot."""
    other = _other_model(cluster_client, "fraud")
    other_topic, labels_topic = f"loans-{unique}", f"labels-{unique}"
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_cluster.url,
        redis_cluster=True,
        unique=unique,
        window_s=60,
        model_extra=f"""
[models.labels]
topic = "{labels_topic}"
encoding = "json"
timestamp_field = "ts"

[[models]]
name = "{other}"
topics = ["{other_topic}"]
schema = "{schema_dir() / "fraud_inference.avsc"}"
encoding = "confluent"
event_id_field = "event_id"
timestamp_field = "ts"
features = ["amount"]
prediction_field = "prediction"
score_field = "score"
slice_fields = ["device_type", "country"]
""",
    )
    assert config.redis.cluster and [m.name for m in config.models] == ["fraud", other]
    create_topics(bootstrap, [other_topic, labels_topic], partitions=2)

    sim = Simulator(encoding="confluent", seed=71)
    fraud_events = list(sim.stream(N_FRAUD, START_MS + 60_000, step_ms=120))
    other_events = list(Simulator(encoding="confluent", seed=72).stream(N_OTHER, START_MS + 90_000, step_ms=150))
    labels = sim.labels([r for r, _, _ in fraud_events])
    produce(bootstrap, config.models[0].topics[0], ((None, p, r["ts"]) for r, p, _ in fraud_events), partitions=3)
    produce(bootstrap, other_topic, ((None, p, r["ts"]) for r, p, _ in other_events), partitions=2)

    worker = new_worker(config)
    assert isinstance(worker.parts.redis_client, RedisCluster)
    failure: list[BaseException] = []
    before_labels: dict[str, list[str]] = {}  # the stored predictions, one key per event, before the labels

    def label_after_the_events() -> None:  # every prediction stored before its label
        try:
            deadline = time.monotonic() + 60
            while worker.stats.decoded < N_FRAUD + N_OTHER and time.monotonic() < deadline:
                time.sleep(0.1)
            before_labels.update(_keys_by_node(cluster_client, f"{config.redis.key_prefix}:{{fraud}}:pred:*"))
            produce(bootstrap, labels_topic, ((None, json.dumps(x).encode(), x["ts"]) for x in labels), partitions=2)
        except Exception as exc:  # noqa: BLE001 - reported by the test's thread
            failure.append(exc)

    driver = threading.Thread(target=label_after_the_events)
    driver.start()
    total = N_FRAUD + N_OTHER + len(labels)
    stats = run_until([worker], lambda: bool(failure) or worker.stats.consumed >= total, timeout_s=90)[0]
    driver.join(30)
    assert not failure, failure
    assert (stats.decoded, stats.dead_lettered, stats.labels_matched) == (N_FRAUD + N_OTHER, 0, N_FRAUD)

    # -- the rolling metrics, through the Python API, equal the input ----------------------------
    for model, events in (("fraud", fraud_events), (other, other_events)):
        reader = metrics_reader(config, model)
        assert isinstance(reader.source, RedisBucketReads) and isinstance(reader.source.client, RedisCluster)
        rollup = reader.rollup(START_MS, START_MS + HOUR_MS)
        expected = _slice_counts([r for r, _, _ in events])
        assert {name: rollup[name].events for name in expected if name in rollup} == expected, model
        assert rollup.overall.get("pn") == len(events)
        assert rollup.overall.get("pv") == float(sum(r["prediction"] for r, _, _ in events))
        if model == "fraud":
            assert (rollup.overall.labelled, rollup.overall.labels_pending) == (N_FRAUD, 0)
            predicted = [r["score"] >= 0.5 for r, _, _ in events]
            actual = [x["label"] == 1 for x in labels]
            pairs = list(zip(predicted, actual, strict=True))
            expected_confusion = tuple(sum(1 for pair in pairs if pair == cell) for cell in CELLS)
            assert rollup.overall.confusion == expected_confusion
        assert window_totals(cluster_client, config, model)["n"] == len(events), model
        keys = ModelKeys(config.redis.key_prefix, model)
        starts = sorted({r["ts"] // 60_000 * 60_000 for r, _, _ in events})
        assert window_starts(cluster_client, keys) == starts, model  # the dashboard's SCAN, on the model's node
        view = read_model_view(config, model, cluster_client, window_ms=HOUR_MS, end_ms=START_MS + HOUR_MS)
        assert view.events == len(events) and sum(m.events for _, m in view.overall) == len(events), model

    # -- every key of a model in its one slot, on the node owning it; the models on two nodes ------
    slots: dict[str, int] = {}
    for model in ("fraud", other):
        keys = ModelKeys(config.redis.key_prefix, model)
        by_node = _keys_by_node(cluster_client, f"{config.redis.key_prefix}:*{model}*")
        assert list(by_node) == [_node_of(cluster_client, model)], (model, {n: len(k) for n, k in by_node.items()})
        (names,) = by_node.values()
        assert {keys.applied, keys.watermarks, keys.watermarks_seen, keys.metrics_index} <= set(names)
        if model == "fraud":  # the stored predictions too: one key per event
            assert {keys.labels_applied, keys.labels_watermarks, keys.labels_seen} <= set(names)
        assert len(names) >= 9, names
        server_slots = {cluster_client.cluster_keyslot(name) for name in names}  # CLUSTER KEYSLOT, per key
        assert server_slots == {cluster_client.keyslot(keys.applied)}, (model, server_slots)
        slots[model] = server_slots.pop()
    assert slots["fraud"] != slots[other]
    assert list(before_labels) == [_node_of(cluster_client, "fraud")]
    (predictions,) = before_labels.values()
    assert len(predictions) == N_FRAUD
    assert {cluster_client.cluster_keyslot(name) for name in predictions} == {slots["fraud"]}
    assert _node_of(cluster_client, "fraud") != _node_of(cluster_client, other)

    # -- the metrics CLI builds its client from the same [redis] section ---------------------------
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_GUARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cli_args = ["--window", "24h", "--json", "--model"]
    for model, events in (("fraud", fraud_events), (other, other_events)):
        done = subprocess.run(
            [sys.executable, "-m", "stream_guard", "metrics", "-c", str(tmp_path / "config.toml"), *cli_args, model],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["slices"]["*"]["events"] == len(events), model


def _counted(keys: ModelKeys, source: str, first: int, last: int, start_ms: int) -> StateUpdate:
    update = StateUpdate(source, first, last, start_ms + 100, fence=Fence.EVENTS)
    update.open_window(start_ms)
    update.incr(keys.window(start_ms), "n", last - first + 1)
    update.incr(keys.bucket(start_ms), "*|n", last - first + 1)
    return update


def test_scripts_a_node_lost_are_loaded_again_and_each_batch_counts_once(cluster_client: RedisCluster) -> None:
    """After SCRIPT FLUSH on every node (a restart, a failover), one pipeline of two models' batches applies each once."""
    models = ["fraud", _other_model(cluster_client, "fraud")]
    stores = [
        WindowStore(
            cluster_client,
            ModelKeys("sgflush", m),
            window_ms=60_000,
            lateness_ms=0,
            idle_ms=60_000,
            retention_s=600,
            worker_id="w",
        )
        for m in models
    ]
    assert [s.apply([_counted(s.keys, "t:0", 0, 9, START_MS)], 0) for s in stores] == [[1], [1]]
    _flush_scripts(cluster_client)
    pipe = pipeline(cluster_client)
    for store in stores:
        store.apply(
            [_counted(store.keys, "t:0", 10, 14, START_MS), _counted(store.keys, "t:1", 0, 2, START_MS)], 0, pipe
        )
    assert len(pipe) == 4
    assert pipe.execute() == [1, 1, 1, 1]
    for store in stores:
        assert store.snapshot(START_MS).fields == {"n": "18"}
        assert store.applied_offsets(["t:0", "t:1"]) == {"t:0": 14, "t:1": 2}
    # The bucket sums (a script in a pipeline as well) after another flush.
    _flush_scripts(cluster_client)
    reads = RedisBucketReads(cluster_client)
    assert reads.sum_bucket_groups([[s.keys.bucket(START_MS)] for s in stores]) == [({"*|n": 18.0}, 1)] * 2


def test_a_script_over_two_models_slots_is_refused_before_it_is_sent(cluster_client: RedisCluster) -> None:
    """The Cluster guards the layout: an update naming another model's key fails whole, nothing applied."""
    models = ["fraud", _other_model(cluster_client, "fraud")]
    store = WindowStore.for_client(cluster_client, ModelKeys("sgcross", models[0]))
    stray = _counted(store.keys, "t:0", 0, 0, START_MS)
    stray.incr(ModelKeys("sgcross", models[1]).window(START_MS), "n", 1)
    with pytest.raises(RedisClusterException, match="same key slot"):
        store.apply([stray], 0)
    assert store.applied_offsets(["t:0"]) == {}


def test_a_client_of_the_wrong_kind_is_one_clear_line(redis_cluster: ClusterServer, redis_server: Server) -> None:
    """cluster unset on a Cluster node, or set on a plain server: one line saying which way to set it."""
    plain_on_node = connect(RedisConfig(url=redis_cluster.url))
    assert isinstance(plain_on_node, redis.Redis)
    assert cluster_mode_problem(plain_on_node) == (
        "redis.cluster: the server is a Redis Cluster node: set cluster = true"
    )
    moved = None
    for i in range(50):  # some key of a slot another node owns
        try:
            plain_on_node.get(f"probe:{{m{i}}}")
        except redis.ResponseError as exc:
            moved = exc
            break
    assert moved is not None
    assert (describe_error(moved) or "").endswith("the server is a Redis Cluster, set [redis] cluster = true")
    plain_on_node.close()

    with pytest.raises(RedisClusterException) as info:
        connect(RedisConfig(url=f"redis://127.0.0.1:{redis_server.port}/0", cluster=True))
    assert describe_error(info.value) == (
        "the Redis server is not a Cluster (cluster mode is not enabled): set [redis] cluster = false"
    )
    on_cluster = connect(RedisConfig(url=redis_cluster.url, cluster=True))
    assert isinstance(on_cluster, RedisCluster) and cluster_mode_problem(on_cluster) is None
    assert len(on_cluster.get_primaries()) == 3
    on_cluster.close()


def test_a_worker_configured_for_one_server_refuses_a_cluster_node(
    tmp_path: Path, bootstrap: str, redis_cluster: ClusterServer, unique: str
) -> None:
    """cluster unset on a Cluster node stops the worker at start-up with the config error, not a MOVED loop."""
    config = write_config(tmp_path, bootstrap=bootstrap, redis_url=redis_cluster.url, unique=unique)
    worker = new_worker(config)
    with pytest.raises(ConfigError, match="set cluster = true"):
        worker.run(5)
