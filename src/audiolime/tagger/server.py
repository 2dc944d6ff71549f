"""gRPC front of the tagger: TF Serving's ``PredictionService`` and ``ModelService`` over
:mod:`audiolime.tagger.model_server`, with the official ``tensorflow-serving-api`` servicer bases
and messages, so clients of ``tensorflow_model_server`` work unchanged (and vice versa).

Run: ``audiolime serve tagger --model-base-path models/serving/musicnn-msd
--model-name musicnn-msd --enable-batching --batching-parameters-file batching.config``.
The same config files as ``tensorflow_model_server`` (``--model_config_file``,
``--batching_parameters_file``; TF Serving's underscore spellings are accepted too); flags and
environment variables: docs/service-contract.md. Models are loaded and warmed up before health
reports SERVING; SIGTERM drains in-flight requests within ``--grace-period``.
Predict, GetModelMetadata and GetModelStatus are implemented; Classify, Regress,
MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from audiolime import errors, settings
from audiolime.server import logs, runtime, tracing
from audiolime.tagger.config import ConfigError, ModelConfig, load_batching_parameters, load_model_config, load_ssl_config
from audiolime.tagger.model_server import ModelServer
from audiolime.tagger.savedmodel import list_versions

log = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
SIGNATURE_DEF = "signature_def"

# (file, service, [(method, request, response)]) of TF Serving's two service protos.
_SERVICES = [
    ("tensorflow_serving/apis/prediction_service.proto", "PredictionService", [
        ("Classify", classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
        ("Regress", regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
        ("Predict", predict_pb2.PredictRequest, predict_pb2.PredictResponse),
        ("MultiInference", inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
        ("GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest,
         get_model_metadata_pb2.GetModelMetadataResponse)]),
    ("tensorflow_serving/apis/model_service.proto", "ModelService", [
        ("GetModelStatus", get_model_status_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusResponse),
        ("HandleReloadConfigRequest", model_management_pb2.ReloadConfigRequest,
         model_management_pb2.ReloadConfigResponse)]),
]


def register_service_descriptors() -> None:
    """Put TF Serving's service descriptors into the default pool, for server reflection.

    ``tensorflow-serving-api``'s ``prediction_service_pb2``/``model_service_pb2`` are old-style
    generated modules that newer protobuf runtimes refuse to import (the ``*_pb2_grpc`` modules
    and the message modules are fine), so the two small service files are described here."""
    pool = descriptor_pool.Default()
    for file_name, service, methods in _SERVICES:
        try:
            pool.FindFileByName(file_name)
            continue
        except KeyError:
            pass
        fdp = descriptor_pb2.FileDescriptorProto(name=file_name, package="tensorflow.serving", syntax="proto3")
        svc = fdp.service.add(name=service)
        deps = []
        for name, req, resp in methods:
            svc.method.add(name=name, input_type="." + req.DESCRIPTOR.full_name,
                           output_type="." + resp.DESCRIPTOR.full_name)
            deps += [req.DESCRIPTOR.file.name, resp.DESCRIPTOR.file.name]
        fdp.dependency.extend(dict.fromkeys(deps))
        pool.Add(fdp)


def _spec(spec) -> tuple[str, int | None, str | None]:
    which = spec.WhichOneof("version_choice")
    version = int(spec.version.value) if which == "version" else None
    label = spec.version_label if which == "version_label" else None
    return spec.name, version, label


def to_ndarray(name: str, tensor) -> np.ndarray:
    try:
        return tf.make_ndarray(tensor)
    except Exception as exc:  # malformed TensorProto: bad dtype, content size vs shape, ...
        raise errors.InvalidInput(f"input {name!r} is not a valid TensorProto: {exc}") from None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Translates TF Serving protos to :class:`ModelServer` calls and back; nothing else."""

    def __init__(self, core: ModelServer) -> None:
        self.core = core

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        name, version, label = _spec(request.model_spec)
        inputs = {k: to_ndarray(k, t) for k, t in request.inputs.items()}
        served, signature, outputs = self.core.predict(name, version, label, request.model_spec.signature_name,
                                                       inputs, list(request.output_filter))
        resp = predict_pb2.PredictResponse()
        resp.model_spec.name = served.name
        resp.model_spec.version.value = served.version
        resp.model_spec.signature_name = signature
        tracing.annotate({"audiolime.model": served.name, "audiolime.model_version": served.version,
                          "audiolime.signature": signature,
                          "audiolime.windows": int(next(iter(inputs.values())).shape[0]) if inputs else 0})
        for key, value in outputs.items():
            resp.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return resp

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        if not request.metadata_field:
            raise errors.InvalidInput("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [f for f in request.metadata_field if f != SIGNATURE_DEF]
        if unsupported:
            raise errors.InvalidInput(f"metadata_field {unsupported[0]!r} is not supported "
                                      f"(only {SIGNATURE_DEF!r})")
        served = self.core.resolve(*_spec(request.model_spec))
        resp = get_model_metadata_pb2.GetModelMetadataResponse()
        resp.model_spec.name = served.name
        resp.model_spec.version.value = served.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in served.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sig)
        resp.metadata[SIGNATURE_DEF].Pack(sig_map)
        return resp

    def Classify(self, request, context):
        raise errors.Unimplemented("Classify is not supported by this tagger server (use Predict)")

    def Regress(self, request, context):
        raise errors.Unimplemented("Regress is not supported by this tagger server (use Predict)")

    def MultiInference(self, request, context):
        raise errors.Unimplemented("MultiInference is not supported by this tagger server (use Predict)")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ModelServer) -> None:
        self.core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        resp = get_model_status_pb2.GetModelStatusResponse()
        for version, state in self.core.status(*_spec(request.model_spec)):
            status = resp.model_version_status.add(version=version)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            status.status.SetInParent()  # error_code OK, as TF Serving reports it
        return resp

    def HandleReloadConfigRequest(self, request, context):
        raise errors.Unimplemented("HandleReloadConfigRequest is not supported: restart the server with "
                                   "a new --model-config-file")


def build_parser() -> argparse.ArgumentParser:
    return settings.parser("audiolime serve tagger", "TF-Serving-compatible tagger gRPC service (PredictionService)",
                           settings.TAGGER)


def model_configs(args: argparse.Namespace) -> list[ModelConfig]:
    if args.model_config_file:
        return load_model_config(args.model_config_file, base=args.model_base_path)
    if args.model_base_path:
        path = Path(args.model_base_path)
        if not list_versions(path.parent, path.name) and list_versions(path, args.model_name):
            path = path / args.model_name  # a base of several models (the image's default): <base>/<name>
        return [ModelConfig(args.model_name, path)]
    raise ConfigError("one of --model-base-path or --model-config-file is required "
                      "($AUDIOLIME_MODEL_BASE_PATH / $AUDIOLIME_MODEL_CONFIG_FILE)")


def build_core(args: argparse.Namespace) -> ModelServer:
    """Parse the config files, then load and warm up every served model version."""
    configs = model_configs(args)
    batching = None
    if args.batching_parameters_file:
        batching = load_batching_parameters(args.batching_parameters_file)
    if args.enable_batching:
        if batching is None:
            from audiolime.tagger.config import BatchingOptions
            batching = BatchingOptions()
        log.info("batching on", extra={"max_batch_size": batching.max_batch_size,
                                       "batch_timeout_s": batching.batch_timeout_s,
                                       "num_batch_threads": batching.num_batch_threads,
                                       "max_enqueued_batches": batching.max_enqueued_batches})
    else:
        batching = None
    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    return ModelServer.load(configs, batching)


def apply_ssl_config(args: argparse.Namespace) -> Path | None:
    """``--ssl_config_file`` -> the ``--tls-*`` files (written to a private directory, returned so
    it can be removed at exit): TF Serving's way of passing TLS material, so the chart's argument
    list for tensorflow_model_server starts this server the same way. ``client_verify`` = mTLS."""
    if args.ssl_config_file is None:
        return None
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        raise ConfigError("--ssl_config_file and --tls-cert/--tls-key/--tls-client-ca exclude each other")
    config = load_ssl_config(args.ssl_config_file)
    if config.client_verify and not config.custom_ca:
        raise ConfigError(f"--ssl_config_file {args.ssl_config_file}: client_verify needs custom_ca")
    directory = Path(tempfile.mkdtemp(prefix="tagger-tls-"))  # mode 0700
    files = {"tls_cert": ("cert.pem", config.server_cert), "tls_key": ("key.pem", config.server_key)}
    if config.client_verify:
        files["tls_client_ca"] = ("ca.pem", config.custom_ca)
    for attr, (name, text) in files.items():
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        setattr(args, attr, path)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_logging("tagger", args.log_level)
    tracing.configure("tagger", args.otlp_endpoint)
    try:
        tls_dir = apply_ssl_config(args)
    except ConfigError as exc:
        raise SystemExit(f"audiolime serve tagger: error: {exc}") from None
    try:
        security = runtime.Security.from_args(args)
    except errors.InvalidInput as exc:
        raise SystemExit(f"audiolime serve tagger: error: {exc}") from None
    try:
        core = build_core(args)  # before SERVING
    except ConfigError as exc:
        raise SystemExit(f"audiolime serve tagger: error: {exc}") from None
    except Exception as exc:  # a SavedModel TensorFlow cannot load
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SystemExit(f"audiolime serve tagger: error: cannot load the models: {first}") from None
    register_service_descriptors()
    add_prediction = prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server
    add_model = model_service_pb2_grpc.add_ModelServiceServicer_to_server
    running = runtime.start(
        [runtime.Service(PREDICTION_SERVICE, lambda s: add_prediction(PredictionServicer(core), s)),
         runtime.Service(MODEL_SERVICE, lambda s: add_model(ModelServicer(core), s))],
        args.host, args.port, args.metrics_port, args.max_workers, security=security)
    running.on_stop.append(core.close)
    if tls_dir is not None:
        running.on_stop.append(lambda: shutil.rmtree(tls_dir, ignore_errors=True))
    runtime.run_until_signalled(running, args.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
