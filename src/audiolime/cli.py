"""``audiolime`` command line: the parser and the one place where failures become exit codes.

Each sub-command lives in :mod:`audiolime.commands` and registers itself here. Configuration is
built in ``main()``: flags first, environment variables as fallbacks. Every expected failure
prints one line ``audiolime: error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from audiolime import __version__
from audiolime.commands import audit, evaluate, explain, report, services, setup, timeline, up
from audiolime.errors import AudiolimeError
from audiolime.settings import default_model_dir

COMMANDS = (setup, explain, timeline, audit, report, services, evaluate, up)


class _Help(argparse.HelpFormatter):
    """Adds ``(default: X)`` to a flag's help unless the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``audiolime: error: ...``), exit status 2; no prefix matching of
    long flags (``--tagg`` is an error, not ``--tagger``); every flag's help shows its default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"audiolime: error: {self.prog.removeprefix('audiolime').strip() or 'usage'}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audiolime", description="Listenable explanations of music taggers.")
    parser.add_argument("--version", action="version", version=f"audiolime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


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
