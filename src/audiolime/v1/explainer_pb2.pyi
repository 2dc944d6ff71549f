from audiolime.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplainRequest(_message.Message):
    __slots__ = ("audio", "model", "model_version", "tags", "top_n", "window_start_s", "window_duration_s", "segments", "separator_model", "num_samples", "seed", "top_k", "url_ttl_s", "edges", "fade", "max_samples", "stability", "kernel", "sampling", "curves", "time_budget_s")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SEPARATOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    URL_TTL_S_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    FADE_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    CURVES_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    audio: _common_pb2.AudioInput
    model: str
    model_version: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    window_start_s: float
    window_duration_s: float
    segments: int
    separator_model: str
    num_samples: int
    seed: int
    top_k: int
    url_ttl_s: int
    edges: str
    fade: float
    max_samples: int
    stability: float
    kernel: str
    sampling: str
    curves: str
    time_budget_s: float
    def __init__(self, audio: _Optional[_Union[_common_pb2.AudioInput, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., window_start_s: _Optional[float] = ..., window_duration_s: _Optional[float] = ..., segments: _Optional[int] = ..., separator_model: _Optional[str] = ..., num_samples: _Optional[int] = ..., seed: _Optional[int] = ..., top_k: _Optional[int] = ..., url_ttl_s: _Optional[int] = ..., edges: _Optional[str] = ..., fade: _Optional[float] = ..., max_samples: _Optional[int] = ..., stability: _Optional[float] = ..., kernel: _Optional[str] = ..., sampling: _Optional[str] = ..., curves: _Optional[str] = ..., time_budget_s: _Optional[float] = ...) -> None: ...

class TagProbability(_message.Message):
    __slots__ = ("tag", "probability")
    TAG_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    tag: str
    probability: float
    def __init__(self, tag: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Component(_message.Message):
    __slots__ = ("rank", "name", "source", "segment", "start_s", "end_s", "weight", "url")
    RANK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    rank: int
    name: str
    source: str
    segment: int
    start_s: float
    end_s: float
    weight: float
    url: str
    def __init__(self, rank: _Optional[int] = ..., name: _Optional[str] = ..., source: _Optional[str] = ..., segment: _Optional[int] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., weight: _Optional[float] = ..., url: _Optional[str] = ...) -> None: ...

class Fidelity(_message.Message):
    __slots__ = ("top_k", "components", "same_top_tag", "top_tag", "target_probability", "original_target_probability", "url", "rest_url")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    SAME_TOP_TAG_FIELD_NUMBER: _ClassVar[int]
    TOP_TAG_FIELD_NUMBER: _ClassVar[int]
    TARGET_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TARGET_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    REST_URL_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    components: _containers.RepeatedScalarFieldContainer[str]
    same_top_tag: bool
    top_tag: str
    target_probability: float
    original_target_probability: float
    url: str
    rest_url: str
    def __init__(self, top_k: _Optional[int] = ..., components: _Optional[_Iterable[str]] = ..., same_top_tag: bool = ..., top_tag: _Optional[str] = ..., target_probability: _Optional[float] = ..., original_target_probability: _Optional[float] = ..., url: _Optional[str] = ..., rest_url: _Optional[str] = ...) -> None: ...

class DropTopK(_message.Message):
    __slots__ = ("components", "same_top_tag", "top_tag", "target_probability")
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    SAME_TOP_TAG_FIELD_NUMBER: _ClassVar[int]
    TOP_TAG_FIELD_NUMBER: _ClassVar[int]
    TARGET_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    components: _containers.RepeatedScalarFieldContainer[str]
    same_top_tag: bool
    top_tag: str
    target_probability: float
    def __init__(self, components: _Optional[_Iterable[str]] = ..., same_top_tag: bool = ..., top_tag: _Optional[str] = ..., target_probability: _Optional[float] = ...) -> None: ...

class RankCurve(_message.Message):
    __slots__ = ("probabilities", "auc")
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    AUC_FIELD_NUMBER: _ClassVar[int]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    auc: float
    def __init__(self, probabilities: _Optional[_Iterable[float]] = ..., auc: _Optional[float] = ...) -> None: ...

class Faithfulness(_message.Message):
    __slots__ = ("drop_top_k", "deletion", "insertion", "stability", "verdict")
    DROP_TOP_K_FIELD_NUMBER: _ClassVar[int]
    DELETION_FIELD_NUMBER: _ClassVar[int]
    INSERTION_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    drop_top_k: DropTopK
    deletion: RankCurve
    insertion: RankCurve
    stability: float
    verdict: Verdict
    def __init__(self, drop_top_k: _Optional[_Union[DropTopK, _Mapping]] = ..., deletion: _Optional[_Union[RankCurve, _Mapping]] = ..., insertion: _Optional[_Union[RankCurve, _Mapping]] = ..., stability: _Optional[float] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("random_sets", "keep_random_as_good", "drop_random_as_good", "sufficient", "necessary", "summary")
    RANDOM_SETS_FIELD_NUMBER: _ClassVar[int]
    KEEP_RANDOM_AS_GOOD_FIELD_NUMBER: _ClassVar[int]
    DROP_RANDOM_AS_GOOD_FIELD_NUMBER: _ClassVar[int]
    SUFFICIENT_FIELD_NUMBER: _ClassVar[int]
    NECESSARY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    random_sets: int
    keep_random_as_good: float
    drop_random_as_good: float
    sufficient: bool
    necessary: bool
    summary: str
    def __init__(self, random_sets: _Optional[int] = ..., keep_random_as_good: _Optional[float] = ..., drop_random_as_good: _Optional[float] = ..., sufficient: bool = ..., necessary: bool = ..., summary: _Optional[str] = ...) -> None: ...

class TargetExplanation(_message.Message):
    __slots__ = ("tag", "surrogate_r2", "intercept", "components", "fidelity", "faithfulness")
    TAG_FIELD_NUMBER: _ClassVar[int]
    SURROGATE_R2_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    tag: str
    surrogate_r2: float
    intercept: float
    components: _containers.RepeatedCompositeFieldContainer[Component]
    fidelity: Fidelity
    faithfulness: Faithfulness
    def __init__(self, tag: _Optional[str] = ..., surrogate_r2: _Optional[float] = ..., intercept: _Optional[float] = ..., components: _Optional[_Iterable[_Union[Component, _Mapping]]] = ..., fidelity: _Optional[_Union[Fidelity, _Mapping]] = ..., faithfulness: _Optional[_Union[Faithfulness, _Mapping]] = ...) -> None: ...

class SegmentEdges(_message.Message):
    __slots__ = ("mode", "fade", "fade_s")
    MODE_FIELD_NUMBER: _ClassVar[int]
    FADE_FIELD_NUMBER: _ClassVar[int]
    FADE_S_FIELD_NUMBER: _ClassVar[int]
    mode: str
    fade: float
    fade_s: float
    def __init__(self, mode: _Optional[str] = ..., fade: _Optional[float] = ..., fade_s: _Optional[float] = ...) -> None: ...

class SamplingInfo(_message.Message):
    __slots__ = ("kernel", "sampling", "num_samples", "max_samples", "stability_threshold", "tie_tolerance")
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STABILITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TIE_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    kernel: str
    sampling: str
    num_samples: int
    max_samples: int
    stability_threshold: float
    tie_tolerance: float
    def __init__(self, kernel: _Optional[str] = ..., sampling: _Optional[str] = ..., num_samples: _Optional[int] = ..., max_samples: _Optional[int] = ..., stability_threshold: _Optional[float] = ..., tie_tolerance: _Optional[float] = ...) -> None: ...

class Stopping(_message.Message):
    __slots__ = ("rounds", "masks", "reason", "stability")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    rounds: int
    masks: int
    reason: str
    stability: float
    def __init__(self, rounds: _Optional[int] = ..., masks: _Optional[int] = ..., reason: _Optional[str] = ..., stability: _Optional[float] = ...) -> None: ...

class FaithfulnessCost(_message.Message):
    __slots__ = ("tagger_calls", "seconds")
    TAGGER_CALLS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    tagger_calls: int
    seconds: float
    def __init__(self, tagger_calls: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class AudioInfo(_message.Message):
    __slots__ = ("sha256", "sample_rate", "channels", "duration_s", "window_start_s", "window_duration_s", "window_url", "filename", "window_peaks")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_URL_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_PEAKS_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    sample_rate: int
    channels: int
    duration_s: float
    window_start_s: float
    window_duration_s: float
    window_url: str
    filename: str
    window_peaks: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, sha256: _Optional[str] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., duration_s: _Optional[float] = ..., window_start_s: _Optional[float] = ..., window_duration_s: _Optional[float] = ..., window_url: _Optional[str] = ..., filename: _Optional[str] = ..., window_peaks: _Optional[_Iterable[float]] = ...) -> None: ...

class StemInfo(_message.Message):
    __slots__ = ("name", "url", "peaks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PEAKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    peaks: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., peaks: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "sample_rate", "window_samples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    sample_rate: int
    window_samples: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., sample_rate: _Optional[int] = ..., window_samples: _Optional[int] = ...) -> None: ...

class SeparatorInfo(_message.Message):
    __slots__ = ("model", "stems", "residual_rel_rms", "cache_hit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEMS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_REL_RMS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    stems: _containers.RepeatedScalarFieldContainer[str]
    residual_rel_rms: float
    cache_hit: bool
    def __init__(self, model: _Optional[str] = ..., stems: _Optional[_Iterable[str]] = ..., residual_rel_rms: _Optional[float] = ..., cache_hit: bool = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("explanation_id", "audio", "model", "separator", "prediction", "targets", "num_samples", "unique_samples", "exhaustive", "seed", "segments", "top_k", "timings_s", "warnings", "manifest_url", "urls_expire_at", "edges", "sampling", "stopping", "faithfulness_cost", "report_url", "artifact_urls", "song_top_tags", "num_components", "kernel_width", "stems", "document_version")
    class TimingsSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ArtifactUrlsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPLANATION_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEPARATOR_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTIVE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_S_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_URL_FIELD_NUMBER: _ClassVar[int]
    URLS_EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_COST_FIELD_NUMBER: _ClassVar[int]
    REPORT_URL_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URLS_FIELD_NUMBER: _ClassVar[int]
    SONG_TOP_TAGS_FIELD_NUMBER: _ClassVar[int]
    NUM_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    STEMS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    explanation_id: str
    audio: AudioInfo
    model: ModelInfo
    separator: SeparatorInfo
    prediction: _containers.RepeatedCompositeFieldContainer[TagProbability]
    targets: _containers.RepeatedCompositeFieldContainer[TargetExplanation]
    num_samples: int
    unique_samples: int
    exhaustive: bool
    seed: int
    segments: int
    top_k: int
    timings_s: _containers.ScalarMap[str, float]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    manifest_url: str
    urls_expire_at: _timestamp_pb2.Timestamp
    edges: SegmentEdges
    sampling: SamplingInfo
    stopping: Stopping
    faithfulness_cost: FaithfulnessCost
    report_url: str
    artifact_urls: _containers.ScalarMap[str, str]
    song_top_tags: _containers.RepeatedCompositeFieldContainer[TagProbability]
    num_components: int
    kernel_width: float
    stems: _containers.RepeatedCompositeFieldContainer[StemInfo]
    document_version: int
    def __init__(self, explanation_id: _Optional[str] = ..., audio: _Optional[_Union[AudioInfo, _Mapping]] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., separator: _Optional[_Union[SeparatorInfo, _Mapping]] = ..., prediction: _Optional[_Iterable[_Union[TagProbability, _Mapping]]] = ..., targets: _Optional[_Iterable[_Union[TargetExplanation, _Mapping]]] = ..., num_samples: _Optional[int] = ..., unique_samples: _Optional[int] = ..., exhaustive: bool = ..., seed: _Optional[int] = ..., segments: _Optional[int] = ..., top_k: _Optional[int] = ..., timings_s: _Optional[_Mapping[str, float]] = ..., warnings: _Optional[_Iterable[str]] = ..., manifest_url: _Optional[str] = ..., urls_expire_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., edges: _Optional[_Union[SegmentEdges, _Mapping]] = ..., sampling: _Optional[_Union[SamplingInfo, _Mapping]] = ..., stopping: _Optional[_Union[Stopping, _Mapping]] = ..., faithfulness_cost: _Optional[_Union[FaithfulnessCost, _Mapping]] = ..., report_url: _Optional[str] = ..., artifact_urls: _Optional[_Mapping[str, str]] = ..., song_top_tags: _Optional[_Iterable[_Union[TagProbability, _Mapping]]] = ..., num_components: _Optional[int] = ..., kernel_width: _Optional[float] = ..., stems: _Optional[_Iterable[_Union[StemInfo, _Mapping]]] = ..., document_version: _Optional[int] = ...) -> None: ...

class ExplainProgress(_message.Message):
    __slots__ = ("stage", "evaluated", "total")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    evaluated: int
    total: int
    def __init__(self, stage: _Optional[str] = ..., evaluated: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class InterimTarget(_message.Message):
    __slots__ = ("tag", "stability", "top")
    TAG_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    tag: str
    stability: float
    top: _containers.RepeatedCompositeFieldContainer[Component]
    def __init__(self, tag: _Optional[str] = ..., stability: _Optional[float] = ..., top: _Optional[_Iterable[_Union[Component, _Mapping]]] = ...) -> None: ...

class ExplainInterim(_message.Message):
    __slots__ = ("round", "masks", "targets")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    round: int
    masks: int
    targets: _containers.RepeatedCompositeFieldContainer[InterimTarget]
    def __init__(self, round: _Optional[int] = ..., masks: _Optional[int] = ..., targets: _Optional[_Iterable[_Union[InterimTarget, _Mapping]]] = ...) -> None: ...

class ExplainEvent(_message.Message):
    __slots__ = ("progress", "result", "interim")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    INTERIM_FIELD_NUMBER: _ClassVar[int]
    progress: ExplainProgress
    result: Explanation
    interim: ExplainInterim
    def __init__(self, progress: _Optional[_Union[ExplainProgress, _Mapping]] = ..., result: _Optional[_Union[Explanation, _Mapping]] = ..., interim: _Optional[_Union[ExplainInterim, _Mapping]] = ...) -> None: ...

class SubmitExplanationResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetExplanationRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelExplanationRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListExplanationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExplanationsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[ExplanationJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[ExplanationJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchExplanationRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchExplanationResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ExplanationJob
    def __init__(self, job: _Optional[_Union[ExplanationJob, _Mapping]] = ...) -> None: ...

class ExplanationJob(_message.Message):
    __slots__ = ("job_id", "state", "progress", "result", "error_code", "error_message", "created_at", "finished_at", "attempt", "expires_at", "cancel_requested", "worker")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[ExplanationJob.State]
        QUEUED: _ClassVar[ExplanationJob.State]
        RUNNING: _ClassVar[ExplanationJob.State]
        SUCCEEDED: _ClassVar[ExplanationJob.State]
        FAILED: _ClassVar[ExplanationJob.State]
        CANCELLED: _ClassVar[ExplanationJob.State]
    STATE_UNSPECIFIED: ExplanationJob.State
    QUEUED: ExplanationJob.State
    RUNNING: ExplanationJob.State
    SUCCEEDED: ExplanationJob.State
    FAILED: ExplanationJob.State
    CANCELLED: ExplanationJob.State
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: ExplanationJob.State
    progress: ExplainProgress
    result: Explanation
    error_code: str
    error_message: str
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    attempt: int
    expires_at: _timestamp_pb2.Timestamp
    cancel_requested: bool
    worker: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[ExplanationJob.State, str]] = ..., progress: _Optional[_Union[ExplainProgress, _Mapping]] = ..., result: _Optional[_Union[Explanation, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_requested: bool = ..., worker: _Optional[str] = ...) -> None: ...
