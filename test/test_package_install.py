"""The package as installed by `make setup` (non-editable `pip install .`, the same tree colcon installs).

These tests read the install prefix (the venv), not the source tree: a file missing from setup.py, a subpackage
without __init__.py or an undeclared dependency shows up here before a user meets it.
"""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from glob import glob
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hybridnets_ros"
PREFIX = Path(sys.prefix)
NOT_INSTALLED = "hybridnets_ros is not installed into this environment: run `make setup` (or `make install`)"

CONSOLE_SCRIPTS = {
    "hybridnets-infer": "hybridnets_ros.inference.cli:main",
    "hybridnets-export": "hybridnets_ros.inference.export.cli:main",
    "hybridnets-train": "hybridnets_ros.training.train:main",
    "hybridnets-eval": "hybridnets_ros.training.evaluate:main",
    "hybridnets-anchors": "hybridnets_ros.training.anchors:main",
    "hybridnets-synth": "hybridnets_ros.synth.cli:main",
    "hybridnets-distill": "hybridnets_ros.training.distill_train:main",
    "hybridnets-adapt-bn": "hybridnets_ros.training.adapt_bn:main",
    "hybridnets_node": "hybridnets_ros.ros.node:main",
}

# Installed data: share/ folder -> source files that setup.py must put there (same patterns as setup.py).
SHARE_PATTERNS = {
    "launch": ["launch/*.py"],
    "config": ["config/*"],
    "models": ["models/*.yaml", "models/*.pt", "models/*.md"],
}

# Python import (top-level name) -> rosdep key that package.xml must declare.
ROSDEP_KEYS = {
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs",
    "sensor_msgs": "sensor_msgs",
    "vision_msgs": "vision_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "geometry_msgs": "geometry_msgs",
    "rosgraph_msgs": "rosgraph_msgs",
    "nav_msgs": "nav_msgs",
    "visualization_msgs": "visualization_msgs",
    "tf2_ros": "tf2_ros",
    "tf2_msgs": "tf2_msgs",
    "ament_index_python": "ament_index_python",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "torch": "python3-torch",
    "rosbags": "python3-rosbags-pip",
    "simplejpeg": "python3-simplejpeg-pip",
    "PIL": "python3-pil",
    "scipy": "python3-scipy",
    "pytest": "python3-pytest",
    "catkin_pkg": "python3-catkin-pkg",
}
# Optional backends and tools: import -> (setup.py extra, pip distribution it must list).
OPTIONAL_IMPORTS = {
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnx", "onnxruntime"),
    "onnxscript": ("onnx", "onnxscript"),
    "openvino": ("openvino", "openvino"),
    "tensorboard": ("train", "tensorboard"),
}
# GPU-only libraries that come with a CUDA/TensorRT install, not from pip extras (see README).
GPU_ONLY_IMPORTS = {"tensorrt", "pycuda"}


@pytest.fixture(scope="module")
def distribution() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(NOT_INSTALLED)


@pytest.fixture(scope="module")
def package_xml():
    return parse_package(str(REPO_ROOT / "package.xml"))


@pytest.fixture
def ament_prefix(monkeypatch: pytest.MonkeyPatch) -> Path:
    """AMENT_PREFIX_PATH with the venv first, as `make` and a sourced ROS workspace provide it."""
    current = os.environ.get("AMENT_PREFIX_PATH")
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(PREFIX), *([current] if current else [])]))
    return PREFIX


def test_share_directory_holds_launch_config_and_models(distribution, ament_prefix: Path) -> None:
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    assert Path(get_package_prefix(PACKAGE)) == ament_prefix, "found another hybridnets_ros first on the prefix path"
    share = Path(get_package_share_directory(PACKAGE))
    assert (share / "package.xml").read_bytes() == (REPO_ROOT / "package.xml").read_bytes(), (
        "installed package.xml differs from the checkout: run `make install`")
    for folder, patterns in SHARE_PATTERNS.items():
        sources = {Path(p).name for pattern in patterns for p in glob(str(REPO_ROOT / pattern)) if Path(p).is_file()}
        installed = {p.name for p in (share / folder).glob("*") if p.is_file()}
        assert installed == sources, (
            f"share/{PACKAGE}/{folder} differs from the source tree (missing {sorted(sources - installed)}, "
            f"stale {sorted(installed - sources)}): run `make install`")


def test_node_executable_is_where_ros2_run_and_launch_ros_look(distribution, ament_prefix: Path) -> None:
    from ament_index_python.packages import get_package_prefix

    executable = Path(get_package_prefix(PACKAGE)) / "lib" / PACKAGE / "hybridnets_node"
    assert executable.is_file(), f"{executable} missing: setup.py data_files must install resource/hybridnets_node"
    assert os.access(executable, os.X_OK), f"{executable} is not executable"


def test_node_launcher_runs_the_node_main_with_the_venv_python(distribution, tmp_path: Path) -> None:
    # A stand-in hybridnets_ros.ros.node in the working directory (first on sys.path for `python -c`) shows which
    # interpreter the launcher picked and what it passed on, without starting the real node. PATH leaves the venv
    # out, as for launch_ros started from a shell that never activated it.
    stub = tmp_path / PACKAGE / "ros"
    stub.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (stub / "__init__.py").write_text("")
    (stub / "node.py").write_text("import sys\ndef main():\n    print(sys.prefix)\n    print(sys.argv[1:])\n    return 3\n")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [str(PREFIX / "lib" / PACKAGE / "hybridnets_node"), "--ros-args", "-r", "__node:=x"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    prefix_line, args_line = result.stdout.splitlines()[-2:]
    assert Path(prefix_line).resolve() == PREFIX.resolve()
    assert args_line == "['--ros-args', '-r', '__node:=x']"


def test_console_scripts_are_installed(distribution) -> None:
    entry_points = {ep.name: ep.value for ep in distribution.entry_points if ep.group == "console_scripts"}
    assert entry_points == CONSOLE_SCRIPTS
    bin_dir = Path(sys.executable).parent
    for name in CONSOLE_SCRIPTS:
        script = bin_dir / name
        assert script.is_file() and os.access(script, os.X_OK), f"console script {script} missing"


def _python_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.py") if "__pycache__" not in p.parts}


def test_installed_package_has_every_module_of_the_source_tree(distribution, tmp_path: Path) -> None:
    # Run from an empty directory so that the installed copy is imported, not the checkout.
    result = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)
    installed_root = Path(result.stdout.strip()).parent
    assert installed_root != REPO_ROOT / PACKAGE, "imported the checkout, not the installed package"
    missing = sorted(_python_files(REPO_ROOT / PACKAGE) - _python_files(installed_root))
    no_init = sorted(
        str(d.relative_to(REPO_ROOT)) for d in (REPO_ROOT / PACKAGE).rglob("*")
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").is_file())
    assert not no_init, f"folders without __init__.py are not packaged: {no_init}"
    assert not missing, f"not installed: {missing}: run `make install`"


def test_package_xml_is_valid_format_3_ament_python(package_xml, distribution) -> None:
    package_xml.validate()
    assert package_xml.package_format == 3
    assert package_xml.name == PACKAGE
    assert package_xml.get_build_type() == "ament_python"
    assert distribution.version == package_xml.version, "setup.py reads its version from package.xml"
    from hybridnets_ros import __version__

    assert __version__ == package_xml.version, "hybridnets_ros.__version__ and package.xml disagree"


def _extras(distribution: importlib.metadata.Distribution) -> dict[str, set[str]]:
    """setup.py extra -> names of the distributions it requires (from the installed metadata)."""
    extras: dict[str, set[str]] = {}
    for requirement in distribution.requires or []:
        marker = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if marker:
            name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
            extras.setdefault(marker.group(1), set()).add(name.lower())
    return extras


def _imports(paths: list[Path]) -> dict[str, list[str]]:
    """Top-level module name -> 'file:line' of every absolute import in ``paths`` (any depth, lazy ones too)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return found


def _third_party(imports: dict[str, list[str]], local: set[str]) -> dict[str, list[str]]:
    return {k: v for k, v in imports.items() if k not in sys.stdlib_module_names and k not in local | {PACKAGE}}


def test_package_xml_declares_every_runtime_import(package_xml, distribution) -> None:
    sources = sorted((REPO_ROOT / PACKAGE).rglob("*.py")) + sorted((REPO_ROOT / "launch").glob("*.py"))
    imports = _third_party(_imports(sources), local=set())
    run_keys = {d.name for d in package_xml.exec_depends}
    extras = _extras(distribution)

    unknown = {k: v for k, v in imports.items()
               if k not in ROSDEP_KEYS and k not in OPTIONAL_IMPORTS and k not in GPU_ONLY_IMPORTS}
    assert not unknown, f"imports with no known rosdep key or extra (add them to package.xml/setup.py): {unknown}"
    undeclared = {k: imports[k] for k in imports if k in ROSDEP_KEYS and ROSDEP_KEYS[k] not in run_keys}
    assert not undeclared, f"package.xml lacks <exec_depend> for {[ROSDEP_KEYS[k] for k in undeclared]}: {undeclared}"
    no_extra = {k: imports[k] for k in imports
                if k in OPTIONAL_IMPORTS and OPTIONAL_IMPORTS[k][1] not in extras.get(OPTIONAL_IMPORTS[k][0], set())}
    assert not no_extra, f"optional imports without their setup.py extra: {no_extra}"


def test_package_xml_declares_every_test_import(package_xml) -> None:
    test_modules = sorted((REPO_ROOT / "test").glob("*.py"))
    imports = _third_party(_imports(test_modules), local={p.stem for p in test_modules})
    keys = {d.name for d in package_xml.exec_depends + package_xml.test_depends}
    unknown = {k: v for k, v in imports.items()
               if k not in ROSDEP_KEYS and k not in OPTIONAL_IMPORTS and k not in GPU_ONLY_IMPORTS}
    assert not unknown, f"test imports with no known rosdep key (add them here and to package.xml): {unknown}"
    undeclared = {k: imports[k] for k in imports if k in ROSDEP_KEYS and ROSDEP_KEYS[k] not in keys}
    assert not undeclared, f"package.xml lacks <test_depend> for {[ROSDEP_KEYS[k] for k in undeclared]}: {undeclared}"
