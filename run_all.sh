#!/usr/bin/env bash
# The main job: set up the environment, find BraTS 2020 (or generate the synthetic dataset),
# then execute every notebook headless with papermill into outputs/notebooks/.
#
#   bash run_all.sh                      # profile: full with a GPU and BraTS data, else quick
#   PROFILE=quick bash run_all.sh        # force a profile (configs/<PROFILE>.yaml)
#   DATA_ROOT=/path/to/MICCAI_BraTS2020_TrainingData bash run_all.sh
#   bash run_all.sh -p SEED 1            # extra arguments go to every papermill call
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/setup_env.sh

NOTEBOOKS=(01_eda 02_train_unet 03_finetune_sam 04_evaluate 05_demo)
# Absolute, so the notebooks use it as given (a relative OUTPUT_DIR would follow RunDir.for_platform to Drive).
OUTPUT_DIR="$("$PY" -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "${OUTPUT_DIR:-outputs}")"

# Data: explicit DATA_ROOT, else Kaggle/Colab locations, else synthetic (generated once, reused).
# On Colab/Kaggle synthetic data needs BRAINSEG_DATA=synthetic: a GPU run on it by accident costs hours.
ROOT=""
if FOUND="$("$PY" -m brainseg_utils.data.brats --find ${DATA_ROOT:+--root "$DATA_ROOT"})"; then
    ROOT="$FOUND"
else
    rc=$?
    [[ $rc -eq 1 ]] || exit $rc   # 2: an explicit DATA_ROOT that is wrong, already explained
    if [[ -n "${COLAB_RELEASE_TAG:-}${KAGGLE_KERNEL_RUN_TYPE:-}" && "${BRAINSEG_DATA:-}" != synthetic ]]; then
        echo "error: no BraTS 2020 found on this hosted VM (Kaggle: attach awsaf49/brats20-dataset-training-validation;" \
             "Colab: put MICCAI_BraTS2020_TrainingData on Drive), or set DATA_ROOT=/path, or opt in to synthetic data:" \
             "BRAINSEG_DATA=synthetic bash run_all.sh" >&2
        exit 2
    fi
fi
# Profile from data + device: full for real BraTS on a GPU, quick otherwise (synthetic data never gets full).
if [[ -z "${PROFILE:-}" ]]; then
    if [[ -n "$ROOT" ]] && "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        PROFILE=full
    else
        PROFILE=quick
    fi
fi
PARAMS="configs/$PROFILE.yaml"
[[ -f "$PARAMS" ]] || { echo "error: profile '$PROFILE' has no $PARAMS (options: $(ls configs | sed 's/.yaml//' | tr '\n' ' '))" >&2; exit 2; }

if [[ -n "$ROOT" ]]; then
    echo "data: BraTS-layout data at $ROOT"
else
    SYNTH_DIR="${SYNTHETIC_DIR:-data/synthetic}"
    read -r CASES DEPTH SEED LOOK < <("$PY" -c "import yaml,sys; p=yaml.safe_load(open('$PARAMS')); print(p['SYNTHETIC_CASES'], p['SYNTHETIC_DEPTH'], p['SEED'], p.get('SYNTHETIC_APPEARANCE', 'fixed'))")
    echo "data: no BraTS 2020 found (set DATA_ROOT to use it); synthetic dataset in $SYNTH_DIR"
    "$PY" -m brainseg_utils.data.synthetic --out "$SYNTH_DIR" --cases "$CASES" --depth "$DEPTH" --seed "$SEED" --appearance "$LOOK"
    ROOT="$SYNTH_DIR"
fi

# Recorded in metrics.json (with the git commit) so every results table names what produced it.
export BRAINSEG_RUN_COMMAND="PROFILE=$PROFILE bash run_all.sh${*:+ $*}"
mkdir -p "$OUTPUT_DIR/notebooks"
echo "profile: $PROFILE ($PARAMS)  outputs: $OUTPUT_DIR"
start_all=$SECONDS
for nb in "${NOTEBOOKS[@]}"; do
    src="notebooks/$nb.ipynb"
    [[ -f "$src" ]] || continue
    out="$OUTPUT_DIR/notebooks/$nb.ipynb"
    echo "=== $nb"
    start=$SECONDS
    if ! "$PY" -m papermill "$src" "$out" -k brainseg --cwd . -f "$PARAMS" \
            -r DATA_ROOT "$ROOT" -r OUTPUT_DIR "$OUTPUT_DIR" -p INTERACTIVE False --no-progress-bar --log-output "$@"; then
        echo "FAILED: notebook $src; the executed copy with the error is $out" >&2
        exit 1
    fi
    echo "=== $nb done in $((SECONDS - start)) s"
done
echo "all notebooks done in $((SECONDS - start_all)) s; executed copies in $OUTPUT_DIR/notebooks/"
