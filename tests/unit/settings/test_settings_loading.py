"""Unit tests for stream_guard.settings.load_config: TOML loading, environment overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_guard.errors import ConfigError
from stream_guard.settings import ChecksConfig, Config, DriftSettings, Severity, load_config

REGISTRY = """
[schema_registry]
local_dir = "registry"
"""

MODEL = """
[[models]]
name = "{name}"
topics = ["fraud.inferences"]
schema = "fraud.avsc"
encoding = "{encoding}"
event_id_field = "event_id"
timestamp_field = "ts"
features = ["amount", "age", "device_type"]
slice_fields = ["device_type"]
"""

VALID = (
    """
[kafka]
bootstrap_servers = "kafka-1:9092"
group_id = "guards"

[redis]
url = "redis://cache:6379/2"

[worker]
batch_size = 100
batch_timeout_s = 1
window_s = 10
"""
    + REGISTRY
    + MODEL.format(name="fraud", encoding="confluent")
)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A directory with the reader schema file the configs below point at."""
    (tmp_path / "fraud.avsc").write_text('{"type": "record", "name": "R", "fields": []}')
    return tmp_path


def _write(directory: Path, text: str) -> Path:
    path = directory / "stream-guard.toml"
    path.write_text(text)
    return path


def _problems(directory: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(directory, text), environ=environ or {})
    return info.value.problems


def test_valid_config_loads(config_dir: Path) -> None:
    """A valid TOML file loads into typed sections; relative paths resolve against the file's directory."""
    config = load_config(_write(config_dir, VALID), environ={})
    assert isinstance(config, Config)
    assert config.kafka.bootstrap_servers == "kafka-1:9092"
    assert config.kafka.group_id == "guards"
    assert config.kafka.alerts_topic == "stream-guard.alerts"  # default kept
    assert config.redis.url == "redis://cache:6379/2"
    assert config.worker.batch_size == 100
    assert config.worker.batch_timeout_s == 1.0 and isinstance(config.worker.batch_timeout_s, float)
    assert config.worker.window_s == 10
    assert config.worker.max_examples == 5
    assert config.base_dir == config_dir.resolve()
    (model,) = config.models
    assert model.name == "fraud"
    assert model.topics == ["fraud.inferences"]
    assert model.encoding == "confluent"
    assert model.features == ["amount", "age", "device_type"]
    assert model.report_unexpected_fields is True
    assert config.resolve_path(model.schema) == config_dir.resolve() / "fraud.avsc"
    assert config.model("fraud") is model


def test_unknown_model_lookup_is_a_config_error(config_dir: Path) -> None:
    """Config.model on an unknown name raises ConfigError listing the configured models."""
    config = load_config(_write(config_dir, VALID), environ={})
    with pytest.raises(ConfigError) as info:
        config.model("churn")
    assert info.value.problems == ["unknown model 'churn' (configured: fraud)"]


def test_env_overrides(config_dir: Path) -> None:
    """STREAM_GUARD_* variables override the file; numbers parse as TOML scalars, other text stays a string."""
    environ = {
        "STREAM_GUARD_KAFKA__BOOTSTRAP_SERVERS": "broker-a:9092,broker-b:9092",
        "STREAM_GUARD_WORKER__BATCH_SIZE": "2000",
        "STREAM_GUARD_WORKER__LOG_LEVEL": "debug",
        "HOME": "/root",  # unrelated variables are ignored
        "STREAM_GUARDIAN": "x",  # only the exact prefix counts
    }
    config = load_config(_write(config_dir, VALID), environ=environ)
    assert config.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert config.worker.batch_size == 2000
    assert type(config.worker.batch_size) is int
    assert config.worker.log_level == "debug"
    assert config.kafka.group_id == "guards"  # not overridden


def test_env_overrides_default_to_os_environ(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without environ=, load_config reads os.environ."""
    monkeypatch.setenv("STREAM_GUARD_WORKER__BATCH_SIZE", "321")
    assert load_config(_write(config_dir, VALID)).worker.batch_size == 321


def test_env_override_of_wrong_type_is_reported(config_dir: Path) -> None:
    """An environment value of the wrong type is one problem line naming the setting."""
    problems = _problems(config_dir, VALID, {"STREAM_GUARD_WORKER__BATCH_SIZE": "lots"})
    assert problems == ["worker.batch_size: expected int, got 'lots'"]


def test_env_override_into_non_section_is_reported(config_dir: Path) -> None:
    """Descending into a setting that is not a section is reported, naming the variable."""
    problems = _problems(config_dir, VALID, {"STREAM_GUARD_KAFKA__GROUP_ID__X": "1"})
    assert problems == ["STREAM_GUARD_KAFKA__GROUP_ID__X: kafka.group_id is not a section"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            VALID.replace('group_id = "guards"', 'group = "guards"'),
            "kafka.group: unknown setting (known: ",
            id="unknown-key",
        ),
        pytest.param(
            VALID.replace("batch_size = 100", 'batch_size = "100"'),
            "worker.batch_size: expected int, got '100'",
            id="wrong-type",
        ),
        pytest.param(
            VALID.replace("batch_size = 100", "batch_size = true"),
            "worker.batch_size: expected int, got True",
            id="bool-for-int",
        ),
        pytest.param(
            VALID.replace("batch_size = 100", "batch_size = 0"),
            "worker.batch_size: must be positive, got 0",
            id="non-positive",
        ),
        pytest.param(
            VALID.replace('url = "redis://cache:6379/2"', 'url = "redis://cache:6379/2"\nsocket_timeout_s = 0'),
            "redis.socket_timeout_s: must be positive, got 0",
            id="redis-without-timeout",
        ),
        pytest.param(
            VALID.replace('encoding = "confluent"', 'encoding = "protobuf"'),
            "models[0].encoding: expected one of confluent, avro, json, got 'protobuf'",
            id="bad-encoding",
        ),
        pytest.param(
            VALID.replace('schema = "fraud.avsc"', 'schema = "nope.avsc"'),
            "models[0] (fraud).schema: file ",
            id="missing-schema-file",
        ),
        pytest.param(VALID.split("[[models]]")[0], "models: at least one [[models]] table is required", id="no-models"),
        pytest.param(
            VALID + MODEL.format(name="fraud", encoding="json"),
            "models[1] (fraud): duplicate model name",
            id="duplicate-model",
        ),
        pytest.param(
            VALID.replace(REGISTRY, ""),
            "models[0] (fraud): encoding 'confluent' needs schema_registry.url or schema_registry.local_dir",
            id="confluent-without-registry",
        ),
        pytest.param(
            VALID + '\n[models.labels]\ntopic = "fraud.labels"\nhold_s = -1\n',
            "models[0] (fraud).labels.hold_s: must be 0 (no holding) or positive, got -1",
            id="negative-hold",
        ),
        pytest.param(
            VALID.replace('name = "fraud"', 'name = "fr:aud"'),
            "models[0] (fr:aud): name may not contain ':'",
            id="name-with-colon",
        ),
        pytest.param(
            VALID.replace("window_s = 10", "window_s = 10\n\n[alerts]\ncooldown_s = 600\nremind_after_s = 60"),
            "alerts.remind_after_s: must be at least alerts.cooldown_s (600), got 60",
            id="reminder-within-cooldown",
        ),
        pytest.param(
            VALID.replace("window_s = 10", "window_s = 10\n\n[alerts]\nescalation_factor = 1.0"),
            "alerts.escalation_factor: must be above 1, got 1",
            id="escalation-factor-not-above-one",
        ),
        pytest.param(
            VALID.replace("window_s = 10", "window_s = 10\n\n[alerts]\nresolve_after_s = -1"),
            "alerts.resolve_after_s: must be 0 or positive, got -1",
            id="negative-resolve-after",
        ),
        pytest.param(
            VALID.replace('url = "redis://cache:6379/2"', 'url = "redis://cache:6379/2"\ncluster = true'),
            "redis.url: a Redis Cluster has only database 0, the URL selects database 2",
            id="cluster-with-database",
        ),
        pytest.param(
            VALID.replace('url = "redis://cache:6379/2"', 'url = "redis://cache:6379?db=3"\ncluster = true'),
            "redis.url: a Redis Cluster has only database 0, the URL selects database 3",
            id="cluster-with-database-query",
        ),
        pytest.param(
            VALID.replace('url = "redis://cache:6379/2"', 'url = "unix:///run/redis.sock"\ncluster = true'),
            "redis.url: a Redis Cluster is reached over TCP",
            id="cluster-over-unix-socket",
        ),
        pytest.param(
            VALID.replace('url = "redis://cache:6379/2"', 'url = "redis+cluster://cache:6379"'),
            "redis.url: expected a redis://, rediss:// or unix:// URL, got 'redis+cluster://cache:6379'",
            id="unknown-url-scheme",
        ),
        pytest.param(
            VALID.replace('url = "redis://cache:6379/2"', 'url = "redis://cache:6379/0"\ncluster = "yes"'),
            "redis.cluster: expected true or false, got 'yes'",
            id="cluster-not-a-bool",
        ),
    ],
)
def test_each_mistake_is_one_readable_line(config_dir: Path, text: str, expected: str) -> None:
    """Each configuration mistake yields exactly one single-line problem naming the setting."""
    problems = _problems(config_dir, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems
    assert "\n" not in problems[0]


def test_a_cluster_url_with_database_zero_loads(config_dir: Path) -> None:
    """cluster = true with a node's URL (database 0, explicit or not) is valid; the environment can set it."""
    for url in ("redis://node-1:7000", "redis://node-1:7000/0", "rediss://user:pw@node-1:7000/?db=0"):
        text = VALID.replace('url = "redis://cache:6379/2"', f'url = "{url}"\ncluster = true')
        config = load_config(_write(config_dir, text), environ={})
        assert (config.redis.url, config.redis.cluster) == (url, True)
    env = {"STREAM_GUARD_REDIS__CLUSTER": "true", "STREAM_GUARD_REDIS__URL": "redis://node-2:7001"}
    assert load_config(_write(config_dir, VALID), environ=env).redis.cluster is True
    assert load_config(_write(config_dir, VALID), environ={}).redis.cluster is False


def test_missing_schema_file_problem_names_the_resolved_path(config_dir: Path) -> None:
    """The missing-schema problem names the path resolved against the config file's directory."""
    problems = _problems(config_dir, VALID.replace('schema = "fraud.avsc"', 'schema = "nope.avsc"'))
    assert problems == [f"models[0] (fraud).schema: file {config_dir.resolve() / 'nope.avsc'} not found"]


def test_confluent_with_registry_url_is_valid(config_dir: Path) -> None:
    """A registry URL instead of a local directory satisfies encoding 'confluent'."""
    text = VALID.replace('local_dir = "registry"', 'url = "http://registry:8081"')
    assert load_config(_write(config_dir, text), environ={}).schema_registry.url == "http://registry:8081"


def test_several_setting_mistakes_are_reported_together(config_dir: Path) -> None:
    """Several unknown/mistyped settings in one file are all reported in one ConfigError, one line each."""
    text = (
        VALID.replace('group_id = "guards"', 'groupid = "guards"')
        .replace("batch_size = 100", 'batch_size = "big"')
        .replace('encoding = "confluent"', 'encoding = "xml"')
        .replace("window_s = 10", "window_s = 1.5")
    )
    problems = _problems(config_dir, text)
    expected_starts = [
        "kafka.groupid: unknown setting",
        "worker.batch_size: expected int, got 'big'",
        "worker.window_s: expected int, got 1.5",
        "models[0].encoding: expected one of confluent, avro, json, got 'xml'",
    ]
    assert len(problems) == len(expected_starts), problems
    for start in expected_starts:
        assert sum(p.startswith(start) for p in problems) == 1, (start, problems)
    assert str(ConfigError(problems)) == "; ".join(problems)


def test_several_model_mistakes_are_reported_together(config_dir: Path) -> None:
    """Several well-typed but invalid model settings are all reported together, one line each."""
    text = (
        VALID.replace(REGISTRY, "").replace('schema = "fraud.avsc"', 'schema = "absent.avsc"')
        + MODEL.format(name="fraud", encoding="json")
        + MODEL.format(name="bad{name}", encoding="json").replace('topics = ["fraud.inferences"]', "topics = []")
    )
    problems = _problems(config_dir, text)
    expected_starts = [
        "models[0] (fraud).schema: file ",
        "models[0] (fraud): encoding 'confluent' needs schema_registry.url",
        "models[1] (fraud): duplicate model name",
        "models[2] (bad{name}): name may not contain",
        "models[2] (bad{name}).topics: at least one input topic is required",
    ]
    assert len(problems) == len(expected_starts), problems
    for start in expected_starts:
        assert sum(p.startswith(start) for p in problems) == 1, (start, problems)


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    """A config path that does not exist gives one line naming it."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.problems == [f"config file {path} does not exist"]


def test_invalid_toml_is_one_clear_line(config_dir: Path) -> None:
    """Invalid TOML gives one line naming the file and saying it is invalid TOML."""
    path = _write(config_dir, "[kafka\nbootstrap_servers = 1")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    (line,) = info.value.problems
    assert line.startswith(f"{path}: invalid TOML: ")
    assert "\n" not in line


def test_environment_only_config_is_validated() -> None:
    """path=None reads no file but still validates: a config without models is rejected."""
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"STREAM_GUARD_KAFKA__BOOTSTRAP_SERVERS": "b:9092"})
    assert info.value.problems == ["models: at least one [[models]] table is required"]


def test_non_string_model_name_is_a_config_error(config_dir: Path) -> None:
    """name = 5 is reported as a ConfigError line, not a crash."""
    problems = _problems(config_dir, VALID.replace('name = "fraud"', "name = 5"))
    assert problems == ["models[0].name: expected str, got 5"]


def test_non_string_schema_path_is_a_config_error(config_dir: Path) -> None:
    """schema = 5 is reported as a ConfigError line, not a crash."""
    problems = _problems(config_dir, VALID.replace('schema = "fraud.avsc"', "schema = 5"))
    assert problems == ["models[0].schema: expected str, got 5"]


def test_topics_of_wrong_type_is_one_line(config_dir: Path) -> None:
    """topics = "x" (a string, not a list) is reported once."""
    problems = _problems(config_dir, VALID.replace('topics = ["fraud.inferences"]', 'topics = "fraud.inferences"'))
    assert problems == ["models[0].topics: expected a list, got 'fraud.inferences'"]


def test_type_and_semantic_mistakes_arrive_in_one_run(config_dir: Path) -> None:
    """A type mistake no longer hides the semantic problems: both kinds are reported together."""
    text = VALID.replace("batch_size = 100", 'batch_size = "big"').replace("window_s = 10", "window_s = 0")
    text = text.replace('schema = "fraud.avsc"', 'schema = "absent.avsc"')
    problems = _problems(config_dir, text)
    assert problems == [
        "worker.batch_size: expected int, got 'big'",
        "worker.window_s: must be positive, got 0",
        f"models[0] (fraud).schema: file {config_dir.resolve() / 'absent.avsc'} not found",
    ]


def test_a_check_reading_a_mistyped_value_is_skipped_alone(config_dir: Path) -> None:
    """A mistyped value skips the checks that read it, not the others."""
    text = VALID.replace('schema = "fraud.avsc"', "schema = 5").replace("batch_size = 100", "batch_size = -1")
    assert _problems(config_dir, text) == [
        "models[0].schema: expected str, got 5",
        "worker.batch_size: must be positive, got -1",
    ]


def test_checks_and_drift_are_typed_sections(config_dir: Path) -> None:
    """[checks] and [drift] load once into typed sections, enabled flags and per-feature tables included."""
    text = (
        VALID
        + "\n[checks]\nenabled = false\nmin_support = 50\n[checks.features.amount.out_of_range]\ntolerance = 0.5\n"
        + '[drift]\nseverity = "critical"\n[drift.features.age]\nalpha = 0.001\n'
    )
    config = load_config(_write(config_dir, text), environ={"STREAM_GUARD_DRIFT__ENABLED": "false"})
    assert (config.checks.enabled, config.checks.min_support) == (False, 50)
    assert config.checks.settings("out_of_range", "amount").tolerance == 0.5
    assert config.drift.enabled is False
    assert config.drift.feature("age").alpha == 0.001
    assert config.drift.feature("age").severity is Severity.CRITICAL
    defaults = load_config(_write(config_dir, VALID), environ={})
    assert defaults.checks == ChecksConfig() and defaults.drift == DriftSettings()


def test_checks_and_drift_problems_are_lines_of_the_file(config_dir: Path) -> None:
    """Problems in [checks] and [drift] are reported with the rest of the file, every one."""
    text = (
        VALID
        + '\n[checks]\nenabled = "yes"\n[checks.nan]\ntolerance = 1\n'
        + "[drift]\nalpha = 2.0\n[drift.features.amount]\npsi = 1\n"
    )
    problems = _problems(config_dir, text)
    assert problems[0] == "checks.enabled: expected true or false, got 'yes'"
    assert problems[1].startswith("drift.features.amount.psi: unknown setting (known: ")
    assert problems[2:] == [
        "checks.nan.tolerance: the nan check has no tolerance",
        "drift.alpha: expected a number in (0, 1), got 2.0",
    ]


def test_unknown_alert_kind_in_severity_overrides(config_dir: Path) -> None:
    """alerts.severity keys must be alert kinds; the values must be severities."""
    text = VALID + '\n[alerts]\nseverity = { schema_change = "critical", data_drfit = "info", nan = "loud" }\n'
    problems = _problems(config_dir, text)
    assert problems[0] == "alerts.severity.nan: expected one of INFO, WARNING, CRITICAL, got 'loud'"
    assert problems[1].startswith("alerts.severity.data_drfit: unknown alert kind (known: ")
    assert "data_drift" in problems[1] and len(problems) == 2
    config = load_config(_write(config_dir, VALID + '\n[alerts]\nseverity = { schema_change = "critical" }\n'))
    assert config.alerts.severity == {"schema_change": Severity.CRITICAL}


def test_per_feature_tables_must_name_a_model_feature(config_dir: Path) -> None:
    """checks/drift per-feature tables of names no model has are reported; score and prediction count."""
    model = 'prediction_field = "prediction"\nscore_field = "score"\n'
    text = VALID.replace('slice_fields = ["device_type"]', 'slice_fields = ["device_type"]\n' + model) + (
        "\n[checks.features.amount.nan]\nenabled = false\n[checks.features.amuont.nan]\nenabled = false\n"
        "[drift.features.score]\nenabled = false\n[drift.features.colour]\nenabled = false\n"
    )
    listed = "age, amount, device_type, prediction, score"
    assert _problems(config_dir, text) == [
        f"checks.features.amuont: not a feature of any model (features: {listed})",
        f"drift.features.colour: not a feature of any model (features: {listed})",
    ]


def test_missing_profile_file_is_a_problem_unless_learning(config_dir: Path) -> None:
    """A configured profile that does not exist is reported; require_profiles=False (learn) accepts it."""
    text = VALID.replace('slice_fields = ["device_type"]', 'slice_fields = ["device_type"]\nprofile = "p.json"')
    expected = f"models[0] (fraud).profile: file {config_dir.resolve() / 'p.json'} not found"
    assert _problems(config_dir, text) == [f"{expected} (write it with `stream-guard learn`)"]
    config = load_config(_write(config_dir, text), environ={}, require_profiles=False)
    assert config.models[0].profile == "p.json"
    (config_dir / "p.json").write_text("{}")
    assert load_config(_write(config_dir, text), environ={}).models[0].profile == "p.json"


def test_extra_checks_report_with_the_rest(config_dir: Path) -> None:
    """Problems of extra_checks (check-config's librdkafka check) join the file's own."""
    text = VALID.replace("batch_size = 100", "batch_size = 0")
    with pytest.raises(ConfigError) as info:
        load_config(_write(config_dir, text), environ={}, extra_checks=[lambda c: [f"x: {c.kafka.group_id}"]])
    assert info.value.problems == ["worker.batch_size: must be positive, got 0", "x: guards"]


def test_feature_tables_are_checked_beside_other_model_mistakes(config_dir: Path) -> None:
    """A mistake elsewhere in a model does not skip the per-feature-table check; a mistyped feature list does."""
    tables = "\n[checks.features.amuont.nan]\nenabled = false\n"
    text = VALID.replace('encoding = "confluent"', 'encoding = "xml"') + tables
    problems = _problems(config_dir, text)
    assert [p.split(":")[0] for p in problems] == ["models[0].encoding", "checks.features.amuont"]
    mistyped = VALID.replace('features = ["amount", "age", "device_type"]', 'features = "amount"') + tables
    assert _problems(config_dir, mistyped) == ["models[0].features: expected a list, got 'amount'"]


def test_event_time_skew_and_finding_caps_are_validated(config_dir: Path) -> None:
    """A negative skew bound, a zero finding cap and a metrics retention within the skew bound are reported."""
    environ = {
        "STREAM_GUARD_WORKER__MAX_EVENT_TIME_SKEW_S": "-1",
        "STREAM_GUARD_WORKER__MAX_FINDING_KEYS": "0",
    }
    problems = _problems(config_dir, VALID, environ)
    assert "worker.max_event_time_skew_s: must be 0 (off) or positive, got -1" in problems
    assert "worker.max_finding_keys: must be positive, got 0" in problems
    short = VALID + "\n[models.metrics]\nretention_s = 600\n"
    problems = _problems(config_dir, short, {"STREAM_GUARD_WORKER__MAX_EVENT_TIME_SKEW_S": "600"})
    assert any("metrics.retention_s: must exceed worker.max_event_time_skew_s (600), got 600" in p for p in problems)
    config = load_config(_write(config_dir, short), environ={"STREAM_GUARD_WORKER__MAX_EVENT_TIME_SKEW_S": "0"})
    assert config.worker.max_event_time_skew_s == 0


def test_delivery_defaults_to_at_least_once_and_names_its_transactional_id(config_dir: Path) -> None:
    """``[kafka] delivery``: at-least-once unless asked; the transactional id joins prefix, group and instance."""
    config = load_config(_write(config_dir, VALID), environ={})
    assert config.kafka.delivery == "at_least_once"
    environ = {"STREAM_GUARD_KAFKA__DELIVERY": "exactly_once", "STREAM_GUARD_KAFKA__INSTANCE_ID": "sg-0"}
    config = load_config(_write(config_dir, VALID), environ=environ)
    assert config.kafka.delivery == "exactly_once"
    assert config.kafka.transactional_id(config.kafka.instance_id) == "stream-guard-guards-sg-0"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('delivery = "exactly-once"', "kafka.delivery: expected one of"),
        (
            'delivery = "exactly_once"\nproducer = { "transactional.id" = "x" }',
            "kafka.producer.transactional.id: set by",
        ),
        (
            'delivery = "exactly_once"\nconsumer = { "isolation.level" = "read_uncommitted" }',
            "kafka.consumer.isolation.level: set by",
        ),
        ('delivery = "exactly_once"\nproducer = { "enable.idempotence" = false }', "kafka.producer.enable.idempotence"),
        ('delivery = "exactly_once"\ntransactional_id_prefix = " "', "kafka.transactional_id_prefix: must not"),
    ],
)
def test_exactly_once_rejects_properties_it_sets_itself(config_dir: Path, extra: str, message: str) -> None:
    """Transactional settings by hand would contradict ``delivery``: one line each."""
    text = VALID.replace('group_id = "guards"', f'group_id = "guards"\n{extra}')
    problems = _problems(config_dir, text)
    assert any(p.startswith(message) for p in problems), problems
