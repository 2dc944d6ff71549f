"""gRPC clients the explainer uses for its two backends, behind the pipeline's protocols.

* :class:`RemoteTagger` implements ``pipeline.Tagger`` over ``tensorflow.serving.PredictionService``
  (our tagger or the official TF Serving) with our wire-compatible messages, so the explainer
  never imports TensorFlow.
* :class:`RemoteSeparator` calls ``audiolime.v1.Separator/Separate``; :class:`RemoteStems` is the
  pipeline's ``StemSource`` over it: the whole song is separated (and cached) by the separator,
  and only the analysis window's region of the stems is read back from the object store.

Retry policy (both clients, :class:`RetryPolicy`): every call has its own deadline (never later
than the caller's, from the request context); a call that
fails with UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED is retried up to ``retries``
more times, sleeping ``min(cap, base * 2**attempt)`` with "equal jitter" (half fixed, half
uniform random) in between; then :class:`audiolime.errors.Unavailable` is raised. Predict is
idempotent, so a tagger restarted mid-explanation only costs the backoff. Tagger retries of
DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED (the tagger's overload answers; UNAVAILABLE, no
connection, costs it nothing) also draw on one :class:`RetryBudget` per explanation
(``--tagger-retry-budget``): an overloaded tagger answers DEADLINE_EXCEEDED or
RESOURCE_EXHAUSTED to every call, and retrying each of an explanation's hundreds of Predicts
5 times multiplied the overload (55 retried Predicts, the tagger from 0.8 to 6.9 GB); once the
budget is spent the explanation fails UNAVAILABLE at once. A DEADLINE_EXCEEDED outside an
explanation (no budget) is not retried at all. Channels use
``round_robin`` over every address ``dns:///`` resolves (a headless Service spreads batches over
pods) and short reconnect backoffs, so a restarted backend is picked up within a second.
"""

from __future__ import annotations

import contextvars
import io
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import grpc
import numpy as np
import soundfile as sf

from audiolime import errors, rpcstatus, wire
from audiolime.inputs import AudioSource
from audiolime.method.stems import STEM_RATE, Stems, stem_rate_region, window_stems
from audiolime.method.waveform import Audio
from audiolime.server import context as callctx
from audiolime.server import tracing
from audiolime.store import ObjectStore, S3Store
from audiolime.tfs import tfs_pb2
from audiolime.tfs.tensors import make_tensor_proto, to_ndarray
from audiolime.v1 import separator_pb2, separator_pb2_grpc

log = logging.getLogger(__name__)

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
SERVING_DEFAULT = "serving_default"
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED})
OVERLOAD = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED})  # the budget's


class RetryBudget:
    """Retries one explanation may still make, over all its tagger calls (thread-safe)."""

    def __init__(self, retries: int) -> None:
        self.left = retries
        self.spent = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            self.spent += 1
            return True


_budget: contextvars.ContextVar[RetryBudget | None] = contextvars.ContextVar("retry_budget", default=None)


@contextmanager
def retry_budget(retries: int) -> Iterator[RetryBudget]:
    """A fresh budget for the calls made in this context (and threads that copy it)."""
    budget = RetryBudget(retries)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 30.0  # per call
    retries: int = 5  # attempts after the first
    backoff_s: float = 0.25
    backoff_cap_s: float = 4.0
    budgeted: bool = False  # retries also draw on the context's RetryBudget (the tagger's)

    def delay(self, attempt: int) -> float:
        d = min(self.backoff_cap_s, self.backoff_s * 2 ** attempt)
        return d / 2 + random.uniform(0, d / 2)

    def call(self, fn: Callable, request, what: str, timeout_s: float | None = None):
        """``fn(request)`` with a deadline, retried on transient codes; other codes propagate.

        The request id and the caller's deadline come from the request context; once the caller's
        deadline has passed, no further attempt is made. With tracing on, the call is one span
        (``what``) whose children are its attempts' client spans, each retry an event on it."""
        with tracing.span(what, {"audiolime.request_id": callctx.current_request_id()}):
            return self._attempts(fn, request, what, timeout_s)

    def _attempts(self, fn: Callable, request, what: str, timeout_s: float | None):
        rid = callctx.current_request_id()
        metadata = ((callctx.REQUEST_ID_HEADER, rid),) if rid else None
        attempt = 0
        while True:
            timeout = timeout_s or self.timeout_s
            left = callctx.remaining()
            if left is not None:
                if left <= 0:
                    raise errors.DeadlineExceeded(f"{what}: the caller's deadline passed")
                timeout = min(timeout, left)
            try:
                with tracing.attempt(attempt + 1):
                    return fn(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in RETRYABLE:
                    raise
                if attempt >= self.retries:
                    raise errors.Unavailable(f"{what}: {code.name} after {attempt + 1} attempts "
                                             f"({exc.details()})") from None
                if self.budgeted and code in OVERLOAD:  # UNAVAILABLE (no connection) cost the tagger nothing
                    budget = _budget.get()
                    if budget is None and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise errors.Unavailable(f"{what}: {code.name} ({exc.details()})") from None
                    if budget is not None and not budget.take():
                        raise errors.Unavailable(f"{what}: {code.name}; this explanation's retry budget "
                                                 f"({budget.spent} retries, --tagger-retry-budget) is spent: the "
                                                 f"tagger is overloaded or down, retry later") from None
                delay = self.delay(attempt)
                log.warning("retrying %s", what, extra={"code": code.name, "attempt": attempt + 1,
                                                        "delay_s": round(delay, 3)})
                tracing.event("retry", {"audiolime.call": what, "rpc.grpc.status_code": code.value[0],
                                        "audiolime.attempt": attempt + 1, "audiolime.delay_s": round(delay, 3)})
                time.sleep(delay)
                attempt += 1


def backend_error(what: str, exc: grpc.RpcError) -> errors.AudiolimeError:
    """A backend's failure as the explainer's caller should see it: the caller's own mistakes
    (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED for an input URI) pass through, everything
    else is the backend being UNAVAILABLE, a backend that refuses the explainer's own client
    certificate (``ClientNotAllowed``: a deployment's mistake) included."""
    err = rpcstatus.from_rpc_error(exc, f"{what}: {exc.details()}", prefix=False)
    if isinstance(err, (errors.InvalidInput, errors.NotFound, errors.PermissionDenied)) and \
            not isinstance(err, errors.ClientNotAllowed):
        return err
    return errors.Unavailable(f"{what}: {exc.code().name} ({exc.details()})")


def _spec(name: str, version: int | None = None, signature: str = "") -> tfs_pb2.ModelSpec:
    spec = tfs_pb2.ModelSpec(name=name, signature_name=signature)
    if version:
        spec.version.value = int(version)
    return spec


class RemoteTagger:
    """A tagger model served over the TF Serving gRPC API (``pipeline.Tagger``).

    The version is resolved once (the newest AVAILABLE one unless pinned) and every Predict pins
    it, so one explanation never mixes two model versions."""

    def __init__(self, channel: grpc.Channel, name: str, version: int | None = None,
                 policy: RetryPolicy = RetryPolicy()) -> None:
        self.name = name
        self.policy = policy
        self._predict = channel.unary_unary(PREDICT, request_serializer=tfs_pb2.PredictRequest.SerializeToString,
                                            response_deserializer=tfs_pb2.PredictResponse.FromString)
        metadata = channel.unary_unary(GET_MODEL_METADATA,
                                       request_serializer=tfs_pb2.GetModelMetadataRequest.SerializeToString,
                                       response_deserializer=tfs_pb2.GetModelMetadataResponse.FromString)
        status = channel.unary_unary(GET_MODEL_STATUS,
                                     request_serializer=tfs_pb2.GetModelStatusRequest.SerializeToString,
                                     response_deserializer=tfs_pb2.GetModelStatusResponse.FromString)
        self.version = self._resolve_version(status, version)
        sig = self._signatures(metadata)
        serving = sig.signature_def[SERVING_DEFAULT]
        if len(serving.inputs) != 1:
            raise errors.InvalidInput(f"model {name!r}: serving_default must have one input, has "
                                      f"{sorted(serving.inputs)}")
        self._input_key, info = next(iter(serving.inputs.items()))
        dims = [d.size for d in info.tensor_shape.dim]
        if len(dims) != 2 or dims[1] <= 0:
            raise errors.InvalidInput(f"model {name!r}: serving_default input shape {dims} is not [batch, window]")
        self.window_samples = int(dims[1])
        outs = sorted(serving.outputs)
        self._output_key = "probabilities" if "probabilities" in outs else outs[0]
        resp = self._call(self._predict, tfs_pb2.PredictRequest(model_spec=_spec(name, self.version, "labels")),
                          "tagger labels")
        self.labels = [str(x) for x in to_ndarray(resp.outputs["labels"]).reshape(-1)]
        self.sample_rate = int(to_ndarray(resp.outputs["sample_rate"]).reshape(-1)[0])
        log.info("remote tagger ready", extra={"model": name, "version": self.version, "tags": len(self.labels),
                                               "window_samples": self.window_samples,
                                               "sample_rate": self.sample_rate})

    def _call(self, fn, request, what: str):
        try:
            return self.policy.call(fn, request, what)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # TF Serving: version not loaded yet
                raise errors.ModelNotReady(f"tagger model {self.name!r}: {exc.details()}") from None
            raise backend_error(f"tagger model {self.name!r}", exc) from None

    def _resolve_version(self, status, version: int | None) -> int:
        resp = self._call(status, tfs_pb2.GetModelStatusRequest(model_spec=_spec(self.name, version)),
                          "tagger model status")
        available = [s.version for s in resp.model_version_status
                     if s.state == tfs_pb2.ModelVersionStatus.AVAILABLE]
        if not available:
            if not resp.model_version_status:
                raise errors.ModelNotFound(f"tagger model {self.name!r} not found")
            raise errors.ModelNotReady(f"tagger model {self.name!r} has no AVAILABLE version yet")
        return int(version) if version else int(max(available))

    def _signatures(self, metadata) -> tfs_pb2.SignatureDefMap:
        req = tfs_pb2.GetModelMetadataRequest(model_spec=_spec(self.name, self.version),
                                              metadata_field=["signature_def"])
        resp = self._call(metadata, req, "tagger model metadata")
        if "signature_def" not in resp.metadata:
            raise errors.Unavailable(f"tagger model {self.name!r}: metadata without signature_def")
        # The Any carries tensorflow.serving.SignatureDefMap; ours is wire-compatible, so parse
        # the bytes directly (Any.Unpack would insist on the type name).
        sig = tfs_pb2.SignatureDefMap.FromString(resp.metadata["signature_def"].value)
        if SERVING_DEFAULT not in sig.signature_def:
            raise errors.InvalidInput(f"model {self.name!r} has no {SERVING_DEFAULT} signature")
        return sig

    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        """``float32 [batch, window]`` -> ``float32 [batch, tags]`` (retried per the policy)."""
        batch = np.ascontiguousarray(waveforms, dtype=np.float32)
        req = tfs_pb2.PredictRequest(model_spec=_spec(self.name, self.version, SERVING_DEFAULT),
                                     output_filter=[self._output_key])
        req.inputs[self._input_key].CopyFrom(make_tensor_proto(batch))
        resp = self._call(self._predict, req, "tagger Predict")
        return to_ndarray(resp.outputs[self._output_key]).astype(np.float32, copy=False)


def read_stem(uri: str, store: ObjectStore, s3_endpoint: str | None = None, s3_region: str | None = None) -> bytes:
    """A stem the separator stored: an object of ``store``, an ``s3://`` object, or a ``file://``
    path of a separator on this host with its own local store. Stem URIs come from the separator,
    never from callers, so a local path is trusted here (and only here)."""
    try:
        return store.get(store.parse_uri(uri))
    except errors.InvalidInput:
        pass
    u = urlparse(uri)
    if u.scheme == "file":
        try:
            return Path(unquote(u.path)).read_bytes()
        except OSError as exc:
            raise errors.Unavailable(f"stem {uri} is not readable here: {exc.strerror}") from None
    if u.scheme == "s3" and u.netloc and u.path.strip("/"):
        return S3Store(u.netloc, "", endpoint_url=s3_endpoint, region=s3_region).get(u.path.lstrip("/"))
    raise errors.Unavailable(f"the separator returned an unreadable stem URI {uri!r}")


class RemoteSeparator:
    """Client of ``audiolime.v1.Separator`` whose stems are read back from ``store``."""

    def __init__(self, channel: grpc.Channel, store: ObjectStore, policy: RetryPolicy = RetryPolicy(timeout_s=900),
                 s3_endpoint: str | None = None, s3_region: str | None = None) -> None:
        self._stub = separator_pb2_grpc.SeparatorStub(channel)
        self.store = store
        self.policy = policy
        self.s3_endpoint = s3_endpoint
        self.s3_region = s3_region

    def separate(self, audio: AudioSource, model: str, window: tuple[int, int] = (0, 0)
                 ) -> separator_pb2.SeparateResponse:
        """The stems of the recording, or (``window``, sample frames of the input) of that window."""
        req = separator_pb2.SeparateRequest(audio=wire.audio_to_proto(audio), model=model,
                                            window_start=window[0], window_end=window[1])
        try:
            return self.policy.call(self._stub.Separate, req, "separator Separate")
        except grpc.RpcError as exc:
            raise backend_error("separator", exc) from None

    def read(self, uri: str) -> bytes:
        return read_stem(uri, self.store, self.s3_endpoint, self.s3_region)

    def stems(self, audio: AudioSource, model: str) -> RemoteStems:
        return RemoteStems(self, audio, model)


class RemoteStems:
    """The pipeline's ``StemSource`` over the separator service: the separator separates (and
    caches) the chunks covering the window on the shared chunk grid (or has the whole recording
    cached); the window's region is read back from the store and made into window stems exactly as
    a local separation does (:func:`~audiolime.method.stems.window_stems`)."""

    def __init__(self, separator: RemoteSeparator, audio: AudioSource, model: str) -> None:
        self._separator = separator
        self._audio = audio
        self._model = model

    def window(self, audio: Audio, start: int, end: int) -> Stems:
        resp = self._separator.separate(self._audio, self._model, (start, end))
        region, a = {}, 0
        for ref in resp.stems:
            if ref.sample_rate != STEM_RATE:
                raise errors.Unavailable(f"separator stem {ref.name!r} is at {ref.sample_rate} Hz, not {STEM_RATE}")
            # a window's stems end where the region does, so the region computed over them is the same
            a, b = stem_rate_region(audio.sample_rate, start, end, int(ref.start_sample + ref.num_samples))
            if a < ref.start_sample:
                raise errors.Unavailable(f"separator stem {ref.name!r} begins at {ref.start_sample}, after {a}")
            with sf.SoundFile(io.BytesIO(self._separator.read(ref.uri))) as f:
                f.seek(a - ref.start_sample)
                region[ref.name] = np.ascontiguousarray(f.read(b - a, dtype="float32", always_2d=True).T)
        return Stems(window_stems(region, a, audio, start, end), audio.sample_rate, resp.model or self._model,
                     float(resp.residual_rel_rms), bool(resp.cache_hit))
