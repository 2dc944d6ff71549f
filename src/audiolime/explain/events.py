"""Progress of an explanation as explicit events ``(stage, done, total)``.

Each stage is announced by the code that runs it (the pipeline, the engine, the service), in
this order; ``done``/``total`` count tagger windows within ``predict`` (0/0 elsewhere). Adaptive
sampling runs several rounds inside ``predict``: each round's events restart at the masks already
evaluated and count up to a larger ``total`` (the masks drawn so far). A sink
may raise (e.g. :class:`audiolime.errors.Cancelled`) to stop the work at the next event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

STAGES = ("decode", "scan", "separate", "predict", "fit", "fidelity", "store")


@dataclass(frozen=True)
class Event:
    stage: str
    done: int = 0
    total: int = 0


EventSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The sink of a caller that does not watch progress."""
