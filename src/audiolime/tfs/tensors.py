"""numpy <-> TensorProto without TensorFlow (``tensor_content`` bytes, little-endian)."""

from __future__ import annotations

import numpy as np

from audiolime.tfs import tfs_pb2

_DTYPES = {
    np.dtype(np.float32): tfs_pb2.DT_FLOAT, np.dtype(np.float64): tfs_pb2.DT_DOUBLE,
    np.dtype(np.int32): tfs_pb2.DT_INT32, np.dtype(np.int64): tfs_pb2.DT_INT64,
    np.dtype(np.uint8): tfs_pb2.DT_UINT8, np.dtype(np.int16): tfs_pb2.DT_INT16,
    np.dtype(np.int8): tfs_pb2.DT_INT8, np.dtype(np.bool_): tfs_pb2.DT_BOOL,
}
_NUMPY: dict[int, np.dtype] = {v: k for k, v in _DTYPES.items()}  # type: ignore[misc]  # numpy's stubs
_VALS = {tfs_pb2.DT_FLOAT: "float_val", tfs_pb2.DT_DOUBLE: "double_val", tfs_pb2.DT_INT32: "int_val",
         tfs_pb2.DT_INT16: "int_val", tfs_pb2.DT_INT8: "int_val", tfs_pb2.DT_UINT8: "int_val",
         tfs_pb2.DT_INT64: "int64_val", tfs_pb2.DT_BOOL: "bool_val"}


def make_tensor_proto(array: np.ndarray) -> tfs_pb2.TensorProto:
    """A numeric array as a TensorProto carrying its bytes in ``tensor_content``."""
    a = np.asarray(array)
    if a.dtype not in _DTYPES:
        raise TypeError(f"unsupported dtype {a.dtype}")
    t = tfs_pb2.TensorProto(dtype=_DTYPES[a.dtype])
    t.tensor_shape.dim.extend(tfs_pb2.TensorShapeProto.Dim(size=s) for s in a.shape)
    t.tensor_content = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return t


def to_ndarray(t: tfs_pb2.TensorProto) -> np.ndarray:
    """A TensorProto (tensor_content or typed ``*_val`` fields, strings decoded) as numpy."""
    shape = [d.size for d in t.tensor_shape.dim]
    if t.dtype == tfs_pb2.DT_STRING:
        texts = [v.decode("utf-8") for v in t.string_val]
        return np.array(texts if len(texts) != 1 or not shape else texts * int(np.prod(shape)),
                        dtype=object).reshape(shape)
    if t.dtype not in _NUMPY:
        raise TypeError(f"unsupported TensorProto dtype {t.dtype}")
    dtype = _NUMPY[t.dtype]
    if t.tensor_content:
        return np.frombuffer(t.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    vals = np.asarray(getattr(t, _VALS[t.dtype]), dtype=dtype)
    size = int(np.prod(shape)) if shape else 1
    if vals.size == 1 and size > 1:  # TF's compact form: one value repeated
        vals = np.full(size, vals[0], dtype=dtype)
    return vals.reshape(shape)
