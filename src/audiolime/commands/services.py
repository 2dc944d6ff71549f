"""``audiolime serve COMPONENT [FLAGS...]``: run one service in the foreground (container entrypoint).

Every flag after the component name is the service's own (``audiolime serve tagger --help``);
each has an environment-variable fallback, documented in docs/service-contract.md, which is how
the Helm chart configures the pods.
"""

from __future__ import annotations

import argparse
import importlib

COMPONENTS = {
    "separator": "audiolime.separator.server",
    "tagger": "audiolime.tagger.server",
    "explainer": "audiolime.explainer.server",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run one service (separator, tagger or explainer) in the foreground",
                       description="Run one service in the foreground. Its own flags follow the component "
                                   "(`audiolime serve explainer --help` lists them with their environment "
                                   "variables and defaults).")
    p.add_argument("component", choices=sorted(COMPONENTS), help="which service")
    p.add_argument("service_args", nargs=argparse.REMAINDER,
                   help="the service's own flags (`audiolime serve COMPONENT --help`)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(COMPONENTS[args.component])
    return int(module.main(list(args.service_args)) or 0)
