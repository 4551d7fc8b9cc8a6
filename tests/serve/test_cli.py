"""The thin `edgehal serve` command."""

from __future__ import annotations

import click
from click.testing import CliRunner

from edgehal.cli import main


def test_help_names_every_default():
    command = main.commands["serve"]
    options = [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]
    assert {o.name for o in options} >= {"host", "port", "max_batch_size", "max_queue_delay_ms", "max_queue_size",
                                         "max_request_bytes", "providers", "threads", "log_level"}
    for o in options:
        assert "Default: " in o.help, o.name
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "Open Inference Protocol" in result.output


def test_a_corrupt_model_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    result = CliRunner().invoke(main, ["serve", str(bad), "--port", "0"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: ONNX model {bad} | onnxruntime cannot load it")
    assert "Traceback" not in result.output


def test_an_invalid_choice_lists_the_valid_ones(model_path):
    result = CliRunner().invoke(main, ["serve", str(model_path), "--log-level", "loud"])
    assert result.exit_code == 2
    assert "'debug', 'info', 'warning', 'error'" in result.output or "debug|info|warning|error" in result.output
