"""One checked plan per request: a valid request checked against its tagger, the audio's header
and the limits, before any expensive work (decoding, separation, a single mask).

:func:`make_plan` is the only place these checks run; the pipeline and the engine take the
:class:`Plan` and never check again. What it decides: the target tag indices (or "the top
predicted ones, after the scan"), the request with adaptive sampling's cap lowered to the
tagger-cost budget, and the model window.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.method.factorization import StemSegmentFactorization, segment_bounds
from audiolime.method.limits import BYTES_PER_SAMPLE, DEFAULT, Limits, MiB, decoded_channels
from audiolime.method.request import SEPARATOR_STEMS, ValidRequest
from audiolime.method.waveform import AudioHeader

WORKING_BYTES = 64 * MiB  # what an explanation allocates besides the arrays memory_bytes counts


class Tagger(Protocol):
    """What the method needs of a tagger (in-process SavedModel or remote TF Serving)."""

    name: str
    version: int
    labels: list[str]
    sample_rate: int
    window_samples: int

    def predict(self, waveforms: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Plan:
    """What the pipeline runs, trusted as it is."""

    request: ValidRequest  # adaptive sampling's max_samples capped at the tagger-cost budget
    targets: tuple[int, ...] | None  # tag indices, each once; None: the request's top_n predicted tags
    sample_rate: int  # the tagger's
    window_samples: int  # the tagger's window

    @property
    def window_s(self) -> float:
        return self.window_samples / self.sample_rate


def make_plan(request: ValidRequest, tagger: Tagger, header: AudioHeader, limits: Limits = DEFAULT) -> Plan:
    """Check ``request`` against ``tagger`` and the audio ``header`` (tags, window length, segment
    length, tagger cost, window start, component memory); every failure is ``InvalidInput``
    naming the field."""
    rate, w = tagger.sample_rate, tagger.window_samples
    window_s = w / rate
    if request.window_duration_s and abs(request.window_duration_s - window_s) > 1e-3:
        raise InvalidInput(f"window_duration_s must be 0 or the model's input length {window_s:g} s "
                           f"for {tagger.name!r}, got {request.window_duration_s:g}")
    segment_bounds(w, request.segments, rate)
    # adaptive sampling stops at the budget (the cap below), but needs at least d'+1 masks
    limits.check_cost(request.num_components + 1 if request.adaptive else request.num_samples, window_s, tagger.name)
    if request.window_start_s is not None and not request.window_start_s < header.duration_s:
        raise InvalidInput(f"window_start_s {request.window_start_s:g} s is outside the audio "
                           f"(duration {header.duration_s:.2f} s)")
    listen = round(window_s * header.sample_rate)
    need = StemSegmentFactorization.memory_bytes(request.num_components, w, listen, header.channels)
    limits.check_component_bytes(need, request.segments, f"{request.num_components} components of a "
                                 f"{window_s:g} s window at {header.sample_rate} Hz x {header.channels} channels")
    targets = tuple(dict.fromkeys(resolve_tags(tagger.labels, request.tags))) if request.tags else None
    most = limits.most_samples(window_s)
    if request.adaptive and request.max_samples > most:
        # max_samples is a ceiling: the server's own ceiling applies (the document records the
        # effective one); most >= d'+1 was checked above, so the request stays valid
        request = ValidRequest(replace(request, max_samples=most))
    return Plan(request, targets, rate, w)


def memory_bytes(plan: Plan, header: AudioHeader) -> int:
    """Peak bytes one explanation of ``header``'s audio under ``plan`` holds, from the header alone:
    the decoded song (float32, at most 2 channels), its mono copy, the mono at the tagger's rate
    twice (the scan pads a copy), the components of the window (twice while they are built) and
    the window's stems, plus a fixed working margin. What admission's memory budget counts."""
    decoded = header.frames * decoded_channels(header.channels) * BYTES_PER_SAMPLE
    mono = header.frames * BYTES_PER_SAMPLE
    tagger_mono = math.ceil(header.frames * plan.sample_rate / max(header.sample_rate, 1)) * BYTES_PER_SAMPLE
    listen = round(plan.window_s * header.sample_rate)
    components = StemSegmentFactorization.memory_bytes(plan.request.num_components, plan.window_samples, listen,
                                                       decoded_channels(header.channels))
    stems = 2 * len(SEPARATOR_STEMS.get(plan.request.separator, ("",) * 5)) * listen * 2 * BYTES_PER_SAMPLE
    return decoded + mono + 2 * tagger_mono + 2 * components + stems + WORKING_BYTES


def resolve_tags(labels: Sequence[str], names: Sequence[str]) -> list[int]:
    """Tag names -> indices (exact, then case-insensitive); unknown names list close matches."""
    lower = {lab.lower(): i for i, lab in enumerate(labels)}
    out = []
    for name in names:
        if name in labels:
            out.append(list(labels).index(name))
        elif name.lower() in lower:
            out.append(lower[name.lower()])
        else:
            close = difflib.get_close_matches(name, labels, n=5, cutoff=0.4) or list(labels[:5])
            raise InvalidInput(f"unknown tag {name!r}; closest valid tags: {', '.join(close)}", field="tags")
    return out
