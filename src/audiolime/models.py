"""The in-process tagger and separator, loaded from a models directory (no servers). Where the
directory is by default: :func:`audiolime.settings.default_model_dir`; downloading the models:
:mod:`audiolime.modelstore`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from audiolime import modelstore
from audiolime.errors import ModelNotFound


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ and Python warnings off a user's terminal (call before importing TF)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def load_tagger(model_dir: Path, name: str, version: int | None = None):
    from audiolime.tagger.savedmodel import LocalTagger, ModelNotFoundError

    try:
        return LocalTagger.load(modelstore.serving_dir(model_dir), name, version)
    except ModelNotFoundError as exc:
        raise ModelNotFound(f"{exc} (run `audiolime setup` to install the default models)") from None


def load_separator(model_dir: Path, name: str):
    """A Spleeter model or a variant of one (``2stems+hpss``), see :mod:`audiolime.separator.hpss`."""
    from audiolime.separator.hpss import load_separator as load

    return load(modelstore.spleeter_dir(model_dir), name)
