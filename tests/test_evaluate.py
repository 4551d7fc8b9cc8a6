import json
import subprocess
import sys

from edgehal.checkpoint import load_checkpoint


def test_eval_cli_writes_table_json_and_confusion_png(digits_checkpoint, tmp_path):
    out, png = tmp_path / "m.json", tmp_path / "cm.png"
    r = subprocess.run([sys.executable, "-m", "edgehal.cli", "eval", str(digits_checkpoint), "--split", "test",
                        "--json", str(out), "--confusion", str(png)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "aux_case1" in r.stdout and "logits" in r.stdout
    result = json.loads(out.read_text())
    assert result["samples"] == 360
    # the same numbers training recorded for the test split
    recorded = load_checkpoint(digits_checkpoint).metrics["test"]
    for head in ("logits", "aux_case1"):
        assert result["metrics"][head]["error_rate"] == recorded[head]["error_rate"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mnist_zoo_checkpoint_errors_match_its_card(mnist_checkpoint):
    from edgehal.evaluate import evaluate_checkpoint
    import yaml
    card = yaml.safe_load((mnist_checkpoint.parent / "card.yaml").read_text())
    result = evaluate_checkpoint(mnist_checkpoint, log=lambda _: None)
    for head, rate in card["metrics"]["test_error_percent"].items():
        assert round(result["metrics"][head]["error_rate"], 2) == rate
