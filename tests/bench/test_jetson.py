"""Jetson detection, power mode, clocks and the tegrastats parser, on real output lines.

Where the lines come from (verbatim, not edited):

* DataDog/datadog-agent, ``pkg/collector/corechecks/nvidia/jetson/jetson_test.go``
  (Apache-2.0): lines captured on a Nano, an AGX Xavier, a Xavier NX, an Orin NX
  (``mW`` units), a TX2 and two AGX Orins (L4T 35 and 36).
* rbonghi/jetson_stats, ``jtop/tests/test_06_tegra_parse.py``: an AGX Orin line from
  JetPack 7 with a timestamp and three values per rail.
* jfey/SmallThings, ``jetson-nano.md``: ``sudo jetson_clocks --show`` on a Jetson Nano
  in MAXN before ``jetson_clocks`` was run.
* ay65535/dotfiles, ``local/share/jetson-nano/firstrun.sh``: ``/etc/nv_tegra_release``
  of a Jetson Nano (L4T R32.7.6).

No test here needs a Jetson except the one marked ``gpu`` at the end.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from edgehal.bench import jetson
from edgehal.bench.jetson import (
    ClockStatus,
    JetsonInfo,
    PowerMode,
    TegrastatsSampler,
    detect_jetson,
    jetson_info,
    parse_jetson_clocks,
    parse_nvpmodel,
    parse_tegrastats_line,
    query_clocks,
    query_power_mode,
    summarize_power,
)
from edgehal.errors import EdgehalError

# ---- tegrastats lines (verbatim) -------------------------------------------------

# DataDog/datadog-agent jetson_test.go: nanoSample
NANO = ("RAM 534/3964MB (lfb 98x4MB) SWAP 5/1982MB (cached 1MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [16%@204,9%@204,0%@204,0%@204] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@34C CPU@36.5C "
        "PMIC@100C GPU@36C AO@39.5C thermal@36.25C POM_5V_IN 1022/1022 POM_5V_GPU 0/0 POM_5V_CPU 204/204")
# DataDog/datadog-agent jetson_test.go: agXSample (AGX Xavier)
AGX_XAVIER = ("RAM 721/31927MB (lfb 7291x4MB) SWAP 0/15963MB (cached 0MB) "
              "CPU [2%@1190,0%@1190,0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0%@665 GR3D_FREQ 0%@318 APE 150 "
              "MTS fg 0% bg 0% AO@37.5C GPU@37.5C Tdiode@40C PMIC@100C AUX@36C CPU@37.5C thermal@36.9C "
              "Tboard@37C GPU 0/0 CPU 311/311 SOC 932/932 CV 0/0 VDDRQ 621/621 SYS5V 1482/1482")
# DataDog/datadog-agent jetson_test.go: xavierNxSample
XAVIER_NX = ("RAM 4412/7772MB (lfb 237x4MB) SWAP 139/3886MB (cached 2MB) "
             "CPU [9%@1190,6%@1190,6%@1190,5%@1190,4%@1190,8%@1267] EMC_FREQ 10%@1600 GR3D_FREQ 62%@306 "
             "APE 150 MTS fg 0% bg 0% AO@41.5C GPU@43C PMIC@100C AUX@41.5C CPU@43.5C thermal@42.55C "
             "VDD_IN 4067/4067 VDD_CPU_GPU_CV 738/738 VDD_SOC 1353/1353")
# DataDog/datadog-agent jetson_test.go: voltageUnitSample (an Orin NX: tj/CV0..2 sensors, mW units)
ORIN_NX = ("RAM 6334/15388MB (lfb 1770x4MB) SWAP 491/7694MB (cached 0MB) "
           "CPU [6%@729,9%@729,5%@729,16%@729,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@611 VIC_FREQ 729 "
           "APE 174 CV0@45.812C CPU@47.937C SOC2@46.093C SOC0@46.968C CV1@46.406C GPU@45.875C tj@48.875C "
           "SOC1@48.875C CV2@45.75C VDD_IN 5299mW/5299mW VDD_CPU_GPU_CV 773mW/773mW VDD_SOC 1424mW/1424mW")
# DataDog/datadog-agent jetson_test.go: tx2Sample
TX2 = ("RAM 2344/7852MB (lfb 1154x4MB) SWAP 0/3926MB (cached 0MB) CPU [1%@345,off,off,1%@345,0%@345,2%@345] "
       "EMC_FREQ 4%@1600 GR3D_FREQ 0%@624 APE 150 PLL@37.5C MCPU@37.5C PMIC@100C Tboard@32C GPU@35C "
       "BCPU@37.5C thermal@36.5C Tdiode@34.25C VDD_SYS_GPU 152/152 VDD_SYS_SOC 687/687 VDD_4V0_WIFI 0/0 "
       "VDD_IN 3056/3056 VDD_SYS_CPU 152/152 VDD_SYS_DDR 883/883")
# DataDog/datadog-agent jetson_test.go: orinSample (AGX Orin)
AGX_ORIN = ("RAM 2448/62840MB (lfb 2x4MB) SWAP 0/31420MB (cached 0MB) "
            "CPU [0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,"
            "0%@2201] GR3D_FREQ 0% cpu@42C soc2@37.843C soc0@39.187C gpu@37.75C tj@42C soc1@37.937C "
            "VDD_GPU_SOC 4940mW/4940mW VDD_CPU_CV 988mW/988mW VIN_SYS_5V0 4442mW/4442mW")
# DataDog/datadog-agent jetson_test.go: r36Sample (AGX Orin, L4T 36; odd spacing is tegrastats')
AGX_ORIN_R36 = ("RAM 29114/30697MB (lfb 3x4MB)    SWAP 4915/15348MB (cached 1MB) "
                "CPU [3%@729,4%@729,0%@729,1%@729,0%@2201,100%@2201,1%@2201,0%@2201,100%@2201,0%@2201,0%@2201,"
                "0%@2201] EMC_FREQ 1%@2133 GR3D_FREQ 0%@[305,305] NVENC      off  NVDEC    off NVJPG off "
                "NVJPG1    off         VIC        off          OFA           off          NVDLA0    off       "
                "NVDLA1     off          PVA0_FREQ off         APE           174        cpu@53.062C "
                "soc2@48.25C soc0@48.843C  gpu@47.812C tj@53.062C soc1@48.968C    VDD_GPU_SOC 3205mW/3205mW "
                "VDD_CPU_CV 4405mW/4405mW VIN_SYS_5V0 4767mW/4767mW")
# rbonghi/jetson_stats jtop/tests/test_06_tegra_parse.py: TEGRASTATS_ORIN_JP7
AGX_ORIN_JP7 = (
    "07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) "
    "CPU [23%@2201,10%@2201,4%@2201,14%@2201,30%@2201,18%@2201,10%@2201,10%@2201,33%@2201,7%@2201,5%@2201,27%@2201] "
    "EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC0 off NVJPG0 off NVJPG1 off VIC off OFA off "
    "NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 "
    "cpu@52.968C/52.968C soc2@48.406C/48.406C soc0@49.531C/49.531C gpu@47.625C/47.625C "
    "VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV 3268mW/3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW/5500mW"
)

# jfey/SmallThings jetson-nano.md: `sudo jetson_clocks --show` on a Nano in MAXN, clocks not locked.
NANO_CLOCKS_UNLOCKED = """\
SOC family:tegra210  Machine:jetson-nano
Online CPUs: 0-3
CPU Cluster Switching: Disabled
cpu0: Online=1 Governor=schedutil MinFreq=102000 MaxFreq=1428000 CurrentFreq=1428000 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq=102000 MaxFreq=1428000 CurrentFreq=1428000 IdleStates: WFI=1 c7=1
cpu2: Online=1 Governor=schedutil MinFreq=102000 MaxFreq=1428000 CurrentFreq=1428000 IdleStates: WFI=1 c7=1
cpu3: Online=1 Governor=schedutil MinFreq=102000 MaxFreq=1428000 CurrentFreq=1428000 IdleStates: WFI=1 c7=1
GPU MinFreq=76800000 MaxFreq=921600000 CurrentFreq=153600000
EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=0
Fan: speed=0
NV Power Mode: MAXN
"""
# The same board after `sudo jetson_clocks`, DERIVED (not captured) from the settings the same
# page lists after running it: scaling_min_freq=1428000, GPU min_freq=921600000, emc clk_state=1.
NANO_CLOCKS_LOCKED = (NANO_CLOCKS_UNLOCKED.replace("MinFreq=102000", "MinFreq=1428000")
                      .replace("MinFreq=76800000", "MinFreq=921600000").replace("FreqOverride=0", "FreqOverride=1")
                      .replace("IdleStates: WFI=1 c7=1", "IdleStates: WFI=0 c7=0"))

# ay65535/dotfiles local/share/jetson-nano/firstrun.sh: `cat /etc/nv_tegra_release` on a Nano.
NANO_RELEASE = ("# R32 (release), REVISION: 7.6, GCID: 38171779, BOARD: t210ref, EABI: aarch64, "
                "DATE: Tue Nov  5 07:46:14 UTC 2024\n")
# The device-tree model string of the Nano developer kit, NUL-terminated as the kernel exposes it.
NANO_MODEL = b"NVIDIA Jetson Nano Developer Kit\x00"


def _mw(sample) -> dict[str, int]:
    return {name: rail.current_mw for name, rail in sample.rails.items()}


# ---- the parser ------------------------------------------------------------------


def test_nano_total_is_pom_5v_in():
    s = parse_tegrastats_line(NANO)
    assert _mw(s) == {"POM_5V_IN": 1022, "POM_5V_GPU": 0, "POM_5V_CPU": 204}
    assert (s.total_mw, s.total_source) == (1022, "POM_5V_IN")
    assert s.rails["POM_5V_IN"].average_mw == 1022


def test_agx_xavier_has_no_total_rail_so_rails_are_summed():
    s = parse_tegrastats_line(AGX_XAVIER)
    assert _mw(s) == {"GPU": 0, "CPU": 311, "SOC": 932, "CV": 0, "VDDRQ": 621, "SYS5V": 1482}
    assert s.total_mw == 311 + 932 + 621 + 1482
    assert s.total_source == "sum:GPU+CPU+SOC+CV+VDDRQ+SYS5V"


def test_xavier_nx_total_is_vdd_in():
    s = parse_tegrastats_line(XAVIER_NX)
    assert _mw(s) == {"VDD_IN": 4067, "VDD_CPU_GPU_CV": 738, "VDD_SOC": 1353}
    assert (s.total_mw, s.total_source) == (4067, "VDD_IN")


def test_orin_nx_with_mw_units():
    s = parse_tegrastats_line(ORIN_NX)
    assert _mw(s) == {"VDD_IN": 5299, "VDD_CPU_GPU_CV": 773, "VDD_SOC": 1424}
    assert (s.total_mw, s.total_source) == (5299, "VDD_IN")


def test_tx2_total_is_vdd_in_not_the_first_rail():
    s = parse_tegrastats_line(TX2)
    assert set(_mw(s)) == {"VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI", "VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR"}
    assert (s.total_mw, s.total_source) == (3056, "VDD_IN")


@pytest.mark.parametrize("line, rails", [
    (AGX_ORIN, {"VDD_GPU_SOC": 4940, "VDD_CPU_CV": 988, "VIN_SYS_5V0": 4442}),
    (AGX_ORIN_R36, {"VDD_GPU_SOC": 3205, "VDD_CPU_CV": 4405, "VIN_SYS_5V0": 4767}),
    (AGX_ORIN_JP7, {"VDD_GPU_SOC": 5139, "VDD_CPU_CV": 3268, "VIN_SYS_5V0": 5500}),
], ids=["orin-r35", "orin-r36", "orin-jp7-three-values"])
def test_agx_orin_sums_its_three_rails(line, rails):
    s = parse_tegrastats_line(line)
    assert _mw(s) == rails
    assert s.total_mw == sum(rails.values())
    assert s.total_source == "sum:VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0"


def test_memory_temperatures_and_engines_are_not_rails():
    # RAM x/yMB, SWAP, IRAM x/ykB, temperatures a@b/c and "APE 150" must never be read as power.
    for line in (NANO, AGX_XAVIER, AGX_ORIN_JP7):
        assert not {"RAM", "SWAP", "IRAM", "APE", "EMC_FREQ", "GR3D_FREQ", "MTS"} & set(parse_tegrastats_line(line).rails)


def test_single_value_rail_form():
    # Synthetic, in the single "NAME <n>mW" form some Thor captures show; VIN is its input rail.
    s = parse_tegrastats_line("VDD_GPU 5517mW VDD_CPU_SOC_MSS 7484mW VIN_SYS_5V0 6309mW VIN 28548mW")
    assert (s.total_mw, s.total_source) == (28548, "VIN")
    assert s.rails["VDD_GPU"].average_mw is None


def test_line_without_rails():
    # tegrastats without root prints no rails on some releases.
    s = parse_tegrastats_line("RAM 2448/62840MB (lfb 2x4MB) SWAP 0/31420MB (cached 0MB) GR3D_FREQ 0%")
    assert s.rails == {} and s.total_mw is None and s.total_source is None


# ---- power summary ---------------------------------------------------------------


def test_summarize_power_energy_per_inference():
    samples = [parse_tegrastats_line(XAVIER_NX), parse_tegrastats_line(XAVIER_NX.replace("VDD_IN 4067/4067",
                                                                                         "VDD_IN 5067/4567"))]
    p = summarize_power(samples, duration_s=2.0, inferences=1000, batch_size=8)
    assert p.avg_power_w == pytest.approx(4.567)
    # 4.567 W x 2 s / 1000 inferences = 9.134 mJ per inference, / 8 per sample
    assert p.energy_per_inference_mj == pytest.approx(9.134)
    assert p.energy_per_sample_mj == pytest.approx(9.134 / 8)
    assert p.total_source == "VDD_IN" and p.samples == 2 and p.note == ""
    assert p.rails_avg_mw["VDD_IN"] == pytest.approx(4567)


def test_summarize_power_without_usable_samples():
    none = summarize_power([], duration_s=1.0, inferences=10)
    assert none.avg_power_w is None and "no tegrastats samples" in none.note
    no_rails = summarize_power([parse_tegrastats_line("RAM 1/2MB")], duration_s=1.0, inferences=10)
    assert no_rails.energy_per_inference_mj is None and "root" in no_rails.note
    one = summarize_power([parse_tegrastats_line(NANO)], duration_s=1.0, inferences=10)
    assert one.avg_power_w == pytest.approx(1.022) and "only one" in one.note


# ---- detection, power mode and clocks ---------------------------------------------


def test_detect_jetson_from_fixture_files(tmp_path):
    release, model = tmp_path / "nv_tegra_release", tmp_path / "model"
    release.write_text(NANO_RELEASE)
    model.write_bytes(NANO_MODEL)
    assert detect_jetson(release_file=release, model_file=model) == (
        True, "NVIDIA Jetson Nano Developer Kit", "32.7.6")
    # Only the device tree (a container without the release file) still says Jetson.
    assert detect_jetson(release_file=tmp_path / "absent", model_file=model)[:2] == (
        True, "NVIDIA Jetson Nano Developer Kit")
    # A desktop: no release file, a non-Jetson model.
    (tmp_path / "pc_model").write_bytes(b"Dell Inc. XPS\x00")
    assert detect_jetson(release_file=tmp_path / "absent", model_file=tmp_path / "pc_model") == (False, None, None)
    assert detect_jetson(release_file=tmp_path / "absent", model_file=tmp_path / "absent2") == (False, None, None)


def test_parse_nvpmodel():
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == PowerMode("MAXN", 0)
    assert parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: MODE_15W\n2\n") == PowerMode("MODE_15W", 2)
    assert parse_nvpmodel("NV Power Mode: 5W") == PowerMode("5W", None)
    assert parse_nvpmodel("command not found") is None


def test_parse_jetson_clocks_real_nano_output_is_not_locked():
    c = parse_jetson_clocks(NANO_CLOCKS_UNLOCKED)
    assert c == ClockStatus(cpu_locked=False, gpu_locked=False, emc_locked=False, power_mode="MAXN")
    assert not c.locked


def test_parse_jetson_clocks_locked():
    c = parse_jetson_clocks(NANO_CLOCKS_LOCKED)
    assert (c.cpu_locked, c.gpu_locked, c.emc_locked) == (True, True, True) and c.locked
    # Offline cores do not count (a TX2 in MAXP_CORE_ARM has two Denver cores off).
    offline = NANO_CLOCKS_LOCKED.replace("cpu3: Online=1 Governor=schedutil MinFreq=1428000",
                                         "cpu3: Online=0 Governor=schedutil MinFreq=102000")
    assert parse_jetson_clocks(offline).cpu_locked is True
    assert not ClockStatus(None, None, None).locked


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_query_commands_run_the_given_command(tmp_path):
    nvp = _script(tmp_path, "nvpmodel", "printf 'NV Power Mode: MAXN\\n0\\n'\n")
    assert query_power_mode(command=(nvp, "-q")) == (PowerMode("MAXN", 0), "")
    clocks_file = tmp_path / "clocks.txt"
    clocks_file.write_text(NANO_CLOCKS_LOCKED)
    jc = _script(tmp_path, "jetson_clocks", f"cat {clocks_file}\n")
    status, why = query_clocks(command=(jc, "--show"))
    assert status is not None and status.locked and why == ""
    # jetson_clocks refuses without root: the reason is kept, not raised.
    root = _script(tmp_path, "jc_noroot", "echo 'Please run as root'\nexit 1\n")
    assert query_clocks(command=(root, "--show")) == (None, f"{root} exited 1: Please run as root")
    assert query_power_mode(command=("edgehal-no-such-nvpmodel", "-q"))[1] == "edgehal-no-such-nvpmodel not found"


def test_jetson_info_from_fixtures(tmp_path):
    release, model = tmp_path / "rel", tmp_path / "model"
    release.write_text(NANO_RELEASE)
    model.write_bytes(NANO_MODEL)
    nvp = _script(tmp_path, "nvpmodel", "printf 'NV Power Mode: MAXN\\n0\\n'\n")
    clocks_file = tmp_path / "clocks.txt"
    clocks_file.write_text(NANO_CLOCKS_UNLOCKED)
    jc = _script(tmp_path, "jetson_clocks", f"cat {clocks_file}\n")
    info = jetson_info(release_file=release, model_file=model, nvpmodel=(nvp, "-q"), jetson_clocks=(jc, "--show"),
                       tegrastats=("edgehal-no-such-tegrastats",))
    assert info.is_jetson and info.model == "NVIDIA Jetson Nano Developer Kit" and info.l4t_release == "32.7.6"
    assert info.power_mode == PowerMode("MAXN", 0) and info.clocks is not None and not info.clocks.locked
    assert any("not locked" in w for w in info.warnings)
    assert info.tegrastats is None and any("tegrastats not found" in n for n in info.notes)
    assert info.to_dict()["clocks_locked"] is False


def test_not_a_jetson(tmp_path):
    info = jetson_info(release_file=tmp_path / "absent", model_file=tmp_path / "absent")
    assert info == JetsonInfo(False) and info.warnings == ()


def test_unknown_clock_state_warns():
    info = JetsonInfo(True, "NVIDIA Jetson AGX Orin", "36.4.3", PowerMode("MAXN", 0), clocks=None)
    assert "could not tell" in info.warnings[0]


# ---- the sampler, with a stand-in tegrastats --------------------------------------


def test_sampler_collects_lines_and_stops(tmp_path):
    line_file = tmp_path / "line.txt"
    line_file.write_text(AGX_ORIN + "\n")
    # Prints one line per --interval like tegrastats; the interval argument is checked.
    fake = _script(tmp_path, "tegrastats",
                   f'[ "$1" = "--interval" ] || exit 2\nwhile true; do cat {line_file}; sleep 0.02; done\n')
    sampler = TegrastatsSampler(command=(fake,), interval_ms=20)
    with sampler:
        deadline = time.monotonic() + 5
        while len(sampler.samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    samples = sampler.stop()  # idempotent after the context manager stopped it
    assert len(samples) >= 3
    assert all(s.total_mw == 4940 + 988 + 4442 for s in samples)
    assert sampler._proc is None


def test_sampler_reports_a_missing_command():
    with pytest.raises(EdgehalError, match="command not found"):
        TegrastatsSampler(command=("edgehal-no-such-tegrastats",)).start()
    with pytest.raises(EdgehalError, match="interval"):
        TegrastatsSampler(interval_ms=0)


@pytest.mark.gpu
@pytest.mark.skipif(not os.path.exists(jetson.RELEASE_FILE), reason="needs a Jetson (no /etc/nv_tegra_release)")
def test_real_jetson():  # pragma: no cover - runs on Jetson hardware only
    info = jetson_info()
    assert info.is_jetson and info.l4t_release
    if info.tegrastats:
        with TegrastatsSampler(interval_ms=100) as s:
            time.sleep(0.5)
        assert s.samples, "tegrastats printed nothing in 0.5 s"

