"""Plain message data <-> rosbags typestore messages.

The rosbags message classes need every field in their constructor and numpy arrays of the exact
dtype for numeric arrays; this module walks the typestore's field definitions so layouts can stay
plain and partial (`iggt_ros.messages.message`). `to_plain` goes the other way, for tests and reports
that compare a deserialised message with what was meant to be written.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys.store import Typestore

from iggt_ros.bag.typestore import typestore as default_typestore
from iggt_ros.messages.message import MessageData

NUMPY_DTYPES: dict[str, np.dtype] = {
    "bool": np.dtype(np.bool_),
    "byte": np.dtype(np.uint8),
    "char": np.dtype(np.uint8),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "int16": np.dtype(np.int16),
    "uint16": np.dtype(np.uint16),
    "int32": np.dtype(np.int32),
    "uint32": np.dtype(np.uint32),
    "int64": np.dtype(np.int64),
    "uint64": np.dtype(np.uint64),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
"""ROS primitive type -> numpy dtype of arrays of it."""

FIELD_DEFAULTS: dict[str, dict[str, Any]] = {
    "geometry_msgs/msg/Quaternion": {"w": 1.0},
}
"""Non-zero .msg defaults that the rosbags definitions do not carry (rclpy applies them)."""


def to_rosbags(data: MessageData, store: Typestore | None = None) -> Any:
    """The rosbags message of `data`, ready for `store.serialize_cdr(msg, data.typename)`."""
    store = store or default_typestore()
    return _build(data.typename, data.fields, store)


def _build(typename: str, values: dict[str, Any], store: Typestore) -> Any:
    if typename not in store.fielddefs:
        raise KeyError(f"message type {typename} is not in the typestore")
    _consts, fields = store.fielddefs[typename]
    known = {name for name, _ in fields}
    unknown = set(values) - known
    if unknown:
        raise KeyError(f"{typename} has no field(s) {sorted(unknown)}; fields are {sorted(known)}")
    defaults = FIELD_DEFAULTS.get(typename, {})
    kwargs = {}
    for name, desc in fields:
        value = values.get(name, defaults.get(name))
        kwargs[name] = _value(desc, value, store, f"{typename}.{name}")
    return store.types[typename](**kwargs)


def _value(desc: tuple[Any, Any], value: Any, store: Typestore, where: str) -> Any:
    nodetype, sub = desc
    if nodetype == Nodetype.BASE:
        return _base(sub[0], value, where)
    if nodetype == Nodetype.NAME:
        return _build(sub, value or {}, store)
    if nodetype in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (elem_type, elem_sub), length = sub
        if elem_type == Nodetype.BASE and elem_sub[0] != "string":
            dtype = NUMPY_DTYPES[elem_sub[0]]
            if value is None:
                arr = np.zeros(length if nodetype == Nodetype.ARRAY else 0, dtype)
            else:
                arr = np.ascontiguousarray(np.asarray(value, dtype=dtype).reshape(-1))
            if nodetype == Nodetype.ARRAY and arr.size != length:
                raise ValueError(f"{where} needs exactly {length} values, got {arr.size}")
            return arr
        items = list(value or [])
        if nodetype == Nodetype.ARRAY and value is None:
            items = [None] * length
        if nodetype == Nodetype.ARRAY and len(items) != length:
            raise ValueError(f"{where} needs exactly {length} items, got {len(items)}")
        return [_value((elem_type, elem_sub), item, store, where) for item in items]
    raise TypeError(f"{where}: unsupported field kind {nodetype}")


def _base(ros_type: str, value: Any, where: str) -> Any:
    if ros_type == "string":
        return "" if value is None else str(value)
    if ros_type == "bool":
        return bool(value)
    if ros_type in ("float32", "float64"):
        return 0.0 if value is None else float(value)
    return 0 if value is None else int(value)


def to_plain(msg: Any) -> Any:
    """Nested dicts/lists/arrays of a rosbags message (constants and type names left out)."""
    if dataclasses.is_dataclass(msg) and not isinstance(msg, type):
        return {f.name: to_plain(getattr(msg, f.name)) for f in dataclasses.fields(msg) if not f.name.startswith("__")}
    if isinstance(msg, list):
        return [to_plain(item) for item in msg]
    return msg
