"""The README's "Python API" examples run exactly as written.

Each ```python block of that section runs in a fresh interpreter, in order, in one folder (later blocks
use the files earlier ones wrote). A ``print(...)  # TEXT`` line documents its output: TEXT (up to a
": " that starts an explanation; PORT stands for any port number) must be in what the block printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Python API"


def python_api_blocks(readme: str) -> list[str]:
    """The ```python blocks between the section's heading and the next ``## `` heading."""
    start = readme.index(f"\n{SECTION}\n")
    end = readme.find("\n## ", start + 1)
    section = readme[start:end if end != -1 else len(readme)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def documented_outputs(block: str) -> list[re.Pattern[str]]:
    """What ``print(...)  # TEXT`` lines say they print, as patterns."""
    out = []
    for line in block.splitlines():
        m = re.match(r"\s*print\(.*\)\s+# (.+)$", line)
        if m:
            text = m.group(1).split(": ")[0].strip()
            out.append(re.compile(re.escape(text).replace("PORT", r"\d+")))
    return out


def test_the_section_has_the_examples():
    blocks = python_api_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 4
    code = "\n".join(blocks)
    for call in ("HeadManifest.classifier(", "edgehal.export(", "edgehal.load(", "edgehal.bench(",
                 "edgehal.serve(", "InferRequestedOutput(", ".stop()"):
        assert call in code, call
    assert [p.pattern for p in documented_outputs('print(x)  # prune (\'logits\',)\nprint(y)  # (1, 2): why')] \
        == [re.escape("prune ('logits',)"), re.escape("(1, 2)")]


def test_the_python_api_examples_run_as_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "EDGEHAL_DATA": os.environ.get("EDGEHAL_DATA", str(REPO.parent / "shared" / "data")),
           "OMP_NUM_THREADS": "1"}
    for i, block in enumerate(python_api_blocks((REPO / "README.md").read_text())):
        script = tmp_path / f"example_{i}.py"
        script.write_text(block)
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"README Python API block {i} failed:\n{block}\n{proc.stdout}{proc.stderr}"
        for pattern in documented_outputs(block):
            assert pattern.search(proc.stdout), f"block {i} did not print {pattern.pattern!r}:\n{proc.stdout}"
