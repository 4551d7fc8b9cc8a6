"""Facts about the machine edgehal runs on: usable cores and the Jetson L4T release.

One parser per fact, used by doctor, bench, serve and the TensorRT build
provenance alike, so they never disagree about the host.
"""

from __future__ import annotations

import os
import re

# /etc/nv_tegra_release on a Jetson: "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ..."
NV_TEGRA_RELEASE = "/etc/nv_tegra_release"
_L4T = re.compile(r"R(\d+)\s*\([^)]*\),\s*REVISION:\s*([\d.]+)")


def usable_cores() -> int:
    """Cores this process may run on (``taskset`` and cgroup cpusets narrow it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_l4t_release(text: str) -> str | None:
    """``# R35 (release), REVISION: 4.1, GCID: ...`` -> ``"35.4.1"``; None if unrecognised.

    The bare dotted version (no leading ``R``) is the form NVIDIA's release notes
    and JetPack tables use, so versions compare as text and as tuples alike.
    """
    m = _L4T.search(text or "")
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2).rstrip('.')}"
