#!/bin/bash
# One issue-14 variant on this machine: a copy of the package with the flagged generator and augmentation,
# benchmarks/bench_transfer.py through wrap.py (which waits for a shared real-anatomy set built elsewhere).
#   notes/issue14-experiments/runvar.sh NAME SYN_FLAGS AUG_FLAGS [bench_transfer args]
# SYN_FLAGS: comma list of intensity, anatomy, tumours, wmh (none: the current generator, bit for bit)
# AUG_FLAGS: comma list of bias, biasS, gamma, blur, bc (-: the current augmentation)
name=$1 flags=$2 aug=$3; shift 3
W=$(cd "$(dirname "$0")/../.." && pwd); E=$W/notes/issue14-experiments; d=/tmp/issue14/v_$name
rm -rf "$d"; mkdir -p "$d"; cp -r "$W/brainseg_utils" "$W/benchmarks" "$d/"
cp "$E/synthetic_flagged.py" "$d/brainseg_utils/synthetic.py"; cp "$E/transforms_flagged.py" "$d/brainseg_utils/transforms.py"
cd "$W" && BRAINSEG_SYN_FLAGS=$flags BRAINSEG_AUG=$aug PYTHONPATH=$d PYTHONUNBUFFERED=1 nice -n 10 \
  python "$E/wrap.py" "$d" --out "outputs/benchmarks/t_$name.json" --work "outputs/benchmarks/w_$name" \
  --label "$name: generator flags=$flags, augmentation extra=$aug $*" "$@" > "outputs/benchmarks/t_$name.log" 2>&1
