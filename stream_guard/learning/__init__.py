"""``stream-guard learn``: computing a baseline profile from reference data.

:mod:`~stream_guard.learning.profiles` summarises a reference frame into a
:class:`~stream_guard.profile.BaselineProfile`; :mod:`~stream_guard.learning.sources`
gets that frame from a file or from a warm-up of the model's topics;
:mod:`~stream_guard.learning.performance` adds, when the reference has labels, the
model's performance per slice and the gaps (known biases) it already had.
"""

from stream_guard.learning.performance import learn_reference_performance
from stream_guard.learning.profiles import learn_profile, read_reference
from stream_guard.learning.sources import (
    frame_from_records,
    learn_from_file,
    learn_from_frame,
    learn_from_topic,
    profiled_fields,
)

__all__ = [
    "frame_from_records",
    "learn_from_file",
    "learn_from_frame",
    "learn_from_topic",
    "learn_profile",
    "learn_reference_performance",
    "profiled_fields",
    "read_reference",
]
