"""The node's parameters: every configuration key under its dotted name, with a parameter file as defaults.

Declared at the first configure and kept declared for the life of the node, so the keys that are
fixed while configured can be set between cleanup and the next configure (`ros2 param set`). At
run time a change goes through `param_rules` (bounds, which keys may change while running).
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter

from iggt_ros.config import ConfigError, IggtConfig, load_config
from iggt_ros.ros.param_rules import apply_update, check_update


def _parameter_of(name: str, value: Any) -> Parameter:
    """A parameter holding a configuration value (lists as string arrays, also when empty)."""
    if isinstance(value, list):
        return Parameter(name, Parameter.Type.STRING_ARRAY, list(value))
    return Parameter(name, value=value)


def _same(a: Any, b: Any) -> bool:
    """Equal as configuration values (an unset list parameter reads as None and equals [])."""
    if isinstance(a, list) or isinstance(b, list) or a is None or b is None:
        return list(a or []) == list(b or [])
    return a == b and type(a) is type(b)


def _parameter_for(name: str, value: Any) -> tuple[Any, ParameterDescriptor]:
    """Declaration value and descriptor; empty lists get an explicit string-array type."""
    if isinstance(value, list):
        if not value:
            return Parameter.Type.STRING_ARRAY, ParameterDescriptor(name=name)
        return list(value), ParameterDescriptor(name=name)
    return value, ParameterDescriptor(name=name)


class NodeParameters:
    """Reads the configuration from a node's parameters and checks changes made while it runs."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._declaring = False
        self._file_values: dict[str, Any] | None = None
        """Flat values of the parameter file read at the last configure (None before the first)."""
        node.declare_parameter("config_file", "", ParameterDescriptor(
            description="YAML parameter file whose values are the defaults of every other parameter ('' = built-in)"))

    def read_config(self) -> IggtConfig:
        """The configuration the parameters hold now; `config_file` gives the values nobody set.

        The first configure declares every key with the file's value (a parameter given to the node
        wins). Later configures read the parameters as they are: a value set between cleanup and
        configure is used, not reloaded from the file. Only when `config_file` names another file
        do its values replace the ones that still hold the previous file's value.
        """
        node = self._node
        path = str(node.get_parameter("config_file").value or "")
        file_values = load_config(path or None).to_flat()
        self._declaring = True
        try:
            for key, value in file_values.items():
                if not node.has_parameter(key):
                    declared, descriptor = _parameter_for(key, value)
                    node.declare_parameter(key, declared, descriptor)
                elif self._file_values is not None and not _same(self._file_values.get(key), value) \
                        and _same(self._file_values.get(key), self.value(key)):
                    node.set_parameters([_parameter_of(key, value)])
        except Exception as exc:  # a parameter override of the wrong type
            raise ConfigError(f"parameter override rejected: {exc}") from exc
        finally:
            self._declaring = False
        self._file_values = file_values
        flat = {key: self.value(key) for key in file_values}
        if path:
            node.get_logger().info(f"parameters: defaults from '{path}'")
        return IggtConfig.from_flat(flat)

    def value(self, key: str) -> Any:
        """A declared parameter's value; None for an empty list (declared with a type but no value)."""
        try:
            return self._node.get_parameter(key).value
        except ParameterUninitializedException:
            return None

    def on_set(self, params: list[Parameter], config: IggtConfig | None) -> SetParametersResult:
        """A change while configured: refused with the reason, or applied to `config` (live components see it)."""
        if self._declaring or config is None:
            return SetParametersResult(successful=True)
        flat = config.to_flat()
        changes = {p.name: p.value for p in params if p.name in flat}
        if not changes:
            return SetParametersResult(successful=True)
        update = check_update(config, changes)
        log = self._node.get_logger()
        if not update.successful:
            log.warning(f"parameter change refused: {update.reason}")
            return SetParametersResult(successful=False, reason=update.reason)
        apply_update(config, update)
        if update.applied:
            log.info(f"parameters changed: {update.applied}")
        return SetParametersResult(successful=True)
