"""Progress of an explanation as explicit events: :class:`Event` ``(stage, done, total)`` and,
after every adaptive sampling round, :class:`Ranking` (the answer so far).

Each stage is announced by the code that runs it (the pipeline, the engine, the service), in
this order; ``done``/``total`` count tagger windows within ``predict`` (0/0 elsewhere). Adaptive
sampling runs several rounds inside ``predict``: each round's events restart at the masks already
evaluated and count up to a larger ``total`` (the masks drawn so far), and each round ends with a
:class:`Ranking` once its surrogate is refitted, so a caller can stop listening when the ranking
is good enough. A sink may raise (e.g. :class:`audiolime.errors.Cancelled`) to stop the work at
the next event.

A song timeline (:mod:`audiolime.method.timeline`) runs the window stages once per window, each
window announced by ``window`` (``done``: the window's index, ``total``: the windows), after a
``scan`` when it picks the tag itself and before ``song-fidelity``, its song-level checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    stage: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class RankedSoFar:
    """One target's top-k after a round: ``top`` holds ``(component, weight)`` by descending
    weight (``component``: a :class:`~audiolime.method.factorization.Component`)."""

    tag: str
    stability: float  # bootstrap top-k stability of this round's fit
    top: tuple[tuple[Any, float], ...]


@dataclass(frozen=True)
class Ranking:
    """The interim answer after adaptive round ``round`` (``masks`` sampled so far); the last
    round's ranking is the explanation's."""

    round: int
    masks: int
    targets: tuple[RankedSoFar, ...]


EventSink = Callable[[Event | Ranking], None]


def ignore(_: Event | Ranking) -> None:
    """The sink of a caller that does not watch progress."""
