from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OptimizerSpec(_message.Message):
    __slots__ = ("sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop", "learning_rate", "clip_global_norm")
    SGD_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    ADAM_FIELD_NUMBER: _ClassVar[int]
    ADAMW_FIELD_NUMBER: _ClassVar[int]
    ADAGRAD_FIELD_NUMBER: _ClassVar[int]
    RMSPROP_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    CLIP_GLOBAL_NORM_FIELD_NUMBER: _ClassVar[int]
    sgd: SgdOptimizer
    momentum: MomentumOptimizer
    adam: AdamOptimizer
    adamw: AdamOptimizer
    adagrad: AdagradOptimizer
    rmsprop: RmsPropOptimizer
    learning_rate: LearningRateSchedule
    clip_global_norm: float
    def __init__(self, sgd: _Optional[_Union[SgdOptimizer, _Mapping]] = ..., momentum: _Optional[_Union[MomentumOptimizer, _Mapping]] = ..., adam: _Optional[_Union[AdamOptimizer, _Mapping]] = ..., adamw: _Optional[_Union[AdamOptimizer, _Mapping]] = ..., adagrad: _Optional[_Union[AdagradOptimizer, _Mapping]] = ..., rmsprop: _Optional[_Union[RmsPropOptimizer, _Mapping]] = ..., learning_rate: _Optional[_Union[LearningRateSchedule, _Mapping]] = ..., clip_global_norm: _Optional[float] = ...) -> None: ...

class SgdOptimizer(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MomentumOptimizer(_message.Message):
    __slots__ = ("momentum", "nesterov")
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    momentum: float
    nesterov: bool
    def __init__(self, momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ...) -> None: ...

class AdamOptimizer(_message.Message):
    __slots__ = ("beta1", "beta2", "epsilon", "weight_decay")
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    beta1: float
    beta2: float
    epsilon: float
    weight_decay: float
    def __init__(self, beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., epsilon: _Optional[float] = ..., weight_decay: _Optional[float] = ...) -> None: ...

class AdagradOptimizer(_message.Message):
    __slots__ = ("initial_accumulator", "epsilon")
    INITIAL_ACCUMULATOR_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    initial_accumulator: float
    epsilon: float
    def __init__(self, initial_accumulator: _Optional[float] = ..., epsilon: _Optional[float] = ...) -> None: ...

class RmsPropOptimizer(_message.Message):
    __slots__ = ("decay", "epsilon")
    DECAY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    decay: float
    epsilon: float
    def __init__(self, decay: _Optional[float] = ..., epsilon: _Optional[float] = ...) -> None: ...

class LearningRateSchedule(_message.Message):
    __slots__ = ("base", "constant", "step", "cosine", "warmup_steps")
    BASE_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    base: float
    constant: ConstantSchedule
    step: StepSchedule
    cosine: CosineSchedule
    warmup_steps: int
    def __init__(self, base: _Optional[float] = ..., constant: _Optional[_Union[ConstantSchedule, _Mapping]] = ..., step: _Optional[_Union[StepSchedule, _Mapping]] = ..., cosine: _Optional[_Union[CosineSchedule, _Mapping]] = ..., warmup_steps: _Optional[int] = ...) -> None: ...

class ConstantSchedule(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StepSchedule(_message.Message):
    __slots__ = ("step_size", "gamma")
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    step_size: int
    gamma: float
    def __init__(self, step_size: _Optional[int] = ..., gamma: _Optional[float] = ...) -> None: ...

class CosineSchedule(_message.Message):
    __slots__ = ("total_steps", "minimum")
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    total_steps: int
    minimum: float
    def __init__(self, total_steps: _Optional[int] = ..., minimum: _Optional[float] = ...) -> None: ...
