"""The thin CLI: one line and exit 1 for a user error, help on every command."""

from __future__ import annotations

from click.testing import CliRunner

from edgehal.cli import main

COMMANDS = {"quickstart", "train", "eval", "export", "quantize", "parity", "serve", "bench", "doctor", "inspect",
            "build-engine", "export-triton"}


def test_every_command_is_there_and_has_help():
    assert COMMANDS <= set(main.commands)
    runner = CliRunner()
    for name in sorted(COMMANDS):
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_a_user_error_is_one_line_and_exit_1(tmp_path):
    missing = tmp_path / "nothing.onnx"
    result = CliRunner().invoke(main, ["inspect", str(missing), "--target", "tensorrt"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nothing.onnx" in lines[0]
    assert "Traceback" not in result.output


def test_an_invalid_choice_lists_the_valid_ones(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path / "c.pt"), "-o", str(tmp_path / "m.onnx"),
                                       "--aux", "drop"])
    assert result.exit_code == 2 and "'keep'" in result.output and "'prune'" in result.output
