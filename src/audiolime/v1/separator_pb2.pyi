from audiolime.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeparateRequest(_message.Message):
    __slots__ = ("audio", "model", "window_start", "window_end")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    audio: _common_pb2.AudioInput
    model: str
    window_start: int
    window_end: int
    def __init__(self, audio: _Optional[_Union[_common_pb2.AudioInput, _Mapping]] = ..., model: _Optional[str] = ..., window_start: _Optional[int] = ..., window_end: _Optional[int] = ...) -> None: ...

class StemRef(_message.Message):
    __slots__ = ("name", "uri", "sample_rate", "channels", "num_samples", "start_sample")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    sample_rate: int
    channels: int
    num_samples: int
    start_sample: int
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., num_samples: _Optional[int] = ..., start_sample: _Optional[int] = ...) -> None: ...

class SeparateResponse(_message.Message):
    __slots__ = ("audio_sha256", "model", "stems", "cache_hit", "residual_rel_rms", "duration_s", "timings_s")
    class TimingsSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AUDIO_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEMS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_REL_RMS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_S_FIELD_NUMBER: _ClassVar[int]
    audio_sha256: str
    model: str
    stems: _containers.RepeatedCompositeFieldContainer[StemRef]
    cache_hit: bool
    residual_rel_rms: float
    duration_s: float
    timings_s: _containers.ScalarMap[str, float]
    def __init__(self, audio_sha256: _Optional[str] = ..., model: _Optional[str] = ..., stems: _Optional[_Iterable[_Union[StemRef, _Mapping]]] = ..., cache_hit: bool = ..., residual_rel_rms: _Optional[float] = ..., duration_s: _Optional[float] = ..., timings_s: _Optional[_Mapping[str, float]] = ...) -> None: ...
