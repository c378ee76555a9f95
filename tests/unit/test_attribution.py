"""Hierarchical attribution: a parent explains its crossings, or one crossing explains its parent."""

from __future__ import annotations

from labelled_frames import fraud_model, labelled_frame, rollup_of

from stream_guard.metrics.attribution import attribute
from stream_guard.metrics.baseline import REFERENCE, SliceTest, slice_tests


def result(name: str, drop: float, support: int = 2000, *, flagged: bool | None = None) -> SliceTest:
    """A recall test of ``name``, ``drop`` below a 0.60 baseline; flagged when the drop reaches 0.05."""
    value = 0.60 - drop
    se = (value * (1 - value) / support + 0.24 / support) ** 0.5
    hit = drop >= 0.05 if flagged is None else flagged
    return SliceTest("recall", name, value, 0.60, REFERENCE, support, support, 1e-6, 1e-5, drop, hit, hit, se)


ANDROID = "device_type=android"
NEW, OLD = f"{ANDROID},is_new_user=True", f"{ANDROID},is_new_user=False"


def test_a_parent_whose_crossings_are_all_about_as_low_alerts_alone() -> None:
    """android low, both of its is_new_user crossings low about as much: one alert on android, the crossings as evidence."""
    tests = [
        result(ANDROID, 0.10, 4000),
        result(NEW, 0.09, 400),
        result(OLD, 0.10, 3600),
        result("device_type=ios", 0.0),
    ]
    (alert,) = attribute(tests)
    assert alert.test.slice == ANDROID
    assert [e.slice for e in alert.evidence] == [OLD, NEW]


def test_a_crossing_that_alone_explains_its_parent_alerts_with_the_parent_as_evidence() -> None:
    """Only new android users are low and android is low only because of them: the crossing alerts, android is evidence."""
    tests = [
        result(ANDROID, 0.06, 4000),
        result(NEW, 0.30, 800),
        result(OLD, 0.0, 3200),
        result("device_type=ios", 0.0),
    ]
    (alert,) = attribute(tests)
    assert alert.test.slice == NEW
    assert [e.slice for e in alert.evidence] == [ANDROID]


def test_a_family_too_small_to_tell_is_explained_by_the_parent() -> None:
    """The unflagged crossing is less low, but 60 events cannot show it is near its baseline: android alerts alone."""
    tests = [result(ANDROID, 0.10, 4000), result(NEW, 0.02, 60), result(OLD, 0.11, 3940)]
    (alert,) = attribute(tests)
    assert (alert.test.slice, [e.slice for e in alert.evidence]) == (ANDROID, [OLD])


def test_a_claim_that_leads_nowhere_gives_way_to_one_that_alerts() -> None:
    """country=DE,android is claimed by country=DE (significant, not flagged) and by android: it is android's evidence."""
    de_android = f"country=DE,{ANDROID}"
    tests = [
        result("country=DE", 0.03, 3000, flagged=False),
        result("country=DE,device_type=ios", 0.0, 1500),
        result(de_android, 0.08, 1500),
        result(ANDROID, 0.09, 8000),
        result(f"country=US,{ANDROID}", 0.09, 6500),
    ]
    tests[0] = SliceTest(**{**vars(tests[0]), "significant": True})
    (alert,) = attribute(tests)
    assert alert.test.slice == ANDROID and {e.slice for e in alert.evidence} == {de_android, f"country=US,{ANDROID}"}


def test_unrelated_slices_are_not_merged_without_a_link() -> None:
    """country=GB low on its own, not a parent or crossing of android (and * not significant): two alerts."""
    tests = [result(ANDROID, 0.10), result("country=GB", 0.08), result("*", 0.01, 20_000, flagged=False)]
    assert sorted(a.test.slice for a in attribute(tests)) == ["country=GB", ANDROID]


def test_all_traffic_links_the_countries_a_device_fault_drags_down() -> None:
    """Live android misses after a clean reference: * is low through android, the countries through *: one alert."""
    model = fraud_model()
    reference = rollup_of(model, labelled_frame(41, 30_000))
    live = rollup_of(model, labelled_frame(42, 20_000, android_misses=0.3))
    tests = slice_tests(live, dict(reference), "recall", min_support=100, alpha=0.01, min_effect=0.05)
    flagged = {t.slice for t in tests if t.flagged}
    assert {ANDROID, "*", "country=US"} <= flagged
    (alert,) = attribute(tests)
    assert alert.test.slice == ANDROID
    assert {e.slice for e in alert.evidence} == flagged - {ANDROID}
    assert [e.slice for e in alert.evidence][:3] == ["*", OLD, NEW]  # its own parent and crossings first


def test_against_the_rest_crossings_are_weighed_against_their_parents_rest() -> None:
    """No baseline: android vs the rest is low, and so are its country crossings, whose own rest is diluted
    by the other android traffic; taken against android's rest they are as low as android: one alert."""
    model = fraud_model(crossings=[("device_type", "country")])
    live = rollup_of(model, labelled_frame(61, 8_000, android_misses=0.5))
    tests = slice_tests(live, None, "recall", min_support=100, alpha=0.01, min_effect=0.05)
    crossings = [t for t in tests if t.flagged and t.slice.endswith(ANDROID) and "," in t.slice]
    android = next(t for t in tests if t.slice == ANDROID)
    assert len(crossings) >= 2 and any(t.effect < 0.5 * android.effect for t in crossings)  # diluted against their rest
    (alert,) = attribute(tests)
    assert alert.test.slice == ANDROID and {t.slice for t in crossings} <= {e.slice for e in alert.evidence}


def test_a_fault_on_one_crossing_alerts_on_that_crossing() -> None:
    """Misses on new android users only (after a clean reference): the crossing alerts, android is its evidence."""
    model = fraud_model()
    reference = rollup_of(model, labelled_frame(41, 30_000))
    live = rollup_of(model, labelled_frame(43, 30_000, new_android_misses=0.6))
    tests = slice_tests(live, dict(reference), "recall", min_support=100, alpha=0.01, min_effect=0.05)
    assert {NEW, ANDROID} <= {t.slice for t in tests if t.flagged}
    alerts = {a.test.slice: a for a in attribute(tests)}
    assert NEW in alerts and ANDROID not in alerts
    assert ANDROID in {e.slice for e in alerts[NEW].evidence}


def significant(test: SliceTest) -> SliceTest:
    """``test`` significant after Benjamini-Hochberg (whether or not it is flagged)."""
    return SliceTest(**{**vars(test), "significant": True})


def test_a_broad_drop_below_the_minimum_effect_alerts_once_on_the_parent() -> None:
    """An early concept drift: * a little lower (significant, below the minimum effect) and so is every family;
    the noisiest slices of two fields pass the minimum effect first. One alert on *, not one per slice."""
    tests = [
        significant(result("*", 0.045, 16_000, flagged=False)),
        result("device_os=android", 0.08, 5500),
        result("device_os=ios", 0.035, 3000, flagged=False),
        result("device_os=windows", 0.04, 2500, flagged=False),
        result("region=r0", 0.13, 2200),
        result("region=r1", 0.045, 3000, flagged=False),
    ]
    (alert,) = attribute(tests)
    assert alert.test.slice == "*"
    assert [e.slice for e in alert.evidence] == ["device_os=android", "region=r0"]


def test_a_drop_confined_to_one_slice_is_not_moved_to_the_parent() -> None:
    """One channel's recall sinks: * is significant but below the minimum effect and the other channels are near
    their baseline (too few to tell apart from half of *'s effect). The channel alerts, not *, even though another
    field's flagged slice (whose siblings carry the channel's share of the drop) also claims *."""
    tests = [
        significant(result("*", 0.035, 16_000, flagged=False)),
        result("channel=app", 0.15, 4300),
        result("channel=web", 0.0, 2000),
        result("channel=branch", 0.0, 1500),
        result("channel=partner", 0.0, 1000),
        result("education=e6", 0.17, 500),
        result("education=e0", 0.035, 6000, flagged=False),
        result("education=e1", 0.035, 5000, flagged=False),
    ]
    alerts = {a.test.slice for a in attribute(tests)}
    assert "channel=app" in alerts and "*" not in alerts


def test_one_family_that_looks_fine_by_chance_does_not_take_a_broad_drop() -> None:
    """* is flagged and low in every field; in one field (of eight with flagged slices) the few unflagged values
    happen to look near their baseline. Credited with all of *'s drop, android would alert with * as its
    evidence and macos on its own; with the family test corrected over the eight fields, * alerts alone."""
    fields = ["age_band", "branch_tier", "education", "employment_type", "income_band", "marital_status", "purpose"]
    tests = [
        result("*", 0.074, 16_000),
        result("device_os=android", 0.09, 5500),
        result("device_os=macos", 0.11, 1700),
        result("device_os=ios", 0.02, 1200, flagged=False),
        result("device_os=linux", 0.03, 600, flagged=False),
    ]
    for name in fields:
        tests += [result(f"{name}=a", 0.10, 3000), result(f"{name}=b", 0.07, 6000, flagged=False)]
    (alert,) = attribute(tests)
    assert alert.test.slice == "*"
    assert {e.slice for e in alert.evidence} == {t.slice for t in tests if t.flagged} - {"*"}


def test_most_of_a_family_low_is_the_parents_drop() -> None:
    """Three of four channels low (all but the noisiest, whose predictions a score shift moves less): * alerts with
    them as evidence, not the largest channel with * as its evidence and the two others on their own."""
    tests = [
        result("*", 0.07, 16_000),
        result("channel=web", 0.07, 6800),
        result("channel=app", 0.08, 4000),
        result("channel=branch", 0.07, 2900),
        result("channel=partner", 0.0, 2300),
    ]
    (alert,) = attribute(tests)
    assert alert.test.slice == "*"
    assert [e.slice for e in alert.evidence] == ["channel=app", "channel=branch", "channel=web"]


def test_a_slice_far_below_its_parent_explains_it_even_when_the_siblings_cannot_tell() -> None:
    """The app channel's recall sinks 14 points and drags * just past the minimum effect; the other channels are
    near their baseline but too few to tell from half of *'s small effect. app is far below * (a cause, not a
    share of *'s drop): app alerts with * as evidence, not * with app as evidence."""
    tests = [
        result("*", 0.052, 1130),
        result("channel=app", 0.144, 330),
        result("channel=web", 0.01, 420, flagged=False),
        result("channel=branch", 0.0, 230, flagged=False),
        result("channel=partner", 0.02, 150, flagged=False),
    ]
    (alert,) = attribute(tests)
    assert alert.test.slice == "channel=app"
    assert [e.slice for e in alert.evidence] == ["*"]
