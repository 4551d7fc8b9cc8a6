"""`edgehal quickstart --zoo`: the shipped checkpoints run end to end without training."""

import subprocess
import sys

import yaml

from edgehal.quickstart import ZOO, run_quickstart


def test_quickstart_on_a_zoo_model_trains_nothing_and_matches_its_card(data_root, tmp_path):
    lines: list[str] = []
    card = yaml.safe_load((ZOO / "mnist_baseline" / "card.yaml").read_text())
    assert run_quickstart(data_root=data_root, output_dir=tmp_path, zoo="mnist_baseline", log=lines.append)
    assert lines[0].startswith("[1/4] no training: the shipped") and not any("training mnist" in s for s in lines)
    result = yaml.safe_load((tmp_path / "eval.json").read_text())
    for head, rate in card["metrics"]["test_error_percent"].items():
        assert round(result["metrics"][head]["error_rate"], 2) == rate
    assert (tmp_path / "mnist_baseline.keep.onnx").is_file() and (tmp_path / "mnist_baseline.prune.onnx").is_file()
    assert (tmp_path / "parity" / "parity.md").is_file()
    assert not any(tmp_path.glob("**/checkpoint.pt"))          # nothing was trained


def test_quickstart_refuses_an_unknown_zoo_model_and_epochs_with_zoo(tmp_path):
    for extra, needle in ((["--zoo", "nope"], "--zoo 'nope' | is not a shipped model. Note: one of "
                                              "['mnist_baseline', 'mnist_hal_case1']"),
                          (["--zoo", "mnist_baseline", "--epochs", "2"], "--epochs | cannot be combined with --zoo")):
        r = subprocess.run([sys.executable, "-m", "edgehal.cli", "quickstart", "--output-dir", str(tmp_path / "q"),
                            *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and needle in r.stderr + r.stdout, r.stderr
        assert not (tmp_path / "q").exists()
