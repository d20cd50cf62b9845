from pipemesh.v1 import optimizer_pb2 as _optimizer_pb2
from pipemesh.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reduction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REDUCTION_UNSPECIFIED: _ClassVar[Reduction]
    REDUCTION_PARAMETER_SERVER: _ClassVar[Reduction]
    REDUCTION_RING: _ClassVar[Reduction]
REDUCTION_UNSPECIFIED: Reduction
REDUCTION_PARAMETER_SERVER: Reduction
REDUCTION_RING: Reduction

class Consistency(_message.Message):
    __slots__ = ("sync", "bounded", "replicas")
    SYNC_FIELD_NUMBER: _ClassVar[int]
    ASYNC_FIELD_NUMBER: _ClassVar[int]
    BOUNDED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    sync: SyncConsistency
    bounded: BoundedConsistency
    replicas: int
    def __init__(self, sync: _Optional[_Union[SyncConsistency, _Mapping]] = ..., bounded: _Optional[_Union[BoundedConsistency, _Mapping]] = ..., replicas: _Optional[int] = ..., **kwargs) -> None: ...

class SyncConsistency(_message.Message):
    __slots__ = ("reduction",)
    REDUCTION_FIELD_NUMBER: _ClassVar[int]
    reduction: Reduction
    def __init__(self, reduction: _Optional[_Union[Reduction, str]] = ...) -> None: ...

class AsyncConsistency(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BoundedConsistency(_message.Message):
    __slots__ = ("max_staleness", "wait", "wait_timeout_seconds")
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_staleness: int
    wait: bool
    wait_timeout_seconds: int
    def __init__(self, max_staleness: _Optional[int] = ..., wait: _Optional[bool] = ..., wait_timeout_seconds: _Optional[int] = ...) -> None: ...

class Initializer(_message.Message):
    __slots__ = ("constant", "normal", "uniform", "glorot_uniform", "he_normal", "seed")
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    NORMAL_FIELD_NUMBER: _ClassVar[int]
    UNIFORM_FIELD_NUMBER: _ClassVar[int]
    GLOROT_UNIFORM_FIELD_NUMBER: _ClassVar[int]
    HE_NORMAL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    constant: float
    normal: RandomNormal
    uniform: RandomUniform
    glorot_uniform: GlorotUniform
    he_normal: HeNormal
    seed: int
    def __init__(self, constant: _Optional[float] = ..., normal: _Optional[_Union[RandomNormal, _Mapping]] = ..., uniform: _Optional[_Union[RandomUniform, _Mapping]] = ..., glorot_uniform: _Optional[_Union[GlorotUniform, _Mapping]] = ..., he_normal: _Optional[_Union[HeNormal, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class RandomNormal(_message.Message):
    __slots__ = ("mean", "stddev")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STDDEV_FIELD_NUMBER: _ClassVar[int]
    mean: float
    stddev: float
    def __init__(self, mean: _Optional[float] = ..., stddev: _Optional[float] = ...) -> None: ...

class RandomUniform(_message.Message):
    __slots__ = ("minimum", "maximum")
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    minimum: float
    maximum: float
    def __init__(self, minimum: _Optional[float] = ..., maximum: _Optional[float] = ...) -> None: ...

class GlorotUniform(_message.Message):
    __slots__ = ("fan_in", "fan_out")
    FAN_IN_FIELD_NUMBER: _ClassVar[int]
    FAN_OUT_FIELD_NUMBER: _ClassVar[int]
    fan_in: int
    fan_out: int
    def __init__(self, fan_in: _Optional[int] = ..., fan_out: _Optional[int] = ...) -> None: ...

class HeNormal(_message.Message):
    __slots__ = ("fan_in",)
    FAN_IN_FIELD_NUMBER: _ClassVar[int]
    fan_in: int
    def __init__(self, fan_in: _Optional[int] = ...) -> None: ...

class VariableDefinition(_message.Message):
    __slots__ = ("name", "shape", "dtype", "initializer", "initial_value", "optimizer", "initializer_offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    INITIALIZER_FIELD_NUMBER: _ClassVar[int]
    INITIAL_VALUE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    INITIALIZER_OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: _tensor_pb2.DType
    initializer: Initializer
    initial_value: _tensor_pb2.Tensor
    optimizer: _optimizer_pb2.OptimizerSpec
    initializer_offset: int
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., initializer: _Optional[_Union[Initializer, _Mapping]] = ..., initial_value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., optimizer: _Optional[_Union[_optimizer_pb2.OptimizerSpec, _Mapping]] = ..., initializer_offset: _Optional[int] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("job", "variables", "consistency", "user", "writer_keeps_values")
    JOB_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    WRITER_KEEPS_VALUES_FIELD_NUMBER: _ClassVar[int]
    job: str
    variables: _containers.RepeatedCompositeFieldContainer[VariableDefinition]
    consistency: Consistency
    user: str
    writer_keeps_values: bool
    def __init__(self, job: _Optional[str] = ..., variables: _Optional[_Iterable[_Union[VariableDefinition, _Mapping]]] = ..., consistency: _Optional[_Union[Consistency, _Mapping]] = ..., user: _Optional[str] = ..., writer_keeps_values: _Optional[bool] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("variables",)
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    variables: _containers.RepeatedCompositeFieldContainer[VariableVersion]
    def __init__(self, variables: _Optional[_Iterable[_Union[VariableVersion, _Mapping]]] = ...) -> None: ...

class VariableVersion(_message.Message):
    __slots__ = ("name", "version", "kept_by_writer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEPT_BY_WRITER_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    kept_by_writer: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., kept_by_writer: _Optional[bool] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("job", "variables", "include_slots", "incarnation")
    JOB_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    job: str
    variables: _containers.RepeatedCompositeFieldContainer[VariableVersion]
    include_slots: bool
    incarnation: int
    def __init__(self, job: _Optional[str] = ..., variables: _Optional[_Iterable[_Union[VariableVersion, _Mapping]]] = ..., include_slots: _Optional[bool] = ..., incarnation: _Optional[int] = ...) -> None: ...

class VariableValue(_message.Message):
    __slots__ = ("name", "version", "value", "slots")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    value: _tensor_pb2.Tensor
    slots: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., slots: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ...) -> None: ...

class PullResponse(_message.Message):
    __slots__ = ("variables",)
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    variables: _containers.RepeatedCompositeFieldContainer[VariableValue]
    def __init__(self, variables: _Optional[_Iterable[_Union[VariableValue, _Mapping]]] = ...) -> None: ...

class Gradient(_message.Message):
    __slots__ = ("name", "base_version", "gradient")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_version: int
    gradient: _tensor_pb2.Tensor
    def __init__(self, name: _Optional[str] = ..., base_version: _Optional[int] = ..., gradient: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("job", "client_id", "step", "gradients", "user", "replica")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    job: str
    client_id: str
    step: int
    gradients: _containers.RepeatedCompositeFieldContainer[Gradient]
    user: str
    replica: int
    def __init__(self, job: _Optional[str] = ..., client_id: _Optional[str] = ..., step: _Optional[int] = ..., gradients: _Optional[_Iterable[_Union[Gradient, _Mapping]]] = ..., user: _Optional[str] = ..., replica: _Optional[int] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("variables",)
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    variables: _containers.RepeatedCompositeFieldContainer[VariableVersion]
    def __init__(self, variables: _Optional[_Iterable[_Union[VariableVersion, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("variables", "bytes", "pushes_applied", "pushes_refused_stale", "pushes_refused_non_finite", "pulls", "checkpoint_age_seconds", "pushes_duplicate", "max_version", "max_staleness", "mean_staleness", "checkpoints_enabled", "memory_budget_bytes", "memory_in_use_bytes", "memory", "pushes_waiting", "max_replica_lead", "pushes_waited", "incarnation")
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PUSHES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    PUSHES_REFUSED_STALE_FIELD_NUMBER: _ClassVar[int]
    PUSHES_REFUSED_NON_FINITE_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PUSHES_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    MEAN_STALENESS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_IN_USE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    PUSHES_WAITING_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICA_LEAD_FIELD_NUMBER: _ClassVar[int]
    PUSHES_WAITED_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    variables: int
    bytes: int
    pushes_applied: int
    pushes_refused_stale: int
    pushes_refused_non_finite: int
    pulls: int
    checkpoint_age_seconds: float
    pushes_duplicate: int
    max_version: int
    max_staleness: int
    mean_staleness: float
    checkpoints_enabled: bool
    memory_budget_bytes: int
    memory_in_use_bytes: int
    memory: ProcessMemory
    pushes_waiting: int
    max_replica_lead: int
    pushes_waited: int
    incarnation: int
    def __init__(self, variables: _Optional[int] = ..., bytes: _Optional[int] = ..., pushes_applied: _Optional[int] = ..., pushes_refused_stale: _Optional[int] = ..., pushes_refused_non_finite: _Optional[int] = ..., pulls: _Optional[int] = ..., checkpoint_age_seconds: _Optional[float] = ..., pushes_duplicate: _Optional[int] = ..., max_version: _Optional[int] = ..., max_staleness: _Optional[int] = ..., mean_staleness: _Optional[float] = ..., checkpoints_enabled: _Optional[bool] = ..., memory_budget_bytes: _Optional[int] = ..., memory_in_use_bytes: _Optional[int] = ..., memory: _Optional[_Union[ProcessMemory, _Mapping]] = ..., pushes_waiting: _Optional[int] = ..., max_replica_lead: _Optional[int] = ..., pushes_waited: _Optional[int] = ..., incarnation: _Optional[int] = ...) -> None: ...

class AssignRequest(_message.Message):
    __slots__ = ("job", "user", "variables")
    JOB_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    job: str
    user: str
    variables: _containers.RepeatedCompositeFieldContainer[VariableState]
    def __init__(self, job: _Optional[str] = ..., user: _Optional[str] = ..., variables: _Optional[_Iterable[_Union[VariableState, _Mapping]]] = ...) -> None: ...

class VariableState(_message.Message):
    __slots__ = ("name", "version", "value", "slots")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    value: _tensor_pb2.Tensor
    slots: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., slots: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ...) -> None: ...

class AssignResponse(_message.Message):
    __slots__ = ("variables",)
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    variables: _containers.RepeatedCompositeFieldContainer[VariableVersion]
    def __init__(self, variables: _Optional[_Iterable[_Union[VariableVersion, _Mapping]]] = ...) -> None: ...

class ProcessMemory(_message.Message):
    __slots__ = ("resident_bytes", "peak_resident_bytes", "job_bytes")
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    JOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    resident_bytes: int
    peak_resident_bytes: int
    job_bytes: int
    def __init__(self, resident_bytes: _Optional[int] = ..., peak_resident_bytes: _Optional[int] = ..., job_bytes: _Optional[int] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ("job", "step", "incarnation", "exact_step")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    EXACT_STEP_FIELD_NUMBER: _ClassVar[int]
    job: str
    step: int
    incarnation: int
    exact_step: bool
    def __init__(self, job: _Optional[str] = ..., step: _Optional[int] = ..., incarnation: _Optional[int] = ..., exact_step: _Optional[bool] = ...) -> None: ...

class CheckpointResponse(_message.Message):
    __slots__ = ("path", "updates")
    PATH_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    path: str
    updates: int
    def __init__(self, path: _Optional[str] = ..., updates: _Optional[int] = ...) -> None: ...

class DropJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class RestoreJobRequest(_message.Message):
    __slots__ = ("job", "step", "from_job", "replicas")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    FROM_JOB_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    job: str
    step: int
    from_job: str
    replicas: int
    def __init__(self, job: _Optional[str] = ..., step: _Optional[int] = ..., from_job: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class RestoreJobResponse(_message.Message):
    __slots__ = ("variables", "bytes")
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    variables: int
    bytes: int
    def __init__(self, variables: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class DropJobResponse(_message.Message):
    __slots__ = ("variables", "bytes")
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    variables: int
    bytes: int
    def __init__(self, variables: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...
