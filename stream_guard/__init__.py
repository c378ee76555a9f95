"""stream_guard: guards machine-learning models in production on their live Kafka streams."""

__version__ = "0.1.0"
