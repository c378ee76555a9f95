"""Incidents: the findings of one cause update one incident, which opens, escalates and resolves.

A closed window's alerts are first grouped into causes
(:mod:`stream_guard.alerts.grouping`): findings that move together in the window form a
cluster, and a cluster joins an open incident it belongs to (one of its findings is already
part of it, or it names a feature the incident saw within one window, or it is a prediction
drift following a shift or another prediction drift the incident saw in this or the previous
window, or it is a performance finding on a slice (or a crossing of a slice, for the same
check) whose performance finding the incident saw in the range it covers: a slice alert of a
later evaluation belongs to the broader drop it is part of; or an estimated drop and a
prediction drift, either following the other within the range the drop rolled up: grouping's
rule e across windows). Otherwise it opens an incident
named by its primary finding's ``incident_id``. One alert per incident and window is
considered: the window's primary finding of the incident, carrying the others as ``related``
and the incident as ``cause_id``. For it:

* no open incident: the incident opens and the alert is published (``FIRING``);
* the window an early alert opened the incident at (below): published (``update``);
* a window of the incident that was published before (its publication is retried, or
  late events completed its counts): published again under the same ``alert_id``; not a
  finding of a later check whose range ends where that window did (the label-delayed
  concept check's), which was not part of that publication;
* a window older than the incident's first (its true onset, closed late): published, and
  the incident's start moves to it (a range that ends after the incident's first window,
  e.g. the estimate's hour, is no older window, however far back it starts);
* a window within ``cooldown`` of a published window of the incident (event time, on
  either side: windows may close out of order): recorded, nothing is published (unless it
  brings the incident's first performance finding, below);
* otherwise published only if it *escalates* the incident (a higher :func:`~stream_guard.alerts.grouping.level` than
  every published window's: a higher severity, or, at the same severity, the first finding
  on the model's performance in an incident that had none, e.g. the estimated drop that
  follows a score shift: the cause's impact is news, published at once whatever the
  cooldown, and that alert leads with it, all traffic's finding before a slice's; or the
  opening finding's magnitude ``|value - threshold|`` or rate at least
  ``escalation_factor`` times the largest published), or if no published window lies
  within ``remind_after`` of it (a reminder). An informational incident (severity INFO)
  is published once: never reminded, never escalated by magnitude or rate.

An open incident whose findings were all absent for ``resolve_after`` of event time (judged
when later windows close) is closed with one ``RESOLVED`` alert, in two phases:
:meth:`IncidentTracker.resolved` marks the incident and returns the alert, and
:meth:`IncidentTracker.delivered`, called once the broker acknowledged it, replaces the
incident by a tombstone (and each of its findings' own ids too). A worker killed in between
leaves the mark; the window is closed again and the same alert (same ``alert_id``) is
returned again. The tombstones keep an older window, closed again after the resolution,
from reopening the incident or opening one for a finding that was evidence.

A finding made before its labels (``estimated_performance_drop``) is later *settled* by an
alert of the same incident with an ``outcome`` (raised by its evaluator once the labels of
a period it flagged are in), handled when the window's resolutions are (:meth:`IncidentTracker.resolved`):

* ``CONFIRMED`` (the realised metric dropped too): published once per incident, as a
  ``FIRING`` alert with that outcome; the incident goes on. The first window to confirm it
  marks the incident (the mark names the window, so that window closed again after a
  failure publishes the same alert again, and no later one does);
* ``REFUTED`` (the realised metric is fine): the incident closes at once, its ``RESOLVED``
  alert carrying the outcome, in the same two phases as any resolution. An incident already
  confirmed is not refuted by a later period: it resolves as others do.

An outcome settles the open incident its drop belongs to: the drop's own, or the one it
joined as evidence (a score shift's). A refutation closes only an incident the drop opened:
the labels refute the estimate, not the score drift it followed. An outcome of a drop that
is in no open incident is dropped, and an outcome alone does not keep its incident open.

*Early alerts* (``[alerts] early_kinds``) open an incident at the batch that first shows a
critical finding (:meth:`IncidentTracker.early`), before its window closes: one ``FIRING``
alert with the batch's counts, acknowledged before the batch is committed (the incident
marks it pending until :meth:`IncidentTracker.early_delivered`, so a retried batch fires it
again). A batch cluster that belongs to an open incident fires nothing. The window's close
then decides ``update`` for that window: published under the same ``alert_id`` (the early
finding leading) with the full counts, whatever the cooldown; the lifecycle goes on from
there. An incident opened early has no window counted until that close, and is not resolved
before it.

The records live in the model's state (:class:`~stream_guard.state.protocol.IncidentState`):
on Redis the decisions run in Lua scripts, so workers closing windows concurrently agree
on them; the in-memory store makes the same decisions for the offline replay. Event time, not
wall-clock time, drives every timer: replaying a backlog gives the same incidents and
publications as the live stream did. (Which open incident a cluster joins is read before the
scripts run: two workers closing adjacent windows at the same instant may open two incidents
for one cause; never a lost or doubled alert.)
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stream_guard.alerts.grouping import (
    TIERS,
    cluster_keys,
    cluster_window,
    early_order,
    has_impact,
    is_performance,
    level,
    magnitude,
    primary_order,
    related,
    slice_parts,
)
from stream_guard.alerts.joining import incident_holding, incident_members, joins_incident
from stream_guard.alerts.model import CONFIRMED, REFUTED, Alert, Related, Severity
from stream_guard.settings.kinds import KNOWN_BIAS
from stream_guard.state.client import REDIS_CLIENTS, RedisClient
from stream_guard.state.incident import Observation, ReminderPolicy
from stream_guard.state.keys import ModelKeys
from stream_guard.state.protocol import IncidentState
from stream_guard.state.window_store import WindowStore

#: Batch clusters :meth:`IncidentTracker.early` remembers having decided (then it forgets them all).
_EARLY_MEMORY = 4096


@dataclass(frozen=True)
class LifecycleSettings:
    cooldown_s: int = 600
    resolve_after_s: int = 300
    remind_after_s: int = 6 * 3600
    escalation_factor: float = 2.0

    @property
    def policy(self) -> ReminderPolicy:
        return ReminderPolicy(self.cooldown_s * 1000, self.remind_after_s * 1000, self.escalation_factor)


class IncidentTracker:
    """Filters a closed window's alerts through the incidents of one model.

    Parameters
    ----------
    state
        The model's incident records: a store (:class:`~stream_guard.state.protocol.IncidentState`,
        Redis or memory), or a Redis client for a Redis store on ``keys``.
    keys
        The model's keys; only used with a Redis client.
    settings
        Cooldown, reminder, escalation and resolve settings (event time).
    outputs
        The model's score and prediction fields: a drift on them counts as prediction drift.
    """

    def __init__(
        self,
        state: IncidentState | RedisClient,
        keys: ModelKeys | None = None,
        settings: LifecycleSettings | None = None,
        *,
        outputs: Iterable[str] = (),
    ) -> None:
        if isinstance(state, REDIS_CLIENTS):
            if keys is None:
                raise TypeError("IncidentTracker on a Redis client needs the model's keys")
            state = WindowStore.for_client(state, keys)
        self._state: IncidentState = state
        self._settings = settings or LifecycleSettings()
        self._outputs = frozenset(o for o in outputs if o)
        #: Incidents marked resolved, by the end of the window that resolved them, with their members.
        self._resolving: dict[int, dict[str, list[str]]] = {}
        #: The incident of each finding of the last window seen by :meth:`publishable`.
        self._cause_of: dict[str, str] = {}
        #: The outcomes of the last window seen by :meth:`publishable`, settled by :meth:`resolved`.
        self._outcomes: list[Alert] = []
        #: (leading finding's incident id, window start) of batch clusters that fired early or
        #: need not (an incident covers them): not asked again (a cache: the state decides).
        self._early_done: set[tuple[str, int]] = set()
        #: The early alerts of the last :meth:`early`, awaiting :meth:`early_delivered`.
        self._early_pending: list[tuple[str, int, tuple[str, int]]] = []

    def publishable(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts of one window that open, escalate or remind of an incident (one per incident at most).

        Alerts with an ``outcome`` are kept for :meth:`resolved`, which settles their incidents.
        """
        self._outcomes = [a for a in alerts if a.outcome is not None]
        alerts = [a for a in alerts if a.outcome is None]
        if not alerts:
            self._cause_of = {}
            return []
        causes, before = self._causes(alerts)
        opened = {c: int(r.get("opened_start", "0")) for c, r in before.items()}
        peaks = {c: int(r.get("peak_rank", "-1")) for c, r in before.items()}
        self._cause_of = {a.incident_id: cause for cause, members in causes.items() for a in members}
        out = []
        for cause, members in causes.items():
            members.sort(key=primary_order)
            primary = members[0]
            opener = next((a for a in members if a.incident_id == cause), None)
            start = primary.window_start
            if cause in opened and primary.window_end > opened[cause]:
                # A range (a label-based check, the estimate) reaching back before the incident opened is
                # no window closed out of order: not an onset (see the module docstring).
                start = max(start, opened[cause])
            seen = Observation(
                window_start=start,
                window_end=primary.window_end,
                count=primary.count,
                summary=json.dumps(_summary(opener or primary)),
                rank=level(members),
                magnitude=magnitude(opener) if opener is not None else None,
                rate=opener.rate if opener is not None else None,
                members={a.incident_id: f"{a.kind}|{a.feature or ''}|{a.slice}" for a in members},
                refresh=opener is not None,
            )
            policy = self._settings.policy
            impact = cause in peaks and has_impact(seen.rank) and not has_impact(peaks[cause])
            if impact:  # the cause's impact on the model is news a person acts on: no cooldown holds it back
                policy = dataclasses.replace(policy, cooldown_ms=0)
            decision = self._state.observe_incident(cause, seen, policy)
            lead = primary
            if decision == "update":  # the early alert's window: its finding leads, as it did early
                lead = opener or primary
            elif decision == "escalate" and impact:
                lead = _impact_lead(members)  # the impact is the news
            elif decision == "repeat" and not _was_published(before.get(cause), primary):
                continue  # a later check's range ends where a publication's window did: no retry of it
            elif decision not in ("open", "repeat", "onset", "escalate", "remind"):
                continue
            others = [a for a in members if a is not lead]
            out.append(dataclasses.replace(lead, cause_id=cause, related=related(others)))
        return out

    def early(self, alerts: Sequence[Alert]) -> list[Alert]:
        """A batch's early alerts: the clusters of critical findings no open incident covers.

        ``alerts`` are the batch's findings of the early kinds, counted over the batch, by
        window. Per window (oldest first) and cluster (:func:`cluster_window`): a cluster that
        belongs to an open incident fires nothing (unless that incident opened early at this
        window and its alert awaits its acknowledgement: it is fired again); otherwise the
        incident of its leading finding (:func:`early_order`: no counts, which depend on the
        batch boundaries) opens through the state's atomic :meth:`IncidentState.fire_early`.
        Call :meth:`early_delivered` once the broker acknowledged the alerts returned.
        """
        self._early_pending = []
        by_window: dict[int, list[Alert]] = defaultdict(list)
        for alert in alerts:
            by_window[alert.window_start].append(alert)
        out: list[Alert] = []
        open_: dict[str, dict[str, str]] | None = None
        for start in sorted(by_window):
            for cluster in cluster_window(by_window[start], self._outputs):
                cluster.sort(key=early_order)
                done = (cluster[0].incident_id, start)
                if done in self._early_done:
                    continue
                if open_ is None:
                    open_ = self._state.open_incidents()
                cause = self._early_cause(cluster, open_, start)
                if cause is None:
                    self._remember_early(done)
                    continue
                lead = next((a for a in cluster if a.incident_id == cause), cluster[0])
                seen = Observation(
                    window_start=start,
                    window_end=lead.window_end,
                    count=lead.count,
                    summary=json.dumps(_summary(lead)),
                    rank=level(cluster),
                    members={a.incident_id: f"{a.kind}|{a.feature or ''}|{a.slice}" for a in cluster},
                )
                claims = sorted({key for a in cluster for key in cluster_keys(a)})
                if self._state.fire_early(cause, seen, claims) != "fire":
                    self._remember_early(done)
                    continue
                others = [a for a in cluster if a is not lead]
                out.append(dataclasses.replace(lead, cause_id=cause, related=related(others)))
                self._early_pending.append((cause, lead.window_end, done))
                open_ = None  # the incident is open now: later windows of the batch read it
        return out

    def _early_cause(self, cluster: list[Alert], open_: dict[str, dict[str, str]], start: int) -> str | None:
        """The incident a batch's cluster fires early for, or None (an open incident covers it)."""
        members = {cause: incident_members(record) for cause, record in open_.items()}
        lead = cluster[0].incident_id
        candidates = [c for c in members if joins_incident(cluster, members[c], start, self._outputs)]
        candidates = candidates or [c for c in members if c == lead]
        if not candidates:
            return lead
        # Fired again only by a batch that shows the incident's own finding (its retry does).
        end, own = str(cluster[0].window_end), {a.incident_id for a in cluster}
        pending = [c for c in candidates if c in own and open_[c].get("early") == end and "early_pending" in open_[c]]
        return min(pending) if pending else None

    def _remember_early(self, done: tuple[str, int]) -> None:
        if len(self._early_done) >= _EARLY_MEMORY:
            self._early_done.clear()
        self._early_done.add(done)

    def early_pending(self) -> list[tuple[str, int]]:
        """(incident id, window end) of the alerts of the last :meth:`early` awaiting :meth:`early_delivered`."""
        return [(cause, window_end) for cause, window_end, _ in self._early_pending]

    def early_delivered(self) -> None:
        """The alerts of the last :meth:`early` were acknowledged: they are not fired again."""
        for cause, window_end, done in self._early_pending:
            self._state.early_delivered(cause, window_end)
            self._remember_early(done)
        self._early_pending = []

    def _causes(self, alerts: list[Alert]) -> tuple[dict[str, list[Alert]], dict[str, dict[str, str]]]:
        """The window's alerts by the incident (cause) each belongs to, strongest cluster first; and the
        records of the open incidents, as read before this window."""
        open_ = self._state.open_incidents() if any(a.kind in TIERS or is_performance(a.kind) for a in alerts) else {}
        members = {cause: incident_members(record) for cause, record in open_.items()}
        opened = {cause: int(record.get("opened_start", "0")) for cause, record in open_.items()}
        causes: dict[str, list[Alert]] = {}
        for cluster in cluster_window(alerts, self._outputs):
            start = cluster[0].window_start
            candidates = [c for c in members if joins_incident(cluster, members[c], start, self._outputs)] or [
                c for c in members if c == cluster[0].incident_id
            ]
            cause = min(candidates, key=lambda c: (opened[c], c)) if candidates else cluster[0].incident_id
            causes.setdefault(cause, []).extend(cluster)
        return causes, open_

    def resolved(self, window_end: int, still_firing: set[str]) -> list[Alert]:
        """RESOLVED alerts for incidents absent from every window up to ``window_end``.

        ``still_firing`` holds the ``incident_id`` of every alert the window raised (published
        or not); the incidents they belong to stay open. The incidents stay (marked) until
        :meth:`delivered` is called with the same ``window_end``.
        """
        settled, out = self._settle(window_end)
        outcome_only = {a.incident_id for a in self._outcomes} - set(self._cause_of)
        firing = {self._cause_of.get(i, i) for i in still_firing if i not in outcome_only}
        horizon = window_end - self._settings.resolve_after_s * 1000
        candidates = self._state.incidents_seen_until(horizon)
        marked = self._resolving.setdefault(window_end, {})
        for incident_id in candidates:
            if incident_id in firing or incident_id in settled:
                continue
            fields = self._state.resolve_incident(incident_id, window_end)
            if fields is None:
                continue
            others = {m: d for m, (d, _) in incident_members(fields).items() if m != incident_id}
            marked[incident_id] = sorted(others)
            if json.loads(fields["alert"])["kind"] == KNOWN_BIAS:
                continue  # a fact of the reference, raised once: it closes silently, nothing ended
            out.append(self._resolution(incident_id, fields, others))
        return out

    def _settle(self, window_end: int) -> tuple[set[str], list[Alert]]:
        """The incidents the window's outcomes settled, and the alerts to publish for them."""
        settled: set[str] = set()
        out = []
        open_ = self._state.open_incidents() if self._outcomes else {}
        confirmed = {i for i, r in open_.items() if "confirmed" in r}
        for alert in sorted(self._outcomes, key=lambda a: (a.incident_id, a.outcome or "")):
            incident_id = incident_holding(alert.incident_id, open_)
            if incident_id is None or incident_id in settled:
                continue
            if alert.outcome == CONFIRMED and self._state.confirm_incident(incident_id, window_end):
                settled.add(incident_id)
                out.append(dataclasses.replace(alert, cause_id=incident_id))
            elif alert.outcome == REFUTED and incident_id == alert.incident_id and incident_id not in confirmed:
                fields = self._state.resolve_incident(incident_id, window_end)
                if fields is None:
                    continue
                settled.add(incident_id)
                others = {m: d for m, (d, _) in incident_members(fields).items() if m != incident_id}
                self._resolving.setdefault(window_end, {})[incident_id] = sorted(others)
                out.append(self._refutation(incident_id, fields, others, alert))
        return settled, out

    def _refutation(self, incident_id: str, fields: dict[str, str], others: dict[str, str], outcome: Alert) -> Alert:
        """The RESOLVED alert of an incident its labels refuted: the resolution, with the labels' evidence."""
        resolution = self._resolution(incident_id, fields, others)
        return dataclasses.replace(
            resolution,
            outcome=REFUTED,
            observed=f"{outcome.observed}; {resolution.observed}",
            message=f"RESOLVED {resolution.kind} {resolution.feature or ''}: refuted by the labels: {outcome.message}",
            value=outcome.value,
            threshold=outcome.threshold,
        )

    def _resolution(self, incident_id: str, fields: dict[str, str], others: dict[str, str]) -> Alert:
        summary = json.loads(fields["alert"])
        opened, last_seen = int(fields["opened_start"]), int(fields["last_seen_end"])
        evidence = sorted(d.split("|", 2) for d in others.values())
        return Alert(
            model=summary["model"],
            kind=summary["kind"],
            feature=summary["feature"],
            slice=summary["slice"],
            severity=Severity(summary["severity"]),
            window_start=opened,
            window_end=last_seen,
            count=int(fields["events"]),
            total=0,
            rate=0.0,
            observed=f"clear since {last_seen} (event time), {fields['windows']} windows affected",
            expected=summary["expected"],
            detector=summary["detector"],
            message=(
                f"RESOLVED {summary['kind']} {summary['feature'] or ''}: no finding for "
                f"{self._settings.resolve_after_s}s of event time; {fields['events']} events "
                f"in {fields['windows']} windows were affected"
                + (f"; with {len(evidence)} related findings" if evidence else "")
            ),
            status="RESOLVED",
            cause_id=incident_id,
            related=tuple(Related(kind=k, feature=f or None, slice=sl, count=0) for k, f, sl in evidence),
        )

    def resolving(self, window_end: int) -> dict[str, list[str]]:
        """The incidents :meth:`delivered` will close for the window ending at ``window_end``, with their members."""
        return dict(self._resolving.get(window_end, {}))

    def delivered(self, window_end: int) -> None:
        """The RESOLVED alerts of the window ending at ``window_end`` were acknowledged: forget the incidents."""
        for incident_id, members in self._resolving.pop(window_end, {}).items():
            self._state.close_incident(incident_id, window_end, members)


def _summary(alert: Alert) -> dict[str, object]:
    keep = ("model", "kind", "feature", "slice", "expected", "detector")
    record = {k: v for k, v in dataclasses.asdict(alert).items() if k in keep}
    record["severity"] = alert.severity.value
    return record


def _was_published(record: dict[str, str] | None, primary: Alert) -> bool:
    """Whether a repeat of ``primary``'s window retries a publication it was part of.

    Not when ``primary`` is new to the incident: a later check whose range ends where a
    published window did. Without the record read before the window (kinds that are never
    grouped), a repeat is a retry.
    """
    return record is None or f"m|{primary.incident_id}" in record


def _impact_lead(members: Sequence[Alert]) -> Alert:
    """The finding that tells a cause's impact on the model: on all traffic before any slice, then primary order."""
    return min(
        (a for a in members if is_performance(a.kind)), key=lambda a: (bool(slice_parts(a.slice)), primary_order(a))
    )
