#!/usr/bin/env bash
# The TensorRT check, in one script, for a machine with an NVIDIA GPU and TensorRT 10 or 11
# (an x86 GPU server, or a Jetson with JetPack's TensorRT 10). For the MNIST HAL model, kept and pruned:
#   export ONNX (fp32 and fp16) -> quantize (Q/DQ INT8) -> inspect --target tensorrt
#   -> build-engine, strongly typed: fp32 from the fp32 ONNX, fp16 from the fp16 ONNX, fp16 from the
#      fp32 ONNX (converted on the way), int8 from the quantized ONNX; with DLA_CORE on TensorRT 10,
#      fp16/int8 DLA engines too (weakly typed; TensorRT 11 has no DLA builds)
#   -> parity (engines and ONNX against the checkpoint) -> bench (engines and ONNX),
#   and saves every report under $OUT.
#
# This script has never run on real hardware: edgehal's TensorRT code (build-engine, the
# runner, serving engines) has only run against the fake TensorRT of tests/fakes, as
# TensorRT 10 and as 11. Its first run on a GPU is its first real test.
#
# Usage:
#   benchmarks/gpu_check.sh [CHECKPOINT]
# Environment:
#   CHECKPOINT     trained MNIST HAL checkpoint (default runs/mnist_hal_case1/best.pt;
#                  make one with `edgehal train models/configs/mnist_hal_case1.yaml`)
#   EDGEHAL_DATA   data directory holding MNIST (default ../shared/data)
#   OUT            where reports go (default benchmarks/results/gpu_check/<UTC time>)
#   MAX_BATCH      engines' largest batch (default 256; parity and bench stay within it)
#   BENCH_BATCHES  batch sizes to time (default 1,8,64,256)
#   DLA_CORE       also build fp16/int8 engines on this DLA core (Jetson with TensorRT 10 only;
#                  skipped with a note on TensorRT 11; default none)
#
# It fails at once, with one line, where TensorRT, a GPU or the checkpoint is
# missing. Later steps run even when one fails (so every report that can be made
# is made); the exit status is 1 when any step failed, and the summary names them.
set -uo pipefail

die() { echo "gpu_check: $*" >&2; exit 1; }

CHECKPOINT="${1:-${CHECKPOINT:-runs/mnist_hal_case1/best.pt}}"
DATA="${EDGEHAL_DATA:-../shared/data}"
OUT="${OUT:-benchmarks/results/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}"
MAX_BATCH="${MAX_BATCH:-256}"
BENCH_BATCHES="${BENCH_BATCHES:-1,8,64,256}"
DLA_CORE="${DLA_CORE:-}"

command -v edgehal >/dev/null 2>&1 || die "edgehal is not on PATH: pip install -e '.[gpu,tensorrt]'"
python -c "import tensorrt" >/dev/null 2>&1 \
    || die "TensorRT is not installed or does not load: install edgehal[tensorrt] on a machine with an NVIDIA GPU (on a Jetson it ships with JetPack)"
TRT_MAJOR="$(python -c "import tensorrt; print(tensorrt.__version__.split('.')[0])")"
case "$TRT_MAJOR" in
    10|11) ;;
    *) die "TensorRT $TRT_MAJOR is not supported: edgehal builds with TensorRT 10 or 11 (pip install 'tensorrt>=10.0,<12')" ;;
esac
if [ -n "$DLA_CORE" ] && [ "$TRT_MAJOR" != 10 ]; then
    echo "gpu_check: note: DLA_CORE=$DLA_CORE ignored: DLA builds need TensorRT 10 (this is TensorRT $TRT_MAJOR)" >&2
    DLA_CORE=""
fi
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1 \
    || die "no CUDA GPU is visible to PyTorch: check nvidia-smi and CUDA_VISIBLE_DEVICES"
python -c "import onnxruntime as o, sys; sys.exit(0 if 'CUDAExecutionProvider' in o.get_available_providers() else 1)" \
    >/dev/null 2>&1 || echo "gpu_check: note: onnxruntime has no CUDA provider (install edgehal[gpu]); ONNX runs on the CPU" >&2
[ -f "$CHECKPOINT" ] || die "checkpoint $CHECKPOINT not found: train one (edgehal train models/configs/mnist_hal_case1.yaml) or pass its path"
[ -d "$DATA" ] || die "data directory $DATA not found: set EDGEHAL_DATA"

mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
FAILED=()
step() {  # step NAME COMMAND...: run, log, remember failures, carry on
    local name="$1"; shift
    echo "==> $name: $*"
    if "$@"; then echo "<== $name: ok"; else echo "<== $name: FAILED ($?)"; FAILED+=("$name"); fi
}
opt_flag() {  # the first of the given options that `edgehal CMD --help` lists
    local cmd="$1"; shift
    for flag in "$@"; do
        if edgehal "$cmd" --help 2>/dev/null | grep -q -- "$flag"; then echo "$flag"; return; fi
    done
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    [ -f /etc/nv_tegra_release ] && echo "l4t: $(head -1 /etc/nv_tegra_release)"
    python - <<'EOF'
import onnxruntime, tensorrt, torch
import edgehal
print("edgehal", edgehal.__version__)
print("tensorrt", tensorrt.__version__, "major", tensorrt.__version__.split(".")[0])
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("gpu", torch.cuda.get_device_name(0), "sm_%d%d" % torch.cuda.get_device_capability(0))
EOF
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi
} > "$OUT/system.txt" 2>&1
cat "$OUT/system.txt"

BENCH_REPORT_FLAG="$(opt_flag bench --report-dir --output-dir --out)"
PARITY_BATCH=$(( MAX_BATCH < 500 ? MAX_BATCH : 500 ))
CACHE="$OUT/timing.cache"

for aux in keep prune; do
    onnx="$OUT/mnist_${aux}.onnx"
    fp16="$OUT/mnist_${aux}_fp16.onnx"
    int8="$OUT/mnist_${aux}_int8.onnx"
    step "export $aux" edgehal export "$CHECKPOINT" -o "$onnx" --aux "$aux" --data-dir "$DATA"
    step "export $aux fp16" edgehal export "$CHECKPOINT" -o "$fp16" --aux "$aux" --precision fp16 --data-dir "$DATA"
    step "quantize $aux" edgehal quantize "$onnx" -o "$int8" --calib-data "$DATA"
    step "inspect $aux fp32" bash -c "edgehal inspect '$onnx' --target tensorrt | tee '$OUT/inspect_${aux}.txt'"
    step "inspect $aux fp16" bash -c "edgehal inspect '$fp16' --target tensorrt | tee '$OUT/inspect_${aux}_fp16.txt'"
    step "inspect $aux int8" bash -c "edgehal inspect '$int8' --target tensorrt | tee '$OUT/inspect_${aux}_int8.txt'"

    # NAME:PRECISION:SOURCE. Engines are strongly typed: each computes in its ONNX's own types.
    # fp16conv builds fp16 from the fp32 ONNX, which build-engine converts (and keeps) on the way.
    engines=()
    for spec in "fp32:fp32:$onnx" "fp16:fp16:$fp16" "fp16conv:fp16:$onnx" "int8:int8:$int8"; do
        IFS=: read -r name precision src <<< "$spec"
        plan="$OUT/mnist_${aux}_${name}.plan"
        step "build $aux $name (TensorRT $TRT_MAJOR)" edgehal build-engine "$src" -o "$plan" \
            --precision "$precision" --max-batch "$MAX_BATCH" --timing-cache "$CACHE"
        [ -f "$plan" ] && engines+=("$plan")
    done
    if [ -n "$DLA_CORE" ]; then  # TensorRT 10 only (checked above): weakly typed, from the fp32 / Q/DQ ONNX
        for spec in "fp16:$onnx" "int8:$int8"; do
            IFS=: read -r precision src <<< "$spec"
            dla="$OUT/mnist_${aux}_${precision}_dla${DLA_CORE}.plan"
            step "build $aux $precision dla$DLA_CORE" edgehal build-engine "$src" -o "$dla" \
                --precision "$precision" --max-batch "$MAX_BATCH" --dla-core "$DLA_CORE"
            [ -f "$dla" ] && engines+=("$dla")
        done
    fi
    onnx_files=()
    for f in "$onnx" "$fp16" "$int8"; do [ -f "$f" ] && onnx_files+=("$f"); done

    if [ "${#engines[@]}" -gt 0 ] || [ "${#onnx_files[@]}" -gt 0 ]; then
        step "parity $aux" edgehal parity "$CHECKPOINT" "${engines[@]}" "${onnx_files[@]}" \
            --data-dir "$DATA" --batch-size "$PARITY_BATCH" --report-dir "$OUT/parity_${aux}"
        if [ -n "$BENCH_REPORT_FLAG" ]; then
            step "bench $aux" edgehal bench "${engines[@]}" "${onnx_files[@]}" \
                --batch-sizes "$BENCH_BATCHES" "$BENCH_REPORT_FLAG" "$OUT/bench_${aux}"
        else
            echo "gpu_check: edgehal bench has no report-directory option; skipped" >&2
            FAILED+=("bench $aux")
        fi
    fi
done

echo
echo "reports: $OUT"
ls -l "$OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'gpu_check: FAILED steps: %s\n' "$(IFS=', '; echo "${FAILED[*]}")" >&2
    exit 1
fi
echo "gpu_check: all steps passed"
