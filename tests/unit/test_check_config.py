"""``stream-guard check-config``: every problem of a file in one run, librdkafka properties included."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_guard.cli import main
from stream_guard.kafka import client_property_problems
from stream_guard.settings import KafkaConfig

CONFIG = """
[kafka]
bootstrap_servers = "127.0.0.1:1"
consumer = {{ "sesion.timeout.ms" = 6000, "fetch.min.bytes" = 1 }}
producer = {{ "linger.mss" = 5 }}

[worker]
batch_size = {batch_size}

[[models]]
name = "fraud"
topics = ["fraud.inferences"]
schema = "fraud.avsc"
encoding = "json"
"""


def test_unknown_librdkafka_properties_are_one_line_each() -> None:
    """Each property librdkafka rejects at client construction is one line naming it; valid ones pass."""
    kafka = KafkaConfig(
        bootstrap_servers="127.0.0.1:1",
        consumer={"sesion.timeout.ms": 6000, "session.timeout.ms": 6000, "fetch.min.bytes": "lots"},
        producer={"linger.mss": 5, "acks": "all"},
    )
    assert client_property_problems(kafka) == [
        'kafka.consumer.sesion.timeout.ms: No such configuration property: "sesion.timeout.ms"',
        'kafka.consumer.fetch.min.bytes: Invalid value for configuration property "fetch.min.bytes"',
        'kafka.producer.linger.mss: No such configuration property: "linger.mss"',
    ]
    assert client_property_problems(KafkaConfig(consumer={"session.timeout.ms": 6000})) == []


def test_check_config_reports_kafka_and_file_problems_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config prints the file's problems and the rejected librdkafka properties in one run, exit code 2."""
    (tmp_path / "fraud.avsc").write_text('{"type": "record", "name": "R", "fields": []}')
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(batch_size=0))
    assert main(["check-config", "-c", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "stream-guard: config error: worker.batch_size: must be positive, got 0",
        'stream-guard: config error: kafka.consumer.sesion.timeout.ms: No such configuration property: "sesion.timeout.ms"',
        'stream-guard: config error: kafka.producer.linger.mss: No such configuration property: "linger.mss"',
    ]


LEARNABLE = """
[[models]]
name = "m"
topics = ["t"]
schema = "m.avsc"
encoding = "json"
features = ["x"]
profile = "profiles/m.json"
"""


def test_learn_writes_a_missing_profile_that_check_config_requires(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config rejects a configured profile that does not exist; learn accepts it, writes it, and then check-config passes."""
    (tmp_path / "m.avsc").write_text('{"type": "record", "name": "M", "fields": [{"name": "x", "type": "double"}]}')
    (tmp_path / "ref.jsonl").write_text("".join(f'{{"x": {i}.0}}\n' for i in range(200)))
    (tmp_path / "profiles").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(LEARNABLE)
    assert main(["check-config", "-c", str(path)]) == 2
    assert "models[0] (m).profile: file " in capsys.readouterr().err
    assert main(["learn", "-c", str(path), "--from-file", str(tmp_path / "ref.jsonl")]) == 0
    assert (tmp_path / "profiles" / "m.json").is_file()
    assert main(["check-config", "-c", str(path)]) == 0


def test_metrics_with_redis_down_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No traceback: the command says Redis is unreachable, where, and what to check; exit code 1."""
    from stream_guard.resources import schema_dir

    config = tmp_path / "c.toml"
    config.write_text(
        f"""
[redis]
url = "redis://127.0.0.1:1/0"
[[models]]
name = "fraud"
topics = ["t"]
schema = "{schema_dir() / "fraud_inference.avsc"}"
encoding = "json"
"""
    )
    assert main(["metrics", "-c", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stream-guard: Redis unreachable (") and "127.0.0.1:1" in err[0]


def test_metrics_with_the_cluster_down_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cluster = true and no node answers: one line naming the Cluster and what to check; exit code 1."""
    from stream_guard.resources import schema_dir

    config = tmp_path / "c.toml"
    config.write_text(
        f"""
[redis]
url = "redis://127.0.0.1:1"
cluster = true
[[models]]
name = "fraud"
topics = ["t"]
schema = "{schema_dir() / "fraud_inference.avsc"}"
encoding = "json"
"""
    )
    assert main(["metrics", "-c", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("stream-guard: Redis Cluster unreachable (Redis Cluster cannot be connected"), err
    assert err[0].endswith("check [redis] url and that the nodes run"), err
