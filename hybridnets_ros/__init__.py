"""HybridNets multi-task perception (vehicles, drivable area, lane lines) for ROS 2."""
from __future__ import annotations


def __getattr__(name: str) -> str:
    # __version__ is looked up on first use: importlib.metadata costs tens of milliseconds at every import.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'hybridnets_ros' has no attribute {name!r}")


def _version() -> str:
    """The installed distribution's version (setup.py takes it from package.xml, its single source); a source
    checkout that was never installed reads package.xml itself."""
    from importlib import metadata
    from pathlib import Path
    from xml.etree import ElementTree

    try:
        return metadata.version(__name__)
    except metadata.PackageNotFoundError:
        return ElementTree.parse(Path(__file__).resolve().parents[1] / "package.xml").getroot().findtext("version")
