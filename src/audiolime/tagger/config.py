"""TF Serving configuration files, read the way ``tensorflow_model_server`` reads them.

* ``--model_config_file``: a ``ModelServerConfig`` in protobuf text format
  (``model_config_list { config { name: "musicnn-msd" base_path: "/models/musicnn-msd"
  model_platform: "tensorflow" } }``), parsed with the official
  ``tensorflow_serving.config.model_server_config_pb2``.
* ``--batching_parameters_file``: a ``BatchingParameters`` in text format
  (``max_batch_size { value: 64 }`` ...). The ``tensorflow-serving-api`` wheel does not ship
  ``session_bundle_config_pb2``, so when it is missing the same message (field names and wrapper
  types of TF Serving's ``session_bundle_config.proto``) is built here in a private descriptor pool.

Every problem is a :class:`ConfigError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2


class ConfigError(ValueError):
    """A configuration file or flag combination that the server cannot start with."""


# TF Serving defaults (BasicBatchScheduler / SharedBatchScheduler options) for unset fields.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_MAX_ENQUEUED_BATCHES = 10


@dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching, from a ``BatchingParameters`` file.

    ``max_batch_size`` bounds one model call (or ``max_execution_batch_size`` when set).
    Requests larger than that are split into chunks of at most that size and reassembled
    (TF Serving's ``enable_large_batch_splitting``; our default is on), unless the file sets
    ``enable_large_batch_splitting { value: false }``: then they are rejected (INVALID_ARGUMENT)
    as TF Serving does by default.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_s: float = 0.0
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = True
    max_execution_batch_size: int | None = None

    @property
    def execution_batch_size(self) -> int:
        """Largest batch handed to the model in one call."""
        return self.max_execution_batch_size or self.max_batch_size

    @property
    def queue_capacity(self) -> int:
        """Windows that may wait for a batch thread before requests get RESOURCE_EXHAUSTED."""
        return self.max_enqueued_batches * self.execution_batch_size


def _batching_parameters_class():
    """The ``tensorflow.serving.BatchingParameters`` message class (official if importable)."""
    try:  # pragma: no cover - present only in full TF Serving source builds
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    fd = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(
        name="audiolime/tagger/session_bundle_config.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    m = f.message_type.add(name="BatchingParameters")
    fields = [  # name, number, wrapper type (None = scalar)
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, None),
        ("pad_variable_length_inputs", 7, None),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, ".google.protobuf.Int64Value"),
    ]
    for name, number, type_name in fields:
        if type_name:
            m.field.add(name=name, number=number, label=fd.LABEL_OPTIONAL, type=fd.TYPE_MESSAGE,
                        type_name=type_name, json_name=name)
        elif name == "allowed_batch_sizes":
            m.field.add(name=name, number=number, label=fd.LABEL_REPEATED, type=fd.TYPE_INT64, json_name=name)
        else:
            m.field.add(name=name, number=number, label=fd.LABEL_OPTIONAL, type=fd.TYPE_BOOL, json_name=name)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BatchingParameters = _batching_parameters_class()


def _ssl_config_class():
    """``tensorflow.serving.SSLConfig`` (``tensorflow_serving/config/ssl_config.proto``: PEM text
    inline, not file names), built in a private pool: the wheel does not ship ``ssl_config_pb2``."""
    fd = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="audiolime/tagger/ssl_config.proto", package="tensorflow.serving",
                                           syntax="proto3")
    m = f.message_type.add(name="SSLConfig")
    for name, number, kind in (("server_key", 1, fd.TYPE_STRING), ("server_cert", 2, fd.TYPE_STRING),
                               ("custom_ca", 3, fd.TYPE_STRING), ("client_verify", 4, fd.TYPE_BOOL)):
        m.field.add(name=name, number=number, label=fd.LABEL_OPTIONAL, type=kind, json_name=name)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


SSLConfig = _ssl_config_class()


def load_ssl_config(path: Path):
    """``--ssl_config_file``: an ``SSLConfig`` text proto, as TF Serving reads it; ``ConfigError``
    when it does not parse or lacks the key or certificate."""
    msg = SSLConfig()
    try:
        text_format.Parse(_read(path, "--ssl_config_file"), msg)
    except text_format.ParseError as exc:
        raise ConfigError(f"--ssl_config_file {path}: not a TF Serving SSLConfig text proto: {exc}") from None
    if not (msg.server_key and msg.server_cert):
        raise ConfigError(f"--ssl_config_file {path}: server_key and server_cert are required")
    return msg


def _read(path: Path, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file") from None


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingOptions:
    """``BatchingParameters`` text format -> validated :class:`BatchingOptions`."""
    msg = BatchingParameters()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a TF Serving BatchingParameters text proto: {exc}") from None

    def get(name: str, default):
        return getattr(msg, name).value if msg.HasField(name) else default

    opts = BatchingOptions(
        max_batch_size=int(get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)),
        batch_timeout_s=int(get("batch_timeout_micros", 0)) / 1e6,
        num_batch_threads=int(get("num_batch_threads", os.cpu_count() or 1)),
        max_enqueued_batches=int(get("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES)),
        allowed_batch_sizes=tuple(int(s) for s in msg.allowed_batch_sizes),
        enable_large_batch_splitting=bool(get("enable_large_batch_splitting", True)),
        max_execution_batch_size=int(get("max_execution_batch_size", 0)) or None,
    )
    for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
        if getattr(opts, name) < 1:
            raise ConfigError(f"{source}: {name} must be >= 1, got {getattr(opts, name)}")
    if opts.batch_timeout_s < 0:
        raise ConfigError(f"{source}: batch_timeout_micros must be >= 0")
    if opts.max_execution_batch_size is not None and opts.max_execution_batch_size > opts.max_batch_size:
        raise ConfigError(f"{source}: max_execution_batch_size ({opts.max_execution_batch_size}) "
                          f"must not exceed max_batch_size ({opts.max_batch_size})")
    sizes = opts.allowed_batch_sizes
    if sizes:
        if any(s < 1 for s in sizes) or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ConfigError(f"{source}: allowed_batch_sizes must be positive and increasing, got {list(sizes)}")
        if sizes[-1] != opts.execution_batch_size:
            raise ConfigError(f"{source}: the last allowed_batch_sizes entry ({sizes[-1]}) must equal "
                              f"max_batch_size ({opts.execution_batch_size})")
    return opts


def load_batching_parameters(path: Path) -> BatchingOptions:
    return parse_batching_parameters(_read(path, "batching parameters file"), f"batching parameters file {path}")


@dataclass(frozen=True)
class ModelConfig:
    """One served model: ``base_path`` holds numeric version directories.

    ``versions`` selects what to serve: ``("latest", n)``, ``("all",)`` or ``("specific", v1, ...)``
    (TF Serving's ``model_version_policy``; default the newest version)."""

    name: str
    base_path: Path
    policy: tuple = ("latest", 1)
    version_labels: dict[str, int] = field(default_factory=dict)


def parse_model_config(text: str, source: str = "model config", base: Path | None = None) -> list[ModelConfig]:
    """``ModelServerConfig`` text format (``model_config_list``) -> model configs.

    Relative ``base_path`` values are resolved against ``base`` (else the working directory)."""
    from tensorflow_serving.config import model_server_config_pb2

    msg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a TF Serving ModelServerConfig text proto: {exc}") from None
    if msg.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: expected a model_config_list (custom_model_config is not supported)")
    configs: list[ModelConfig] = []
    for c in msg.model_config_list.config:
        if not c.name or not c.base_path:
            raise ConfigError(f"{source}: every config needs a name and a base_path")
        if c.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{source}: model {c.name!r}: model_platform {c.model_platform!r} "
                              "is not supported (only \"tensorflow\")")
        if any(x.name == c.name for x in configs):
            raise ConfigError(f"{source}: model {c.name!r} is configured twice")
        which = c.model_version_policy.WhichOneof("policy_choice")
        if which == "specific":
            versions = tuple(int(v) for v in c.model_version_policy.specific.versions)
            if not versions:
                raise ConfigError(f"{source}: model {c.name!r}: specific version policy lists no versions")
            policy: tuple = ("specific", *versions)
        elif which == "all":
            policy = ("all",)
        else:
            n = c.model_version_policy.latest.num_versions if which == "latest" else 1
            policy = ("latest", max(1, int(n)))
        path = Path(c.base_path)
        if not path.is_absolute() and base is not None:
            path = base / path
        configs.append(ModelConfig(c.name, path, policy, {k: int(v) for k, v in c.version_labels.items()}))
    if not configs:
        raise ConfigError(f"{source}: model_config_list has no models")
    return configs


def load_model_config(path: Path, base: Path | None = None) -> list[ModelConfig]:
    return parse_model_config(_read(path, "model config file"), f"model config file {path}", base)


def select_versions(found: list[int], policy: tuple) -> list[int]:
    """The versions of ``found`` (ascending) that ``policy`` serves."""
    kind = policy[0]
    if kind == "all":
        return list(found)
    if kind == "specific":
        return [v for v in found if v in policy[1:]]
    return list(found[-policy[1]:]) if found else []
