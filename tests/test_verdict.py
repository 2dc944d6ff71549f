"""The verdict: the top-k against random k-sets of the same components, with taggers whose output is a
known function of which components are on (the "audio" is the mask itself), so every share is known
exactly; then the verdict in the document, its JSON round trip and the wire."""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import comb

import numpy as np
import pytest

from audiolime.errors import InvalidInput
from audiolime.method.engine import Engine
from audiolime.method.faithfulness import random_sets, verdict
from audiolime.method.request import AS_GOOD_SHARE, MAX_RANDOM_SETS, RANDOM_SETS, ExplainRequest

D = 8
LABELS = ["rock", "other"]


@dataclass(frozen=True)
class _Component:
    index: int

    @property
    def name(self) -> str:
        return f"c{self.index}"


class MaskFactorization:
    """d' components whose composition is the mask itself (the tagger reads which are on)."""

    def __init__(self, d: int = D) -> None:
        self.info = [_Component(i) for i in range(d)]

    @property
    def num_components(self) -> int:
        return len(self.info)

    def compose(self, masks: np.ndarray) -> np.ndarray:
        return np.asarray(masks, np.float32)


class Tagger:
    """``rock`` = f(mask), ``other`` = a constant or g(mask); counts the windows it is given."""

    def __init__(self, rock, other) -> None:
        self.rock, self.other, self.windows = rock, other, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.windows += len(x)
        x = np.asarray(x, np.float64)
        other = self.other(x) if callable(self.other) else np.full(len(x), self.other)
        return np.stack([self.rock(x), other], axis=1).astype(np.float32)


def _explain(tagger: Tagger, top_k: int, random: int = RANDOM_SETS, seed: int = 0, num_samples: int = 64,
             targets=None, d: int = D):
    req = ExplainRequest(model="toy", tags=("rock",), segments=d // 2, num_samples=num_samples, seed=seed,
                         top_k=top_k, random_sets=random, curves="off").validate()
    return Engine(tagger, LABELS).explain(MaskFactorization(d), np.ones(d, np.float32), targets or [0], req)


def test_two_components_carry_the_tag_sufficient_and_necessary():
    """rock = mean of components 0 and 1: the top 2 are {0, 1}; a random 2-set does as well only when it
    is {0, 1} (1 in 28), so the share is the count of such draws, and the top-2 is both."""
    tagger = Tagger(lambda x: 0.05 + 0.9 * x[:, :2].mean(axis=1), 0.5)
    exp = _explain(tagger, top_k=2)
    t = exp.targets[0]
    assert set(t.keep.components) == {0, 1}
    v = t.faithfulness.verdict
    drawn = random_sets(D, 2, RANDOM_SETS, 0)
    exact = int(sum(row[0] and row[1] for row in drawn))
    assert v.random_sets == RANDOM_SETS
    assert v.keep_random_as_good == v.drop_random_as_good == exact / RANDOM_SETS <= AS_GOOD_SHARE
    assert v.sufficient and v.necessary
    assert v.summary == (f"sufficient and necessary: keeping the top 2 keeps 'rock' ({exact}/16 random 2-sets do "
                         f"as well); removing them loses it ({exact}/16 random removals lower it as much)")


def test_equal_contributions_are_no_better_than_random():
    """Every component adds the same: any 3-set is exactly as good as the top 3 (share 1), so the top-3 is
    not sufficient although its mix keeps 'rock'; and removing 3 of 8 does not lose it."""
    tagger = Tagger(lambda x: 0.1 + 0.8 * x.mean(axis=1), 0.3)
    v = _explain(tagger, top_k=3).targets[0].faithfulness.verdict
    assert v.keep_random_as_good == 1.0 and v.drop_random_as_good == 1.0
    assert not v.sufficient and not v.necessary
    assert v.summary == ("neither sufficient nor necessary: keeping the top 3 keeps 'rock' (16/16 random 3-sets do "
                         "as well); removing them does not lose it")


def test_either_of_two_components_suffices_necessary_not_sufficient():
    """rock = max of components 0 and 1: a random 2-set with either does as well (13 in 28, above the 25 %
    bar: not sufficient); only removing both loses it (1 in 28: necessary)."""
    tagger = Tagger(lambda x: 0.05 + 0.9 * x[:, :2].max(axis=1), 0.5)
    exp = _explain(tagger, top_k=2, random=64)
    v = exp.targets[0].faithfulness.verdict
    drawn = random_sets(D, 2, 64, 0)
    either, both = int(sum(r[0] or r[1] for r in drawn)), int(sum(r[0] and r[1] for r in drawn))
    assert v.keep_random_as_good == either / 64 > AS_GOOD_SHARE and v.drop_random_as_good == both / 64
    assert 1 - comb(6, 2) / comb(8, 2) == pytest.approx(13 / 28)  # what either / 64 estimates
    assert (v.sufficient, v.necessary) == (False, True)
    assert v.summary.startswith("necessary, not sufficient: keeping the top 2 keeps 'rock' (")


def test_a_top_k_whose_mix_loses_the_tag_is_not_sufficient_however_rare():
    """rock needs components 0, 1 and 2 together to beat 'other'; the top 2 alone do not keep it, even
    though no random 2-set does better (share 0)."""
    tagger = Tagger(lambda x: 0.1 + 0.3 * x[:, :3].sum(axis=1) - 0.2 * (x[:, :3].sum(axis=1) < 3), 0.8)
    v = _explain(tagger, top_k=2).targets[0].faithfulness.verdict
    assert not v.sufficient and "keeping only the top 2 does not keep 'rock'" in v.summary


def test_verdict_without_positive_components():
    v = verdict("rock", 0, True, 0.9, np.zeros(4), True, 0.0, np.ones(4), AS_GOOD_SHARE)
    assert (v.sufficient, v.necessary) == (False, False) and "no component raises 'rock'" in v.summary


def test_random_sets_are_k_sets_seeded_and_shared_by_targets_with_the_same_k():
    a, b, c = random_sets(12, 3, 16, 7), random_sets(12, 3, 16, 7), random_sets(12, 3, 16, 8)
    assert a.shape == (16, 12) and (a.sum(axis=1) == 3).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_sets_are_counted_as_faithfulness_tagger_calls():
    """metric_calls is every tagger window run after sampling, and the random sets add at most 2R of
    them (two targets with the same k share their random sets)."""
    rock = lambda x: 0.05 + 0.9 * x[:, :2].mean(axis=1)  # noqa: E731
    runs = {}
    for r in (1, 16, 64):
        tagger = Tagger(rock, 0.5)
        exp = _explain(tagger, top_k=2, random=r, num_samples=40)
        assert tagger.windows == 1 + exp.unique_samples + exp.metric_calls  # 1: the window itself
        runs[r] = exp.metric_calls
    assert 2 <= runs[1] <= 2 + 2 and runs[1] < runs[16] <= 2 + 2 * 16 and runs[16] < runs[64] <= 2 + 2 * 64
    tagger = Tagger(rock, lambda x: 0.1 + 0.2 * x[:, 2:4].mean(axis=1))
    two = _explain(tagger, top_k=2, num_samples=40, targets=[0, 1])
    assert [len(t.keep.components) for t in two.targets] == [2, 2]
    assert tagger.windows == 1 + two.unique_samples + two.metric_calls and two.metric_calls <= 2 * 2 + 2 * 16


@pytest.mark.parametrize("bad", [0, MAX_RANDOM_SETS + 1, -3])
def test_random_sets_bounds(bad):
    with pytest.raises(InvalidInput, match=f"random_sets must be between 1 and {MAX_RANDOM_SETS}, got {bad}"):
        ExplainRequest(random_sets=bad).validate()


# -- the document, JSON and the wire ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_doc():
    from audiolime.explanation.describe import describe
    from conftest import toy_explanation

    result = toy_explanation()
    return result, describe(result)


def test_document_carries_the_verdict_and_round_trips(toy_doc):
    """Each target's verdict is the method's, rounded; it survives JSON and the message; a document written
    before the verdict (no key) still loads with verdict None, and renders."""
    from audiolime import wire
    from audiolime.explanation.document import Document
    from audiolime.report.page import render

    result, doc = toy_doc
    for t, rec in zip(result.explanation.targets, doc.targets):
        v, vr = t.faithfulness.verdict, rec.faithfulness.verdict
        assert vr.random_sets == v.random_sets == RANDOM_SETS and vr.summary == v.summary
        assert (vr.sufficient, vr.necessary) == (v.sufficient, v.necessary)
        assert vr.keep_random_as_good == round(v.keep_random_as_good, 4)
    assert Document.loads(doc.dumps()) == doc
    pb = wire.explanation_to_proto(doc, "id", "", 0, False)
    assert pb.targets[0].faithfulness.verdict.summary == doc.targets[0].faithfulness.verdict.summary
    assert wire.explanation_from_proto(pb).targets == doc.targets
    old = json.loads(doc.dumps())
    for t in old["targets"]:
        del t["faithfulness"]["verdict"]
    legacy = Document.loads(json.dumps(old))
    assert all(t.faithfulness.verdict is None for t in legacy.targets)
    assert '<p class="random-verdict">' in render(doc) and '<p class="random-verdict">' not in render(legacy)
    legacy_pb = wire.explanation_to_proto(legacy, "id", "", 0, False)
    assert not legacy_pb.targets[0].faithfulness.HasField("verdict")
    assert wire.explanation_from_proto(legacy_pb).targets == legacy.targets
