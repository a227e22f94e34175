"""Child processes (the node, a recorder, a player): each logs to its own file and is always stopped by PID.

``ChildProcesses`` is a context manager: whatever happens inside it (an error, KeyboardInterrupt, SystemExit from
SIGTERM), every process it started is stopped on the way out, the newest first: SIGINT (ROS processes shut down
cleanly on it, a recorder closes its bag), then SIGKILL after a timeout.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

LOG = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT_S = 20.0


class ChildProcess:
    """One command in its own process, stdout and stderr to ``log_path``, stdin closed; ``with`` stops it."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = Path(log_path)
        self._log_file = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(self.args, env=dict(env), stdout=self._log_file,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except BaseException:
            self._log_file.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the process's output."""
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """True once ``text`` appears in the output; False on timeout or when the process ended without it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if not self.running():
                return text in self.log()
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> int:
        """SIGINT, wait up to ``timeout`` s, then SIGKILL; returns the exit code. Safe to call more than once.

        The kill also happens when the wait itself is interrupted (a second Ctrl-C), so nothing is left behind.
        """
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            LOG.warning("%s (pid %d) did not stop within %.0f s of SIGINT: killing it", self.name, self.pid, timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log_file.close()
        return self.process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ChildProcesses:
    """The processes started through :meth:`start`, all stopped (newest first) when the ``with`` block ends."""

    def __init__(self) -> None:
        self._children: list[ChildProcess] = []

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> ChildProcess:
        child = ChildProcess(name, args, env, log_path)
        self._children.append(child)
        LOG.info("started %s (pid %d), log %s", name, child.pid, log_path)
        return child

    @property
    def pids(self) -> dict[str, int]:
        return {child.name: child.pid for child in self._children}

    def stop_all(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop every child, newest first; each one is stopped even if stopping another one raised."""
        pending = list(reversed(self._children))
        try:
            while pending:
                pending[0].stop(timeout)
                pending.pop(0)
        finally:
            for child in pending:  # only reached when a stop was interrupted: no waiting any more
                if child.running():
                    child.process.kill()
                    child.process.wait()

    def __enter__(self) -> "ChildProcesses":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
