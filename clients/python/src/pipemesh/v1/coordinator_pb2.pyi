from pipemesh.v1 import model_pb2 as _model_pb2
from pipemesh.v1 import optimizer_pb2 as _optimizer_pb2
from pipemesh.v1 import parameter_server_pb2 as _parameter_server_pb2
from pipemesh.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScheduleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULE_UNSPECIFIED: _ClassVar[ScheduleKind]
    SCHEDULE_GPIPE: _ClassVar[ScheduleKind]
    SCHEDULE_ONE_F_ONE_B: _ClassVar[ScheduleKind]
    SCHEDULE_ZERO_BUBBLE_H1: _ClassVar[ScheduleKind]
    SCHEDULE_PIPEDREAM_2BW: _ClassVar[ScheduleKind]

class NormalizationMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMALIZATION_METHOD_NONE: _ClassVar[NormalizationMethod]
    NORMALIZATION_METHOD_STANDARDIZE: _ClassVar[NormalizationMethod]
    NORMALIZATION_METHOD_MIN_MAX: _ClassVar[NormalizationMethod]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_INTERRUPTED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RESTARTING: _ClassVar[JobState]

class MemberState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMBER_STATE_UNSPECIFIED: _ClassVar[MemberState]
    MEMBER_STATE_FREE: _ClassVar[MemberState]
    MEMBER_STATE_BUSY: _ClassVar[MemberState]
    MEMBER_STATE_SILENT: _ClassVar[MemberState]
    MEMBER_STATE_LEAVING: _ClassVar[MemberState]
SCHEDULE_UNSPECIFIED: ScheduleKind
SCHEDULE_GPIPE: ScheduleKind
SCHEDULE_ONE_F_ONE_B: ScheduleKind
SCHEDULE_ZERO_BUBBLE_H1: ScheduleKind
SCHEDULE_PIPEDREAM_2BW: ScheduleKind
NORMALIZATION_METHOD_NONE: NormalizationMethod
NORMALIZATION_METHOD_STANDARDIZE: NormalizationMethod
NORMALIZATION_METHOD_MIN_MAX: NormalizationMethod
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_INTERRUPTED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RESTARTING: JobState
MEMBER_STATE_UNSPECIFIED: MemberState
MEMBER_STATE_FREE: MemberState
MEMBER_STATE_BUSY: MemberState
MEMBER_STATE_SILENT: MemberState
MEMBER_STATE_LEAVING: MemberState

class PlanRequest(_message.Message):
    __slots__ = ("model", "stages", "split_points", "split_point_inputs", "optimizer", "micro_batch_rows", "micro_batches", "estimate", "schedule", "whole_layers", "batch_size", "consistency")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINTS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_INPUTS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WHOLE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelSpec
    stages: int
    split_points: _containers.RepeatedScalarFieldContainer[int]
    split_point_inputs: _containers.RepeatedScalarFieldContainer[int]
    optimizer: _optimizer_pb2.OptimizerSpec
    micro_batch_rows: int
    micro_batches: int
    estimate: bool
    schedule: ScheduleKind
    whole_layers: bool
    batch_size: int
    consistency: _parameter_server_pb2.Consistency
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., stages: _Optional[int] = ..., split_points: _Optional[_Iterable[int]] = ..., split_point_inputs: _Optional[_Iterable[int]] = ..., optimizer: _Optional[_Union[_optimizer_pb2.OptimizerSpec, _Mapping]] = ..., micro_batch_rows: _Optional[int] = ..., micro_batches: _Optional[int] = ..., estimate: _Optional[bool] = ..., schedule: _Optional[_Union[ScheduleKind, str]] = ..., whole_layers: _Optional[bool] = ..., batch_size: _Optional[int] = ..., consistency: _Optional[_Union[_parameter_server_pb2.Consistency, _Mapping]] = ...) -> None: ...

class PipelineChoice(_message.Message):
    __slots__ = ("micro_batches", "micro_batch_rows", "schedule", "predicted_step_seconds", "predicted_examples_per_second")
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_EXAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    micro_batches: int
    micro_batch_rows: int
    schedule: ScheduleKind
    predicted_step_seconds: float
    predicted_examples_per_second: float
    def __init__(self, micro_batches: _Optional[int] = ..., micro_batch_rows: _Optional[int] = ..., schedule: _Optional[_Union[ScheduleKind, str]] = ..., predicted_step_seconds: _Optional[float] = ..., predicted_examples_per_second: _Optional[float] = ...) -> None: ...

class StagePlan(_message.Message):
    __slots__ = ("stage", "first_layer", "first_layer_inputs", "end_layer", "end_layer_inputs", "parameters", "estimated_flops", "parameter_bytes", "memory_budget_bytes", "forward_seconds", "backward_seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_INPUTS_FIELD_NUMBER: _ClassVar[int]
    END_LAYER_FIELD_NUMBER: _ClassVar[int]
    END_LAYER_INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FLOPS_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORWARD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: int
    first_layer: int
    first_layer_inputs: int
    end_layer: int
    end_layer_inputs: int
    parameters: int
    estimated_flops: float
    parameter_bytes: int
    memory_budget_bytes: int
    forward_seconds: float
    backward_seconds: float
    def __init__(self, stage: _Optional[int] = ..., first_layer: _Optional[int] = ..., first_layer_inputs: _Optional[int] = ..., end_layer: _Optional[int] = ..., end_layer_inputs: _Optional[int] = ..., parameters: _Optional[int] = ..., estimated_flops: _Optional[float] = ..., parameter_bytes: _Optional[int] = ..., memory_budget_bytes: _Optional[int] = ..., forward_seconds: _Optional[float] = ..., backward_seconds: _Optional[float] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("stages", "imbalance", "measured_on", "measured_rows", "predicted_step_seconds", "layer_times", "choices", "calibrated_by_job", "calibrated_rows")
    STAGES_FIELD_NUMBER: _ClassVar[int]
    IMBALANCE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_ON_FIELD_NUMBER: _ClassVar[int]
    MEASURED_ROWS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAYER_TIMES_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_BY_JOB_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    stages: _containers.RepeatedCompositeFieldContainer[StagePlan]
    imbalance: float
    measured_on: str
    measured_rows: int
    predicted_step_seconds: float
    layer_times: _containers.RepeatedCompositeFieldContainer[_model_pb2.LayerTime]
    choices: _containers.RepeatedCompositeFieldContainer[PipelineChoice]
    calibrated_by_job: str
    calibrated_rows: int
    def __init__(self, stages: _Optional[_Iterable[_Union[StagePlan, _Mapping]]] = ..., imbalance: _Optional[float] = ..., measured_on: _Optional[str] = ..., measured_rows: _Optional[int] = ..., predicted_step_seconds: _Optional[float] = ..., layer_times: _Optional[_Iterable[_Union[_model_pb2.LayerTime, _Mapping]]] = ..., choices: _Optional[_Iterable[_Union[PipelineChoice, _Mapping]]] = ..., calibrated_by_job: _Optional[str] = ..., calibrated_rows: _Optional[int] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("dataset", "inline")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    dataset: DatasetReference
    inline: InlineData
    def __init__(self, dataset: _Optional[_Union[DatasetReference, _Mapping]] = ..., inline: _Optional[_Union[InlineData, _Mapping]] = ...) -> None: ...

class DatasetReference(_message.Message):
    __slots__ = ("uri", "label_column", "regression", "inputs_key", "labels_key", "sequence_length")
    URI_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_KEY_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    uri: str
    label_column: str
    regression: bool
    inputs_key: str
    labels_key: str
    sequence_length: int
    def __init__(self, uri: _Optional[str] = ..., label_column: _Optional[str] = ..., regression: _Optional[bool] = ..., inputs_key: _Optional[str] = ..., labels_key: _Optional[str] = ..., sequence_length: _Optional[int] = ...) -> None: ...

class InlineData(_message.Message):
    __slots__ = ("inputs", "targets")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    inputs: _tensor_pb2.Tensor
    targets: _tensor_pb2.Tensor
    def __init__(self, inputs: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., targets: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class CheckpointPolicy(_message.Message):
    __slots__ = ("every_steps", "at_end")
    EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    AT_END_FIELD_NUMBER: _ClassVar[int]
    every_steps: int
    at_end: bool
    def __init__(self, every_steps: _Optional[int] = ..., at_end: _Optional[bool] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("job", "model", "data", "epochs", "batch_size", "micro_batches", "schedule", "optimizer", "consistency", "checkpoint", "validation_fraction", "split_points", "split_point_inputs", "shuffle_seed", "recompute_activations", "max_kept_bytes", "replace", "max_restarts", "stages", "replicas", "max_replicas", "normalization", "early_stopping", "fold", "discard_model", "whole_layers", "transfer_dtype")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINTS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_INPUTS_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_SEED_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTE_ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_KEPT_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_FIELD_NUMBER: _ClassVar[int]
    FOLD_FIELD_NUMBER: _ClassVar[int]
    DISCARD_MODEL_FIELD_NUMBER: _ClassVar[int]
    WHOLE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_DTYPE_FIELD_NUMBER: _ClassVar[int]
    job: str
    model: _model_pb2.ModelSpec
    data: DataSource
    epochs: int
    batch_size: int
    micro_batches: int
    schedule: ScheduleKind
    optimizer: _optimizer_pb2.OptimizerSpec
    consistency: _parameter_server_pb2.Consistency
    checkpoint: CheckpointPolicy
    validation_fraction: float
    split_points: _containers.RepeatedScalarFieldContainer[int]
    split_point_inputs: _containers.RepeatedScalarFieldContainer[int]
    shuffle_seed: int
    recompute_activations: bool
    max_kept_bytes: int
    replace: bool
    max_restarts: int
    stages: int
    replicas: int
    max_replicas: int
    normalization: InputNormalization
    early_stopping: EarlyStopping
    fold: CrossValidationFold
    discard_model: bool
    whole_layers: bool
    transfer_dtype: _tensor_pb2.DType
    def __init__(self, job: _Optional[str] = ..., model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., data: _Optional[_Union[DataSource, _Mapping]] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., micro_batches: _Optional[int] = ..., schedule: _Optional[_Union[ScheduleKind, str]] = ..., optimizer: _Optional[_Union[_optimizer_pb2.OptimizerSpec, _Mapping]] = ..., consistency: _Optional[_Union[_parameter_server_pb2.Consistency, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointPolicy, _Mapping]] = ..., validation_fraction: _Optional[float] = ..., split_points: _Optional[_Iterable[int]] = ..., split_point_inputs: _Optional[_Iterable[int]] = ..., shuffle_seed: _Optional[int] = ..., recompute_activations: _Optional[bool] = ..., max_kept_bytes: _Optional[int] = ..., replace: _Optional[bool] = ..., max_restarts: _Optional[int] = ..., stages: _Optional[int] = ..., replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., normalization: _Optional[_Union[InputNormalization, _Mapping]] = ..., early_stopping: _Optional[_Union[EarlyStopping, _Mapping]] = ..., fold: _Optional[_Union[CrossValidationFold, _Mapping]] = ..., discard_model: _Optional[bool] = ..., whole_layers: _Optional[bool] = ..., transfer_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ...) -> None: ...

class CrossValidationFold(_message.Message):
    __slots__ = ("folds", "fold")
    FOLDS_FIELD_NUMBER: _ClassVar[int]
    FOLD_FIELD_NUMBER: _ClassVar[int]
    folds: int
    fold: int
    def __init__(self, folds: _Optional[int] = ..., fold: _Optional[int] = ...) -> None: ...

class EarlyStopping(_message.Message):
    __slots__ = ("patience", "min_delta")
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_DELTA_FIELD_NUMBER: _ClassVar[int]
    patience: int
    min_delta: float
    def __init__(self, patience: _Optional[int] = ..., min_delta: _Optional[float] = ...) -> None: ...

class InputNormalization(_message.Message):
    __slots__ = ("method", "offset", "scale")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    method: NormalizationMethod
    offset: _containers.RepeatedScalarFieldContainer[float]
    scale: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, method: _Optional[_Union[NormalizationMethod, str]] = ..., offset: _Optional[_Iterable[float]] = ..., scale: _Optional[_Iterable[float]] = ...) -> None: ...

class StageBusy(_message.Message):
    __slots__ = ("stage", "replica", "busy_seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    BUSY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: int
    replica: int
    busy_seconds: float
    def __init__(self, stage: _Optional[int] = ..., replica: _Optional[int] = ..., busy_seconds: _Optional[float] = ...) -> None: ...

class TrainProgress(_message.Message):
    __slots__ = ("job", "epoch", "step", "total_steps", "loss", "samples_per_second", "stages", "validation_loss", "validation_accuracy", "done", "trace_json", "accuracy", "checkpoints", "evaluated", "queue_position", "stopped_early_epoch", "validation_r2")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TRACE_JSON_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_R2_FIELD_NUMBER: _ClassVar[int]
    job: str
    epoch: int
    step: int
    total_steps: int
    loss: float
    samples_per_second: float
    stages: _containers.RepeatedCompositeFieldContainer[StageBusy]
    validation_loss: float
    validation_accuracy: float
    done: bool
    trace_json: str
    accuracy: float
    checkpoints: _containers.RepeatedScalarFieldContainer[str]
    evaluated: bool
    queue_position: int
    stopped_early_epoch: int
    validation_r2: float
    def __init__(self, job: _Optional[str] = ..., epoch: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., samples_per_second: _Optional[float] = ..., stages: _Optional[_Iterable[_Union[StageBusy, _Mapping]]] = ..., validation_loss: _Optional[float] = ..., validation_accuracy: _Optional[float] = ..., done: _Optional[bool] = ..., trace_json: _Optional[str] = ..., accuracy: _Optional[float] = ..., checkpoints: _Optional[_Iterable[str]] = ..., evaluated: _Optional[bool] = ..., queue_position: _Optional[int] = ..., stopped_early_epoch: _Optional[int] = ..., validation_r2: _Optional[float] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("job", "model", "inputs", "micro_batches", "trace")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    job: str
    model: str
    inputs: _tensor_pb2.Tensor
    micro_batches: int
    trace: bool
    def __init__(self, job: _Optional[str] = ..., model: _Optional[str] = ..., inputs: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., micro_batches: _Optional[int] = ..., trace: _Optional[bool] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("outputs", "trace_json")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TRACE_JSON_FIELD_NUMBER: _ClassVar[int]
    outputs: _tensor_pb2.Tensor
    trace_json: str
    def __init__(self, outputs: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., trace_json: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job", "state", "step", "total_steps", "loss", "error", "owner", "memory", "created_unix_seconds", "ended_unix_seconds", "options", "epochs", "model", "checkpoint_step", "resumes", "faults", "partitions", "started_unix_seconds", "checkpoint_epoch_loss_sum", "checkpoint_epoch_steps", "running_replicas", "steps", "trace_json", "stopped_early_epoch")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENDED_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    RESUMES_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EPOCH_LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EPOCH_STEPS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRACE_JSON_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    job: str
    state: JobState
    step: int
    total_steps: int
    loss: float
    error: str
    owner: str
    memory: _containers.RepeatedCompositeFieldContainer[MemberMemory]
    created_unix_seconds: float
    ended_unix_seconds: float
    options: TrainRequest
    epochs: _containers.RepeatedCompositeFieldContainer[EpochMetrics]
    model: str
    checkpoint_step: int
    resumes: int
    faults: _containers.RepeatedCompositeFieldContainer[JobFault]
    partitions: _containers.RepeatedScalarFieldContainer[str]
    started_unix_seconds: float
    checkpoint_epoch_loss_sum: float
    checkpoint_epoch_steps: int
    running_replicas: int
    steps: _containers.RepeatedCompositeFieldContainer[StepMetrics]
    trace_json: str
    stopped_early_epoch: int
    def __init__(self, job: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., error: _Optional[str] = ..., owner: _Optional[str] = ..., memory: _Optional[_Iterable[_Union[MemberMemory, _Mapping]]] = ..., created_unix_seconds: _Optional[float] = ..., ended_unix_seconds: _Optional[float] = ..., options: _Optional[_Union[TrainRequest, _Mapping]] = ..., epochs: _Optional[_Iterable[_Union[EpochMetrics, _Mapping]]] = ..., model: _Optional[str] = ..., checkpoint_step: _Optional[int] = ..., resumes: _Optional[int] = ..., faults: _Optional[_Iterable[_Union[JobFault, _Mapping]]] = ..., partitions: _Optional[_Iterable[str]] = ..., started_unix_seconds: _Optional[float] = ..., checkpoint_epoch_loss_sum: _Optional[float] = ..., checkpoint_epoch_steps: _Optional[int] = ..., running_replicas: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[StepMetrics, _Mapping]]] = ..., trace_json: _Optional[str] = ..., stopped_early_epoch: _Optional[int] = ...) -> None: ...

class StepMetrics(_message.Message):
    __slots__ = ("step", "epoch", "loss", "accuracy", "samples_per_second", "unix_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    epoch: int
    loss: float
    accuracy: float
    samples_per_second: float
    unix_seconds: float
    def __init__(self, step: _Optional[int] = ..., epoch: _Optional[int] = ..., loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., samples_per_second: _Optional[float] = ..., unix_seconds: _Optional[float] = ...) -> None: ...

class JobFault(_message.Message):
    __slots__ = ("step", "state", "error", "unix_seconds", "steps_redone", "recovery_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STEPS_REDONE_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    state: JobState
    error: str
    unix_seconds: float
    steps_redone: int
    recovery_seconds: float
    def __init__(self, step: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., error: _Optional[str] = ..., unix_seconds: _Optional[float] = ..., steps_redone: _Optional[int] = ..., recovery_seconds: _Optional[float] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("epoch", "step", "loss", "validation_loss", "validation_accuracy", "validation_r2")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_R2_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    step: int
    loss: float
    validation_loss: float
    validation_accuracy: float
    validation_r2: float
    def __init__(self, epoch: _Optional[int] = ..., step: _Optional[int] = ..., loss: _Optional[float] = ..., validation_loss: _Optional[float] = ..., validation_accuracy: _Optional[float] = ..., validation_r2: _Optional[float] = ...) -> None: ...

class MemberMemory(_message.Message):
    __slots__ = ("member", "endpoint", "memory")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    member: str
    endpoint: str
    memory: _parameter_server_pb2.ProcessMemory
    def __init__(self, member: _Optional[str] = ..., endpoint: _Optional[str] = ..., memory: _Optional[_Union[_parameter_server_pb2.ProcessMemory, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job", "history")
    JOB_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    job: str
    history: bool
    def __init__(self, job: _Optional[str] = ..., history: _Optional[bool] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class FollowJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("parameter_server_bytes_freed",)
    PARAMETER_SERVER_BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    parameter_server_bytes_freed: int
    def __init__(self, parameter_server_bytes_freed: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "version", "owner", "job", "spec", "split_points", "split_point_inputs", "created_unix_seconds", "parameters", "weights_bytes", "loss", "validation_loss", "validation_accuracy", "normalization")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINTS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_INPUTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    owner: str
    job: str
    spec: _model_pb2.ModelSpec
    split_points: _containers.RepeatedScalarFieldContainer[int]
    split_point_inputs: _containers.RepeatedScalarFieldContainer[int]
    created_unix_seconds: float
    parameters: int
    weights_bytes: int
    loss: float
    validation_loss: float
    validation_accuracy: float
    normalization: InputNormalization
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., owner: _Optional[str] = ..., job: _Optional[str] = ..., spec: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., split_points: _Optional[_Iterable[int]] = ..., split_point_inputs: _Optional[_Iterable[int]] = ..., created_unix_seconds: _Optional[float] = ..., parameters: _Optional[int] = ..., weights_bytes: _Optional[int] = ..., loss: _Optional[float] = ..., validation_loss: _Optional[float] = ..., validation_accuracy: _Optional[float] = ..., normalization: _Optional[_Union[InputNormalization, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class ExportModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("model", "data")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    model: Model
    data: bytes
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImportModelRequest(_message.Message):
    __slots__ = ("name", "spec", "uri", "split_points", "split_point_inputs", "normalization")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINTS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_INPUTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: _model_pb2.ModelSpec
    uri: str
    split_points: _containers.RepeatedScalarFieldContainer[int]
    split_point_inputs: _containers.RepeatedScalarFieldContainer[int]
    normalization: InputNormalization
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., uri: _Optional[str] = ..., split_points: _Optional[_Iterable[int]] = ..., split_point_inputs: _Optional[_Iterable[int]] = ..., normalization: _Optional[_Union[InputNormalization, _Mapping]] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("model", "size_bytes", "data")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    model: ImportModelRequest
    size_bytes: int
    data: bytes
    def __init__(self, model: _Optional[_Union[ImportModelRequest, _Mapping]] = ..., size_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class JoinPoolRequest(_message.Message):
    __slots__ = ("endpoint", "parameter_server", "incarnation")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SERVER_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    parameter_server: bool
    incarnation: int
    def __init__(self, endpoint: _Optional[str] = ..., parameter_server: _Optional[bool] = ..., incarnation: _Optional[int] = ...) -> None: ...

class JoinPoolResponse(_message.Message):
    __slots__ = ("lease_seconds",)
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_seconds: float
    def __init__(self, lease_seconds: _Optional[float] = ...) -> None: ...

class LeavePoolRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class LeavePoolResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Pool(_message.Message):
    __slots__ = ("members", "parameter_servers")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SERVERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[PoolMember]
    parameter_servers: _containers.RepeatedCompositeFieldContainer[ParameterServerTask]
    def __init__(self, members: _Optional[_Iterable[_Union[PoolMember, _Mapping]]] = ..., parameter_servers: _Optional[_Iterable[_Union[ParameterServerTask, _Mapping]]] = ...) -> None: ...

class ParameterServerTask(_message.Message):
    __slots__ = ("endpoint", "silent", "error", "stats", "joined", "lease_seconds_left", "joined_incarnation")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_LEFT_FIELD_NUMBER: _ClassVar[int]
    JOINED_INCARNATION_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    silent: bool
    error: str
    stats: _parameter_server_pb2.StatsResponse
    joined: bool
    lease_seconds_left: float
    joined_incarnation: int
    def __init__(self, endpoint: _Optional[str] = ..., silent: _Optional[bool] = ..., error: _Optional[str] = ..., stats: _Optional[_Union[_parameter_server_pb2.StatsResponse, _Mapping]] = ..., joined: _Optional[bool] = ..., lease_seconds_left: _Optional[float] = ..., joined_incarnation: _Optional[int] = ...) -> None: ...

class PoolMember(_message.Message):
    __slots__ = ("endpoint", "state", "job", "joined", "lease_seconds_left", "memory_budget_bytes")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_LEFT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    state: MemberState
    job: str
    joined: bool
    lease_seconds_left: float
    memory_budget_bytes: int
    def __init__(self, endpoint: _Optional[str] = ..., state: _Optional[_Union[MemberState, str]] = ..., job: _Optional[str] = ..., joined: _Optional[bool] = ..., lease_seconds_left: _Optional[float] = ..., memory_budget_bytes: _Optional[int] = ...) -> None: ...

class SolveRequest(_message.Message):
    __slots__ = ("name", "model", "data", "validation_fraction", "shuffle_seed", "normalization")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_SEED_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: _model_pb2.ModelSpec
    data: DataSource
    validation_fraction: float
    shuffle_seed: int
    normalization: InputNormalization
    def __init__(self, name: _Optional[str] = ..., model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., data: _Optional[_Union[DataSource, _Mapping]] = ..., validation_fraction: _Optional[float] = ..., shuffle_seed: _Optional[int] = ..., normalization: _Optional[_Union[InputNormalization, _Mapping]] = ...) -> None: ...

class SolveResponse(_message.Message):
    __slots__ = ("kernel", "bias", "training_loss", "validation_loss", "validation_r2", "model", "normalization")
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_R2_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    kernel: _tensor_pb2.Tensor
    bias: _tensor_pb2.Tensor
    training_loss: float
    validation_loss: float
    validation_r2: float
    model: Model
    normalization: InputNormalization
    def __init__(self, kernel: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., bias: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., training_loss: _Optional[float] = ..., validation_loss: _Optional[float] = ..., validation_r2: _Optional[float] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., normalization: _Optional[_Union[InputNormalization, _Mapping]] = ...) -> None: ...
