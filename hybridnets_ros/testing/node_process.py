"""The hybridnets node as a child process: its installed executable, its parameter file and ``-p`` overrides."""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridnets_ros.resources import config_dir
from hybridnets_ros.testing.processes import ChildProcess


def node_command() -> list[str]:
    """The installed executable ``<prefix>/lib/hybridnets_ros/hybridnets_node``, or the module in a source checkout."""
    executable = Path(sys.prefix) / "lib" / "hybridnets_ros" / "hybridnets_node"
    if executable.is_file():
        return [str(executable)]
    return [sys.executable, "-m", "hybridnets_ros.ros.node"]


def format_parameter(value: Any) -> str:
    """A value as ``-p name:=value`` text (YAML, as rcl parses it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_parameter(v) for v in value) + "]"
    if isinstance(value, str):
        return f"'{value}'"
    return repr(value)


def node_arguments(parameters: Mapping[str, Any] | None = None, params_file: Path | None = None,
                   namespace: str = "") -> list[str]:
    """The node's command line: ``params_file`` (default: the installed ``hybridnets.yaml``), then ``parameters``
    as ``-p`` overrides, in ``namespace``."""
    params_file = params_file if params_file is not None else config_dir() / "hybridnets.yaml"
    args = node_command() + ["--ros-args", "--params-file", str(params_file)]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for name, value in (parameters or {}).items():
        args += ["-p", f"{name}:={format_parameter(value)}"]
    return args


class NodeProcess(ChildProcess):
    """The node as a subprocess in environment ``env``, output captured to ``log_path``; ``stop`` sends SIGINT,
    then kills."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        parameters: Mapping[str, Any] | None = None,
        params_file: Path | None = None,
        namespace: str = "",
    ) -> None:
        super().__init__("node", node_arguments(parameters, params_file, namespace), env, log_path)
