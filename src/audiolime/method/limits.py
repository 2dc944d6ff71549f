"""Every bound on what a caller may ask for, in one place: the audio (encoded size, header, decoded
size) and the cost of a request (targets, masks x window length, component memory).

The CLI, the explainer and the separator each build one :class:`Limits` in ``main()`` from the
same flags (their settings table: :mod:`audiolime.settings`) and check with its methods, so a bound
and its message exist once. Every check raises :class:`~audiolime.errors.InvalidInput` naming the
field or the limit (and the flag that sets it), and runs before the work it protects: the header
before decoding, the request before separation or any mask.

numpy-free and transport-free (the method package imports it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from audiolime.errors import InvalidInput
from audiolime.method.waveform import AudioHeader

MiB = 1 << 20
BYTES_PER_SAMPLE = 4  # decoded audio is float32
MAX_NAME_CHARS = 256  # tag, model, separator and file names
MAX_URI_CHARS = 2048
RECEIVE_OVERHEAD_BYTES = 1 * MiB  # a request's fields besides its audio (names are capped above)
SF_COUNT_MAX = 2 ** 63 - 1  # libsndfile's "length unknown"
# A catalog audit (``audiolime audit``) explains every song's windows, one explanation each (each within
# the per-request tagger-cost budget): at most this many songs (files named or found in directories)
# and windows per song, so that a wrong glob or directory is refused before anything is decoded.
MAX_AUDIT_SONGS = 1000
MAX_AUDIT_WINDOWS_PER_SONG = 16
MAX_AUDIT_IN_FLIGHT = 64  # explanation jobs an audit through the explainer service keeps submitted at once
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def decoded_channels(channels: int) -> int:
    """Channels of the decoded waveform: mono and stereo as they are, 3-8 mixed down to stereo."""
    return min(channels, 2)


def audio_error(message: str) -> InvalidInput:
    """A problem of the request's audio (the ``audio`` field)."""
    return InvalidInput(message, field="audio")


@dataclass(frozen=True)
class Limits:
    """Bounds of one door. Defaults fit the Helm chart's explainer (2 GiB): a 10-minute song at
    up to 96 kHz stereo, 10 target tags, about 5 replica-minutes of tagger time per request."""

    max_bytes: int = 200 * MiB  # encoded input: inline content or the object a URI names
    max_inline_bytes: int = 64 * MiB  # encoded input sent inline in the request (larger: by URI)
    max_duration_s: float = 600.0
    max_decoded_bytes: int = 512 * MiB  # frames x decoded channels (at most 2) x 4 (float32)
    max_sample_rate: int = 192_000
    min_sample_rate: int = 8_000
    max_channels: int = 8  # 3-8 channels are mixed down to stereo while decoding (the separators take 1 or 2)
    min_duration_s: float = 0.1  # shorter resamples to (almost) nothing; 0.1 s to 3 s is zero-padded
    max_tags: int = 10  # target tags of one request (``tags``, or ``top_n`` predicted ones)
    max_tagger_seconds: float = 65536.0  # the tagger-cost budget: masks x the tagger's window length, in seconds
    max_component_bytes: int = 512 * MiB  # d' components, model + listening audio, float32

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidInput(f"limit {f.name} must be a positive number, got {value!r}")
        if self.min_sample_rate > self.max_sample_rate:
            raise InvalidInput("min_sample_rate must be <= max_sample_rate")

    @property
    def max_receive_bytes(self) -> int:
        """The gRPC receive limit of a server taking audio inline: the audio plus its fields."""
        return self.inline_bytes + RECEIVE_OVERHEAD_BYTES

    @property
    def inline_bytes(self) -> int:
        """The largest audio a request may carry inline (``--max-inline-bytes``, at most ``--max-bytes``)."""
        return min(self.max_bytes, self.max_inline_bytes)

    def check_inline_size(self, nbytes: int, label: str) -> None:
        """Inline audio: ``--max-bytes``, and ``--max-inline-bytes`` (larger audio goes by URI)."""
        self.check_size(nbytes, label)
        if nbytes > self.inline_bytes:
            raise InvalidInput(f"{label}: {nbytes} bytes inline is more than the limit {self.inline_bytes} bytes "
                               f"(--max-inline-bytes); give larger audio by URI (AudioInput.uri)")

    # -- audio ---------------------------------------------------------------------------------
    def check_size(self, nbytes: int, label: str) -> None:
        if nbytes > self.max_bytes:
            raise audio_error(f"{label}: {nbytes} bytes is more than the limit {self.max_bytes} bytes (--max-bytes)")

    def check_header(self, header: AudioHeader, label: str) -> None:
        """Refuse from the header alone: rate, channels, length, and the decoded size."""
        rate, channels, frames = header.sample_rate, header.channels, header.frames
        if not self.min_sample_rate <= rate <= self.max_sample_rate:
            raise audio_error(f"{label}: sample rate {rate} Hz is outside the limits "
                               f"{self.min_sample_rate}..{self.max_sample_rate} Hz")
        if not 1 <= channels <= self.max_channels:
            raise audio_error(f"{label}: {channels} channels; the limit is {self.max_channels}")
        seconds = frames / rate
        if frames == 0:
            raise audio_error(f"{label}: contains no samples")
        if seconds < self.min_duration_s:
            raise audio_error(f"{label}: {seconds * 1000:.1f} ms is shorter than the minimum "
                               f"{self.min_duration_s * 1000:g} ms")
        if seconds > self.max_duration_s:
            raise audio_error(f"{label}: {seconds:.1f} s is longer than the limit {self.max_duration_s:g} s "
                               f"(--max-duration)")
        decoded = frames * decoded_channels(channels) * BYTES_PER_SAMPLE
        if decoded > self.max_decoded_bytes:
            raise audio_error(f"{label}: decodes to {decoded} bytes ({seconds:.1f} s x {rate} Hz x "
                               f"{decoded_channels(channels)} channels), more than the limit {self.max_decoded_bytes} bytes "
                               f"(--max-decoded-bytes)")

    # -- the request ---------------------------------------------------------------------------
    def check_targets(self, name: str, count: int) -> None:
        if count > self.max_tags:
            raise InvalidInput(f"{name}: {count} target tags, more than the limit {self.max_tags} (--max-tags)")

    def most_samples(self, window_s: float) -> int:
        """The most masks of a ``window_s`` window the tagger-cost budget allows."""
        return math.floor(self.max_tagger_seconds / window_s)

    def check_cost(self, num_samples: int, window_s: float, model: str) -> None:
        """num_samples x the tagger's window length: the tagger time one request may take."""
        cost = num_samples * window_s
        if cost > self.max_tagger_seconds:
            most = self.most_samples(window_s)
            raise InvalidInput(f"num_samples {num_samples} x the {window_s:g} s window of {model!r} is "
                               f"{cost:.0f} window-seconds, more than the limit {self.max_tagger_seconds:g} "
                               f"(--max-tagger-seconds): at most {most} samples for this model")

    def check_timeline_cost(self, windows: int, masks_per_window: int, window_s: float, model: str) -> None:
        """A song timeline's tagger time: ``windows`` x what one window takes (its masks and checks)
        x the window length, against the same budget as one window's explanation."""
        cost = windows * masks_per_window * window_s
        if cost > self.max_tagger_seconds:
            most = self.most_samples(window_s) // max(windows, 1)
            raise InvalidInput(f"num_samples: {windows} windows x {masks_per_window} tagger windows each x the "
                               f"{window_s:g} s window of {model!r} is {cost:.0f} window-seconds, more than the "
                               f"limit {self.max_tagger_seconds:g} (--max-tagger-seconds): at most {most} tagger "
                               f"windows per window (masks and checks) over this range", field="num_samples")

    def check_component_bytes(self, nbytes: int, segments: int, detail: str) -> None:
        if nbytes > self.max_component_bytes:
            raise InvalidInput(f"segments {segments}: {detail} need {nbytes / MiB:.0f} MiB of component audio, "
                               f"more than the limit {self.max_component_bytes / MiB:.0f} MiB "
                               f"(--max-component-bytes); use fewer segments")


def check_audit(songs: int, windows_per_song: int) -> None:
    """A catalog audit's size, before any song is read."""
    if songs < 1:
        raise InvalidInput("songs: no audio files to audit (give files, or directories holding "
                           f"{'/'.join(AUDIO_SUFFIXES)} files)", field="songs")
    if songs > MAX_AUDIT_SONGS:
        raise InvalidInput(f"songs: {songs} audio files, more than the limit {MAX_AUDIT_SONGS} of one audit; "
                           f"split the catalog", field="songs")
    if not 1 <= windows_per_song <= MAX_AUDIT_WINDOWS_PER_SONG:
        raise InvalidInput(f"windows_per_song must be between 1 and {MAX_AUDIT_WINDOWS_PER_SONG}, got "
                           f"{windows_per_song}", field="windows_per_song")


def check_name(field: str, value: str, limit: int = MAX_NAME_CHARS) -> None:
    """Names a caller sends (and error messages echo) are short."""
    if len(value) > limit:
        raise InvalidInput(f"{field} is {len(value)} characters long; the limit is {limit}")


DEFAULT = Limits()
