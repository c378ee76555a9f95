"""Settings: every section of the configuration, declared once, below every stage.

This package imports nothing of stream_guard but :mod:`stream_guard.errors`; the stages
import their settings from here, never the reverse.

=========================  ==========================================================
module                     holds
=========================  ==========================================================
``loading``                TOML + ``STREAM_GUARD_`` environment, the one coercer
``sections``               ``[kafka]``, ``[redis]``, ``[schema_registry]``, ``[worker]``,
                           ``[alerts]``, ``[[models]]`` and :class:`Config`
``checks`` / ``drift``     ``[checks]`` and ``[drift]``, with their per-feature tables
``metrics``                ``[models.metrics]``, ``[models.labels]``, performance checks
``detectors``              :class:`DetectorSpec`, a River drift detector and its arguments
``kinds``                  alert kind names and :class:`Severity`
``validation``             :func:`load_config`: every problem of a file in one run
=========================  ==========================================================
"""

from stream_guard.settings.checks import CHECKS, ChecksConfig, CheckSettings, CheckTable, CheckTables
from stream_guard.settings.detectors import DetectorSpec
from stream_guard.settings.drift import DriftSettings, FeatureDriftSettings, FeatureDriftTable
from stream_guard.settings.kinds import ALERT_KINDS, Severity
from stream_guard.settings.loading import ENV_PREFIX
from stream_guard.settings.metrics import LabelSettings, MetricsSettings, performance_settings_problems
from stream_guard.settings.sections import (
    ENCODINGS,
    AlertsConfig,
    Config,
    Delivery,
    Encoding,
    KafkaConfig,
    ModelConfig,
    ObservabilityConfig,
    RedisConfig,
    SchemaRegistryConfig,
    WorkerConfig,
)
from stream_guard.settings.validation import load_config

__all__ = [
    "ALERT_KINDS",
    "CHECKS",
    "ENCODINGS",
    "ENV_PREFIX",
    "AlertsConfig",
    "CheckSettings",
    "CheckTable",
    "CheckTables",
    "ChecksConfig",
    "Config",
    "Delivery",
    "DetectorSpec",
    "DriftSettings",
    "Encoding",
    "FeatureDriftSettings",
    "FeatureDriftTable",
    "KafkaConfig",
    "LabelSettings",
    "MetricsSettings",
    "ModelConfig",
    "ObservabilityConfig",
    "RedisConfig",
    "SchemaRegistryConfig",
    "Severity",
    "WorkerConfig",
    "load_config",
    "performance_settings_problems",
]
