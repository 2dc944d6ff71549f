"""What an evaluation run computes: :class:`EvalConfig` (the settings shared by every method, the
audioLIME variants compared, and the key that decides whether a checkpoint's results may be
reused) and :func:`validate`, which rejects impossible settings and missing taggers before any
model is loaded. Bounds the request model already defines (known separators, vocabularies, N >=
d'+1) come from :mod:`audiolime.method.request`: a variant *is* an :class:`ExplainRequest`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from audiolime.errors import InvalidInput, ModelNotFound
from audiolime.method.request import AUTO, ExplainRequest, check_num_samples, stems_of

FORMAT = 2  # checkpoint format: one line per (song, tagger, window, method)
FCN_CONVERT_HINT = ("`audiolime setup` (converts it when PyTorch is installed: the `convert` extra), or "
                    "python -m audiolime.commands.fcn_convert --model-base {serving} [--pth best_model.pth]")
SLIME, RANDOM = "slime", "random"
# the options a variant may set (everything else is shared by the run)
VARIANT_FIELDS = ("separator", "segments", "edges", "fade", "kernel", "sampling", "num_samples", "max_samples",
                  "stability")


@dataclass(frozen=True)
class Variant:
    """One audioLIME configuration to compare: its name and the request options it sets (the rest
    are the product defaults of :class:`ExplainRequest`). ``reference``: also explain each window
    with N = the run's reference_samples (same factorization and kernel, another seed)."""

    name: str
    options: tuple[tuple[str, object], ...] = ()
    reference: bool = False

    def request(self, seed: int) -> ExplainRequest:
        """The product's request with this variant's options (top_k: the product's 3, which is
        also the set adaptive sampling stabilises; other k are measured from the ranking)."""
        return replace(ExplainRequest(seed=seed), **dict(self.options))

    def key(self) -> dict:
        """Every request setting the variant's results depend on (resolved: a change of the
        product defaults changes the key of a variant that relies on them)."""
        req = self.request(0)
        fixed = VARIANT_FIELDS + ("kernel_width", "ridge_alpha", "top_k", "curves")
        return {"request": {f: getattr(req, f) for f in fixed}, "reference": self.reference}


def parse_variant(spec: str) -> Variant:
    """``NAME:key=value,key=value`` (``num_samples=auto`` allowed; ``reference`` alone marks a
    reference run) -> :class:`Variant`; unknown keys and bad values are one-line errors."""
    name, _, body = spec.partition(":")
    name = name.strip()
    if not name or name in (SLIME, RANDOM) or not all(c.isalnum() or c in "-_+" for c in name):
        raise InvalidInput(f"--variant {spec!r}: give NAME:key=value,... with a NAME of letters, digits, -_+ "
                           f"(not {SLIME!r} or {RANDOM!r})")
    types = {f.name: f.type for f in fields(ExplainRequest)}
    options: dict[str, object] = {}
    reference = False
    for item in filter(None, (x.strip() for x in body.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key == "reference" and not eq:
            reference = True
            continue
        if key not in VARIANT_FIELDS or not eq:
            raise InvalidInput(f"--variant {name}: {item!r} is not key=value with a key among {', '.join(VARIANT_FIELDS)}")
        value = value.strip()
        try:
            if key == "num_samples" and value == "auto":
                options[key] = AUTO
            elif types[key] in ("int", int):
                options[key] = int(value)
            elif types[key] in ("float", float):
                options[key] = float(value)
            else:
                options[key] = value
        except ValueError:
            raise InvalidInput(f"--variant {name}: {key} must be a number, got {value!r}") from None
    return Variant(name, tuple(sorted(options.items())), reference)


DEFAULT_VARIANTS = (
    Variant("default", (), reference=True),
    Variant("today", (("edges", "hard"), ("kernel", "lime"), ("num_samples", 2048), ("sampling", "independent"),
                      ("separator", "2stems"))),
)


@dataclass(frozen=True)
class EvalConfig:
    taggers: tuple[str, ...]
    audio_dir: str
    variants: tuple[Variant, ...] = DEFAULT_VARIANTS
    ks: tuple[int, ...] = (1, 3, 5, 7)
    windows_per_song: int = 3
    windows_override: tuple[tuple[str, int], ...] = ()  # per-tagger W, e.g. (("fcn-msd", 2),)
    reference_samples: int = 16384
    reference_override: tuple[tuple[str, int], ...] = ()  # per-tagger reference N
    trace_samples: int = 2048  # adaptive variants also draw up to this many masks, to replay stopping rules
    slime_segments: int = 6  # SLIME tau
    slime_bands: int = 2  # SLIME F (6 x 2 = 12 components, as the default audioLIME: 2 stems x 6)
    slime_baseline: str = "min"
    slime_domain: str = "audio"  # "audio": STFT rectangles -> istft -> predict (the paper's); "spectrogram"
    slime_samples: int = AUTO  # SLIME's N (adaptive by default, as the product's)
    draws: int = 32  # R: random top-k sets per k
    curve_draws: int = 4  # random rankings per window for the random deletion/insertion curves
    seed: int = 0
    window_placement: str = "evenly spaced centres, at most ceil(song / window) per song"

    def windows(self, tagger: str) -> int:
        return dict(self.windows_override).get(tagger, self.windows_per_song)

    def reference_n(self, tagger: str) -> int:
        return dict(self.reference_override).get(tagger, self.reference_samples)

    @property
    def primary(self) -> Variant:
        """The variant the random baseline draws its components from (the first one)."""
        return self.variants[0]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants) + (SLIME, RANDOM)

    def slime_request(self, seed: int) -> ExplainRequest:
        return ExplainRequest(seed=seed, num_samples=self.slime_samples)

    def method_key(self, method: str) -> dict:
        """Everything that changes one method's results on an item."""
        if method == SLIME:
            return {"segments": self.slime_segments, "bands": self.slime_bands, "baseline": self.slime_baseline,
                    "domain": self.slime_domain, "num_samples": self.slime_samples}
        if method == RANDOM:
            return {"pool": self.primary.name, **self.primary.key(), "draws": self.draws, "curve_draws": self.curve_draws}
        v = {x.name: x for x in self.variants}[method]
        return {**v.key(), "trace_samples": self.trace_samples}

    def result_key(self) -> dict:
        """The settings every method shares (taggers, songs and methods only add work)."""
        return {"format": FORMAT, "ks": list(self.ks), "seed": self.seed, "reference_samples": self.reference_samples,
                "reference_override": dict(self.reference_override),
                "windows_per_song": self.windows_per_song, "windows_override": dict(self.windows_override),
                "window_placement": self.window_placement}

    def describe(self) -> dict:
        d = asdict(self)
        d["variants"] = [{"name": v.name, "options": dict(v.options), **v.key()} for v in self.variants]
        return d


def validate(cfg: EvalConfig, serving_dir: Path, spleeter_root: Path | None = None) -> None:
    """Impossible settings, missing taggers and (given ``spleeter_root``) separators whose weights
    are not installed, as one-line errors naming the flag."""
    if not cfg.taggers:
        raise InvalidInput("give at least one --tagger")
    if len(set(cfg.taggers)) != len(cfg.taggers):
        raise InvalidInput("--tagger given twice")
    if not cfg.variants:
        raise InvalidInput("give at least one --variant")
    names = [v.name for v in cfg.variants]
    if len(set(names)) != len(names):
        raise InvalidInput(f"--variant names must differ: {', '.join(names)}")
    if not cfg.ks or min(cfg.ks) < 1:
        raise InvalidInput("--k values must be >= 1")
    for v in cfg.variants:
        req = v.request(cfg.seed)
        try:
            req.validate()
        except InvalidInput as exc:
            raise InvalidInput(f"--variant {v.name}: {exc}") from None
        d = len(stems_of(req.separator)) * req.segments
        if max(cfg.ks) >= d:
            raise InvalidInput(f"--k {max(cfg.ks)} needs more components: variant {v.name} has d' = {d}")
        if v.reference:
            for t in cfg.taggers:
                check_num_samples(cfg.reference_n(t), d, f"variant {v.name}", "--reference-samples")
    slime_d = cfg.slime_segments * cfg.slime_bands
    if max(cfg.ks) >= slime_d:
        raise InvalidInput(f"--k {max(cfg.ks)} needs more components: SLIME has d' = {slime_d} "
                           f"(increase --slime-segments / --slime-bands)")
    if cfg.slime_samples:
        check_num_samples(cfg.slime_samples, slime_d, "SLIME", "--slime-samples")
    from audiolime.evaluation.slime import BASELINES, DOMAINS  # numpy: not at CLI start-up

    if cfg.slime_domain not in DOMAINS:
        raise InvalidInput(f"--slime-domain must be one of {', '.join(DOMAINS)}, got {cfg.slime_domain!r}")
    if cfg.slime_baseline not in BASELINES:
        raise InvalidInput(f"--slime-baseline must be one of {', '.join(BASELINES)}, got {cfg.slime_baseline!r}")
    for flag, override in (("--windows-per-song", cfg.windows_override), ("--reference-samples", cfg.reference_override)):
        unknown = sorted(set(dict(override)) - set(cfg.taggers))
        if unknown:
            raise InvalidInput(f"{flag} names a tagger that is not evaluated: {', '.join(unknown)}")
    if min(cfg.windows(t) for t in cfg.taggers) < 1 or cfg.draws < 1 or cfg.curve_draws < 1:
        raise InvalidInput("--windows-per-song, --draws and --curve-draws must be >= 1")
    if cfg.trace_samples < 0:
        raise InvalidInput("--trace-samples must be >= 0")
    for name in cfg.taggers:
        model = serving_dir / name
        if not any((v / "saved_model.pb").is_file() for v in model.glob("*")):
            if name == "fcn-msd":
                raise ModelNotFound(f"fcn-msd SavedModel missing in {model}; create it with: "
                                    + FCN_CONVERT_HINT.format(serving=serving_dir))
            raise ModelNotFound(f"tagger {name!r} missing in {model} (run `audiolime setup`)")
    if spleeter_root is not None:
        from audiolime.separator.hpss import check_installed  # numpy: not at CLI start-up

        for v in cfg.variants:
            try:
                check_installed(spleeter_root, [v.request(cfg.seed).separator])
            except ModelNotFound as exc:
                raise ModelNotFound(f"--variant {v.name}: {exc}") from None
