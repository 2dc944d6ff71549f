"""Engine invariants, with known predict functions (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from audiolime.errors import InvalidInput
from audiolime.method.engine import Engine
from audiolime.method.factorization import StemSegmentFactorization, segment_bounds
from audiolime.method.plan import resolve_tags
from audiolime.method.request import ExplainRequest
from audiolime.method.sampling import sample_masks
from audiolime.method.surrogate import kernel_weights

SR = 16000


def _sines(n: int = 48000) -> dict[str, np.ndarray]:
    t = np.arange(n) / SR
    return {"vocals": 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32),
            "accompaniment": 0.2 * np.sin(2 * np.pi * 110 * t).astype(np.float32)}


def test_row0_all_ones_and_dedup_counts():
    """Row 0 is the all-ones mask, and unique rows are exactly the distinct drawn rows."""
    ms = sample_masks(12, 2048, seed=3)
    assert ms.masks.shape == (2048, 12) and ms.masks[0].all() and ms.unique[0].all()
    distinct = {row.tobytes() for row in ms.masks}
    assert ms.num_unique == len(distinct) < 2048
    np.testing.assert_array_equal(ms.unique[ms.inverse], ms.masks)


def test_sampling_deterministic_per_seed():
    """The same seed gives the same masks; another seed gives different ones."""
    a, b, c = sample_masks(16, 500, 7), sample_masks(16, 500, 7), sample_masks(16, 500, 8)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.masks, c.masks)


def test_exhaustive_when_small():
    """When 2^d' <= N every mask is enumerated exactly once, all ones first."""
    ms = sample_masks(6, 64, seed=0)
    assert ms.exhaustive and ms.num_samples == 64 == ms.num_unique
    assert ms.masks[0].all() and not ms.masks[-1].any()
    assert len({r.tobytes() for r in ms.masks}) == 64
    assert not sample_masks(7, 64, seed=0).exhaustive


def test_num_samples_bounds():
    """N below d'+1 or above 65536 is refused with a clear message."""
    with pytest.raises(InvalidInput, match="between d'\\+1 = 13 and 65536"):
        sample_masks(12, 12, 0)
    with pytest.raises(InvalidInput, match="65536"):
        sample_masks(12, 65537, 0)


def test_composition_is_sum_of_selected_components():
    """compose(mask) equals the sum of the stems restricted to the selected segments."""
    stems = _sines()
    f = StemSegmentFactorization(stems, SR, segments=4, listen_stems={k: np.stack([v, -v]) for k, v in stems.items()},
                                 listen_rate=SR)
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, size=(5, 8))
    out = f.compose(masks)
    bounds = segment_bounds(48000, 4, SR)
    for m, y in zip(masks, out):
        expect = np.zeros(48000, np.float32)
        for ci, src in enumerate(f.sources):
            for j in range(4):
                if m[ci * 4 + j]:
                    expect[bounds[j]:bounds[j + 1]] += stems[src][bounds[j]:bounds[j + 1]]
        np.testing.assert_allclose(y, expect, atol=1e-6)
    np.testing.assert_allclose(f.compose(np.ones((1, 8)))[0], stems["vocals"] + stems["accompaniment"], atol=1e-6)
    listen = f.compose_listen(masks[0])
    np.testing.assert_allclose(listen[0], out[0], atol=1e-6)
    np.testing.assert_allclose(listen[1], -out[0], atol=1e-6)
    assert f.info[5].name == "accompaniment[1] 0.75\u20131.50 s"


def test_segments_too_short_or_zero():
    """Fewer than one segment, or segments under 50 ms, are refused."""
    with pytest.raises(InvalidInput, match=">= 1"):
        segment_bounds(48000, 0, SR)
    with pytest.raises(InvalidInput, match="50 ms"):
        segment_bounds(48000, 61, SR)


def test_kernel_weights():
    """All-ones mask has weight 1; fewer active components weigh less; empty mask is finite."""
    w = kernel_weights(np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
    assert w[0] == pytest.approx(1.0) and w[0] > w[1] > w[2] > 0 and np.isfinite(w[3])


def test_ridge_recovers_known_linear_weights():
    """With a predict that is linear in the component energies, ranking and weights are recovered."""
    stems = _sines()
    f = StemSegmentFactorization(stems, SR, segments=3)  # hard edges: components orthogonal
    true_w = np.array([0.30, -0.10, 0.05, 0.00, 0.20, -0.25])
    energy = (f.components ** 2).sum(1)

    def predict(x: np.ndarray) -> np.ndarray:
        # recover which components are on from the input, then a known linear model on that mask
        on = np.round((x @ f.components.T) / energy).astype(np.float64)  # stems are orthogonal sines
        p = 0.4 + on @ true_w
        return np.stack([p, 1 - p], 1).astype(np.float32)

    eng = Engine(predict, ["a", "b"], batch_size=16, max_in_flight=3)
    exp = eng.explain(f, f.compose(np.ones((1, 6)))[0], [0, 1], ExplainRequest(num_samples=64, top_k=2, ridge_alpha=1e-6,
                                                                               edges="hard"))
    t = exp.targets[0]
    got = np.array([next(rc.weight for rc in t.ranking if rc.component.index == i) for i in range(6)])
    np.testing.assert_allclose(got, true_w, atol=1e-4)
    assert [rc.component.index for rc in t.ranking[:2]] == [0, 4]
    assert t.surrogate_r2 == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose([rc.weight for rc in exp.targets[1].ranking], sorted(-true_w, reverse=True), atol=1e-4)
    assert exp.masks.exhaustive and exp.unique_samples == 64
    assert t.keep.components == (0, 4) and t.keep.target_probability == pytest.approx(0.4 + 0.5, abs=1e-5)


def test_predict_called_once_per_unique_mask():
    """Duplicated masks are evaluated once: predict sees exactly unique_samples (+1) windows; the
    faithfulness masks are all among the enumerated ones, so they cost no further call."""
    stems = _sines(16000)
    f = StemSegmentFactorization(stems, SR, segments=2)
    seen = []

    def predict(x):
        seen.append(len(x))
        return np.tile(np.array([[0.5, 0.5]], np.float32), (len(x), 1))

    exp = Engine(predict, ["a", "b"], batch_size=7).explain(f, np.zeros(16000, np.float32), None,
                                                            ExplainRequest(num_samples=200))
    assert exp.unique_samples == 16 and sum(seen) == 16 + 1  # masks + original window
    assert exp.metric_calls == 0 and exp.stopping.reason == "exhaustive" and exp.stopping.stability == 1.0


def test_unknown_tag_lists_closest():
    """Unknown tags name the closest valid tags; case-insensitive names resolve."""
    labels = ["rock", "pop", "female vocalists", "female vocalist", "folk"]
    assert resolve_tags(labels, ["Female Vocalists", "pop"]) == [2, 1]
    with pytest.raises(InvalidInput, match="unknown tag 'femal vocals'.*female vocalist"):
        resolve_tags(labels, ["femal vocals"])
