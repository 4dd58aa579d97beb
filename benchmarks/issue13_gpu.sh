#!/usr/bin/env bash
# Issue 13's GPU measurements, one part per device call (each fits the device tool's 10-minute limit):
#
#   benchmarks/issue13_gpu.sh rn50       # ResNet-50 fp16 search, bs 1/32/256: plain compile next to the best
#                                        # flag configurations with cuDNN autotuning
#   benchmarks/issue13_gpu.sh rn50-flags # the same without autotuning, and max-autotune under a compile limit
#   benchmarks/issue13_gpu.sh bert       # BERT-base seq 128 search, bs 1/64: plain compile fp16/bf16, the best
#                                        # flags, int8 and FP8 linears (attention projections included)
#   benchmarks/issue13_gpu.sh breakdown  # where the GPU time goes at the compute-bound rows (kernel categories)
#
# Results go under $OUT (the device tool's folder) or ./issue13-out, at most 8 files per part (report folders stay
# in /tmp; their report.md/json are copied). enginekit is not installed on the lent machine: it runs from src/ with
# the few pure-Python dependencies carried in .devdeps (see docs/PERFORMANCE.md).
set -u
part=${1:?usage: issue13_gpu.sh rn50|rn50-flags|bert|breakdown}
out=${OUT:-issue13-out}
mkdir -p "$out"
export PYTHONPATH="$PWD/src:$PWD/.devdeps${PYTHONPATH:+:$PYTHONPATH}"
limit=${EK_LIMIT:-540}  # seconds per command, so that what ran comes back within the device tool's 10 minutes
keep() { cp -r "$1"/report.md "$1"/report.json "$out/$2/" 2>/dev/null; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())" \
    >> "$out/gpu.txt" 2>&1

# rn50_search NAME CANDIDATES [OPTION...]: one search of ResNet-50 fp16 at batch 1/32/256 into $out/NAME
rn50_search() {
    local name=$1 cands=$2
    shift 2
    mkdir -p "$out/$name"
    ( time timeout "$limit" python3 -m enginekit.cli.main -v optimize benchmarks/models.py:resnet50 \
        --input x:batch,3,224,224 --val-range x:-2.2,2.7 -b torch --no-prepare --torch-device cuda \
        --search-batch 1,32,256 "$@" --search-candidate "$cands" --report "/tmp/ek/$name" ) > "$out/$name/log.txt" 2>&1
    keep "/tmp/ek/$name" "$name"
}

case $part in
rn50)
    # plain torch.compile (fp16, NCHW) next to the autotuned channels-last rows: different cuDNN cache keys, so one
    # process measures both cleanly (cuDNN's plan cache is per process and not keyed by the benchmark flag)
    cands="inductor:fp16/mode=default/freezing=off/channels_last=off"
    cands+=",inductor:fp16/mode=reduce-overhead/freezing=on/channels_last=on/cudnn_benchmark=on"
    cands+=",torch:fp16/channels_last=on/cuda_graph=on/cudnn_benchmark=on"
    rn50_search rn50 "$cands"
    ;;
rn50-flags)
    # the flag configurations without cuDNN autotuning, max-autotune under a compile limit
    cands="inductor:fp16/mode=default/freezing=off/channels_last=off"
    cands+=",inductor:fp16/mode=reduce-overhead/freezing=on/channels_last=on"
    cands+=",inductor:fp16/mode=max-autotune-no-cudagraphs/freezing=on/channels_last=on"
    rn50_search rn50f "$cands" --search-compile-limit 150
    ;;
bert)
    mkdir -p "$out/bert"
    cands="inductor:fp16/mode=default/freezing=off/channels_last=off"
    cands+=",inductor:bf16/mode=default/freezing=off/channels_last=off"
    cands+=",inductor:bf16/mode=reduce-overhead/freezing=on"
    cands+=",inductor:fp16/mode=reduce-overhead/freezing=on/linear=int8"
    cands+=",inductor:bf16/mode=reduce-overhead/freezing=on/linear=fp8"
    cands+=",inductor:fp16/mode=max-autotune/freezing=on/linear=int8"
    ( time timeout "$limit" python3 -m enginekit.cli.main -v optimize benchmarks/models.py:bert_base \
        --input ids:batch,128:int64 --val-range ids:0,30521 -b torch --no-prepare --torch-device cuda \
        --search-batch 1,64 --search-compile-limit 150 --search-candidate "$cands" --report "/tmp/ek/bert" \
        ) > "$out/bert/log.txt" 2>&1
    keep /tmp/ek/bert bert
    ;;
breakdown)
    mkdir -p "$out/bd"
    ( time timeout "$limit" python3 benchmarks/gpu_breakdown.py benchmarks/models.py:resnet50 \
        --input x:batch,3,224,224 --val-range=-2.2,2.7 --batch 256 --device cuda --json-out "$out/bd/rn50.json" \
        -c inductor:fp16/mode=default/freezing=off/channels_last=off \
        -c inductor:fp16/mode=reduce-overhead/freezing=on/channels_last=on ) > "$out/bd/rn50.txt" 2>&1
    ( time timeout "$limit" python3 benchmarks/gpu_breakdown.py benchmarks/models.py:bert_base \
        --input ids:batch,128:int64 --val-range 0,30521 --batch 64 --device cuda --json-out "$out/bd/bert.json" \
        -c inductor:bf16/mode=default/freezing=off/channels_last=off \
        -c inductor:bf16/mode=reduce-overhead/freezing=on \
        -c inductor:fp16/mode=reduce-overhead/freezing=on/linear=int8 ) > "$out/bd/bert.txt" 2>&1
    ;;
*)
    echo "unknown part: $part (rn50, rn50-flags, bert, breakdown)" >&2
    exit 2
    ;;
esac
