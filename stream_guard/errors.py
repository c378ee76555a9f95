"""The exception hierarchy: every error stream_guard raises is a ``StreamGuardError``."""

from __future__ import annotations


class StreamGuardError(Exception):
    """Root of all stream_guard errors."""


class ConfigError(StreamGuardError):
    """The configuration is invalid; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class SchemaLoadError(StreamGuardError):
    """An Avro schema file or registry subject could not be read or parsed."""


class DecodeError(StreamGuardError):
    """A payload could not be decoded; the record goes to the dead-letter topic.

    ``stage`` names the step that failed (Kafka Connect's ``connect.errors.stage``
    vocabulary: ``VALUE_CONVERTER`` for byte-level failures).
    """

    stage = "VALUE_CONVERTER"


class UndecodablePayloadError(DecodeError):
    """The bytes are not a valid encoding of any record (garbage, truncated Avro, bad JSON)."""


class WireFormatError(DecodeError):
    """A Confluent-framed payload has a wrong magic byte or is shorter than its header."""


class UnknownSchemaIdError(DecodeError):
    """A Confluent-framed payload names a schema id that no registry knows."""


class SchemaResolutionError(DecodeError):
    """The writer schema cannot be resolved against the model's reader schema."""


class NotARecordError(DecodeError):
    """The payload decoded, but to something other than a record (a JSON list, a number...)."""


class RecordTooLargeError(DecodeError):
    """A record is larger than ``worker.max_record_bytes``: dead-lettered without being decoded."""


class EventTimeRangeError(DecodeError):
    """A record's event time cannot be represented as epoch milliseconds (int64)."""


class RecordValidationError(DecodeError):
    """A record decoded, but validating it raised: it is dead-lettered, never the batch's crash."""

    stage = "TRANSFORMATION"


class RedisClusterUnreachableError(StreamGuardError):
    """No node of a Redis Cluster answers: an outage, retried like a one-server client's ``ConnectionError``.

    redis-py raises a bare ``RedisClusterException`` for it (not a ``RedisError``); the
    Cluster client of :func:`stream_guard.state.client.connect` raises this instead.
    """


class RegistryUnavailableError(StreamGuardError):
    """The Schema Registry could not answer; the batch is retried, records are not dead-lettered."""


class SchemaRegistrationError(StreamGuardError):
    """The Schema Registry refused a schema stream_guard registers (``alert.avsc``): incompatible, forbidden..."""


class DeliveryError(StreamGuardError):
    """The broker did not acknowledge alerts or dead letters; offsets stay uncommitted."""


class WindowLeaseLostError(DeliveryError):
    """A window's lease expired before its alerts were committed (another worker may close it): the turn is aborted."""


class ProducerFencedError(StreamGuardError):
    """Another worker took over this one's transactional id: this one must stop (it is a zombie)."""


class TransactionUnavailableError(StreamGuardError):
    """The producer cannot run transactions (``kafka.delivery = "exactly_once"``): a fatal client error."""


class ProfileFormatError(StreamGuardError, ValueError):
    """A profile file or dict is malformed; the message names the offending key."""


class ReferenceDataUnusableError(StreamGuardError, ValueError):
    """Reference data cannot be read or learned from (missing columns, no rows, unreadable file...)."""


class EvaluationInputError(StreamGuardError):
    """``stream-guard evaluate`` cannot run as asked (bad input data, unknown feature or fault...)."""


class EmbeddedServerUnavailableError(StreamGuardError):
    """A local broker or redis-server did not start, or its topics could not be created."""


class DetectorSpecInvalidError(StreamGuardError, ValueError):
    """A drift detector's ``kind`` or ``params`` cannot build a River detector.

    The message names the kind or the parameter at fault and lists the valid ones; settings
    validation prefixes it with the config key.
    """


class DriftCheckpointUnusableError(StreamGuardError, ValueError):
    """A saved drift-detector state cannot be restored.

    It is not such a checkpoint, or was written with another River version, detector or
    baseline profile; start without it and the detectors are reseeded from the baseline.
    """


class BaselineSampleUnavailableError(StreamGuardError, ValueError):
    """A numeric feature's baseline cannot be sampled to seed a detector.

    The profile has no finite values, or (hand-edited) neither two quantiles nor a usable
    histogram; the detector then takes the live stream as its reference.
    """


class MetricUnknownError(StreamGuardError, ValueError):
    """A slice metric was asked for by a name no metric has; the message lists the known ones."""


class SimulatorFaultUnknownError(StreamGuardError, ValueError):
    """The simulator was asked for a fault it cannot inject; the message lists the known ones."""


class RollupWarmingError(StreamGuardError):
    """A rollup's range is cold (hours neither held nor stored): summed in the background, evaluate later."""
