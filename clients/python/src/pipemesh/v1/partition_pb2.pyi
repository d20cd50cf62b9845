from pipemesh.v1 import model_pb2 as _model_pb2
from pipemesh.v1 import optimizer_pb2 as _optimizer_pb2
from pipemesh.v1 import parameter_server_pb2 as _parameter_server_pb2
from pipemesh.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MicroBatchKey(_message.Message):
    __slots__ = ("job", "step", "micro_batch")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    job: str
    step: int
    micro_batch: int
    def __init__(self, job: _Optional[str] = ..., step: _Optional[int] = ..., micro_batch: _Optional[int] = ...) -> None: ...

class TensorReference(_message.Message):
    __slots__ = ("endpoint", "key")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    key: str
    def __init__(self, endpoint: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class TensorSource(_message.Message):
    __slots__ = ("inline", "reference")
    INLINE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    inline: _tensor_pb2.Tensor
    reference: TensorReference
    def __init__(self, inline: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., reference: _Optional[_Union[TensorReference, _Mapping]] = ...) -> None: ...

class LoadStageRequest(_message.Message):
    __slots__ = ("job", "model", "stage", "first_layer", "first_layer_inputs", "end_layer", "end_layer_inputs", "parameter_servers", "recompute_activations", "max_kept_bytes", "blas_threads", "replica", "consistency", "optimizer", "peers", "overlapping_steps", "transfer_dtype", "ring")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_INPUTS_FIELD_NUMBER: _ClassVar[int]
    END_LAYER_FIELD_NUMBER: _ClassVar[int]
    END_LAYER_INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SERVERS_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTE_ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_KEPT_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLAS_THREADS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    OVERLAPPING_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_DTYPE_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    job: str
    model: _model_pb2.ModelSpec
    stage: int
    first_layer: int
    first_layer_inputs: int
    end_layer: int
    end_layer_inputs: int
    parameter_servers: _containers.RepeatedScalarFieldContainer[str]
    recompute_activations: bool
    max_kept_bytes: int
    blas_threads: int
    replica: int
    consistency: _parameter_server_pb2.Consistency
    optimizer: _optimizer_pb2.OptimizerSpec
    peers: _containers.RepeatedScalarFieldContainer[str]
    overlapping_steps: bool
    transfer_dtype: _tensor_pb2.DType
    ring: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job: _Optional[str] = ..., model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., stage: _Optional[int] = ..., first_layer: _Optional[int] = ..., first_layer_inputs: _Optional[int] = ..., end_layer: _Optional[int] = ..., end_layer_inputs: _Optional[int] = ..., parameter_servers: _Optional[_Iterable[str]] = ..., recompute_activations: _Optional[bool] = ..., max_kept_bytes: _Optional[int] = ..., blas_threads: _Optional[int] = ..., replica: _Optional[int] = ..., consistency: _Optional[_Union[_parameter_server_pb2.Consistency, _Mapping]] = ..., optimizer: _Optional[_Union[_optimizer_pb2.OptimizerSpec, _Mapping]] = ..., peers: _Optional[_Iterable[str]] = ..., overlapping_steps: _Optional[bool] = ..., transfer_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., ring: _Optional[_Iterable[str]] = ...) -> None: ...

class LoadStageResponse(_message.Message):
    __slots__ = ("parameters", "input_shape", "output_shape", "data_plane_endpoint")
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_PLANE_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    parameters: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    data_plane_endpoint: str
    def __init__(self, parameters: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., output_shape: _Optional[_Iterable[int]] = ..., data_plane_endpoint: _Optional[str] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("key", "input", "targets", "batch_size", "schedule_position", "weights_after_step")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_POSITION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_AFTER_STEP_FIELD_NUMBER: _ClassVar[int]
    key: MicroBatchKey
    input: TensorSource
    targets: _tensor_pb2.Tensor
    batch_size: int
    schedule_position: int
    weights_after_step: int
    def __init__(self, key: _Optional[_Union[MicroBatchKey, _Mapping]] = ..., input: _Optional[_Union[TensorSource, _Mapping]] = ..., targets: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., batch_size: _Optional[int] = ..., schedule_position: _Optional[int] = ..., weights_after_step: _Optional[int] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("output", "loss", "output_value", "correct", "timing")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_VALUE_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    output: TensorReference
    loss: float
    output_value: _tensor_pb2.Tensor
    correct: int
    timing: CallTiming
    def __init__(self, output: _Optional[_Union[TensorReference, _Mapping]] = ..., loss: _Optional[float] = ..., output_value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., correct: _Optional[int] = ..., timing: _Optional[_Union[CallTiming, _Mapping]] = ...) -> None: ...

class BackwardRequest(_message.Message):
    __slots__ = ("key", "output_gradient", "schedule_position", "weights_later")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_POSITION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_LATER_FIELD_NUMBER: _ClassVar[int]
    key: MicroBatchKey
    output_gradient: TensorSource
    schedule_position: int
    weights_later: bool
    def __init__(self, key: _Optional[_Union[MicroBatchKey, _Mapping]] = ..., output_gradient: _Optional[_Union[TensorSource, _Mapping]] = ..., schedule_position: _Optional[int] = ..., weights_later: _Optional[bool] = ...) -> None: ...

class BackwardResponse(_message.Message):
    __slots__ = ("input_gradient", "timing")
    INPUT_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    input_gradient: TensorReference
    timing: CallTiming
    def __init__(self, input_gradient: _Optional[_Union[TensorReference, _Mapping]] = ..., timing: _Optional[_Union[CallTiming, _Mapping]] = ...) -> None: ...

class BackwardWeightsRequest(_message.Message):
    __slots__ = ("key", "schedule_position")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_POSITION_FIELD_NUMBER: _ClassVar[int]
    key: MicroBatchKey
    schedule_position: int
    def __init__(self, key: _Optional[_Union[MicroBatchKey, _Mapping]] = ..., schedule_position: _Optional[int] = ...) -> None: ...

class BackwardWeightsResponse(_message.Message):
    __slots__ = ("timing",)
    TIMING_FIELD_NUMBER: _ClassVar[int]
    timing: CallTiming
    def __init__(self, timing: _Optional[_Union[CallTiming, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("job", "step", "flush", "gradient_scale")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_SCALE_FIELD_NUMBER: _ClassVar[int]
    job: str
    step: int
    flush: bool
    gradient_scale: float
    def __init__(self, job: _Optional[str] = ..., step: _Optional[int] = ..., flush: _Optional[bool] = ..., gradient_scale: _Optional[float] = ...) -> None: ...

class GradientNormRequest(_message.Message):
    __slots__ = ("job", "step")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    job: str
    step: int
    def __init__(self, job: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class GradientNormResponse(_message.Message):
    __slots__ = ("sum_of_squares",)
    SUM_OF_SQUARES_FIELD_NUMBER: _ClassVar[int]
    sum_of_squares: float
    def __init__(self, sum_of_squares: _Optional[float] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("version", "penalty", "memory", "timing")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PENALTY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    version: int
    penalty: float
    memory: _parameter_server_pb2.ProcessMemory
    timing: CallTiming
    def __init__(self, version: _Optional[int] = ..., penalty: _Optional[float] = ..., memory: _Optional[_Union[_parameter_server_pb2.ProcessMemory, _Mapping]] = ..., timing: _Optional[_Union[CallTiming, _Mapping]] = ...) -> None: ...

class CallTiming(_message.Message):
    __slots__ = ("received_unix_nanos", "answered_unix_nanos", "input_requested_unix_nanos", "input_received_unix_nanos", "compute_started_unix_nanos", "compute_ended_unix_nanos", "output_offered_unix_nanos")
    RECEIVED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    INPUT_REQUESTED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    INPUT_RECEIVED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_STARTED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_ENDED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_OFFERED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    received_unix_nanos: int
    answered_unix_nanos: int
    input_requested_unix_nanos: int
    input_received_unix_nanos: int
    compute_started_unix_nanos: int
    compute_ended_unix_nanos: int
    output_offered_unix_nanos: int
    def __init__(self, received_unix_nanos: _Optional[int] = ..., answered_unix_nanos: _Optional[int] = ..., input_requested_unix_nanos: _Optional[int] = ..., input_received_unix_nanos: _Optional[int] = ..., compute_started_unix_nanos: _Optional[int] = ..., compute_ended_unix_nanos: _Optional[int] = ..., output_offered_unix_nanos: _Optional[int] = ...) -> None: ...

class FetchTensorRequest(_message.Message):
    __slots__ = ("key", "release", "wait", "encoding", "shared_buffer")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SHARED_BUFFER_FIELD_NUMBER: _ClassVar[int]
    key: str
    release: bool
    wait: bool
    encoding: _tensor_pb2.DType
    shared_buffer: SharedBuffer
    def __init__(self, key: _Optional[str] = ..., release: _Optional[bool] = ..., wait: _Optional[bool] = ..., encoding: _Optional[_Union[_tensor_pb2.DType, str]] = ..., shared_buffer: _Optional[_Union[SharedBuffer, _Mapping]] = ...) -> None: ...

class SharedBuffer(_message.Message):
    __slots__ = ("host", "pid", "fd", "token")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    host: str
    pid: int
    fd: int
    token: bytes
    def __init__(self, host: _Optional[str] = ..., pid: _Optional[int] = ..., fd: _Optional[int] = ..., token: _Optional[bytes] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("dtype", "shape", "data", "scale_exponent", "in_shared_buffer")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALE_EXPONENT_FIELD_NUMBER: _ClassVar[int]
    IN_SHARED_BUFFER_FIELD_NUMBER: _ClassVar[int]
    dtype: _tensor_pb2.DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    scale_exponent: int
    in_shared_buffer: bool
    def __init__(self, dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., scale_exponent: _Optional[int] = ..., in_shared_buffer: _Optional[bool] = ...) -> None: ...

class UnloadStageRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class UnloadStageResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TimeLayersRequest(_message.Message):
    __slots__ = ("model", "rows", "repeats")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelSpec
    rows: int
    repeats: int
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., rows: _Optional[int] = ..., repeats: _Optional[int] = ...) -> None: ...

class TimeLayersResponse(_message.Message):
    __slots__ = ("layers",)
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[_model_pb2.LayerTime]
    def __init__(self, layers: _Optional[_Iterable[_Union[_model_pb2.LayerTime, _Mapping]]] = ...) -> None: ...
