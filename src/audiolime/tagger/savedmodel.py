"""Run a tagger SavedModel in-process (TF Serving model-base layout, no gRPC).

A tagger SavedModel lives at ``<model_base>/<name>/<version>/`` and has the signatures
``serving_default`` (``waveform`` ``[batch, window]`` -> ``probabilities`` ``[batch, n_tags]``),
``from_spectrogram``, ``spectrogram`` and ``labels`` (see ``musicnn_export``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


class ModelNotFoundError(LookupError):
    """The requested model or version is not in the model base."""


def list_versions(model_base: Path, name: str) -> list[int]:
    """Numeric version directories of ``name`` holding a ``saved_model.pb``, ascending."""
    model_dir = Path(model_base) / name
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir()
        if p.name.isascii() and p.name.isdigit() and (p / "saved_model.pb").is_file()
    )


def list_models(model_base: Path) -> list[str]:
    """Names of the models in ``model_base`` that have at least one complete version."""
    base = Path(model_base)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and list_versions(base, p.name))


class LocalTagger:
    """A tagger SavedModel loaded into this process; thread-safe for concurrent calls."""

    def __init__(self, path: Path, name: str, version: int) -> None:
        self.name = name
        self.version = version
        self.path = Path(path)
        # Keep the loaded object alive: it owns the variables the signature functions capture.
        self._model = tf.saved_model.load(str(self.path), tags=[tf.saved_model.SERVING])
        signatures = self._model.signatures
        self._predict_fn = signatures[DEFAULT_SIGNATURE]
        self._from_spectrogram_fn = signatures["from_spectrogram"]
        self._spectrogram_fn = signatures["spectrogram"]
        meta = signatures["labels"]()
        self.labels: list[str] = [label.decode("utf-8") for label in meta["labels"].numpy()]
        self.sample_rate: int = int(meta["sample_rate"].numpy())
        self.window_samples: int = int(self._input_shape(self._predict_fn, "waveform")[1])
        self.spectrogram_shape: tuple[int, ...] = tuple(
            int(d) for d in self._input_shape(self._from_spectrogram_fn, "spectrogram")[1:])
        log.info("loaded %s version %d from %s (%d tags, window %d samples at %d Hz)",
                 name, version, self.path, len(self.labels), self.window_samples, self.sample_rate)

    @classmethod
    def load(cls, model_base: Path, name: str, version: int | None = None) -> LocalTagger:
        """Load ``<model_base>/<name>/<version>``; the newest version when ``version`` is None."""
        versions = list_versions(model_base, name)
        if not versions:
            available = ", ".join(list_models(model_base)) or "none"
            raise ModelNotFoundError(
                f"model {name!r} not found in {model_base} (available models: {available})")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version} in {model_base} "
                f"(available versions: {', '.join(map(str, versions))})")
        return cls(Path(model_base) / name / str(version), name, version)

    @property
    def signatures(self):
        """Every signature function of the SavedModel by key (e.g. for a generic model server)."""
        return self._model.signatures

    @property
    def n_tags(self) -> int:
        return len(self.labels)

    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        """Tag probabilities: ``[batch, window_samples]`` -> float32 ``[batch, n_tags]``."""
        x = self._check(waveforms, (self.window_samples,), "waveforms")
        if x.shape[0] == 0:
            return np.zeros((0, self.n_tags), np.float32)
        return self._predict_fn(waveform=tf.constant(x))["probabilities"].numpy()

    def predict_spectrogram(self, spectrograms: np.ndarray) -> np.ndarray:
        """Tag probabilities from model-input spectrograms ``[batch, *spectrogram_shape]``."""
        x = self._check(spectrograms, self.spectrogram_shape, "spectrograms")
        if x.shape[0] == 0:
            return np.zeros((0, self.n_tags), np.float32)
        return self._from_spectrogram_fn(spectrogram=tf.constant(x))["probabilities"].numpy()

    def spectrogram(self, waveforms: np.ndarray) -> np.ndarray:
        """The model-input spectrograms of ``[batch, window_samples]`` waveforms."""
        x = self._check(waveforms, (self.window_samples,), "waveforms")
        if x.shape[0] == 0:
            return np.zeros((0, *self.spectrogram_shape), np.float32)
        return self._spectrogram_fn(waveform=tf.constant(x))["spectrogram"].numpy()

    @staticmethod
    def _input_shape(fn: tf.types.experimental.ConcreteFunction, key: str) -> tf.TensorShape:
        return fn.structured_input_signature[1][key].shape

    @staticmethod
    def _check(array: np.ndarray, tail: tuple[int, ...], what: str) -> np.ndarray:
        x = np.asarray(array, dtype=np.float32)
        if x.ndim != 1 + len(tail) or x.shape[1:] != tail:
            expected = ", ".join(["batch", *map(str, tail)])
            raise ValueError(f"{what} must have shape [{expected}], got {list(x.shape)}")
        return x
