"""Command line: convert a PyTorch tagger's checkpoint (FCN, CRNN, Musicnn) to a TF Serving SavedModel.

Usage::

    python -m audiolime.commands.fcn_convert [--name fcn-msd|fcn-mtat|...|crnn-msd|musicnn-mtat|musicnn-jamendo]
                                             [--pth PATH] --model-base DIR [--version 1]

writes ``DIR/<name>/<version>/`` (signatures and assets: ``fcn_export``; the architecture is the
catalog entry's, ``modelstore.TORCH_TAGGERS``). Without ``--pth`` the
weights come from ``audiolime.modelstore`` (a local copy, else the public origin), sha256 verified.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiolime import modelstore
from audiolime.tagger.fcn_export import MODEL_NAME, export_tagger, load_state_dict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audiolime.commands.fcn_convert",
        description="Convert a PyTorch tagger (FCN, CRNN or Musicnn; MSD, MagnaTagATune or MTG-Jamendo, 50 tags) to a "
                    "TF SavedModel at <model-base>/<name>/<version>.")
    parser.add_argument("--name", choices=tuple(modelstore.TORCH_TAGGERS), default=MODEL_NAME,
                        help=f"which checkpoint (default {MODEL_NAME})")
    parser.add_argument("--pth", type=Path, default=None,
                        help="local best_model.pth (default: $AUDIOLIME_FCN_PTH or the shared copy, "
                             f"else download to {modelstore.fcn_weights_cache()})")
    parser.add_argument("--model-base", type=Path, required=True,
                        help="model base directory (TF Serving layout)")
    parser.add_argument("--version", type=int, default=1, help="model version (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing version directory")
    args = parser.parse_args(argv)
    if args.version < 1:
        parser.error("--version must be a positive integer")

    spec = modelstore.TORCH_TAGGERS[args.name]
    try:
        if args.pth is None:
            pth = modelstore.fcn_weights(spec)
            print(f"{spec.name} weights: {pth}", file=sys.stderr)
        else:
            pth = modelstore.verify_fcn_weights(args.pth, spec.sha256, spec)
        out = export_tagger(load_state_dict(pth), args.model_base / spec.name / str(args.version),
                            source=spec.source, overwrite=args.overwrite, name=spec.name, labels=spec.labels,
                            arch=spec.arch)
    except (FileNotFoundError, IsADirectoryError, modelstore.ChecksumError, FileExistsError,
            ImportError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # network errors (urllib.error.URLError is an OSError)
        print(f"error: could not fetch {spec.url}: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
