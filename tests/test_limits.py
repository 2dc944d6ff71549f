"""The one limits model (``audiolime.method.limits``) and the checks that use it: the blockwise
decoder (header first, one float32 buffer), request bounds (targets, top_k, names, the tagger
cost of N masks, component memory), URI inputs (allow-list, size before the read) and the CLI's
one-line errors. In-process and fast; the services apply the same code (tests/test_fuzz.py)."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiolime import errors, settings
from audiolime.audio import decode, probe
from audiolime.method import limits
from audiolime.method.limits import DEFAULT, Limits
from audiolime.method.plan import Plan, make_plan
from audiolime.method.request import ExplainRequest
from audiolime.method.waveform import AudioHeader
from conftest import S3_ENV, cli_error, excerpt, flac_header, many_channels_wav, s3_client, shared_dir

SONGS = ["Brahms_-_Hungarian_Dance_No5_string_orchestra.ogg", "Karissa_Hobbs_-_Lets_Go_Fishin.ogg",
         "Kevin_MacLeod_-_Vibe_Ace.ogg", "admiralbob77_-_Choice_-_Drum-bass.ogg"]
MB = 1 << 20
A_MINUTE = AudioHeader(44100, 2, 44100 * 60)


def check(request: ExplainRequest, tagger, header: AudioHeader = A_MINUTE, limits: Limits = DEFAULT) -> Plan:
    """The checks a door makes: the request's fields once, then its plan."""
    return make_plan(request.validate(limits), tagger, header, limits)


# -- the model -----------------------------------------------------------------------------------------
def test_limits_come_from_flags_with_environment_fallbacks():
    """The settings tables' limit flags: flags win over the environment, unset ones keep the
    defaults, the renamed budget keeps its old flag and variable, and a non-positive limit is
    refused naming it."""
    env = {"AUDIOLIME_MAX_TAGS": "4", "AUDIOLIME_MAX_DURATION": "30", "AUDIOLIME_MAX_WINDOW_SECONDS": "300"}
    p = settings.add(argparse.ArgumentParser(), settings.LIMITS, env)
    got = settings.limits_from(p.parse_args(["--max-duration", "45", "--max-bytes", "1000"]))
    assert got == Limits(max_duration_s=45.0, max_bytes=1000, max_tags=4, max_tagger_seconds=300.0)
    assert got.max_receive_bytes == 1000 + limits.RECEIVE_OVERHEAD_BYTES
    old = settings.limits_from(p.parse_args(["--max-window-seconds", "600"]))
    assert old.max_tagger_seconds == 600.0
    audio_only = settings.add(argparse.ArgumentParser(), settings.AUDIO_LIMITS)
    assert {a.dest for a in audio_only._actions} >= {"max_bytes", "max_duration_s", "max_decoded_bytes"}
    assert "max_tags" not in {a.dest for a in audio_only._actions}
    with pytest.raises(errors.InvalidInput, match="limit max_tagger_seconds must be a positive number"):
        Limits(max_tagger_seconds=0)


@pytest.mark.parametrize("header,message", [
    (AudioHeader(655350, 2, 44100), "sample rate 655350 Hz is outside the limits 8000..192000 Hz"),
    (AudioHeader(4000, 1, 4000), "sample rate 4000 Hz is outside the limits"),
    (AudioHeader(44100, 9, 44100), "9 channels; the limit is 8"),
    (AudioHeader(44100, 2, 44100 * 3600), "3600.0 s is longer than the limit 600 s (--max-duration)"),
    (AudioHeader(44100, 2, 441), "10.0 ms is shorter than the minimum 100 ms"),
    (AudioHeader(44100, 2, 0), "contains no samples"),
    (AudioHeader(192000, 2, 192000 * 590), "more than the limit 536870912 bytes (--max-decoded-bytes)"),
], ids=["rate", "low-rate", "channels", "duration", "too-short", "empty", "decoded-size"])
def test_headers_beyond_the_limits_are_named(header, message):
    """Each header limit refuses with a message naming the value and the limit."""
    with pytest.raises(errors.InvalidInput) as exc:
        Limits().check_header(header, "song.flac")
    assert str(exc.value).startswith("song.flac: ") and message in str(exc.value)


# -- decoding ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SONGS)
def test_blockwise_decode_equals_a_whole_file_read(shared, name):
    """The blockwise decoder gives exactly what one whole-file read gives (the old decoder), as one
    contiguous float32 [channels, samples] array, from a path and from bytes."""
    path = shared / "audio" / name
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    for source in (path, path.read_bytes()):
        audio = decode(source)
        assert audio.sample_rate == sr and audio.waveform.dtype == np.float32
        assert audio.waveform.flags["C_CONTIGUOUS"] and audio.waveform.shape == data.T.shape
        assert np.array_equal(audio.waveform, data.T)


PEAK = """
import sys
from audiolime.audio import decode
from audiolime.processes import memory, reset_peak
import os
data = open(sys.argv[1], "rb").read()
rss, _ = memory(os.getpid())
reset_peak(os.getpid())
audio = decode(data, "long.flac")
_, peak = memory(os.getpid())
print(audio.waveform.nbytes, peak - rss)
"""


def test_decoding_peak_memory_is_the_decoded_size(karissa, tmp_path):
    """Decoding a 4.4-minute FLAC grows the process's peak RSS by the decoded size plus a few MB
    (the old whole-file read with a transposed copy and a float64 square took 3x)."""
    path = tmp_path / "long.flac"
    sf.write(path, np.tile(karissa.waveform, (1, 2)).T, karissa.sample_rate, format="FLAC", subtype="PCM_16")
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    decoded, growth = map(int, out.stdout.split())
    assert decoded == karissa.waveform.nbytes * 2
    assert growth < decoded * 1.05 + 16 * MB, (growth / MB, decoded / MB)


@pytest.fixture(scope="module")
def short_flac(shared) -> bytes:
    return excerpt(shared / "audio" / SONGS[3], 5.0, 5.0)


@pytest.mark.parametrize("patch,message", [
    (dict(frames=44100 * 3600 * 4), "14400.0 s is longer than the limit 600 s"),
    (dict(rate=655350), "sample rate 655350 Hz is outside the limits"),
    (dict(frames=0), "the header does not give the length"),
], ids=["hours", "655350Hz", "unknown-length"])
def test_a_lying_header_is_refused_before_decoding(short_flac, patch, message):
    """A 5 s FLAC whose header claims hours, 655350 Hz or no length is refused from the
    header (a decoder that decoded first would have returned 5 s of audio)."""
    bomb = flac_header(short_flac, **patch)
    for fn in (probe, decode):
        with pytest.raises(errors.InvalidInput) as exc:
            fn(bomb, "bomb.flac")
        assert message in str(exc.value)
    assert decode(short_flac).duration_s == pytest.approx(5.0)


def test_many_channels_are_refused_from_the_header_and_up_to_8_mixed_down_to_stereo():
    """A 16-channel WAV is refused from its header; a 6-channel (5.1) FLAC decodes to its ITU stereo
    downmix (centre and surrounds at -3 dB, LFE dropped), into a buffer of two channels."""
    t = np.arange(8000) / 8000
    tones = np.stack([0.1 * np.sin(2 * np.pi * (200 + 100 * c) * t) for c in range(16)], axis=1).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, tones, 8000, format="WAV", subtype="FLOAT")
    with pytest.raises(errors.InvalidInput, match="16 channels; the limit is 8"):
        probe(wav.getvalue(), "many.wav")
    flac = io.BytesIO()
    sf.write(flac, tones[:, :6], 8000, format="FLAC", subtype="PCM_24")
    audio = decode(flac.getvalue(), "surround.flac")
    fl, fr, fc, lfe, bl, br = sf.read(io.BytesIO(flac.getvalue()), dtype="float32")[0].T
    g = 0.7071
    assert audio.channels == 2 and audio.sample_rate == 8000
    np.testing.assert_allclose(audio.waveform[0], fl + g * fc + g * bl, atol=1e-6)
    np.testing.assert_allclose(audio.waveform[1], fr + g * fc + g * br, atol=1e-6)
    assert probe(flac.getvalue()).channels == 6


@pytest.mark.slow  # seconds of CPU: the full run only
def test_a_real_decoding_bomb_is_refused_from_its_header(decoding_bomb):
    """An hour of a constant (~600 KB of FLAC, 1.27 GB decoded) is refused with the duration limit."""
    bomb = decoding_bomb
    assert len(bomb) < 1 * MB
    with pytest.raises(errors.InvalidInput, match="3600.0 s is longer than the limit 600 s"):
        decode(bomb, "bomb.flac")


def test_the_encoded_size_is_checked_before_opening(tmp_path, short_flac):
    """Bytes or a file over max_bytes are refused naming --max-bytes, before libsndfile sees them."""
    small = Limits(max_bytes=1000)
    path = tmp_path / "song.flac"
    path.write_bytes(short_flac)
    for source in (short_flac, path):
        with pytest.raises(errors.InvalidInput, match=f"{len(short_flac)} bytes is more than the limit 1000 bytes"):
            decode(source, "song.flac", small)
    with pytest.raises(errors.InvalidInput, match="more than the limit 1000"):
        decode(b"\0" * 2000, "junk", small)  # not audio, but too big is said first


def test_non_finite_and_silent_audio_are_refused_blockwise():
    """A NaN far into the file (past the first decoded block) and an all-silent file are refused."""
    sr = 44100
    wave = (0.1 * np.sin(np.arange(sr * 4) * 0.05)).astype(np.float32)
    wave[sr * 3] = np.nan
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="FLOAT")
    with pytest.raises(errors.InvalidInput, match="contains NaN or infinite samples"):
        decode(buf.getvalue(), "nan.wav")
    buf = io.BytesIO()
    sf.write(buf, np.zeros((sr * 4, 2), np.float32), sr, format="FLAC")
    with pytest.raises(errors.InvalidInput, match="is silent"):
        decode(buf.getvalue(), "silent.flac")


def test_a_shorter_stream_is_compacted_in_its_own_buffer():
    """When a file holds fewer frames than its header said, the channels are moved down within the
    one buffer (no second copy) and the result is the contiguous prefix of every channel."""
    from audiolime.audio import _shrink

    full = np.arange(3 * 10, dtype=np.float32).reshape(3, 10)
    out = _shrink(full.copy(), 4)
    assert out.flags["C_CONTIGUOUS"] and out.shape == (3, 4)
    assert np.array_equal(out, full[:, :4])
    buf = full.copy()
    assert np.shares_memory(_shrink(buf, 7), buf)


def test_recordings_too_short_to_resample_are_refused(short_flac):
    """Found by the stack fuzzer: a header saying 1-5 frames decoded to a few samples that resample
    to nothing at the tagger's rate (the explainer said INTERNAL). Under 0.1 s is now refused from
    the header; and resampling a [2, 1] array works (numpy calls its transpose contiguous, soxr
    did not: the separator said INTERNAL)."""
    from audiolime.method.waveform import resample

    for rate, frames in ((96000, 1), (8000, 1), (192000, 5), (44100, 4409)):
        with pytest.raises(errors.InvalidInput, match=r"ms is shorter than the minimum 100 ms"):
            decode(flac_header(short_flac, rate=rate, frames=frames), "short.flac")
    assert decode(flac_header(short_flac, frames=4410), "short.flac").num_samples == 4410
    out = resample(np.full((2, 1), 0.1, np.float32), 8000, 44100)
    assert out.shape == (2, 6) and out.flags["C_CONTIGUOUS"] and np.abs(out).max() > 0


# -- the request ------------------------------------------------------------------------------------
@dataclass
class FakeTagger:
    """The pipeline's Tagger protocol without a model (checks never call predict)."""

    name: str = "musicnn-msd"
    version: int = 1
    labels: tuple = ("rock", "pop", "female vocalists", "Jazz")
    sample_rate: int = 16000
    window_samples: int = 48000  # 3 s

    def predict(self, waveforms):  # pragma: no cover - never called by check()
        raise AssertionError("check() must not run the model")


FCN = FakeTagger(name="fcn-msd", sample_rate=16000, window_samples=464000)  # 29 s, the FCN's input


def test_tags_are_deduplicated_and_targets_capped():
    """Repeated tags count once; more than --max-tags targets (tags or top_n) are refused naming
    the field and the flag; two spellings of one tag are one target."""
    req = ExplainRequest(tags=("rock", "pop", "rock", "rock")).validate()
    assert req.tags == ("rock", "pop")
    with pytest.raises(errors.InvalidInput, match=r"tags: 11 target tags, more than the limit 10 \(--max-tags\)"):
        ExplainRequest(tags=tuple(f"t{i}" for i in range(11))).validate()
    with pytest.raises(errors.InvalidInput, match="top_n: 3 target tags, more than the limit 2"):
        ExplainRequest(top_n=3).validate(Limits(max_tags=2))
    assert check(ExplainRequest(tags=("jazz", "Jazz", "rock")), FakeTagger()).targets == (3, 0)


def test_top_k_and_names_are_bounded():
    """top_k <= d' (stems x segments), and names a caller sends are at most 256 characters."""
    assert ExplainRequest(top_k=12).validate().top_k == 12
    with pytest.raises(errors.InvalidInput, match=r"top_k must be <= d' = 12 \(2stems x 6 segments\), got 13"):
        ExplainRequest(top_k=13).validate()
    for field, value in (("tags", ("x" * 300,)), ("model", "m" * 300), ("separator", "s" * 300)):
        with pytest.raises(errors.InvalidInput, match=f"{field} is 300 characters long; the limit is 256"):
            ExplainRequest(**{field: value}).validate()


def test_num_samples_is_capped_by_the_tagger_cost_budget():
    """N x the model's window length may not exceed --max-tagger-seconds: the default N passes for
    both taggers, and the FCN's 29 s windows allow at most 2259 masks where musicnn allows 21845."""
    check(ExplainRequest(num_samples=2048), FCN)
    check(ExplainRequest(num_samples=21845), FakeTagger())
    with pytest.raises(errors.InvalidInput) as exc:
        check(ExplainRequest(num_samples=2400), FCN)
    assert "num_samples 2400 x the 29 s window of 'fcn-msd'" in str(exc.value)
    assert "(--max-tagger-seconds): at most 2259 samples for this model" in str(exc.value)
    with pytest.raises(errors.InvalidInput, match="at most 21845 samples"):
        check(ExplainRequest(num_samples=30000), FakeTagger())


def test_adaptive_sampling_stops_at_the_tagger_cost_budget():
    """The default (adaptive, max_samples 4096) is not refused for the FCN: its cap is lowered to the
    2259 masks the budget allows; a budget below d'+1 masks is refused by check(), before any work."""
    req = ExplainRequest()
    assert check(req, FCN).request.max_samples == 2259 and check(req, FakeTagger()).request == req
    with pytest.raises(errors.InvalidInput, match="num_samples 13 x the 29 s window of 'fcn-msd'"):
        check(req, FCN, limits=Limits(max_tagger_seconds=29 * 12))


def test_segments_are_capped_by_the_component_memory_budget():
    """d' components of model + listening audio must fit --max-component-bytes: the FCN with 500
    segments of a 44.1 kHz stereo song (~12 GB) is refused naming segments; 6 segments pass."""
    song = A_MINUTE
    check(ExplainRequest(segments=6, num_samples=2048), FCN, song)
    with pytest.raises(errors.InvalidInput) as exc:
        check(ExplainRequest(segments=500, num_samples=2048), FCN, song)
    assert str(exc.value).startswith("segments 500: 1000 components of a 29 s window at 44100 Hz x 2 channels")
    assert "(--max-component-bytes); use fewer segments" in str(exc.value)
    with pytest.raises(errors.InvalidInput, match="outside the audio"):
        check(ExplainRequest(window_start_s=61.0), FakeTagger(), song)


# -- URIs --------------------------------------------------------------------------------------------
@pytest.fixture()
def buckets(moto_s3, monkeypatch, short_flac):
    """Buckets on the moto server: ``inputs`` (in/song.flac, in/big.flac), ``inbox`` and ``private``."""
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    s3 = s3_client(moto_s3)
    for bucket in ("inputs", "inbox", "private", "results"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="inputs", Key="in/song.flac", Body=short_flac)
    s3.put_object(Bucket="inputs", Key="in/big.flac", Body=short_flac * 4)
    s3.put_object(Bucket="inputs", Key="inbox/song.flac", Body=short_flac)
    s3.put_object(Bucket="private", Key="secret.flac", Body=short_flac)
    return moto_s3, short_flac


def test_uri_inputs_only_from_allowed_locations(buckets):
    """--input-buckets: objects under an allowed bucket/prefix are read (the size checked first); a
    prefix matches whole path segments; other buckets are PERMISSION_DENIED with the same answer
    whether the object exists or not, and nothing is read from them."""
    from audiolime.inputs import InputReader, parse_locations
    from audiolime.store import S3Store

    endpoint, song = buckets
    store = S3Store("results", "", endpoint_url=endpoint)
    read = InputReader(store, endpoint, "us-east-1", parse_locations("inputs/in, s3://inbox"),
                       Limits(max_bytes=len(song) * 2))
    assert read("s3://inputs/in/song.flac") == song
    with pytest.raises(errors.InvalidInput, match=rf"{len(song) * 4} bytes is more than the limit {len(song) * 2}"):
        read("s3://inputs/in/big.flac")
    with pytest.raises(errors.NotFound, match="does not exist"):
        read("s3://inputs/in/missing.flac")
    with pytest.raises(errors.NotFound):
        read("s3://inbox/anything.flac")  # a whole bucket is allowed
    answers = []
    for uri in ("s3://private/secret.flac", "s3://private/missing.flac", "s3://inputs/inbox/song.flac",
                "s3://nowhere-bucket/x.flac", "s3://results/explanations/x/window.wav"):
        with pytest.raises(errors.PermissionDenied) as exc:
            read(uri)
        answers.append(str(exc.value).replace(uri, "URI"))
    assert set(answers) == {"audio uri 'URI' is not in an allowed input location (--input-buckets)"}
    with pytest.raises(errors.InvalidInput, match="invalid object key"):
        read("s3://inputs/in/../secret.flac")
    with pytest.raises(errors.InvalidInput, match="unsupported audio URI"):
        read("http://inputs/in/song.flac")


def test_uri_inputs_never_reach_the_store_itself(buckets, tmp_path):
    """Without --input-buckets no URI is accepted, the store's own objects included. With an
    allow-list naming the store's whole bucket (or its file:// directory), its reserved prefixes
    (other callers' uploads, jobs, leases, the queue, stems, results) stay PERMISSION_DENIED with
    the one message, whether the object exists or not, and nothing is read; the rest is read."""
    from audiolime.inputs import RESERVED_PREFIXES, InputReader, parse_locations
    from audiolime.store import LocalStore, S3Store

    endpoint, song = buckets
    s3 = s3_client(endpoint)
    store = S3Store("inputs", "in", endpoint_url=endpoint)
    for prefix in RESERVED_PREFIXES:
        s3.put_object(Bucket="inputs", Key=f"in/{prefix}x.flac", Body=song)
    local = LocalStore(tmp_path / "store")
    local.put("uploads/song.flac", song)
    for prefix in RESERVED_PREFIXES:
        local.put(f"{prefix}x.flac", song)
    refused = []
    for reader, uris in (
            (InputReader(store, endpoint), ["s3://inputs/in/song.flac", "s3://inputs/in/inputs/x.flac",
                                            "s3://private/secret.flac"]),
            (InputReader(local), [local.uri("uploads/song.flac"), local.uri("inputs/x.flac")]),
            (InputReader(store, endpoint, allowed=parse_locations("inputs")),
             [f"s3://inputs/in/{p}x.flac" for p in RESERVED_PREFIXES] + [f"s3://inputs/in/{p}none.flac"
                                                                        for p in RESERVED_PREFIXES]),
            (InputReader(local, allowed=parse_locations((tmp_path / "store").as_uri())),
             [local.uri(f"{p}x.flac") for p in RESERVED_PREFIXES] + [local.uri(f"{p}none.flac")
                                                                    for p in RESERVED_PREFIXES])):
        for uri in uris:
            with pytest.raises(errors.PermissionDenied) as exc:
                reader(uri)
            refused.append(str(exc.value).replace(uri, "URI"))
    assert set(refused) == {"audio uri 'URI' is not in an allowed input location (--input-buckets)"}
    assert InputReader(store, endpoint, allowed=parse_locations("inputs"))("s3://inputs/in/song.flac") == song
    assert InputReader(local, allowed=parse_locations((tmp_path / "store").as_uri()))(
        local.uri("uploads/song.flac")) == song
    outside = InputReader(local, allowed=parse_locations((tmp_path / "store" / "uploads").as_uri()))
    for uri in (local.uri("inputs/x.flac"), (shared_dir() / "audio" / SONGS[0]).as_uri(),
                (tmp_path / "store" / "uploads").as_uri() + "/../inputs/x.flac"):
        with pytest.raises((errors.PermissionDenied, errors.InvalidInput)):
            outside(uri)
    (tmp_path / "store" / "uploads" / "link.flac").symlink_to(tmp_path / "store" / "jobs" / "x.flac")
    with pytest.raises(errors.PermissionDenied):  # a link out of the allowed directory
        outside(local.uri("uploads/link.flac"))
    with pytest.raises(errors.InvalidInput, match="unsupported audio URI"):
        InputReader(local)("http://example.com/a.flac")


def test_a_backend_refusing_an_input_uri_is_permission_denied_for_the_caller():
    """When the separator refuses an input URI (its own --input-buckets), the explainer's caller gets
    PERMISSION_DENIED, not the UNAVAILABLE of a failing backend."""
    import grpc

    from audiolime.explainer.remote import backend_error

    class Refused(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.PERMISSION_DENIED

        def details(self):
            return "audio uri 's3://x/y' is not in an allowed input location (--input-buckets)"

    err = backend_error("separator", Refused())
    assert isinstance(err, errors.PermissionDenied) and "separator: audio uri" in str(err)


# -- the CLI ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,message", [
    ([f"--tag=t{i}" for i in range(11)], "tags: 11 target tags, more than the limit 10 (--max-tags)"),
    (["--top-k", "13"], "top_k must be <= d' = 12"),
    (["--max-bytes", "1000"], "bytes is more than the limit 1000 bytes (--max-bytes)"),
    (["--max-duration", "2"], "5.0 s is longer than the limit 2 s (--max-duration)"),
    (["--max-tags", "0"], "limit max_tags must be a positive number, got 0"),
    (["--num-samples", "30000"], "at most 21845 samples for this model"),
], ids=["tags", "top-k", "max-bytes", "max-duration", "bad-limit", "cost"])
def test_cli_limits_are_one_line_errors(capsys, models, short_flac, tmp_path, extra, message):
    """The CLI applies the same limits (its flags, the same defaults): one line, exit 2."""
    song = tmp_path / "song.flac"
    song.write_bytes(short_flac)
    line = cli_error(capsys, ["explain", str(song), "--model-dir", str(models), *extra])
    assert message in line


@pytest.mark.parametrize("kind,message", [("rate", "sample rate 655350 Hz"), ("channels", "64 channels")])
def test_cli_refuses_extreme_headers_locally_and_before_upload(capsys, short_flac, tmp_path, kind, message):
    """An extreme header fails in one line both in-process and with --server (probed before the
    upload: the server named here does not exist and is never contacted)."""
    song = tmp_path / "bomb.wav"
    song.write_bytes(flac_header(short_flac, rate=655350) if kind == "rate" else many_channels_wav())
    for extra in ([], ["--server", "127.0.0.1:1"]):
        assert message in cli_error(capsys, ["explain", str(song), *extra])


def test_repo_has_no_audio_committed():
    """Hostile audio is generated in memory; no audio file is part of the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=Path(__file__).parents[1], capture_output=True, text=True).stdout
    assert not [f for f in tracked.split() if f.endswith((".ogg", ".flac", ".wav", ".mp3"))]


@pytest.mark.parametrize("fmt", ["AU", "AIFF", "W64", "CAF", "IRCAM", "NIST", "VOC", "MAT5", "PAF"])
def test_only_wav_flac_ogg_and_mp3_are_decoded(fmt):
    """libsndfile reads 26 containers; the product takes wav, flac, ogg and mp3: every other one is
    INVALID_ARGUMENT from its header, before decoding (CLI and services alike)."""
    import io

    import numpy as np
    import soundfile as sf

    from audiolime.audio import ACCEPTED_FORMATS, decode, probe

    def encoded(fmt: str) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, np.full((8000, 1), 0.1, dtype=np.float32), 8000, format=fmt)
        return buf.getvalue()

    with pytest.raises(errors.InvalidInput, match=f"{fmt} files are not accepted \\(wav, flac, ogg or mp3\\)"):
        probe(encoded(fmt), "a.bin")
    with pytest.raises(errors.InvalidInput, match="not accepted"):
        decode(encoded(fmt), "a.bin")
    assert ACCEPTED_FORMATS == {"WAV", "WAVEX", "FLAC", "OGG", "MP3"}
    for ok in ("WAV", "FLAC", "OGG", "MP3"):
        assert probe(encoded(ok), "a").sample_rate == 8000


def test_not_found_names_the_key_not_the_store_path(tmp_path):
    """A missing object is NOT_FOUND naming its key only: never the store's file:// path or bucket."""
    from audiolime.store import LocalStore

    store = LocalStore(tmp_path / "secret-root")
    for call in (lambda: store.get("explanations/x/window.wav"), lambda: store.size("explanations/x/window.wav")):
        with pytest.raises(errors.NotFound) as exc:
            call()
        assert str(exc.value) == "object 'explanations/x/window.wav' does not exist in the store"
        assert "secret-root" not in str(exc.value) and "file:" not in str(exc.value)
