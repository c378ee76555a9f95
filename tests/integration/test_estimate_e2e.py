"""The label-free estimate end to end: real broker, real redis-server, a worker built as ``stream-guard run`` builds it.

Phase 1 produces events only: a normal period, a covariate-shift period (traffic moved
to uncertain scores; the model stays calibrated) and a concept-drift period (scores as
usual). ``estimated_performance_drop`` must be on the alerts topic before any label
exists. Phase 2 produces the labels (Bernoulli(score), except android's in the
concept-drift period, which turn fraud where the model said no) and a few events in the
next hour: closing that hour's window runs the calibration check, which names android.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from streamtest import consume_all, new_worker, produce, run_until, write_config

from stream_guard.alerts.codec import decode_alert
from stream_guard.assembly import metrics_reader
from stream_guard.cli import main
from stream_guard.learning import learn_from_frame
from stream_guard.metrics.estimate import estimate_rollup
from stream_guard.model import build_models
from stream_guard.profile import BaselineProfile
from stream_guard.tools.embedded import create_topics
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
HOUR_START = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS
MIN_MS = 60_000
#: Normal [+5, +15) min, covariate shift [+15, +25), concept drift [+25, +35); 2000 events each.
NORMAL_MS, SHIFT_MS, CONCEPT_MS = (HOUR_START + m * MIN_MS for m in (5, 15, 25))
PER_PERIOD, STEP_MS = 2000, 300
N_TRIGGER = 6


def _alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The alerts on the topic, their window bounds in epoch ms."""
    out = []
    for m in consume_all(bootstrap, topic, idle_s=2):
        alert = decode_alert(m.value())
        for key in ("window_start", "window_end"):
            alert[key] = int(alert[key].timestamp() * 1000)
        out.append(alert)
    return out


def test_the_estimate_names_a_covariate_shift_drop_before_labels_and_labels_reveal_concept_drift(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    labels_topic = f"labels-{unique}"
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        partitions=2,
        window_s=60,
        model_extra=f"""profile = "profile.json"

[models.metrics]
estimate_every_s = 300
estimate_window_s = 600
performance_every_s = 3600
performance_lookback_s = 7200
performance_min_support = 100

[models.labels]
topic = "{labels_topic}"
encoding = "json"
timestamp_field = "ts"
""",
    )
    create_topics(bootstrap, [labels_topic], partitions=1)
    (model,) = build_models(config)
    ref_sim = Simulator(encoding="json", seed=71)
    ref_records = ref_sim.records(20_000, 0, step_ms=10)
    reference = pd.DataFrame.from_records(ref_records)
    reference["age"] = pd.array([r["age"] for r in ref_records], dtype="Int64")
    reference["label"] = [x["label"] for x in ref_sim.labels(ref_records)]
    learn_from_frame(model, reference, "simulator seed=71", label_column="label").save(tmp_path / "profile.json")

    sim = Simulator(encoding="confluent", seed=72)
    normal = sim.records(PER_PERIOD, NORMAL_MS, step_ms=STEP_MS)
    pool = sim.records(PER_PERIOD * 4, SHIFT_MS)
    uncertain = [r for r in pool if abs(r["score"] - 0.5) < 0.25][:PER_PERIOD]
    assert len(uncertain) == PER_PERIOD
    shifted = [{**r, "ts": SHIFT_MS + i * STEP_MS} for i, r in enumerate(uncertain)]
    concept = sim.records(PER_PERIOD, CONCEPT_MS, step_ms=STEP_MS)
    events = normal + shifted + concept
    topic = config.models[0].topics[0]
    produce(bootstrap, topic, ((None, sim.encode(r), r["ts"]) for r in events), partitions=2)

    # -- phase 1: events only, no label anywhere -----------------------------------------
    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= len(events), timeout_s=45)
    assert (worker.stats.decoded, worker.stats.labels_matched) == (len(events), 0)
    alerts = _alerts(bootstrap, config.kafka.alerts_topic)
    drops = [a for a in alerts if a["kind"] == "estimated_performance_drop" and a["status"] == "FIRING"]
    assert drops, sorted({a["kind"] for a in alerts})
    first = min(drops, key=lambda a: a["window_end"])
    assert SHIFT_MS < first["window_end"] <= CONCEPT_MS, first  # in the shift, not before it
    assert not [a for a in drops if a["window_end"] <= SHIFT_MS]
    assert "labels not in yet" in first["message"]
    reader = metrics_reader(config, "fraud")
    profile = BaselineProfile.load(tmp_path / "profile.json")
    assert profile.performance is not None and profile.performance.estimation is not None
    shift_rollup = reader.rollup(SHIFT_MS, CONCEPT_MS)
    estimate = estimate_rollup(shift_rollup, profile.performance.estimation.calibration)["*"]
    assert estimate.events == PER_PERIOD and shift_rollup.overall.labelled == 0

    # -- phase 2: the labels, and the next hour's first events ----------------------------
    calibrated = sim.labels(normal + shifted)
    drifted = sim.labels(concept, android_misses=0.6)
    labels = calibrated + drifted
    produce(bootstrap, labels_topic, ((None, json.dumps(x).encode(), x["ts"]) for x in labels))
    triggers = sim.records(N_TRIGGER, HOUR_START + HOUR_MS, step_ms=1000)
    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.labels_matched >= len(labels), timeout_s=45, drain=False)
    produce(bootstrap, topic, ((None, sim.encode(r), r["ts"]) for r in triggers), partitions=2)
    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.decoded >= N_TRIGGER, timeout_s=45)

    # Under the covariate shift the estimate tracked the realised accuracy within its band.
    shift_rollup = reader.rollup(SHIFT_MS, CONCEPT_MS)
    assert shift_rollup.overall.labelled == PER_PERIOD
    realised = shift_rollup.overall.accuracy
    band = estimate.band("accuracy", 3.0)
    assert band is not None and realised is not None and band[0] <= realised <= band[1], (band, realised)

    alerts = _alerts(bootstrap, config.kafka.alerts_topic)
    calibration = {a["slice"] for a in alerts if a["kind"] == "calibration_drift" and a["status"] == "FIRING"}
    assert "device_type=android" in calibration, sorted({(a["kind"], a["slice"]) for a in alerts})
    assert not calibration & {"device_type=ios", "device_type=web"}
    # The estimate never saw the concept drift: no drop named android over a range of the concept period only.
    concept_only = [a for a in alerts if a["kind"] == "estimated_performance_drop" and a["window_start"] >= CONCEPT_MS]
    assert concept_only == []

    # `metrics` shows the estimate beside the realised metrics, and their difference.
    capsys.readouterr()
    assert main(["metrics", "-c", str(tmp_path / "config.toml"), "--window", "2h", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    accuracy = out["estimate"]["*"]["metrics"]["accuracy"]
    whole = reader.rollup(HOUR_START, HOUR_START + 2 * HOUR_MS).overall
    assert accuracy["realised"] == pytest.approx(whole.accuracy)
    assert accuracy["difference"] == pytest.approx(accuracy["realised"] - accuracy["estimate"])
    assert np.isfinite(accuracy["estimate"]) and accuracy["band"][0] < accuracy["estimate"] < accuracy["band"][1]
    assert main(["metrics", "-c", str(tmp_path / "config.toml"), "--window", "2h"]) == 0
    table = capsys.readouterr().out
    assert "est_accuracy" in table and "acc_minus_est" in table
