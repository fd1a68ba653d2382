#!/usr/bin/env bash
# The main job: set up the environment, then find BraTS 2020 (or generate the synthetic dataset), pick the
# profile and execute every notebook headless with papermill into outputs/notebooks/
# (brainseg_utils/workflow/pipeline.py decides; this script only prepares the environment).
#
#   bash run_all.sh                      # profile: full with a GPU and BraTS data, else quick
#   PROFILE=quick bash run_all.sh        # force a profile (configs/<PROFILE>.yaml, or a .yaml path)
#   DATA_ROOT=/path/to/MICCAI_BraTS2020_TrainingData bash run_all.sh
#   bash run_all.sh -p SEED 1            # extra arguments go to every papermill call
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/setup_env.sh
exec "$PY" -m brainseg_utils.workflow.pipeline "$@"
