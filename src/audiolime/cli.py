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

from audiolime.commands import evaluate, explain, report, services, setup, up
from audiolime.commands.args import default_model_dir
from audiolime.errors import AudiolimeError

COMMANDS = (setup, explain, report, services, evaluate, up)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``audiolime: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"audiolime: error: {self.prog.removeprefix('audiolime').strip() or 'usage'}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audiolime", description="Listenable explanations of music taggers.")
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
