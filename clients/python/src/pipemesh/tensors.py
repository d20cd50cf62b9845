"""NumPy arrays to the mesh's tensors and back (little-endian float32, int32 or int64)."""

from __future__ import annotations

import numpy as np

from pipemesh.v1 import tensor_pb2

_DTYPES = {
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
}


def to_tensor(array, *, integers: bool = False) -> tensor_pb2.Tensor:
    """A tensor of `array`: float32, or with `integers` (class labels, token ids) int32 or int64 as
    given (other integer types become int64). Raises ValueError for what the mesh cannot hold."""
    array = np.asarray(array)
    if integers and np.issubdtype(array.dtype, np.integer):
        kind = tensor_pb2.DTYPE_INT32 if array.dtype.itemsize <= 4 else tensor_pb2.DTYPE_INT64
    elif np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
        kind = tensor_pb2.DTYPE_FLOAT32
    else:
        raise ValueError(f"an array of {array.dtype} cannot be sent: give numbers")
    data = np.ascontiguousarray(array, dtype=_DTYPES[kind])
    return tensor_pb2.Tensor(dtype=kind, shape=list(data.shape), data=data.tobytes())


def from_tensor(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """The array a tensor holds (its own copy, writable)."""
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ValueError(f"a tensor of dtype {tensor.dtype} cannot be read")
    shape = tuple(tensor.shape)
    count = int(np.prod(shape, dtype=np.int64))
    if len(tensor.data) != count * dtype.itemsize:
        raise ValueError(
            f"a tensor of shape {list(shape)} holds {len(tensor.data)} bytes, not {count * dtype.itemsize}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
