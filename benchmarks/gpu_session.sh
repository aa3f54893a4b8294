#!/usr/bin/env bash
# Every GPU measurement the open issues still need, most needed first, in two device calls.
#
#     bash benchmarks/gpu_session.sh gpu-tests decode-graphs decode-dual          # call 1 (~480 s)
#     BUDGET_S=<budget_left_s - 40> bash benchmarks/gpu_session.sh train-planner train-full train-ablation
#                                                                                 # call 2, at once
#
# Name kind nvidia-h100-x1 (the earlier figures are an H100's). Send call 2 as soon as call 1
# returns: the machine stays warm only idle_release_s (30 s), and a fresh one does not start
# with under 4 minutes left. Without step names every step runs, in the order below.
# A lent GPU comes with minutes, not hours (15 of device time a session, machine start
# included), and compiling the LLaDA-8B trunk takes 20-35 s per batch shape. Each step
# gets what is left of one deadline (BUDGET_S seconds, default 560, inside the device
# tool's 600 s per call), at most its own cap (so one hung compile does not eat the rest),
# and is skipped when less than its minimum is left, so the call returns in time with
# whatever finished; a second call, made while the machine is still warm, names the steps
# the first skipped. Benchmarks save their JSON after every setting,
# so a step cut off keeps its finished rows. Writes $OUT/session.log (all output, each
# step's exit status and seconds) and one JSON per benchmark step: at most 8 files, as the
# device tool brings back.
#
# Steps, in order (the issue item each measures):
#   gpu-tests       pytest -m gpu tests/gpu: captured graphs and caches against eager on CUDA
#                   (first: the hand-captured graphs the next steps time have not run on a GPU yet)
#   decode-graphs   2.7: every strategy at batch 1 with captured CUDA graphs (<= 1.05x bare)
#   decode-dual     7.1, 7.2: dual-cache recorded rollout, planner and threshold (about one
#                   refresh a block: the cached step's own cost), batch 12 then 1
#                   (<= 0.5x bare; rollout ms/NFE against the reference's 195 ms)
#   train-planner   7.3: planner-only GRPO step with the compiled rollout, largest group
#   train-full      7.3: full-model step with activation checkpointing (AdamW may not fit)
#   train-ablation  7.3: planner, planner-fp32 and planner-rerun under the same flags: what
#                   the bf16 base and the recorded trunk save
#
# Afterwards, on the development machine: copy the JSON files into benchmarks/results/
# with the device in their names and a .md beside them (device, date, command, table),
# merge the train_step rows into train_step_h100.json (benchmarks/scaling.py reads it),
# rerun `python benchmarks/scaling.py --out benchmarks/results/scaling.json`, and update
# the README's performance section.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu-session}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
deadline=$((SECONDS + ${BUDGET_S:-560}))
steps=("$@")
(( ${#steps[@]} )) || steps=(gpu-tests decode-graphs decode-dual train-planner train-full train-ablation)

step() {  # step NAME MIN_SECONDS CAP_SECONDS COMMAND...: run COMMAND for at most CAP_SECONDS,
          # unless fewer than MIN_SECONDS are left
    local name=$1 need=$2 cap=$3 start=$SECONDS left=$((deadline - SECONDS)) rc
    shift 3
    if (( left < need )); then echo "== $name: skipped, $left s left (needs $need)"; return; fi
    (( left < cap )) || left=$cap
    echo "== $name: $* ($left s allowed)"
    timeout --kill-after=10 "$left" "$@"
    rc=$?
    # 124: the time cap; 137: killed at the cap plus its grace, or by the kernel (out of memory)
    echo "== $name: exit $rc after $((SECONDS - start)) s$((( rc == 124 || (rc == 137 && SECONDS - start >= left) )) \
        && echo ', cut off')"
}

main() {
    echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
    "$py" -c 'import torch, transformers; print("== torch", torch.__version__, "transformers", transformers.__version__)'
    # --device cuda: a machine whose torch sees no GPU fails each step at once, not after
    # minutes of timing the CPU into files read as the GPU's
    m8b=(benchmarks/decode_speed.py --model llada-8b --device cuda --compile)
    t8b=(benchmarks/train_step.py --model llada-8b --device cuda)
    for s in "${steps[@]}"; do
        case $s in
            decode-graphs) step "$s" 150 240 "$py" "${m8b[@]}" --batch 1 --max-steps 32 --warmup 1 --repeat 3 \
                --out "$out/decode_speed_graphs.json" ;;
            decode-dual) step "$s" 200 300 "$py" "${m8b[@]}" --cache dual --batch 12 1 --max-steps 32 --warmup 1 \
                --repeat 2 --strategies rollout planner:factor=1.0 threshold:tau=0.9 \
                --out "$out/decode_speed_dual.json" ;;
            gpu-tests) step "$s" 100 150 "$py" -m pytest -m gpu tests/gpu -v -p no:cacheprovider ;;
            train-planner) step "$s" 180 300 "$py" "${t8b[@]}" --compile --train planner --max-group \
                --out "$out/train_step_planner.json" ;;
            train-full) step "$s" 60 200 "$py" "${t8b[@]}" --train full --max-steps 8 --repeat 1 \
                --out "$out/train_step_full.json" ;;
            train-ablation) step "$s" 60 240 "$py" "${t8b[@]}" --train planner planner-fp32 planner-rerun \
                --max-steps 16 --repeat 1 --out "$out/train_step_ablation.json" ;;
            *) echo "== unknown step $s" ;;
        esac
    done
    echo "== done, $((deadline - SECONDS)) s of the budget left"
}

main 2>&1 | tee -a "$out/session.log"
