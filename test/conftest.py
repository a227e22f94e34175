"""Shared fixtures: locations of ../shared and an isolated ROS environment for subprocesses."""
from __future__ import annotations

import fcntl
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridnets_ros.testing.environment import ros_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "hybridnets_ros_test_domains"


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path}: these tests need the project's ../shared folder beside the repo")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require_dir(SHARED_DIR, "shared reference material")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _require_dir(SHARED_DIR / "golden", "golden reference outputs")


@pytest.fixture(scope="session")
def demo_images_dir() -> Path:
    return _require_dir(SHARED_DIR / "data" / "bdd_demo", "BDD100K demo images")


@pytest.fixture(scope="session")
def variant_c_weights(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden variant C network (variant A state dict updated with the C overrides) as a bare state dict file,
    like the official hybridnets.pth."""
    import torch

    state = torch.load(golden_dir / "hybridnets_d3_seed0_state_dict.pt", weights_only=True)
    state.update(torch.load(golden_dir / "hybridnets_d3_seed0_variantC_overrides.pt", weights_only=True))
    path = tmp_path_factory.mktemp("golden_weights") / "variant_c.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for a module's training runs: on a shared 2-core machine two spinning OpenMP threads make
    their steps many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ros_domain_id() -> Iterator[int]:
    """A DDS domain no other test on this machine holds: an flock per domain, released even if pytest dies."""
    DOMAIN_LOCK_DIR.mkdir(exist_ok=True)
    candidates = list(range(1, 101))
    random.shuffle(candidates)
    for domain in candidates:
        handle = open(DOMAIN_LOCK_DIR / f"{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield domain
        finally:
            handle.close()
        return
    pytest.fail(f"all ROS domains 1..100 are held by other tests (locks in {DOMAIN_LOCK_DIR})")


@pytest.fixture
def ros_env(tmp_path: Path, ros_domain_id: int) -> dict[str, str]:
    """Environment for a ROS subprocess (:func:`ros_environment` in its own domain): DDS kept on this host whatever
    the caller's environment says, logs under tmp_path."""
    env = ros_environment(domain_id=ros_domain_id)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(tmp_path / "ros_log"), PYTHONUNBUFFERED="1")
    env.setdefault("HOME", str(tmp_path))
    return env
