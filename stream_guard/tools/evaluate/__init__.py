"""``stream-guard evaluate``: replay a clean stream with faults injected, measure detection and false alarms.

Users calibrate their ``[checks]`` and ``[drift]`` settings with it, on their own data:
for every fault class, feature and rate it says whether an alert fired, which one, and
how long after the fault began; and for every check, how often it fires on the clean
stream.

Method
------
1. Clean events of one model come from a file (Parquet, CSV, JSON lines) or, for the
   sample model, from :class:`~stream_guard.tools.simulator.Simulator`. The first part
   (``learn_fraction``) learns the baseline profile, unless a profile is given; the
   rest is the replayed stream. Event times are the model's timestamp field when the
   events carry it, else synthetic at ``events_per_second``.
2. Each record passes the decoder's field checks (as a JSON payload would: a null in a
   non-nullable field becomes a ``type_mismatch``), then the stream is cut into batches
   of ``batch_size``, spread round-robin over ``partitions`` pseudo-partitions with
   consecutive offsets.
3. :class:`~stream_guard.tools.evaluate.replay.Replay` runs the worker's own
   :class:`~stream_guard.pipeline.Pipeline` (as :func:`~stream_guard.assembly.build_pipeline`
   builds it from the config) on each batch, applying the window counters to a
   :class:`~stream_guard.state.memory.MemoryState`, and after each batch closes the
   windows the watermark has passed into alerts.
4. A clean run gives the false alarms. Faults start at ``onset`` (a batch boundary);
   every scenario resumes from a copy of the clean run's state at the onset and stops
   at its first matching alert, or at the end of the stream.

Not replayed: slice metrics and label-based performance (no labels), dead letters (the
events are records, not bytes), and the incident lifecycle: counts are per-window
alerts, before cooldowns merge repeats into one page.

Detection
---------
A scenario is detected by the first alert, in window order, on the injected feature
whose kind is one of the fault's ``expects`` (the first listed wins within a window),
in a window that ends after the onset. Its delay runs from the onset's event time to
that window's end, in seconds of event time and in events; the alert is raised once the
watermark passes the window's end plus ``allowed_lateness_s``.

Modules: :mod:`.faults` (the fault catalogue and injectors), :mod:`.events` (clean events
and the replayed stream), :mod:`.replay` (the worker's stages on a memory state),
:mod:`.scenarios` (planning and running scenarios), :mod:`.report` (results and their
printing), :mod:`.command` (the CLI command); :mod:`.longrun`, :mod:`.longfaults`,
:mod:`.longlabels` and :mod:`.longreport` (the long replay of the wide model with its
delayed labels through the label-based checks and the incident lifecycle, ``--long-replay``).
"""
