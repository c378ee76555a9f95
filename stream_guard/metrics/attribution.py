"""Hierarchical attribution: one alert per cause among the slices flagged in one evaluation.

A slice ``P`` is the *parent* of the slices that add one field to it: ``*`` of every
``field=value``, ``device_type=android`` of ``device_type=android,is_new_user=True``.
The children of ``P`` that add the same field form one *family*. For each flagged
parent (fewest fields first) and each of its families with a flagged child, the tested
children (those with enough support) decide, with ``share`` = 0.5:

* **the parent explains its children** when every tested child of the family is worse
  than its baseline by at least ``share`` x the parent's effect (the drop is spread over
  the family): the flagged children become evidence of the parent's alert;
* **one child explains the parent** when exactly one child of the family is flagged and
  every other tested child is worse by less than ``share`` x the parent's effect (the
  parent is low only because of it): the parent becomes evidence of that child's alert.

A slice is attributed to the first parent or child that claims it, and attribution
follows chains (``country=US`` -> ``*`` -> ``device_type=android``). Each remaining
flagged slice alerts once, listing the slices attributed to it. A slice whose deficit
is explained by a flagged value of an *unrelated* feature (``country=US`` low only because
android traffic is heavy there) is not merged unless ``*`` links them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from stream_guard.metrics.baseline import SliceTest
from stream_guard.metrics.slices import parse_slice

#: A child's effect, as a share of its parent's, that counts as "about as low as the parent".
SHARE = 0.5


@dataclass(frozen=True)
class Attributed:
    """A flagged slice that alerts, and the flagged slices it explains (its evidence)."""

    test: SliceTest
    evidence: tuple[SliceTest, ...] = ()


def _families(parent: dict[str, str], tests: Sequence[SliceTest]) -> dict[str, list[SliceTest]]:
    """The tested children of ``parent``, by the field they add."""
    out: dict[str, list[SliceTest]] = defaultdict(list)
    for t in tests:
        parts = parse_slice(t.slice)
        if len(parts) != len(parent) + 1 or any(parts.get(k) != v for k, v in parent.items()):
            continue
        (extra,) = set(parts) - set(parent)
        out[extra].append(t)
    return out


def attribute(tests: Sequence[SliceTest], share: float = SHARE) -> list[Attributed]:
    """The alerts of one metric's flagged slices after attribution (see the module's rules).

    Parameters
    ----------
    tests
        Every slice tested on one metric in one evaluation, flagged or not (the unflagged
        children decide whether a parent explains its family).
    share
        A child worse by at least ``share`` x its parent's effect is "about as low".

    Returns
    -------
    list of Attributed
        In the order of ``tests``; each flagged slice appears once, as an alert or as evidence.
    """
    flagged = [t for t in tests if t.flagged]
    owner: dict[str, str] = {}
    for parent in sorted(flagged, key=lambda t: (len(parse_slice(t.slice)), t.slice)):
        if parent.effect <= 0:
            continue
        bar = share * parent.effect
        for _, family in sorted(_families(parse_slice(parent.slice), tests).items()):
            low = [c for c in family if c.flagged]
            if not low:
                continue
            if all(c.effect >= bar for c in family):
                for child in low:
                    owner.setdefault(child.slice, parent.slice)
            elif len(low) == 1 and all(c.effect < bar for c in family if c is not low[0]):
                owner.setdefault(parent.slice, low[0].slice)
    evidence: dict[str, list[SliceTest]] = defaultdict(list)
    for t in flagged:
        root = _root(t.slice, owner)
        if root != t.slice:
            evidence[root].append(t)
    return [Attributed(t, tuple(evidence[t.slice])) for t in flagged if _root(t.slice, owner) == t.slice]


def _root(name: str, owner: dict[str, str]) -> str:
    """The end of ``name``'s attribution chain; a chain that loops ends at the loop's first slice by name."""
    path = [name]
    while name in owner:
        name = owner[name]
        if name in path:
            return min(path[path.index(name) :])
        path.append(name)
    return name
