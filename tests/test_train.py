import os
import subprocess
import sys
from pathlib import Path

from edgehal.checkpoint import load_checkpoint
from edgehal.config import load_config
from edgehal.train import train

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "configs" / "digits_hal_case1.yaml"


def test_training_learns_and_records_history(digits_checkpoint):
    ckpt = load_checkpoint(digits_checkpoint)
    history = ckpt.payload["history"]
    assert len(history) == 6
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert ckpt.metrics["test"]["logits"]["error_rate"] < 20.0  # chance is 90%
    assert "aux_case1" in ckpt.metrics["test"]


def test_resume_continues_from_the_saved_epoch(tmp_path):
    cfg = load_config(DIGITS, [f"output_dir={tmp_path / 'a'}", "epochs=2", "threads=2"])
    first = train(cfg, log=lambda _: None, progress=False)
    lines = []
    cfg3 = load_config(DIGITS, [f"output_dir={tmp_path / 'a'}", "epochs=3", "threads=2"])
    train(cfg3, resume=first, log=lines.append, progress=False)
    assert any("resuming" in line and "epoch 2" in line for line in lines)
    assert [h["epoch"] for h in load_checkpoint(first).payload["history"]] == [1, 2, 3]


def test_torchrun_two_cpu_processes_on_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29531", "-m", "edgehal.cli", "train", str(DIGITS),
                        "--set", "epochs=2", "--output-dir", str(tmp_path / "ddp")],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    # each of the two ranks saw half of the training set
    n_train = 1797 - 360 - 180
    seen = ckpt.payload["history"][0]["images_per_second"] * ckpt.payload["history"][0]["seconds"]
    assert abs(seen - n_train / 2) <= 1
    assert r.stdout.count("epoch 1/2") == 1  # only rank 0 reports
