"""gRPC clients the explainer uses for its two backends, behind the pipeline's protocols.

* :class:`RemoteTagger` implements ``pipeline.Tagger`` over ``tensorflow.serving.PredictionService``
  (our tagger or the official TF Serving) with our wire-compatible messages, so the explainer
  never imports TensorFlow.
* :class:`RemoteSeparator` calls ``audiolime.v1.Separator/Separate`` and turns the stem references
  into a pipeline ``StemSource`` (stems fetched from the object store once per request).

Retry policy (both clients, :class:`RetryPolicy`): every call has its own deadline; a call that
fails with UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED is retried up to ``retries``
more times, sleeping ``min(cap, base * 2**attempt)`` with "equal jitter" (half fixed, half
uniform random) in between; then :class:`audiolime.errors.Unavailable` is raised. Predict is
idempotent, so a tagger restarted mid-explanation only costs the backoff. Channels use
``round_robin`` over every address ``dns:///`` resolves (a headless Service spreads batches over
pods) and short reconnect backoffs, so a restarted backend is picked up within a second.
"""

from __future__ import annotations

import io
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import grpc
import numpy as np
import soundfile as sf

from audiolime import errors
from audiolime.audio import Audio, resample, to_channels
from audiolime.explainer.pipeline import Stems, StemSource, _fit_length
from audiolime.server.logs import REQUEST_ID_HEADER, current_request_id
from audiolime.store import ObjectStore, S3Store
from audiolime.tfs import tfs_pb2
from audiolime.tfs.tensors import make_tensor_proto, to_ndarray
from audiolime.v1 import common_pb2, separator_pb2, separator_pb2_grpc

log = logging.getLogger(__name__)

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
SERVING_DEFAULT = "serving_default"
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED})
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def normalize_target(target: str) -> str:
    """``host:port`` -> ``dns:///host:port`` (explicit schemes are kept)."""
    return target if "://" in target or target.startswith(("unix:", "ipv4:", "ipv6:")) else f"dns:///{target}"


def make_channel(target: str) -> grpc.Channel:
    """An insecure channel that balances round-robin over every resolved address."""
    service_config = {"loadBalancingConfig": [{"round_robin": {}}]}
    return grpc.insecure_channel(normalize_target(target), options=[
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.keepalive_time_ms", 30000),
    ])


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 30.0  # per call
    retries: int = 5  # attempts after the first
    backoff_s: float = 0.25
    backoff_cap_s: float = 4.0

    def delay(self, attempt: int) -> float:
        d = min(self.backoff_cap_s, self.backoff_s * 2 ** attempt)
        return d / 2 + random.uniform(0, d / 2)

    def call(self, fn: Callable, request, what: str, request_id: str | None = None,
             timeout_s: float | None = None):
        """``fn(request)`` with a deadline, retried on transient codes; other codes propagate."""
        rid = request_id if request_id is not None else current_request_id()
        metadata = ((REQUEST_ID_HEADER, rid),) if rid else None
        attempt = 0
        while True:
            try:
                return fn(request, timeout=timeout_s or self.timeout_s, metadata=metadata)
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in RETRYABLE:
                    raise
                if attempt >= self.retries:
                    raise errors.Unavailable(f"{what}: {code.name} after {attempt + 1} attempts "
                                             f"({exc.details()})") from None
                delay = self.delay(attempt)
                log.warning("retrying %s", what, extra={"code": code.name, "attempt": attempt + 1,
                                                        "delay_s": round(delay, 3)})
                time.sleep(delay)
                attempt += 1


def _spec(name: str, version: int | None = None, signature: str = "") -> tfs_pb2.ModelSpec:
    spec = tfs_pb2.ModelSpec(name=name, signature_name=signature)
    if version:
        spec.version.value = int(version)
    return spec


class RemoteTagger:
    """A tagger model served over the TF Serving gRPC API (``pipeline.Tagger``).

    The version is resolved once (the newest AVAILABLE one unless pinned) and every Predict pins
    it, so one explanation never mixes two model versions."""

    accepts_request_id = True  # predict(batch, request_id=...) for calls from worker threads

    def __init__(self, channel: grpc.Channel, name: str, version: int | None = None,
                 policy: RetryPolicy = RetryPolicy(), request_id: str | None = None) -> None:
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
        self.version = self._resolve_version(status, version, request_id)
        sig = self._signatures(metadata, request_id)
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
                          "tagger labels", request_id)
        self.labels = [str(x) for x in to_ndarray(resp.outputs["labels"]).reshape(-1)]
        self.sample_rate = int(to_ndarray(resp.outputs["sample_rate"]).reshape(-1)[0])
        log.info("remote tagger ready", extra={"model": name, "version": self.version, "tags": len(self.labels),
                                               "window_samples": self.window_samples,
                                               "sample_rate": self.sample_rate})

    def _call(self, fn, request, what: str, request_id: str | None = None):
        try:
            return self.policy.call(fn, request, what, request_id)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise errors.ModelNotFound(f"tagger model {self.name!r}: {exc.details()}") from None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise errors.InvalidInput(f"tagger rejected the request: {exc.details()}") from None
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise errors.ModelNotReady(f"tagger model {self.name!r}: {exc.details()}") from None
            raise errors.Unavailable(f"{what}: {exc.code().name} ({exc.details()})") from None

    def _resolve_version(self, status, version: int | None, request_id: str | None) -> int:
        resp = self._call(status, tfs_pb2.GetModelStatusRequest(model_spec=_spec(self.name, version)),
                          "tagger model status", request_id)
        available = [s.version for s in resp.model_version_status
                     if s.state == tfs_pb2.ModelVersionStatus.AVAILABLE]
        if not available:
            if not resp.model_version_status:
                raise errors.ModelNotFound(f"tagger model {self.name!r} not found")
            raise errors.ModelNotReady(f"tagger model {self.name!r} has no AVAILABLE version yet")
        return int(version) if version else int(max(available))

    def _signatures(self, metadata, request_id: str | None) -> tfs_pb2.SignatureDefMap:
        req = tfs_pb2.GetModelMetadataRequest(model_spec=_spec(self.name, self.version),
                                              metadata_field=["signature_def"])
        resp = self._call(metadata, req, "tagger model metadata", request_id)
        if "signature_def" not in resp.metadata:
            raise errors.Unavailable(f"tagger model {self.name!r}: metadata without signature_def")
        # The Any carries tensorflow.serving.SignatureDefMap; ours is wire-compatible, so parse
        # the bytes directly (Any.Unpack would insist on the type name).
        sig = tfs_pb2.SignatureDefMap.FromString(resp.metadata["signature_def"].value)
        if SERVING_DEFAULT not in sig.signature_def:
            raise errors.InvalidInput(f"model {self.name!r} has no {SERVING_DEFAULT} signature")
        return sig

    def predict(self, waveforms: np.ndarray, request_id: str | None = None) -> np.ndarray:
        """``float32 [batch, window]`` -> ``float32 [batch, tags]`` (retried per the policy)."""
        batch = np.ascontiguousarray(waveforms, dtype=np.float32)
        req = tfs_pb2.PredictRequest(model_spec=_spec(self.name, self.version, SERVING_DEFAULT),
                                     output_filter=[self._output_key])
        req.inputs[self._input_key].CopyFrom(make_tensor_proto(batch))
        resp = self._call(self._predict, req, "tagger Predict", request_id)
        return to_ndarray(resp.outputs[self._output_key]).astype(np.float32, copy=False)


def read_object(uri: str, store: ObjectStore, s3_endpoint: str | None = None, s3_region: str | None = None,
                allow_file: bool = False) -> bytes:
    """The bytes behind ``uri``: an object of ``store``, any ``s3://bucket/key`` (our credentials and
    endpoint), or, with ``allow_file`` (trusted URIs only), a ``file://`` path on this host."""
    try:
        return store.get(store.parse_uri(uri))
    except errors.InvalidInput:
        pass
    u = urlparse(uri)
    if allow_file and u.scheme == "file":
        try:
            return Path(unquote(u.path)).read_bytes()
        except OSError as exc:
            raise errors.NotFound(f"{uri} is not readable here: {exc.strerror}") from None
    if u.scheme == "s3" and u.netloc and u.path.strip("/"):
        return S3Store(u.netloc, "", endpoint_url=s3_endpoint, region=s3_region).get(u.path.lstrip("/"))
    raise errors.InvalidInput(f"unsupported audio URI {uri!r}: expected s3://bucket/key or a URI of the object store")


class RemoteSeparator:
    """Client of ``audiolime.v1.Separator`` whose stems are read back from ``store``."""

    def __init__(self, channel: grpc.Channel, store: ObjectStore, policy: RetryPolicy = RetryPolicy(timeout_s=900),
                 s3_endpoint: str | None = None, s3_region: str | None = None) -> None:
        self._stub = separator_pb2_grpc.SeparatorStub(channel)
        self.store = store
        self.policy = policy
        self.s3_endpoint = s3_endpoint
        self.s3_region = s3_region

    def separate(self, content: bytes | None, uri: str | None, filename: str, model: str,
                 request_id: str | None = None) -> separator_pb2.SeparateResponse:
        audio = common_pb2.AudioInput(filename=filename)
        if content is not None:
            audio.content = content
        else:
            audio.uri = uri or ""
        req = separator_pb2.SeparateRequest(audio=audio, model=model)
        try:
            return self.policy.call(self._stub.Separate, req, "separator Separate", request_id)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise errors.ModelNotFound(f"separator: {exc.details()}") from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise errors.InvalidInput(f"separator: {exc.details()}") from None
            raise errors.Unavailable(f"separator Separate: {code.name} ({exc.details()})") from None

    def read(self, uri: str) -> bytes:
        """A stem the separator stored (URIs come from the separator, never from callers, so a
        ``file://`` path of a separator on this host with its own local store is accepted)."""
        return read_object(uri, self.store, self.s3_endpoint, self.s3_region, allow_file=True)

    def fetch(self, resp: separator_pb2.SeparateResponse, sample_rate: int, channels: int) -> dict[str, np.ndarray]:
        """Every stem as float32 ``[channels, samples]`` at ``sample_rate``."""
        stems = {}
        for ref in resp.stems:
            data, sr = sf.read(io.BytesIO(self.read(ref.uri)), dtype="float32", always_2d=True)
            wave = resample(np.ascontiguousarray(data.T), int(sr), sample_rate)
            stems[ref.name] = to_channels(wave, channels)
        return stems

    def stem_source(self, content: bytes | None, uri: str | None, filename: str, model: str,
                    request_id: str | None = None) -> tuple[StemSource, Callable[[], bool]]:
        """A pipeline StemSource that separates the whole recording once (the separator caches
        it), fetches the stems once and crops them to ``[start, end)``; plus a callable telling
        whether the separator served it from its cache."""
        lock = threading.Lock()
        state: dict[str, object] = {}

        def source(audio: Audio, start: int, end: int) -> Stems:
            with lock:
                if "stems" not in state:
                    resp = self.separate(content, uri, filename, model, request_id)
                    whole = self.fetch(resp, audio.sample_rate, audio.channels)
                    state["response"] = resp
                    state["stems"] = Stems(whole, audio.sample_rate, resp.model or model,
                                           float(resp.residual_rel_rms))
            s: Stems = state["stems"]  # type: ignore[assignment]
            return Stems({k: _fit_length(v[:, start:end], end - start) for k, v in s.stems.items()},
                         s.sample_rate, s.model, s.residual_rel_rms)

        def cache_hit() -> bool:
            resp = state.get("response")
            return bool(resp.cache_hit) if resp is not None else False

        return source, cache_hit
