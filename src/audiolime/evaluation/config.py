"""What an evaluation run computes: :class:`EvalConfig` (the settings, and the key that decides
whether a checkpoint's results may be reused) and :func:`validate`, which rejects impossible
settings and missing taggers before any model is loaded. Bounds the request model already
defines (known separators, N >= d'+1) come from :mod:`audiolime.explain.request`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from audiolime.errors import InvalidInput, ModelNotFound
from audiolime.evaluation.paper import PAPER_KS
from audiolime.explain.request import check_num_samples, stems_of

METHODS = ("audiolime", "slime", "random")
FCN_CONVERT_HINT = ("`audiolime setup` (converts it when PyTorch is installed: the `convert` extra), or "
                    "python -m audiolime.tagger.fcn_convert --model-base {serving} [--pth best_model.pth]")


@dataclass(frozen=True)
class EvalConfig:
    taggers: tuple[str, ...]
    audio_dir: str
    ks: tuple[int, ...] = PAPER_KS
    num_samples: int = 512
    windows_per_song: int = 3
    segments: int = 12  # audioLIME tau (x stems of the separator)
    slime_segments: int = 6  # SLIME tau
    slime_bands: int = 4  # SLIME F
    slime_baseline: str = "min"
    slime_domain: str = "audio"  # "audio": STFT rectangles -> istft -> predict (the paper's); "spectrogram"
    draws: int = 32  # R
    seed: int = 0
    separator: str = "2stems"
    kernel_width: float = 0.25
    window_placement: str = "evenly spaced centres, at most ceil(song / window) per song"
    windows_override: tuple[tuple[str, int], ...] = ()  # per-tagger W, e.g. (("fcn-msd", 2),)

    def windows(self, tagger: str) -> int:
        return dict(self.windows_override).get(tagger, self.windows_per_song)

    @property
    def audiolime_components(self) -> int:
        """audioLIME's d' = stems x segments (unknown separator: ModelNotFound)."""
        return len(stems_of(self.separator)) * self.segments

    @property
    def slime_components(self) -> int:
        """SLIME's d' = segments x bands."""
        return self.slime_segments * self.slime_bands

    def result_key(self) -> dict:
        """Everything that changes an item's result (taggers and songs only add items)."""
        d = asdict(self)
        for k in ("taggers", "audio_dir"):
            d.pop(k)
        d["ks"] = list(self.ks)
        d["windows_override"] = {t: n for t, n in self.windows_override}
        return d


def validate(cfg: EvalConfig, serving_dir: Path) -> None:
    """Impossible settings and missing taggers, as one-line errors naming the flag."""
    if not cfg.taggers:
        raise InvalidInput("give at least one --tagger")
    if len(set(cfg.taggers)) != len(cfg.taggers):
        raise InvalidInput("--tagger given twice")
    if not cfg.ks or min(cfg.ks) < 1:
        raise InvalidInput("--k values must be >= 1")
    for name, d in (("audioLIME", cfg.audiolime_components), ("SLIME", cfg.slime_components)):
        if max(cfg.ks) >= d:
            raise InvalidInput(f"--k {max(cfg.ks)} needs more components: {name} has d' = {d} "
                               f"(increase --segments / --slime-segments)")
        check_num_samples(cfg.num_samples, d, name)
    from audiolime.evaluation.slime import BASELINES, DOMAINS  # numpy: not at CLI start-up

    if cfg.slime_domain not in DOMAINS:
        raise InvalidInput(f"--slime-domain must be one of {', '.join(DOMAINS)}, got {cfg.slime_domain!r}")
    if cfg.slime_baseline not in BASELINES:
        raise InvalidInput(f"--slime-baseline must be one of {', '.join(BASELINES)}, got {cfg.slime_baseline!r}")
    unknown = sorted(set(dict(cfg.windows_override)) - set(cfg.taggers))
    if unknown:
        raise InvalidInput(f"--windows-per-song names a tagger that is not evaluated: {', '.join(unknown)}")
    if min(cfg.windows(t) for t in cfg.taggers) < 1 or cfg.draws < 1:
        raise InvalidInput("--windows-per-song and --draws must be >= 1")
    for name in cfg.taggers:
        model = serving_dir / name
        if not any((v / "saved_model.pb").is_file() for v in model.glob("*")):
            if name == "fcn-msd":
                raise ModelNotFound(f"fcn-msd SavedModel missing in {model}; create it with: "
                                    + FCN_CONVERT_HINT.format(serving=serving_dir))
            raise ModelNotFound(f"tagger {name!r} missing in {model} (run `audiolime setup`)")
