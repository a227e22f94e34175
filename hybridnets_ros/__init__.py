"""HybridNets multi-task perception (vehicles, drivable area, lane lines) for ROS 2."""
from importlib import metadata
from pathlib import Path
from xml.etree import ElementTree


def _version() -> str:
    """The installed distribution's version (setup.py takes it from package.xml, its single source); a source
    checkout that was never installed reads package.xml itself."""
    try:
        return metadata.version(__name__)
    except metadata.PackageNotFoundError:
        return ElementTree.parse(Path(__file__).resolve().parents[1] / "package.xml").getroot().findtext("version")


__version__ = _version()
