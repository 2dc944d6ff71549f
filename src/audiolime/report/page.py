"""The listening report as one self-contained HTML file: the view (:mod:`.view`) laid out by a
Jinja2 template, CSS and JavaScript inlined, waveforms and charts as inline SVG; no fonts, scripts
or images from anywhere. The only things the page loads are its own audio files.

A Content-Security-Policy in the page says so to the browser: scripts only with the inlined
script's hash, media only from the report's own folder or the origins of its (presigned) audio
URLs, nothing else at all.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlparse

from audiolime.explanation.document import Document
from audiolime.explanation.timeline import TimelineDocument
from audiolime.report.timeline import build_timeline
from audiolime.report.view import ReportView, build


@cache
def _assets(page: str = "report") -> tuple[Any, str, str]:  # (jinja2.Template, css, js)
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("audiolime.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    static = resources.files("audiolime.report") / "static"
    return env.get_template(f"{page}.html.j2"), (static / "report.css").read_text(), (static / f"{page}.js").read_text()


def media_sources(view: ReportView) -> str:
    """The CSP ``media-src`` list: the page's folder for relative names, else each URL's origin."""
    return _media_sources([p.src for p in view.players] + [p.src for t in view.targets for p in t.players] +
                          [c.player.src for t in view.targets for c in t.top if c.player])


def _media_sources(srcs: list[str]) -> str:
    origins = sorted({f"{u.scheme}://{u.netloc}" for s in srcs if (u := urlparse(s)).scheme})
    relative = any(not urlparse(s).scheme for s in srcs)
    return " ".join((["'self'", "file:"] if relative else []) + origins) or "'none'"


def render(doc: Document) -> str:
    """The report of ``doc`` (its file references are what the page loads: names or URLs)."""
    template, css, js = _assets()
    view = build(doc)
    return template.render(v=view, css=css, js=js, csp=_csp(js, media_sources(view)))


def _csp(js: str, media: str) -> str:
    script_hash = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
            f"media-src {media}; base-uri 'none'; form-action 'none'")


def render_timeline(doc: TimelineDocument) -> str:
    """The song timeline's report (``timeline.html``): lanes per stem, top moments, their clips."""
    template, css, js = _assets("timeline")
    view = build_timeline(doc)
    return template.render(v=view, css=css, js=js, csp=_csp(js, _media_sources([p.src for p in view.players])))
