"""``audiolime setup``: download, verify and export the pretrained models.

``audiolime setup --separator 4stems`` installs only that Spleeter model, from Spleeter's published
release archive (sha256-pinned) or from ``--archive`` (a local ``.tar.gz`` or a URL, e.g. a
mirror, with ``--sha256`` for an archive other than the published one)."""

from __future__ import annotations

import argparse

from audiolime.commands.args import add_model_dir


def register(sub: argparse._SubParsersAction) -> None:
    from audiolime.modelstore import SPLEETER_ARCHIVES, SPLEETER_RELEASE_URL, TORCH_TAGGERS

    p = sub.add_parser("setup", help="download and verify the pretrained models, export the SavedModels")
    add_model_dir(p)
    p.add_argument("--no-demo", action="store_true", help="skip the demo song")
    p.add_argument("--tagger", action="append", default=[], choices=tuple(TORCH_TAGGERS), metavar="NAME",
                   help="also install this published tagger (repeatable; FCN, CRNN and Musicnn, Won et al. 2020): "
                        + ", ".join(f"{n} ({len(w.labels)} {n.split('-')[1].upper()} tags)"
                                  for n, w in TORCH_TAGGERS.items())
                        + "; converted from its sha256-pinned PyTorch checkpoint (needs PyTorch)"),
    p.add_argument("--separator", choices=tuple(SPLEETER_ARCHIVES), default=None,
                   help=f"install only this Spleeter model, from its release archive ({SPLEETER_RELEASE_URL}/"
                        f"<name>.tar.gz, sha256-pinned) into <model-dir>/spleeter/<name>")
    p.add_argument("--archive", default=None, metavar="FILE|URL",
                   help="with --separator: the archive to install (a local .tar.gz or an http(s) URL) instead "
                        "of Spleeter's release")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="with --separator: the archive's sha256 when it is not Spleeter's published one "
                        "(e.g. your own fine-tuned model)")
    p.set_defaults(func=cmd_setup)


def cmd_setup(args: argparse.Namespace) -> int:
    from audiolime import modelstore
    from audiolime.errors import InvalidInput

    if args.separator is None:
        if args.archive or args.sha256:
            raise InvalidInput("--archive and --sha256 need --separator NAME")
        from audiolime.models import quiet_tensorflow

        quiet_tensorflow()
        for name, path in modelstore.setup_all(args.model_dir, demo=not args.no_demo,
                                               taggers=tuple(args.tagger)).items():
            print(f"{name}: {path}")
        return 0
    path = modelstore.install_spleeter_archive(args.model_dir, args.separator, args.archive, args.sha256)
    print(f"spleeter:{args.separator}: {path}")
    return 0
