"""Hierarchical attribution: one alert per cause among the slices flagged in one evaluation.

A slice ``P`` is the *parent* of the slices that add one field to it: ``*`` of every
``field=value``, ``device_type=android`` of ``device_type=android,is_new_user=True``.
The children of ``P`` that add the same field form one *family*. For each flagged (or
significant, see below) parent, fewest fields first, and each of its families with a
flagged child, the *others* (the family's tested children that are not flagged) decide,
by their support-weighted mean effect against ``share`` (0.5) x the parent's effect (a
child's effect is against its own baseline; when parent or child was compared with the
rest of traffic, the child's value is taken against the parent's baseline instead):

* **the children explain the parent** when the others are near their baseline: their
  mean effect is below ``share`` x the parent's effect (closer to 0 than to the parent's);
  the flagged children are one slice, or a minority of the family's support; and the
  data can tell: the others are numerous enough (the parent's effect is at least 2 x
  ``z`` standard errors of their mean), or every flagged child is significantly worse
  than the parent (its effect above the parent's by ``z`` of its standard errors: a
  cause of its own, not a share of the parent's drop). ``z`` is 1.645 for a parent with
  one family holding a flagged child and Bonferroni-corrected over several (a parent has
  one family per field: a broad drop would otherwise, by chance, find one whose others
  look fine and credit its flagged child with the whole drop). The parent is low only
  because of the flagged children, and becomes evidence of the one that contributes most
  (support x effect);
* **the parent explains its children** otherwise: the others are about as low, or too
  few to tell (or there are none); the flagged children become evidence of the parent's
  alert, which names them.

A slice is attributed along the first of its claims (parents in order of fewest fields,
then by name) whose chain ends on a flagged slice; chains are followed (``country=US``
-> ``*`` -> ``device_type=android``). A parent that is significantly low but below the
minimum effect (typically ``*`` when one group drops) can link such a chain, but is no
alert of its own, with one exception: a **broad drop**. When no family with a flagged
child has others that look near their baseline (mean effect below ``share`` x the
parent's, however uncertain) and in one of them the others are significantly low too
(mean effect above 0 by 1.645 standard errors), the drop is not confined to the flagged
children: the parent alerts in their place, with them as evidence, unless its own chain
ends on a flagged slice (an early concept drift: all traffic a little lower, a few noisy
slices past the minimum effect first). Where it cannot tell, the children alert. A slice
whose claims all end elsewhere alerts itself. Each remaining flagged slice alerts once,
listing the flagged slices attributed to it. A slice whose deficit is explained by a
flagged value of an *unrelated* feature (``country=US`` low only because android traffic
is heavy there) is merged only through such a ``*`` chain; no other overlap is resolved.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from stream_guard.metrics.baseline import REST, SliceTest, effect
from stream_guard.metrics.slices import parse_slice

#: A child's effect, as a share of its parent's, that counts as "about as low as the parent".
SHARE = 0.5
#: The others can tell "near their baseline" from "as low as the parent" when the two lie this many
#: standard errors of the others' mean effect apart on each side of the bar (95 %, one-sided).
Z_NEAR = 1.645


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
        children decide whether a parent explains its family; significant ones link chains).
    share
        A child worse by at least ``share`` x its parent's effect is "about as low".

    Returns
    -------
    list of Attributed
        In the order of ``tests``; each flagged slice appears once, as an alert or as
        evidence (the alert's own crossings and parents first).
    """
    flagged = [t for t in tests if t.flagged]
    owners: dict[str, list[str]] = defaultdict(list)
    narrow: set[str] = set()  # parents with a family whose others look near their baseline
    low_too: set[str] = set()  # parents with a family whose others are significantly low as well
    parents = [t for t in tests if t.flagged or t.significant]
    for parent in sorted(parents, key=lambda t: (len(parse_slice(t.slice)), t.slice)):
        if parent.effect <= 0:
            continue
        bar = share * parent.effect
        families = [
            f for _, f in sorted(_families(parse_slice(parent.slice), tests).items()) if any(c.flagged for c in f)
        ]
        z_tell = _z_near(len(families))
        for family in families:
            low = [c for c in family if c.flagged]
            others = [c for c in family if not c.flagged]
            mean, se = _pooled_effect(others, parent)
            told = parent.effect >= 2 * z_tell * se or _all_worse_than(low, parent, z_tell)
            if others and mean < bar and told and _a_minority(low, family):
                cause = max(low, key=lambda c: (c.support * c.effect, c.slice))
                owners[parent.slice].append(cause.slice)
            else:
                for child in low:
                    owners[child.slice].append(parent.slice)
            if others and mean < bar:
                narrow.add(parent.slice)
            elif others and mean > Z_NEAR * se:
                low_too.add(parent.slice)
    alerting = {t.slice for t in flagged}
    alerting |= _broad_parents(parents, owners, alerting, low_too - narrow)
    roots = {name: _root(name, owners, alerting) for name in alerting}
    roots = {name: root if roots.get(root) == root else name for name, root in roots.items()}
    evidence: dict[str, list[SliceTest]] = defaultdict(list)
    for t in flagged:
        if roots[t.slice] != t.slice:
            evidence[roots[t.slice]].append(t)
    return [
        Attributed(t, _closest_first(t.slice, evidence[t.slice]))
        for t in tests
        if t.slice in roots and roots[t.slice] == t.slice and (t.flagged or evidence[t.slice])
    ]


def _all_worse_than(low: Sequence[SliceTest], parent: SliceTest, z: float) -> bool:
    """Every flagged child significantly worse than its parent (by ``z`` of its own standard error).

    A child that merely shares its parent's drop has about the parent's effect; one far
    below it is a cause of its own, even when the parent's small effect cannot tell its
    siblings at their baseline from half of it.
    """
    return all(c.effect - parent.effect > z * c.effect_se for c in low)


def _a_minority(low: Sequence[SliceTest], family: Sequence[SliceTest]) -> bool:
    """One flagged child, or several holding less than half of the family's support: they can explain the parent.

    Flagged children holding most of the parent's events do not explain it, they are most of
    it: the drop is the parent's (a score shift lowers most channels but the noisiest).
    """
    return len(low) == 1 or 2 * sum(c.support for c in low) < sum(c.support for c in family)


def _z_near(families: int) -> float:
    """:data:`Z_NEAR` for one family; for several, the Bonferroni-corrected one (95 % over all of them).

    Each family of a parent is one chance to credit a flagged child with the parent's
    drop: over ``families`` of them, the chance that one does wrongly stays 5 %.
    """
    return Z_NEAR if families <= 1 else NormalDist().inv_cdf(1 - (1 - NormalDist().cdf(Z_NEAR)) / families)


def _broad_parents(
    parents: Sequence[SliceTest], owners: dict[str, list[str]], flagged: set[str], broad: set[str]
) -> set[str]:
    """The significant, unflagged parents that alert for a broad drop (see the module's rules).

    Each is in ``broad`` (no family whose others look near their baseline, one whose
    others are significantly low), has flagged children claiming it, and no chain of its
    own ending on a flagged slice.
    """
    claimed = {parent for claims in owners.values() for parent in claims}
    return {
        p.slice
        for p in parents
        if not p.flagged and p.slice in claimed and p.slice in broad and _root(p.slice, owners, flagged) == p.slice
    }


def _closest_first(name: str, evidence: list[SliceTest]) -> tuple[SliceTest, ...]:
    """Evidence with the slice's own parents (``*`` included) and crossings first, then the rest, each by name."""
    parts = set(parse_slice(name).items())

    def related(t: SliceTest) -> bool:
        other = set(parse_slice(t.slice).items())
        return other <= parts or parts <= other

    return tuple(sorted(evidence, key=lambda t: (not related(t), t.slice)))


def _child_effect(child: SliceTest, parent: SliceTest) -> float:
    """The child's effect, against the parent's baseline when either was compared with the rest.

    Against the rest of traffic a crossing's rest holds its siblings, so its own effect is
    diluted; its value against the parent's rest is what compares with the parent's effect.
    """
    if REST in (child.source, parent.source):
        return effect(child.metric, child.value, parent.baseline)
    return child.effect


def _pooled_effect(tests: Sequence[SliceTest], parent: SliceTest) -> tuple[float, float]:
    """Support-weighted mean effect of ``tests`` (see :func:`_child_effect`) and its standard error."""
    total = sum(t.support for t in tests)
    if total <= 0:
        return 0.0, 0.0
    mean = sum(t.support * _child_effect(t, parent) for t in tests) / total
    se = math.sqrt(sum((t.support * t.effect_se) ** 2 for t in tests)) / total
    return mean, se


def _root(name: str, owners: dict[str, list[str]], alerting: set[str]) -> str:
    """Where ``name``'s first claim chain that ends on an alerting slice ends (``name`` itself if none does)."""

    def follow(current: str, seen: frozenset[str]) -> str | None:
        for claim in owners.get(current, []):
            if claim not in seen:
                end = follow(claim, seen | {claim})
                if end is not None:
                    return end
        return current if current in alerting else None

    return follow(name, frozenset({name})) or name
