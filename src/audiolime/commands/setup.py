"""``audiolime setup``: download, verify and export the pretrained models."""

from __future__ import annotations

import argparse

from audiolime.commands.args import add_model_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="download and verify the pretrained models, export the SavedModels")
    add_model_dir(p)
    p.add_argument("--no-demo", action="store_true", help="skip the demo song")
    p.set_defaults(func=cmd_setup)


def cmd_setup(args: argparse.Namespace) -> int:
    from audiolime import modelstore
    from audiolime.local import quiet_tensorflow

    quiet_tensorflow()
    for name, path in modelstore.setup_all(args.model_dir, demo=not args.no_demo).items():
        print(f"{name}: {path}")
    return 0
