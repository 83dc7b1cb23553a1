"""Plain message data -> rclpy messages (the node's side of the shared layouts).

The layouts in `iggt_ros.messages.layouts` describe each output once as plain data; this module turns
that into the generated rclpy class by walking the class's rosidl slot types, so the node and the
rosbags replay serialise the same bytes. Message packages are imported lazily, by type name, when a
message of that type is first built: importing this module needs neither rclpy nor any package.
"""

from __future__ import annotations

import array
import importlib
from functools import cache
from typing import Any

import numpy as np

from iggt_ros.messages.message import MessageData

# rosidl BasicType names (as the generated classes report them) -> (numpy dtype, array.array typecode)
_NUMERIC: dict[str, tuple[np.dtype, str]] = {
    "int8": (np.dtype(np.int8), "b"),
    "uint8": (np.dtype(np.uint8), "B"),
    "int16": (np.dtype(np.int16), "h"),
    "uint16": (np.dtype(np.uint16), "H"),
    "int32": (np.dtype(np.int32), "i"),
    "uint32": (np.dtype(np.uint32), "I"),
    "int64": (np.dtype(np.int64), "q"),
    "uint64": (np.dtype(np.uint64), "Q"),
    "float": (np.dtype(np.float32), "f"),
    "double": (np.dtype(np.float64), "d"),
}


@cache
def message_class(typename: str) -> type:
    """The generated rclpy class of ``pkg/msg/Name`` (or ``pkg/srv/Name_Request``)."""
    parts = typename.split("/")
    if len(parts) != 3:
        raise ValueError(f"expected a type name like 'sensor_msgs/msg/Image', got {typename!r}")
    pkg, kind, name = parts
    if kind == "srv" and (name.endswith("_Request") or name.endswith("_Response")):
        service, _, part = name.rpartition("_")
        return getattr(getattr(importlib.import_module(f"{pkg}.srv"), service), part)
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def to_rclpy(data: MessageData) -> Any:
    """The rclpy message of `data`; fields left out keep the generated defaults."""
    return _build(message_class(data.typename), data.fields)


def _build(cls: type, values: dict[str, Any]) -> Any:
    msg = cls()
    slots = dict(zip(cls.get_fields_and_field_types(), cls.SLOT_TYPES, strict=True))
    for name, value in values.items():
        if name not in slots:
            raise KeyError(f"{cls.__module__}.{cls.__name__} has no field {name!r}; fields are {sorted(slots)}")
        setattr(msg, name, _value(slots[name], value))
    return msg


def _value(slot: Any, value: Any) -> Any:
    from rosidl_parser import definition as d

    if isinstance(slot, d.NamespacedType):
        return _build(_namespaced_class(slot), value or {})
    if isinstance(slot, (d.AbstractString, d.AbstractWString)):
        return str(value)
    if isinstance(slot, d.BasicType):
        return _basic(slot.typename, value)
    if isinstance(slot, (d.Array, d.AbstractSequence)):
        elem = slot.value_type
        if isinstance(elem, d.BasicType) and elem.typename in _NUMERIC:
            dtype, code = _NUMERIC[elem.typename]
            arr = np.ascontiguousarray(np.asarray(value, dtype=dtype).reshape(-1))
            if isinstance(slot, d.Array):
                return arr  # fixed-size numeric arrays are numpy arrays in rclpy
            out = array.array(code)
            out.frombytes(arr.tobytes())
            return out
        return [_value(elem, item) for item in value]
    raise TypeError(f"unsupported rosidl slot type {slot!r}")


def _basic(typename: str, value: Any) -> Any:
    if typename in ("float", "double", "long double"):
        return float(value)
    if typename == "boolean":
        return bool(value)
    if typename == "octet":
        return bytes([int(value)]) if not isinstance(value, bytes) else value
    if typename in ("char", "wchar"):
        return str(value)
    return int(value)


def _namespaced_class(slot: Any) -> type:
    return message_class("/".join([*slot.namespaces, slot.name]))
