"""Import of a backend's optional runtime package, with an error that says what to install."""
from __future__ import annotations

import importlib
from types import ModuleType

from hybridnets_ros.requirements import PIP_REQUIREMENTS


class BackendUnavailableError(ImportError):
    """A backend's runtime package cannot be imported."""


def import_runtime(module: str, backend: str, hint: str = "") -> ModuleType:
    """``importlib.import_module(module)``, or BackendUnavailableError naming the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        requirement = PIP_REQUIREMENTS.get(module, module)
        message = (
            f"the '{backend}' backend needs the Python package '{module}', which cannot be imported ({exc}). "
            f"Install it into this environment: pip install {requirement}"
        )
        if hint:
            message += f" ({hint})"
        raise BackendUnavailableError(message, name=module) from exc
