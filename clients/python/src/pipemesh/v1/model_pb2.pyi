from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Activation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_NONE: _ClassVar[Activation]
    ACTIVATION_RELU: _ClassVar[Activation]
    ACTIVATION_TANH: _ClassVar[Activation]
    ACTIVATION_SIGMOID: _ClassVar[Activation]
    ACTIVATION_GELU: _ClassVar[Activation]

class PositionEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSITION_ENCODING_NONE: _ClassVar[PositionEncoding]
    POSITION_ENCODING_SINUSOIDAL: _ClassVar[PositionEncoding]
    POSITION_ENCODING_LEARNED: _ClassVar[PositionEncoding]
ACTIVATION_NONE: Activation
ACTIVATION_RELU: Activation
ACTIVATION_TANH: Activation
ACTIVATION_SIGMOID: Activation
ACTIVATION_GELU: Activation
POSITION_ENCODING_NONE: PositionEncoding
POSITION_ENCODING_SINUSOIDAL: PositionEncoding
POSITION_ENCODING_LEARNED: PositionEncoding

class ModelSpec(_message.Message):
    __slots__ = ("name", "input_shape", "layers", "loss", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerSpec]
    loss: LossSpec
    seed: int
    def __init__(self, name: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., layers: _Optional[_Iterable[_Union[LayerSpec, _Mapping]]] = ..., loss: _Optional[_Union[LossSpec, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class LayerSpec(_message.Message):
    __slots__ = ("name", "dense", "conv2d", "max_pool2d", "avg_pool2d", "flatten", "activation", "dropout", "layer_norm", "embedding", "lstm", "gru", "transformer_block")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    CONV2D_FIELD_NUMBER: _ClassVar[int]
    MAX_POOL2D_FIELD_NUMBER: _ClassVar[int]
    AVG_POOL2D_FIELD_NUMBER: _ClassVar[int]
    FLATTEN_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    LAYER_NORM_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    LSTM_FIELD_NUMBER: _ClassVar[int]
    GRU_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMER_BLOCK_FIELD_NUMBER: _ClassVar[int]
    name: str
    dense: DenseLayer
    conv2d: Conv2DLayer
    max_pool2d: Pool2DLayer
    avg_pool2d: Pool2DLayer
    flatten: FlattenLayer
    activation: ActivationLayer
    dropout: DropoutLayer
    layer_norm: LayerNormLayer
    embedding: EmbeddingLayer
    lstm: RecurrentLayer
    gru: RecurrentLayer
    transformer_block: TransformerBlockLayer
    def __init__(self, name: _Optional[str] = ..., dense: _Optional[_Union[DenseLayer, _Mapping]] = ..., conv2d: _Optional[_Union[Conv2DLayer, _Mapping]] = ..., max_pool2d: _Optional[_Union[Pool2DLayer, _Mapping]] = ..., avg_pool2d: _Optional[_Union[Pool2DLayer, _Mapping]] = ..., flatten: _Optional[_Union[FlattenLayer, _Mapping]] = ..., activation: _Optional[_Union[ActivationLayer, _Mapping]] = ..., dropout: _Optional[_Union[DropoutLayer, _Mapping]] = ..., layer_norm: _Optional[_Union[LayerNormLayer, _Mapping]] = ..., embedding: _Optional[_Union[EmbeddingLayer, _Mapping]] = ..., lstm: _Optional[_Union[RecurrentLayer, _Mapping]] = ..., gru: _Optional[_Union[RecurrentLayer, _Mapping]] = ..., transformer_block: _Optional[_Union[TransformerBlockLayer, _Mapping]] = ...) -> None: ...

class DenseLayer(_message.Message):
    __slots__ = ("units", "activation", "no_bias", "tied_to")
    UNITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    NO_BIAS_FIELD_NUMBER: _ClassVar[int]
    TIED_TO_FIELD_NUMBER: _ClassVar[int]
    units: int
    activation: Activation
    no_bias: bool
    tied_to: str
    def __init__(self, units: _Optional[int] = ..., activation: _Optional[_Union[Activation, str]] = ..., no_bias: _Optional[bool] = ..., tied_to: _Optional[str] = ...) -> None: ...

class Conv2DLayer(_message.Message):
    __slots__ = ("filters", "kernel_size", "stride", "padding", "activation")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    filters: int
    kernel_size: int
    stride: int
    padding: int
    activation: Activation
    def __init__(self, filters: _Optional[int] = ..., kernel_size: _Optional[int] = ..., stride: _Optional[int] = ..., padding: _Optional[int] = ..., activation: _Optional[_Union[Activation, str]] = ...) -> None: ...

class Pool2DLayer(_message.Message):
    __slots__ = ("size", "stride")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    size: int
    stride: int
    def __init__(self, size: _Optional[int] = ..., stride: _Optional[int] = ...) -> None: ...

class FlattenLayer(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActivationLayer(_message.Message):
    __slots__ = ("activation",)
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    activation: Activation
    def __init__(self, activation: _Optional[_Union[Activation, str]] = ...) -> None: ...

class DropoutLayer(_message.Message):
    __slots__ = ("rate",)
    RATE_FIELD_NUMBER: _ClassVar[int]
    rate: float
    def __init__(self, rate: _Optional[float] = ...) -> None: ...

class LayerNormLayer(_message.Message):
    __slots__ = ("epsilon",)
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    def __init__(self, epsilon: _Optional[float] = ...) -> None: ...

class EmbeddingLayer(_message.Message):
    __slots__ = ("vocabulary_size", "dimension", "positions")
    VOCABULARY_SIZE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    vocabulary_size: int
    dimension: int
    positions: PositionEncoding
    def __init__(self, vocabulary_size: _Optional[int] = ..., dimension: _Optional[int] = ..., positions: _Optional[_Union[PositionEncoding, str]] = ...) -> None: ...

class RecurrentLayer(_message.Message):
    __slots__ = ("units", "return_sequences")
    UNITS_FIELD_NUMBER: _ClassVar[int]
    RETURN_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    units: int
    return_sequences: bool
    def __init__(self, units: _Optional[int] = ..., return_sequences: _Optional[bool] = ...) -> None: ...

class TransformerBlockLayer(_message.Message):
    __slots__ = ("heads", "mlp_hidden")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    MLP_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    heads: int
    mlp_hidden: int
    def __init__(self, heads: _Optional[int] = ..., mlp_hidden: _Optional[int] = ...) -> None: ...

class LossSpec(_message.Message):
    __slots__ = ("softmax_cross_entropy", "mean_squared_error", "l2")
    SOFTMAX_CROSS_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MEAN_SQUARED_ERROR_FIELD_NUMBER: _ClassVar[int]
    L2_FIELD_NUMBER: _ClassVar[int]
    softmax_cross_entropy: SoftmaxCrossEntropyLoss
    mean_squared_error: MeanSquaredErrorLoss
    l2: float
    def __init__(self, softmax_cross_entropy: _Optional[_Union[SoftmaxCrossEntropyLoss, _Mapping]] = ..., mean_squared_error: _Optional[_Union[MeanSquaredErrorLoss, _Mapping]] = ..., l2: _Optional[float] = ...) -> None: ...

class SoftmaxCrossEntropyLoss(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MeanSquaredErrorLoss(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LayerTime(_message.Message):
    __slots__ = ("layer", "name", "forward_seconds", "backward_seconds", "split_forward_seconds", "split_backward_seconds", "first_part_share")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORWARD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FORWARD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_BACKWARD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_PART_SHARE_FIELD_NUMBER: _ClassVar[int]
    layer: int
    name: str
    forward_seconds: float
    backward_seconds: float
    split_forward_seconds: float
    split_backward_seconds: float
    first_part_share: float
    def __init__(self, layer: _Optional[int] = ..., name: _Optional[str] = ..., forward_seconds: _Optional[float] = ..., backward_seconds: _Optional[float] = ..., split_forward_seconds: _Optional[float] = ..., split_backward_seconds: _Optional[float] = ..., first_part_share: _Optional[float] = ...) -> None: ...
