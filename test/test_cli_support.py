"""The command lines' shared convention (hybridnets_ros.cli_support): one log format, exit codes 0 / 1 / 2, and the
hybridnets-train parser made from TrainOptions."""
from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hybridnets_ros.cli_support import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    LOG_FORMAT,
    configure_logging,
    run_command,
)
from hybridnets_ros.model.checkpoint import CheckpointError
from hybridnets_ros.resources import resolve_weights
from hybridnets_ros.training import distill_train
from hybridnets_ros.training.distiller import DistillOptions
from hybridnets_ros.training.train import build_parser, options_from_args
from hybridnets_ros.training.trainer import TrainOptions


def _raise(exc: BaseException):
    def work() -> None:
        raise exc
    return work


@pytest.mark.parametrize("error, code", [
    (ValueError("--lr must be > 0"), EXIT_BAD_INPUT),
    (CheckpointError("checkpoint 'x.pt' cannot be read"), EXIT_BAD_INPUT),  # named as bad input by the command
    (OSError("cannot write 'out/a.png'"), EXIT_FAILURE),
    (ImportError("no module named 'openvino'"), EXIT_FAILURE),
    (RuntimeError("CUDA out of memory"), EXIT_FAILURE),
])
def test_known_errors_become_one_line_and_their_exit_code(capsys, error: BaseException, code: int) -> None:
    configure_logging()
    assert run_command("hybridnets-x", _raise(error), bad_input=(CheckpointError,)) == code
    err = capsys.readouterr().err
    assert err == f"ERROR hybridnets-x: {error}\n"


def test_a_missing_weights_file_is_bad_input_named_in_one_line(capsys, tmp_path: Path) -> None:
    configure_logging()
    assert run_command("hybridnets-x", lambda: resolve_weights(tmp_path / "w.pt\n", "--weights")) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "w.pt" in lines[0] and "does not exist: set --weights" in lines[0]


def test_success_and_bugs() -> None:
    assert run_command("hybridnets-x", lambda: None) == EXIT_OK
    assert run_command("hybridnets-x", lambda: 3) == 3
    with pytest.raises(KeyError):  # not an expected error: a bug keeps its traceback
        run_command("hybridnets-x", _raise(KeyError("x")))


def test_logging_is_configured_once_and_follows_the_stream(capsys) -> None:
    configure_logging()
    configure_logging(logging.WARNING)
    logging.getLogger("hybridnets_ros.some.module").info("not shown at WARNING")
    logging.getLogger("hybridnets_ros.some.module").warning("shown")
    assert capsys.readouterr().err == "WARNING hybridnets_ros.some.module: shown\n"
    configure_logging(stream="stdout")
    logging.getLogger("demo").info("progress")
    assert capsys.readouterr().out == "INFO demo: progress\n"
    configure_logging()
    assert LOG_FORMAT == "%(levelname)s %(name)s: %(message)s"


def test_package_level_is_reset_by_the_next_command(capsys) -> None:
    # hybridnets-export shows the package's INFO over chatty libraries held at WARNING; a command configured after it
    # in the same process (as in the tests) must not inherit that.
    configure_logging(logging.WARNING, package_level="INFO")
    logging.getLogger("onnx.some.module").info("library chatter")
    logging.getLogger("hybridnets_ros.export").info("exported")
    assert capsys.readouterr().err == "INFO hybridnets_ros.export: exported\n"
    configure_logging(logging.WARNING)
    logging.getLogger("hybridnets_ros.export").info("hidden again")
    assert capsys.readouterr().err == ""
    configure_logging()


def test_train_parser_is_made_from_the_options_dataclass() -> None:
    parser = build_parser()
    assert options_from_args(parser.parse_args(["--project", "p.yaml"])) == TrainOptions(project="p.yaml")
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(TrainOptions)} <= flags
    given = options_from_args(parser.parse_args(
        ["--project", "p.yaml", "--lr", "0.5", "--weight-decay", "0.1", "--amp", "--grad-compression", "ternary",
         "--unlabeled", "a", "b", "--min-gap", "0.5"]))
    assert (given.lr, given.weight_decay, given.amp, given.grad_compression, given.unlabeled, given.min_gap) == (
        0.5, 0.1, True, "ternary", ["a", "b"], 0.5)
    with pytest.raises(SystemExit):  # argparse: bad usage, exit 2
        parser.parse_args(["--project", "p.yaml", "--optimizer", "lion"])


def test_distill_parser_is_made_from_its_options_dataclass() -> None:
    parser = distill_train.build_parser()
    args = ["--teacher", "a.pt", "--owns", "det", "seg", "--teacher", "b.pt", "--owns", "car", "--student", "d0",
            "--unlabeled", "x", "y"]
    assert distill_train.options_from_args(parser.parse_args(args)) == DistillOptions(
        teacher=["a.pt", "b.pt"], owns=[["det", "seg"], ["car"]], student="d0", unlabeled=["x", "y"])
    with pytest.raises(SystemExit):  # the shared optimiser field, worded for this command: no plateau schedule
        parser.parse_args([*args, "--scheduler", "plateau"])


def test_console_script_exit_code_for_bad_input(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "hybridnets-synth"
    result = subprocess.run([str(script), "--output", str(tmp_path / "d"), "--num-train", "-1", "--num-val", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.strip() == "ERROR hybridnets-synth: --num-train and --num-val must be >= 0"
