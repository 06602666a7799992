from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DpSettings(_message.Message):
    __slots__ = ("clipping_norm", "sensitivity", "epsilon", "delta")
    CLIPPING_NORM_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    clipping_norm: float
    sensitivity: float
    epsilon: float
    delta: float
    def __init__(self, clipping_norm: _Optional[float] = ..., sensitivity: _Optional[float] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("version", "job_id", "run_id", "node_id", "fab_sha256", "fab_size", "agreement", "dataset", "run_config_json", "secagg", "dp", "idle_limit")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FAB_SHA256_FIELD_NUMBER: _ClassVar[int]
    FAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    RUN_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    DP_FIELD_NUMBER: _ClassVar[int]
    IDLE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    version: int
    job_id: str
    run_id: int
    node_id: int
    fab_sha256: str
    fab_size: int
    agreement: str
    dataset: str
    run_config_json: str
    secagg: bool
    dp: DpSettings
    idle_limit: float
    def __init__(self, version: _Optional[int] = ..., job_id: _Optional[str] = ..., run_id: _Optional[int] = ..., node_id: _Optional[int] = ..., fab_sha256: _Optional[str] = ..., fab_size: _Optional[int] = ..., agreement: _Optional[str] = ..., dataset: _Optional[str] = ..., run_config_json: _Optional[str] = ..., secagg: _Optional[bool] = ..., dp: _Optional[_Union[DpSettings, _Mapping]] = ..., idle_limit: _Optional[float] = ...) -> None: ...

class JobStartPart(_message.Message):
    __slots__ = ("spec", "fab_chunk")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    FAB_CHUNK_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    fab_chunk: bytes
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., fab_chunk: _Optional[bytes] = ...) -> None: ...

class JobStarted(_message.Message):
    __slots__ = ("job_id", "columns", "rows")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: int
    def __init__(self, job_id: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., rows: _Optional[int] = ...) -> None: ...

class MessageChunk(_message.Message):
    __slots__ = ("job_id", "data", "last")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    data: bytes
    last: bool
    def __init__(self, job_id: _Optional[str] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class JobEnd(_message.Message):
    __slots__ = ("job_id", "outcome", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    outcome: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class JobEnded(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobAlive(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobKept(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
