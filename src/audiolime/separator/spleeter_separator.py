"""Spleeter source separation with the graph built once and a persistent session.

Spleeter 2.4's own ``Separator.separate`` re-creates its estimator (graph build and checkpoint
restore) on every call; a server cannot afford that. We reuse Spleeter's model code
(``EstimatorSpecBuilder``) and checkpoints unchanged, but build the prediction graph once,
restore once, warm up, and then only run the session.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiolime.errors import InvalidInput, ModelNotFound
from audiolime.method.request import stems_of
from audiolime.method.waveform import resample, to_channels

log = logging.getLogger(__name__)

SPLEETER_RATE = 44100


@dataclass(frozen=True)
class Separation:
    """Stems at ``sample_rate`` as float32 ``[channels, samples]``, plus the residual."""

    stems: dict[str, np.ndarray]
    sample_rate: int
    residual_rel_rms: float  # ||mixture - sum(stems)|| / ||mixture|| at the stems' rate
    model: str
    timings_s: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def inference_phase() -> Iterator[None]:
    """Build Keras layers for inference (learning phase 0): batch normalisation then uses its moving
    statistics directly instead of a train/inference ``cond`` per layer, which Spleeter's graph
    otherwise feeds False. The same outputs bit for bit; half the graph-building time (the bulk of
    loading a model: 3 s instead of 6 s of CPU for 2stems, twice that for 4stems)."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of training=False on each layer call
        with tf.keras.backend.learning_phase_scope(0):
            yield


def weights_fingerprint(model_dir: Path) -> str:
    """Which weights a Spleeter model directory holds: the sha256 (16 hex digits) of its checkpoint
    index, which records every tensor's CRC32C, so it changes whenever any weight does."""
    import hashlib

    index = Path(model_dir) / "model.index"
    return hashlib.sha256(index.read_bytes()).hexdigest()[:16] if index.is_file() else ""


def _restore_error(exc: Exception) -> str:
    """The line of a failed restore that says what is wrong: TensorFlow's message opens with generic
    advice and a traceback of the graph's construction, and ends with the cause and the node."""
    lines = [ln.strip() for ln in str(getattr(exc, "message", exc)).splitlines() if ln.strip()]
    causes = [ln for ln in lines if not ln.startswith("[[")]
    return (causes or ["unreadable"])[-1][:300]


def installed_models(spleeter_root: Path) -> list[str]:
    """Spleeter models present under MODEL_PATH (directories holding a checkpoint)."""
    if not spleeter_root.is_dir():
        return []
    return sorted(p.name for p in spleeter_root.iterdir() if (p / "checkpoint").is_file())


def missing_weights(spleeter_root: Path, name: str) -> ModelNotFound:
    """The error for a Spleeter model whose weights are not under ``spleeter_root``: what is
    installed, and the command that installs it."""
    from audiolime.modelstore import SPLEETER_ARCHIVES

    have = ", ".join(installed_models(Path(spleeter_root))) or "none"
    how = f"audiolime setup --separator {name}" if name in SPLEETER_ARCHIVES else "audiolime setup"
    return ModelNotFound(f"separator model {name!r} is not installed under {spleeter_root} "
                         f"(installed: {have}; install it with `{how}`)")


def residual_rel_rms(mixture: np.ndarray, stems: dict[str, np.ndarray]) -> float:
    total = np.sum(np.stack(list(stems.values())), axis=0)
    err = float(np.sqrt(np.mean(np.square(mixture - total, dtype=np.float64))))
    ref = float(np.sqrt(np.mean(np.square(mixture, dtype=np.float64))))
    return err / ref if ref > 0 else 0.0


class SpleeterSeparator:
    """One Spleeter model (``2stems``, ``4stems``, ``5stems``...) loaded once; thread-safe.

    ``spleeter_root`` follows Spleeter's MODEL_PATH layout: ``<root>/<name>/checkpoint``.
    ``mask_extension="average"`` extends the masks above Spleeter's 11 kHz model band with their
    mean instead of zeros, so the stems still sum to the mixture (Spleeter's published configs
    drop everything above 11 kHz, which would make every LIME perturbation low-passed).
    """

    def __init__(self, spleeter_root: Path, name: str = "2stems", mask_extension: str = "average",
                 warmup: bool = True) -> None:
        import tensorflow as tf
        from spleeter.model import EstimatorSpecBuilder, InputProviderFactory
        from spleeter.utils.configuration import load_configuration

        stems = stems_of(name)  # unknown names: ModelNotFound listing the known ones
        model_dir = Path(spleeter_root) / name
        if not (model_dir / "checkpoint").is_file():
            raise missing_weights(spleeter_root, name)
        try:
            params = load_configuration(f"spleeter:{name}")
        except Exception:  # spleeter raises plain Exceptions for unknown descriptors
            raise ModelNotFound(f"separator model {name!r} has no Spleeter configuration") from None
        if tuple(params["instrument_list"]) != stems:
            raise ModelNotFound(f"separator model {name!r}: Spleeter's configuration has the stems "
                                f"{', '.join(params['instrument_list'])}, not the catalog's")
        params["model_dir"] = str(model_dir)
        params["mask_extension"] = mask_extension
        params["MWF"] = False
        self.name = name
        self.weights = weights_fingerprint(model_dir)
        self.stems_names: list[str] = list(params["instrument_list"])
        self.sample_rate: int = int(params["sample_rate"])
        self.device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._provider = InputProviderFactory.get(params)
            self._features = self._provider.get_input_dict_placeholders()
            with inference_phase():
                builder = EstimatorSpecBuilder(self._features, params)
                self._outputs = {k: v for k, v in builder.outputs.items() if k in self.stems_names}
            saver = tf.compat.v1.train.Saver()
            config = tf.compat.v1.ConfigProto()
            config.gpu_options.allow_growth = True
            self._session = tf.compat.v1.Session(graph=self._graph, config=config)
            try:
                saver.restore(self._session, tf.train.latest_checkpoint(str(model_dir)))
            except (tf.errors.OpError, ValueError) as exc:  # missing files, other variables or shapes
                self._session.close()
                raise ModelNotFound(f"separator model {name!r} in {model_dir} is not a Spleeter {name} "
                                    f"checkpoint: {_restore_error(exc)}") from None
        self._graph.finalize()
        self._lock = threading.Lock()
        log.info("spleeter model loaded", extra={"model": name, "device": self.device})
        if warmup:
            self._run(np.zeros((2, self.sample_rate), dtype=np.float32))

    def close(self) -> None:
        self._session.close()

    def _run(self, stereo: np.ndarray) -> dict[str, np.ndarray]:
        """``stereo`` float32 ``[2, n]`` at 44.1 kHz -> ``{stem: [2, n]}``."""
        feed = self._provider.get_feed_dict(self._features, stereo.T, np.array("audiolime"))
        out = self._session.run(self._outputs, feed_dict=feed)
        return {k: np.ascontiguousarray(v.T, dtype=np.float32) for k, v in out.items()}

    def separate(self, waveform: np.ndarray, sample_rate: int, out_rate: int | None = None) -> Separation:
        """Separate ``waveform`` (``[channels, samples]`` or ``[samples]``, any rate, mono or stereo).

        Stems are returned at ``out_rate`` (default: the input rate) with the input's channel count.
        """
        wav = np.atleast_2d(np.asarray(waveform, dtype=np.float32))
        if wav.ndim != 2 or wav.shape[0] > 2 or wav.shape[1] == 0:
            raise InvalidInput(f"waveform must be [channels<=2, samples>0], got {list(np.shape(waveform))}")
        if sample_rate <= 0:
            raise InvalidInput(f"sample rate must be positive, got {sample_rate}")
        out_rate = out_rate or sample_rate
        t0 = time.perf_counter()
        stereo = to_channels(resample(wav, sample_rate, self.sample_rate), 2)
        t1 = time.perf_counter()
        stems = self._run(stereo)
        t2 = time.perf_counter()
        residual = residual_rel_rms(stereo, stems)
        stems = {k: to_channels(resample(v, self.sample_rate, out_rate), wav.shape[0])
                 for k, v in stems.items()}
        t3 = time.perf_counter()
        return Separation(stems=stems, sample_rate=out_rate, residual_rel_rms=residual, model=self.name,
                          timings_s={"resample": (t1 - t0) + (t3 - t2), "separate": t2 - t1})
