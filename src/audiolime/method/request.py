"""One explanation request: every parameter of the method with its default and its bounds, in one
place. The CLI, the explainer service and the evaluation build an :class:`ExplainRequest` and
call :meth:`ExplainRequest.validate` once, at their door; it returns the same request typed
:data:`ValidRequest`, which is what everything downstream takes and trusts.

Checks that need the tagger (tag names, window length, the cost of N masks) or the audio header
(window start, component memory) are made once more by :func:`audiolime.method.plan.make_plan`,
still before any expensive work. Configurable bounds come from :class:`~audiolime.method.limits.Limits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NewType

from audiolime.errors import InvalidInput, ModelNotFound
from audiolime.method.limits import DEFAULT, Limits, check_name

DEFAULT_TAGGER = "musicnn-msd"
DEFAULT_SEPARATOR = "2stems"
MAX_NUM_SAMPLES = 65536
MAX_SEED = 2 ** 63 - 1
AUTO = 0  # num_samples: adaptive, in rounds, until the top-k set is stable (or max_samples)
DEFAULT_BATCH_SIZE = 64  # windows per tagger call: not part of a request, every door's default

# Method vocabularies (the values each option accepts; the first is not necessarily the default).
EDGES = ("hard", "fade")  # segment edges: gated on/off, or complementary raised-cosine cross-fades
KERNELS = ("lime", "shap")  # LIME's exponential kernel on uniform masks; Kernel SHAP's
SAMPLINGS = ("paired", "independent")  # paired: every mask is drawn with its complement (antithetic)
CURVES = ("auto", "on", "off")  # deletion/insertion curves; auto: on while d' <= CURVES_MAX_COMPONENTS
CURVES_MAX_COMPONENTS = 48
# Components whose weights are within TIE x the largest absolute weight of the k-th weight are tied
# for the last places of the top-k set when its stability is measured (surrogate.top_k_stability):
# 5 % of the strongest component (docs/evaluation.md: on musicnn, 1 % still needed 2,048-4,096
# masks in 3 of 7 windows to order components 0.05-0.6 % of the top weight apart; 5 % stopped 6 of
# 8 at the first round, 256 masks).
TIE = 0.05
# The verdict (audiolime.method.faithfulness.verdict): the top-k is compared with RANDOM_SETS random
# k-sets of the same components (1..MAX_RANDOM_SETS; each costs 2 tagger windows, keep and drop); it is
# sufficient/necessary only if at most AS_GOOD_SHARE of the random sets do as well.
RANDOM_SETS = 16
MAX_RANDOM_SETS = 64
# Under a deadline that leaves too little room, the checks shrink (engine.Deadline.sized_checks) but
# keep at least this many random sets: fewer and "as good as at most a quarter" means nothing.
DEADLINE_MIN_RANDOM_SETS = 4
AS_GOOD_SHARE = 0.25
MAX_TIME_BUDGET_S = 3600.0  # time_budget_s: an hour (the longest admitted explanation takes minutes)

# Separator models and the stems they produce, in the order they produce them: Spleeter's published
# configurations (the ``instrument_list`` of spleeter/resources/<name>.json; a loaded model whose
# configuration differs is refused), and 2stems+hpss (2stems with the accompaniment split by
# harmonic-percussive separation; it needs only the 2stems weights; see audiolime.separator.hpss).
SEPARATOR_STEMS: dict[str, tuple[str, ...]] = {
    "2stems": ("vocals", "accompaniment"),
    "2stems+hpss": ("vocals", "harmonic", "percussive"),
    "4stems": ("vocals", "drums", "bass", "other"),
    "5stems": ("vocals", "piano", "drums", "bass", "other"),
}


def stems_of(separator: str) -> tuple[str, ...]:
    """The stems a separator model produces; unknown names are ``ModelNotFound``."""
    try:
        return SEPARATOR_STEMS[separator]
    except KeyError:
        raise ModelNotFound(f"unknown separator model {separator!r} (known: {', '.join(SEPARATOR_STEMS)})") from None


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain and how (field metadata: the field's name in the API message, when it
    differs, and ``wire=False`` for what the API does not carry). ``tags`` empty: the ``top_n`` tags
    predicted for the whole song;
    ``window_start_s`` None: where the first target tag is most probable. Repeated tags count
    once (each would add a surrogate, a fidelity window and its WAVs for nothing)."""

    model: str = DEFAULT_TAGGER
    model_version: int = 0  # 0: the newest version served
    tags: tuple[str, ...] = ()
    top_n: int = 1
    window_start_s: float | None = None
    window_duration_s: float = 0.0  # 0: the model's own input length (the only one accepted)
    segments: int = 6
    separator: str = field(default=DEFAULT_SEPARATOR, metadata={"proto": "separator_model"})
    num_samples: int = AUTO  # or a fixed N, d'+1 ... MAX_NUM_SAMPLES
    seed: int = 0
    top_k: int = 3
    # method settings the API does not expose (the evaluation varies them)
    kernel_width: float = field(default=0.25, metadata={"wire": False})
    ridge_alpha: float = field(default=1.0, metadata={"wire": False})
    edges: str = "fade"
    fade: float = 1.0  # cross-fade length as a fraction of the segment length, (0, 1]
    max_samples: int = 4096  # the cap of adaptive sampling
    stability: float = 0.80  # adaptive sampling stops when this share of bootstrap fits keep the top-k set
    kernel: str = "lime"
    sampling: str = "paired"
    curves: str = "auto"
    # random k-sets the verdict compares the top-k with (the API does not expose it; the evaluation may)
    random_sets: int = field(default=RANDOM_SETS, metadata={"wire": False})
    # adaptive sampling answers within this many seconds from the start of the explanation (0: no
    # budget; the caller's gRPC deadline is one too): the ranking so far, stopping reason "budget"
    time_budget_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(dict.fromkeys(self.tags)))

    @classmethod
    def from_wire(cls, **values) -> ExplainRequest:
        """A request from proto3-style fields: 0, "" and empty mean "the default" (except
        ``window_start_s``, where 0 is a start and None means unset)."""
        given = {k: v for k, v in values.items()
                 if v is not None and (k == "window_start_s" or (v != 0 and v != "" and v != ()))}
        if "tags" in given:
            given["tags"] = tuple(t.strip() for t in given["tags"])
        return cls(**given)

    @property
    def stems(self) -> tuple[str, ...]:
        return stems_of(self.separator)

    @property
    def num_components(self) -> int:
        """d' = stems x segments."""
        return len(self.stems) * self.segments

    @property
    def adaptive(self) -> bool:
        return self.num_samples == AUTO

    def curves_for(self, num_components: int) -> bool:
        """Whether deletion/insertion curves are computed over ``num_components`` (``auto``: d' <= 48)."""
        return self.curves == "on" or (self.curves == "auto" and num_components <= CURVES_MAX_COMPONENTS)

    def validate(self, limits: Limits = DEFAULT) -> ValidRequest:
        """Check every field against its bounds (the message names the field); returns self,
        typed :data:`ValidRequest`."""
        for name in ("model", "separator"):
            check_name(name, getattr(self, name))
        for tag in self.tags:
            check_name("tags", tag)
        for name in ("top_n", "segments", "top_k"):
            _at_least(name, getattr(self, name), 1)
        limits.check_targets("tags" if self.tags else "top_n", len(self.tags) or self.top_n)
        _at_least("model_version", self.model_version, 0)
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidInput(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if not (math.isfinite(self.window_duration_s) and self.window_duration_s >= 0):
            raise InvalidInput(f"window_duration_s must be >= 0, got {self.window_duration_s:g}")
        if self.window_start_s is not None and not (math.isfinite(self.window_start_s) and self.window_start_s >= 0):
            raise InvalidInput(f"window_start_s must be >= 0, got {self.window_start_s:g}")
        if not self.kernel_width > 0:
            raise InvalidInput(f"kernel_width must be > 0, got {self.kernel_width}")
        if not self.ridge_alpha >= 0:
            raise InvalidInput(f"ridge_alpha must be >= 0, got {self.ridge_alpha}")
        if any(not t for t in self.tags):
            raise InvalidInput("tags must not be empty strings")
        if not self.model:
            raise InvalidInput("model must not be empty")
        for name, allowed in (("edges", EDGES), ("kernel", KERNELS), ("sampling", SAMPLINGS), ("curves", CURVES)):
            if getattr(self, name) not in allowed:
                raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.fade) and 0 < self.fade <= 1):
            raise InvalidInput(f"fade must be in (0, 1] (a fraction of the segment length), got {self.fade:g}")
        if not (math.isfinite(self.stability) and 0 < self.stability <= 1):
            raise InvalidInput(f"stability must be in (0, 1], got {self.stability:g}")
        if not (math.isfinite(self.time_budget_s) and 0 <= self.time_budget_s <= MAX_TIME_BUDGET_S):
            raise InvalidInput(f"time_budget_s must be between 0 (none) and {MAX_TIME_BUDGET_S}, "
                               f"got {self.time_budget_s:g}")
        if self.time_budget_s and not self.adaptive:
            raise InvalidInput("time_budget_s needs adaptive sampling (num_samples 0): a fixed num_samples "
                               "is evaluated in full")
        if not 1 <= self.random_sets <= MAX_RANDOM_SETS:
            raise InvalidInput(f"random_sets must be between 1 and {MAX_RANDOM_SETS}, got {self.random_sets}")
        d = self.num_components  # unknown separator: ModelNotFound
        if self.top_k > d:
            raise InvalidInput(f"top_k must be <= d' = {d} ({self.separator} x {self.segments} segments), "
                               f"got {self.top_k}")
        what = f"{self.separator} x {self.segments} segments"
        if self.adaptive:
            check_num_samples(self.max_samples, d, what, "max_samples")
        else:
            check_num_samples(self.num_samples, d, what)
        return ValidRequest(self)


ValidRequest = NewType("ValidRequest", ExplainRequest)
"""A request :meth:`ExplainRequest.validate` passed (or one the service stored after it passed)."""


def check_num_samples(num_samples: int, num_components: int, what: str = "", name: str = "num_samples") -> None:
    """N must be at least d'+1 (a surrogate with an intercept needs that many rows) and at most
    :data:`MAX_NUM_SAMPLES`."""
    if not num_components + 1 <= num_samples <= MAX_NUM_SAMPLES:
        detail = f" ({what})" if what else ""
        raise InvalidInput(f"{name} must be between d'+1 = {num_components + 1}{detail} and "
                           f"{MAX_NUM_SAMPLES}, got {num_samples}")


def _at_least(name: str, value: int, lo: int) -> None:
    if value < lo:
        raise InvalidInput(f"{name} must be >= {lo}, got {value}")
