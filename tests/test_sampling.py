"""The method's sampling, surrogate, stopping rule, faithfulness metrics and segment edges, with
taggers of known structure (no TensorFlow): a "waveform" is the mask itself, so the tagger's
output on every perturbation is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from audiolime.errors import InvalidInput
from audiolime.method.engine import Engine, MaskPredictions
from audiolime.method.events import Event, Ranking
from audiolime.method.factorization import Component, StemSegmentFactorization, segment_bounds, segment_weights
from audiolime.method.faithfulness import area, deletion_masks, insertion_masks, random_sets
from audiolime.method.request import RANDOM_SETS, ExplainRequest
from audiolime.method.sampling import MaskStream, round_sizes, sample_masks, shapley_kernel, shapley_size_probabilities
from audiolime.method.surrogate import fit_surrogate, kernel_weights, ridge, row_weights, top_k_stability


class MaskFactorization:
    """d components whose composition is the mask itself (the tagger reads the mask back)."""

    def __init__(self, d: int) -> None:
        self.info = [Component(i, "src", i, float(i), float(i + 1)) for i in range(d)]

    @property
    def num_components(self) -> int:
        return len(self.info)

    def compose(self, masks: np.ndarray) -> np.ndarray:
        return np.asarray(masks, np.float32)


def linear_tagger(weights: np.ndarray, bias: float = 0.1, noise: float = 0.0, interaction: float = 0.0):
    """Tag 0 = bias + weights . mask (+ interaction x mask0 x mask1, + seeded noise per mask);
    tag 1 = 0.5 constant. Noise is a deterministic function of the mask (a re-run sees the same)."""
    def predict(x: np.ndarray) -> np.ndarray:
        p = bias + x @ weights + interaction * x[:, 0] * x[:, 1]
        if noise:
            codes = x.astype(np.int64) @ (1 << np.arange(x.shape[1], dtype=np.int64) % 62)
            p = p + noise * np.array([np.random.default_rng(int(c)).normal() for c in codes])
        return np.stack([p, np.full(len(x), 0.5)], axis=1).astype(np.float32)
    return predict


# -- segment edges -------------------------------------------------------------------------------
@pytest.mark.parametrize("fade", [0.05, 0.5, 1.0])
def test_fade_weights_sum_to_one_and_cross_fade_raised_cosine(fade):
    """Faded segment weights sum to exactly 1 at every sample; a segment is 1 in its core, 0 far
    away, and rises as sin^2 across its boundary (0.5 at the boundary itself)."""
    n, segments = 16000, 5
    bounds = segment_bounds(n, segments, 16000)
    w = segment_weights(n, bounds, "fade", fade)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-6)
    assert w.min() >= 0 and w.max() <= 1
    length = int(fade * 3200)
    b = int(bounds[2])
    ramp = w[2, b - length // 2:b - length // 2 + length]
    assert np.all(np.diff(ramp) > 0)  # strictly rising: a fade, not a gate
    np.testing.assert_allclose(ramp, np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2, atol=1e-6)
    assert w[2, b] == pytest.approx(0.5, abs=np.pi / length)
    assert w[2, b - length // 2 - 1] == 0 and w[1, b - length // 2 - 1] == pytest.approx(1.0)
    assert np.all(w[0, :bounds[1] - length // 2] == 1)  # the window's own start is not faded
    np.testing.assert_array_equal(segment_weights(n, bounds, "hard") > 0.5, w > 0.5)


def test_faded_components_sum_to_the_window_in_both_domains():
    """With fades, all components on reproduce the sum of the stems (tagger and listening domain),
    and one kept segment is silent at the window edges and fades in and out."""
    rng = np.random.default_rng(0)
    stems = {"vocals": rng.normal(size=16000).astype(np.float32), "accompaniment": rng.normal(size=16000).astype(np.float32)}
    listen = {k: np.stack([np.repeat(v, 2), -np.repeat(v, 2)]) for k, v in stems.items()}  # 32 kHz stereo
    f = StemSegmentFactorization(stems, 16000, 4, listen_stems=listen, listen_rate=32000, edges="fade", fade=0.5)
    np.testing.assert_allclose(f.compose(np.ones((1, 8)))[0], stems["vocals"] + stems["accompaniment"], atol=1e-5)
    np.testing.assert_allclose(f.compose_listen(np.ones(8)), listen["vocals"] + listen["accompaniment"], atol=1e-5)
    assert f.fade_s == pytest.approx(0.125, abs=1 / 16000)
    one = f.compose(np.eye(8)[1:2])[0]  # vocals, segment 1: samples 4000-8000, fades of 2000 samples
    env = np.abs(one) / (np.abs(stems["vocals"]) + 1e-12)
    assert env[:3000].max() == 0 and env[9000:].max() == 0  # nothing outside segment +- half a fade
    assert 0 < env[3500] < env[4000] < env[4500] < env[5000] == pytest.approx(1.0)  # fading in
    assert env[6999] == pytest.approx(1.0) and 1 > env[7500] > env[8000] > env[8500] > 0  # and out
    with pytest.raises(InvalidInput, match="fade must be in"):
        StemSegmentFactorization(stems, 16000, 4, edges="fade", fade=1.5)
    with pytest.raises(InvalidInput, match="edges must be one of"):
        StemSegmentFactorization(stems, 16000, 4, edges="soft")


# -- sampling ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,paired", [("lime", False), ("lime", True), ("shap", False), ("shap", True)])
def test_mask_stream_is_prefix_consistent_and_paired(kernel, paired):
    """Masks taken in rounds equal the same number taken at once; paired draws are complements;
    the anchors (all ones; all zeros for shap/paired) come first."""
    s = MaskStream(10, 5, kernel, paired)
    rounds = np.concatenate([s.take(3), s.take(64), s.take(1), s.take(200)])
    np.testing.assert_array_equal(rounds, MaskStream(10, 5, kernel, paired).take(268))
    assert rounds[0].all()
    head = 2 if kernel == "shap" or paired else 1
    if head == 2:
        assert not rounds[1].any()
    if paired:
        np.testing.assert_array_equal(rounds[head::2][:100], 1 - rounds[head + 1::2][:100])
    if kernel == "shap":
        sizes = rounds[head:].sum(axis=1)
        assert sizes.min() >= 1 and sizes.max() <= 9  # anchors are not drawn again
    assert not np.array_equal(rounds, MaskStream(10, 6, kernel, paired).take(268))


def test_shap_sizes_follow_the_shapley_kernel():
    """Coalition sizes are drawn with probability proportional to (d-1)/(s(d-s)) (chi-square test)."""
    d, n = 8, 20000
    sizes = MaskStream(d, 1, "shap").take(n + 2)[2:].sum(axis=1).astype(np.int64)
    observed = np.bincount(sizes, minlength=d + 1)[1:d]
    expected = n * shapley_size_probabilities(d)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 22.5  # 99.9 % quantile of chi-square with 6 degrees of freedom
    assert shapley_kernel(np.array([[1] * 8, [0] * 8, [1] + [0] * 7]))[2] == pytest.approx(7 / (8 * 7))


def test_round_sizes():
    """Rounds grow geometrically in multiples of 64 and end exactly at max_samples."""
    assert round_sizes(18, 4096) == [192, 320, 512, 768, 1152, 1728, 2624, 3968, 4096]  # 8 (d'+1) = 152 -> 192
    assert round_sizes(47, 1000)[0] == 384 and round_sizes(47, 1000)[-1] == 1000
    assert round_sizes(5, 100) == [100]


def test_round_schedule_can_be_set_and_defaults_unchanged():
    """An explicit first round is used as it is (no 8 (d'+1) floor), later rounds stay multiples of 64;
    the defaults are the product's schedule; an Engine honours its first round and growth."""
    assert round_sizes(12, 4096, None) == round_sizes(12, 4096) == [128, 192, 320, 512, 768, 1152, 1728, 2624, 3968,
                                                                  4096]
    assert round_sizes(12, 4096, 32)[:4] == [32, 64, 128, 192]
    assert round_sizes(12, 4096, 128, growth=2.0) == [128, 256, 512, 1024, 2048, 4096]
    assert round_sizes(12, 100, 256) == [100]
    with pytest.raises(InvalidInput):
        round_sizes(12, 4096, 12)  # fewer than d'+1
    with pytest.raises(InvalidInput):
        round_sizes(12, 4096, 64, growth=1.0)
    d = 12
    true = np.linspace(0.3, -0.2, d)[np.random.default_rng(1).permutation(d)]
    request = ExplainRequest(num_samples=0, top_k=3).validate()
    default = Engine(linear_tagger(true, noise=0.02), ["t", "c"]).explain(MaskFactorization(d), np.ones(d, np.float32),
                                                                          [0], request)
    assert default.stopping.masks in round_sizes(d, 4096)
    events: list = []
    small = Engine(linear_tagger(true, noise=0.02), ["t", "c"], first_round=32, round_growth=2.0)
    exp = small.explain(MaskFactorization(d), np.ones(d, np.float32), [0], request, events.append)
    assert [r.masks for r in events if isinstance(r, Ranking)] == round_sizes(d, 4096, 32, 2.0)[:exp.stopping.rounds]
    assert [r.masks for r in events if isinstance(r, Ranking)][0] == 32
    assert exp.stopping.reason == "stable" and exp.stopping.masks < default.stopping.masks
    with pytest.raises(InvalidInput):
        Engine(linear_tagger(true), ["t", "c"], first_round=1)


# -- surrogate -----------------------------------------------------------------------------------
def test_batched_ridge_equals_scikit_learn():
    """The closed-form weighted ridge (intercept unpenalised) equals scikit-learn's Ridge for every
    weighting of a batch, for several targets at once."""
    rng = np.random.default_rng(3)
    x = sample_masks(14, 700, 2).masks
    y = rng.normal(size=(700, 3))
    w = rng.uniform(0.1, 2.0, size=(4, 700))
    coef, intercept = ridge(x, y, w, 0.7)
    for b in range(4):
        ref = Ridge(alpha=0.7).fit(x.astype(float), y, sample_weight=w[b])
        np.testing.assert_allclose(coef[b], ref.coef_, atol=1e-9)
        np.testing.assert_allclose(intercept[b], ref.intercept_, atol=1e-9)


def test_kernel_shap_recovers_shapley_values_exactly_when_enumerated():
    """With every mask enumerated, the shap kernel's surrogate weights are the Shapley values of a
    game with an interaction (each partner gets half of it), and LIME's are not."""
    d = 6
    w = np.array([0.3, -0.1, 0.05, 0.0, 0.2, -0.25])
    masks = sample_masks(d, 64, 0, "shap").masks
    y = linear_tagger(w, interaction=0.4)(masks.astype(np.float32))[:, :1]
    fit = fit_surrogate(masks, y, row_weights(masks, "shap", exhaustive=True), alpha=0.0)
    shapley = w + np.array([0.2, 0.2, 0, 0, 0, 0])
    np.testing.assert_allclose(fit.coef[0], shapley, atol=1e-4)
    np.testing.assert_allclose(fit.intercept[0] + fit.coef[0].sum(), 0.1 + w.sum() + 0.4, atol=1e-4)  # efficiency
    lime = fit_surrogate(masks, y, row_weights(masks, "lime"), alpha=0.0)
    assert np.abs(lime.coef[0] - shapley).max() > 0.02


def test_stability_high_for_separated_weights_low_for_a_tie():
    """Bootstrap stability of the top-3 set is 1 when ranks 3 and 4 are far apart; when they tie
    it is low on average over noise draws (any one draw may separate them by chance)."""
    masks = sample_masks(10, 600, 4).masks
    sep = np.array([1.0, 0.8, 0.6, 0.1, 0, 0, 0, 0, 0, 0])
    tie = np.array([1.0, 0.8, 0.3, 0.3, 0, 0, 0, 0, 0, 0])
    weights = kernel_weights(masks)
    stab = np.zeros((10, 2))
    for seed in range(10):
        noise = np.random.default_rng(seed).normal(scale=0.05, size=600)
        stab[seed] = [top_k_stability(masks, masks @ w + noise, weights, 1.0, 3, seed=seed, tie=0.0)[0]
                      for w in (sep, tie)]
    assert stab[:, 0].min() == 1.0 and stab[:, 1].mean() < 0.8


def test_a_near_tie_for_the_last_place_does_not_count_as_instability():
    """With a 1 % tie rule, components within 1 % of the strongest weight of the k-th one are tied
    for the last places: the tie above is stable; a real gap of 5 % still is not a tie, so a
    replicate putting the wrong component in is still caught."""
    masks = sample_masks(10, 600, 4).masks
    weights = kernel_weights(masks)
    near = np.array([1.0, 0.8, 0.3, 0.3 - 1e-3, 0, 0, 0, 0, 0, 0])
    gap = np.array([1.0, 0.8, 0.3, 0.28, 0, 0, 0, 0, 0, 0])
    tied, gapped, exact = [], [], []
    for seed in range(10):
        noise = np.random.default_rng(seed).normal(scale=0.002, size=600)
        tied.append(top_k_stability(masks, masks @ near + noise, weights, 1.0, 3, seed=seed, tie=0.01)[0])
        exact.append(top_k_stability(masks, masks @ near + noise, weights, 1.0, 3, seed=seed, tie=0.0)[0])
        gapped.append(top_k_stability(masks, masks @ gap + noise * 50, weights, 1.0, 3, seed=seed, tie=0.01)[0])
    assert min(tied) == 1.0 and np.mean(exact) < 0.9
    assert min(gapped) < 0.95  # noise 0.1 against a 2 % gap: replicates swap them, and that counts


# -- adaptive sampling and the engine ------------------------------------------------------------
def test_adaptive_sampling_stops_when_the_top_k_set_is_stable():
    """A clear top-3 stops early ("stable") with the true top-3; rounds are announced as predict
    events whose totals grow; the masks are the first ones of the fixed-N run with the same seed."""
    d = 16
    true = np.linspace(0.3, -0.2, d)[np.random.default_rng(1).permutation(d)]
    fact, events = MaskFactorization(d), []
    eng = Engine(linear_tagger(true, noise=0.02), ["t", "c"], batch_size=64)
    exp = eng.explain(fact, np.ones(d, np.float32), [0], ExplainRequest(num_samples=0, top_k=3), events.append)
    stop = exp.stopping
    assert stop.reason == "stable" and stop.stability >= 0.95 and stop.masks < 4096
    assert {rc.component.index for rc in exp.targets[0].top(3)} == set(np.argsort(-true)[:3])
    totals = [e.total for e in events if isinstance(e, Event) and e.stage == "predict"]
    assert len(set(totals)) == stop.rounds and totals == sorted(totals)
    assert stop.masks == round_sizes(d, 4096)[stop.rounds - 1] == exp.num_samples
    # each round ends with its ranking, after its predict events; the last one is the answer's
    rankings = [e for e in events if isinstance(e, Ranking)]
    assert [r.round for r in rankings] == list(range(1, stop.rounds + 1))
    assert [r.masks for r in rankings] == round_sizes(d, 4096)[:stop.rounds]
    kinds = ["r" if isinstance(e, Ranking) else e.stage for e in events]
    assert kinds.index("r") > kinds.index("predict") and kinds[-3:] == ["r", "fit", "fidelity"]
    last = rankings[-1].targets
    assert [t.tag for t in last] == ["t"] and last[0].stability == stop.stability
    assert [(c.index, w) for c, w in last[0].top] == [(rc.component.index, rc.weight) for rc in exp.targets[0].top(3)]
    fixed = sample_masks(d, 4096, 0, "lime", paired=True).masks
    np.testing.assert_array_equal(exp.masks.masks, fixed[:stop.masks])


def test_adaptive_sampling_spends_more_on_a_tie_and_caps_at_max_samples(monkeypatch):
    """With the exact-set rule (tie 0), a tie at rank 3 needs far more masks than a clear top-3
    (over seeds: a chance separation can look stable), and a run that never stabilises stops at
    max_samples and says so; with the default tie rule the same tie stops as early as a clear top-3."""
    from audiolime.method import surrogate

    d = 12
    tie = np.array([0.5, 0.4, 0.2, 0.2] + [0.0] * (d - 4))
    tolerant = [Engine(linear_tagger(tie, noise=0.05), ["t", "c"]).explain(
        MaskFactorization(d), np.ones(d, np.float32), [0],
        ExplainRequest(num_samples=0, max_samples=1024, top_k=3, seed=seed)) for seed in range(8)]
    assert {e.stopping.reason for e in tolerant} == {"stable"}
    monkeypatch.setattr(surrogate, "TIE", 0.0)
    tie = np.array([0.5, 0.4, 0.2, 0.2] + [0.0] * (d - 4))
    clear = np.array([0.5, 0.4, 0.3, 0.1] + [0.0] * (d - 4))
    spent = {}
    for name, true in (("tie", tie), ("clear", clear)):
        eng = Engine(linear_tagger(true, noise=0.05), ["t", "c"])
        spent[name] = [eng.explain(MaskFactorization(d), np.ones(d, np.float32), [0],
                                   ExplainRequest(num_samples=0, max_samples=1024, top_k=3, seed=seed))
                       for seed in range(8)]
    assert {e.stopping.reason for e in spent["clear"]} == {"stable"}
    assert np.mean([e.num_samples for e in spent["tie"]]) > 2 * np.mean([e.num_samples for e in spent["clear"]])
    assert np.mean([e.num_samples for e in spent["tie"]]) > 2 * np.mean([e.num_samples for e in tolerant])
    capped = [e for e in spent["tie"] if e.stopping.reason == "max_samples"]
    assert capped
    for e in capped:
        assert e.num_samples == 1024 and e.stopping.rounds == len(round_sizes(d, 1024)) and e.stopping.stability < 0.8
        assert e.targets[0].faithfulness.stability == e.stopping.stability


def test_a_deadline_stops_adaptive_sampling_with_the_ranking_so_far(monkeypatch):
    """Masks cost time on the deadline's clock (10 ms each, simulated). A run that would go on to
    max_samples stops after the last round that leaves time for the next one's predicted cost
    ("deadline"), with the stability of that round, and the whole explanation (faithfulness checks
    included) ends before the deadline; a deadline that never binds changes nothing."""
    from audiolime.method import surrogate
    from audiolime.method.engine import Deadline

    monkeypatch.setattr(surrogate, "TIE", 0.0)  # an exact tie never stabilises
    d, per_mask = 12, 0.01
    tie = np.array([0.5, 0.4, 0.2, 0.2] + [0.0] * (d - 4))
    clock = {"t": 0.0}
    tagger = linear_tagger(tie, noise=0.05)

    def timed(x):
        clock["t"] += per_mask * len(x)
        return tagger(x)

    request = ExplainRequest(num_samples=0, max_samples=1024, top_k=3, seed=1, stability=0.99)  # never stabilises
    sizes = round_sizes(d, 1024)

    def run(deadline=None):
        return Engine(timed, ["t", "c"]).explain(MaskFactorization(d), np.ones(d, np.float32), [0], request,
                                                 deadline=deadline)

    free = run()
    assert free.stopping.reason == "max_samples" and free.stopping.rounds == len(sizes) > 2
    clock["t"] = 0.0
    # room for the first two rounds (and their checks), not for the third
    at = per_mask * (sizes[1] + 1 + 2) + 0.5 * per_mask * (sizes[2] - sizes[1])
    cut = run(Deadline(at, clock=lambda: clock["t"]))
    assert cut.stopping.reason == "deadline" and cut.stopping.rounds == 2 and cut.num_samples == sizes[1]
    assert clock["t"] <= at  # the answer, faithfulness checks included, came in time
    assert cut.stopping.stability < request.stability and cut.targets[0].faithfulness.stability == cut.stopping.stability
    np.testing.assert_array_equal(cut.masks.masks, free.masks.masks[:sizes[1]])  # the same stream, cut short
    clock["t"] = 0.0
    late = run(Deadline(1e9, clock=lambda: clock["t"]))
    assert late.stopping == free.stopping
    assert [rc.weight for rc in late.targets[0].ranking] == [rc.weight for rc in free.targets[0].ranking]


def timed_tagger(d: int, per_mask: float, head: tuple[float, ...] = (0.5, 0.4, 0.2, 0.2), noise: float = 0.05):
    """A linear tagger (by default two strong components, two tied) whose every window costs
    ``per_mask`` on a simulated clock: returns (the clock, ``{"t": seconds}``, and the tagger)."""
    clock = {"t": 0.0}
    tagger = linear_tagger(np.array(list(head) + [0.0] * (d - len(head))), noise=noise)

    def timed(x):
        clock["t"] += per_mask * len(x)
        return tagger(x)

    return clock, timed


def test_a_budget_too_short_for_the_first_round_shrinks_it_and_its_checks_and_says_budget(monkeypatch):
    """A budget (reason "budget") with a known cost per window (window_s, from the song scan) that
    cannot hold the usual first round and its checks: the checks beyond keep/drop take at most half of
    what is left (curves go first, then random sets down to DEADLINE_MIN_RANDOM_SETS), the first round
    is what fits beside them, even and never below d'+1; the explanation ends within the budget, says
    "budget", and its warnings name the checks left out. With no time for even d'+1 masks it still
    answers from d'+1 (the least a surrogate needs)."""
    from audiolime.method import surrogate
    from audiolime.method.engine import Deadline
    from audiolime.method.request import DEADLINE_MIN_RANDOM_SETS

    monkeypatch.setattr(surrogate, "TIE", 0.0)
    d, per_mask = 12, 0.01
    clock, timed = timed_tagger(d, per_mask)

    request = ExplainRequest(num_samples=0, max_samples=1024, top_k=3, seed=1, time_budget_s=1.0, stability=0.99)
    full = 2 + 2 * d + 2 + 2 * RANDOM_SETS  # keep, drop, both curves, the verdict's sets
    assert round_sizes(d, 1024)[0] == 128
    # the engine's first call is the unperturbed window (1 window), then checks and first round are sized;
    # room: windows left after it
    cases = [(100 + full, 100, True, RANDOM_SETS),  # every check fits beside 100 masks
             (67, 32, False, RANDOM_SETS),  # 67 windows: curves (26) + sets (32) > half of 65 -> curves go
             (40, 20, False, 9),  # half of 38 is 19 -> 9 sets (18); the first round gets the other 20
             (10, 14, False, DEADLINE_MIN_RANDOM_SETS)]  # nothing fits: d'+1 masks, the fewest sets
    for room, first, curves, sets in cases:
        clock["t"] = 0.0
        at = per_mask * (1 + room + 0.5)
        budget = Deadline(at, clock=lambda: clock["t"], reason="budget", window_s=per_mask)
        exp = Engine(timed, ["t", "c"]).explain(MaskFactorization(d), np.ones(d, np.float32), [0], request,
                                                deadline=budget)
        assert exp.stopping.reason == "budget" and exp.stopping.rounds == 1 and exp.num_samples == first, room
        faith = exp.targets[0].faithfulness
        assert (faith.deletion is not None, faith.verdict.random_sets) == (curves, sets) == \
            (exp.checks.curves, exp.checks.random_sets), room
        assert bool(exp.warnings) == (not curves or sets < RANDOM_SETS), room
        if not curves:
            assert "no deletion/insertion curves" in exp.warnings[0]
        if room >= first + exp.checks.masks(d, 1):
            assert clock["t"] <= at, room
    assert Deadline.earliest(None, budget, Deadline(at - 1)).reason == "deadline" and Deadline.earliest() is None


def test_a_deadline_keeps_curves_the_caller_asked_for(monkeypatch):
    """curves="on" is the caller's: a short deadline reduces random sets but keeps both curves."""
    from audiolime.method.engine import Deadline

    d, per_mask = 12, 0.01
    clock, timed = timed_tagger(d, per_mask)

    request = ExplainRequest(num_samples=0, max_samples=1024, top_k=3, seed=1, curves="on")
    exp = Engine(timed, ["t", "c"]).explain(MaskFactorization(d), np.ones(d, np.float32), [0], request,
                                            deadline=Deadline(per_mask * 60, clock=lambda: clock["t"],
                                                              window_s=per_mask))
    assert exp.targets[0].faithfulness.deletion is not None and exp.checks.curves
    assert exp.checks.random_sets < RANDOM_SETS and "random sets" in exp.warnings[0]


def test_fixed_n_reports_stability_and_exhaustive_small_spaces():
    """Fixed N stops as "fixed" with a measured stability; a space of 2^d' <= N is enumerated."""
    true = np.linspace(0.3, -0.2, 12)
    eng = Engine(linear_tagger(true, noise=0.02), ["t", "c"])
    events: list = []
    exp = eng.explain(MaskFactorization(12), np.ones(12, np.float32), [0], ExplainRequest(num_samples=500),
                      events.append)
    assert exp.stopping == type(exp.stopping)(1, 500, "fixed", exp.targets[0].faithfulness.stability)
    assert events and not [e for e in events if isinstance(e, Ranking)]  # no rounds, no interim rankings
    assert 0 <= exp.stopping.stability <= 1
    small = Engine(linear_tagger(true[:6]), ["t", "c"]).explain(MaskFactorization(6), np.ones(6, np.float32), [0],
                                                                 ExplainRequest(num_samples=0))
    assert small.stopping.reason == "exhaustive" and small.unique_samples == 64


def test_faithfulness_metrics_are_the_taggers_own_outputs():
    """Drop-top-k and the deletion/insertion curves are the tagger's outputs on exactly those masks;
    for a faithful ranking deletion falls fast (low area) and insertion rises fast (high area); all
    metric masks go to the tagger in one call."""
    d = 8
    true = np.array([0.3, -0.1, 0.05, 0.0, 0.2, -0.25, 0.1, 0.02])
    calls = []
    predict = linear_tagger(true)

    def counting(x):
        calls.append(len(x))
        return predict(x)

    exp = Engine(counting, ["t", "c"], batch_size=1024).explain(
        MaskFactorization(d), np.ones(d, np.float32), [0], ExplainRequest(num_samples=100, top_k=3, ridge_alpha=1e-6))
    t = exp.targets[0]
    order = np.array([rc.component.index for rc in t.ranking])
    np.testing.assert_array_equal(order, np.argsort(-true, kind="stable"))
    f = t.faithfulness
    np.testing.assert_allclose(f.deletion.probabilities, predict(deletion_masks(order).astype(np.float32))[:, 0], atol=1e-6)
    np.testing.assert_allclose(f.insertion.probabilities, predict(insertion_masks(order).astype(np.float32))[:, 0], atol=1e-6)
    keep = np.zeros(d)
    keep[[0, 4, 6]] = 1
    assert f.drop.components == t.keep.components == (0, 4, 6)
    assert f.drop.target_probability == pytest.approx(0.1 + true @ (1 - keep), abs=1e-6)
    assert t.keep.target_probability == pytest.approx(0.1 + true @ keep, abs=1e-6)
    assert f.deletion.auc < f.insertion.auc
    assert area(np.array([1.0, 0.0])) == 0.5 and area(np.array([0.0, 1.0, 1.0])) == 0.75
    assert calls[-1] == exp.metric_calls  # one batched call of every metric mask not sampled before
    assert 0 < exp.metric_calls <= 2 + 2 * (d + 1) + 2 * RANDOM_SETS  # keep, drop, curves, verdict's random sets
    rand = random_sets(d, 3, RANDOM_SETS, 0).astype(np.float64)  # the verdict's: the tagger's outputs on them too
    p_keep, p_drop = 0.1 + rand @ true, 0.1 + (1 - rand) @ true
    v = f.verdict
    assert v.keep_random_as_good == pytest.approx(np.mean(p_keep >= t.keep.target_probability - 1e-6))
    assert v.drop_random_as_good == pytest.approx(np.mean(p_drop <= f.drop.target_probability + 1e-6))


def test_curves_off_beyond_48_components_unless_asked():
    """curves=auto computes deletion/insertion curves while d' <= 48 only; on/off override."""
    assert ExplainRequest().curves_for(48) and not ExplainRequest().curves_for(50)
    assert ExplainRequest(curves="on").curves_for(50) and not ExplainRequest(curves="off").curves_for(12)
    exp = Engine(linear_tagger(np.zeros(6)), ["t", "c"]).explain(
        MaskFactorization(6), np.ones(6, np.float32), [0], ExplainRequest(num_samples=64, curves="off"))
    f = exp.targets[0].faithfulness
    assert f.deletion is None and f.insertion is None and f.drop is not None


def test_memo_shares_predictions_between_explanations_of_one_factorization():
    """An adaptive run and the fixed-N run with the same seed share their masks' predictions."""
    d = 16
    true = np.linspace(0.3, -0.2, d)
    seen = []
    predict = linear_tagger(true, noise=0.02)
    eng = Engine(lambda x: seen.append(len(x)) or predict(x), ["t", "c"], batch_size=4096)
    fact = MaskFactorization(d)
    memo = MaskPredictions(eng, fact)
    auto = eng.explain(fact, np.ones(d, np.float32), [0], ExplainRequest(num_samples=0), memo=memo)
    before = memo.evaluated
    fixed = eng.explain(fact, np.ones(d, np.float32), [0], ExplainRequest(num_samples=2048), memo=memo)
    assert memo.evaluated - before <= fixed.unique_samples - auto.unique_samples + fixed.metric_calls + 2
    with pytest.raises(InvalidInput, match="another factorization"):
        eng.explain(MaskFactorization(d), np.ones(d, np.float32), [0], ExplainRequest(), memo=memo)


@pytest.mark.parametrize("field,value,message", [
    ("edges", "soft", "edges must be one of hard, fade"), ("kernel", "rbf", "kernel must be one of lime, shap"),
    ("sampling", "sobol", "sampling must be one of"), ("curves", "yes", "curves must be one of"),
    ("fade", 0.0, "fade must be in"), ("fade", float("nan"), "fade must be in"), ("stability", 1.5, "stability must be in"),
    ("max_samples", 10, "max_samples must be between d'\\+1 = 13"), ("num_samples", -1, "num_samples must be between"),
    ("time_budget_s", -1.0, "time_budget_s must be between 0"), ("time_budget_s", float("inf"), "time_budget_s must be"),
    ("time_budget_s", 3601.0, "time_budget_s must be between 0 \\(none\\) and 3600"),
])
def test_new_request_fields_are_checked(field, value, message):
    """Every new option is checked against its vocabulary or bounds, the message naming the field."""
    with pytest.raises(InvalidInput, match=message):
        ExplainRequest(**{field: value}).validate()


def test_an_answer_with_checks_left_out_is_cut_short_even_when_stable():
    """A clear tagger stabilises in its (shortened) first round, but the deadline left out checks: the
    answer says "stable" and is still cut short (the explainer then keeps it out of its cache, whose
    key has no deadline), with the warning; the same request without a deadline is not."""
    from audiolime.method.engine import Deadline

    d, per_mask = 12, 0.01
    clock, timed = timed_tagger(d, per_mask, (0.9, 0.6, 0.3), noise=0.0)
    request = ExplainRequest(num_samples=0, max_samples=1024, top_k=3, seed=1)
    exp = Engine(timed, ["t", "c"]).explain(MaskFactorization(d), np.ones(d, np.float32), [0], request,
                                            deadline=Deadline(per_mask * 68.5, clock=lambda: clock["t"],
                                                              window_s=per_mask))
    assert exp.stopping.reason == "stable" and exp.checks != exp.asked and exp.cut_short and exp.warnings
    free = Engine(timed, ["t", "c"]).explain(MaskFactorization(d), np.ones(d, np.float32), [0], request)
    assert not free.cut_short and not free.warnings and free.checks == free.asked
