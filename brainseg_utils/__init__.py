"""brainseg_utils: the package behind the brainseg notebooks (BraTS 2020, 2-D U-Net vs fine-tuned SAM).

Subpackages, lowest layer first (a module imports its own layer or lower ones; docs/architecture.md):
  runtime/     where we run (platform, devices, code version), run-folder paths, atomic writes and hashes,
               checkpoint files, slim weights, frozen-encoder runtimes, the notebooks' bootstrap cell
  data/        BraTS discovery, validation and volumes; the synthetic generator; slice cache and split;
               the torch Dataset; augmentation; EDA figures and the slice explorer
  models/      the U-Net, the focal + Dice loss, SAM (backends, weights, prompts, batched decoder, discovery)
  config       the run-parameter dataclasses: the one place every default is written
  parameters   which notebook takes which parameter, profiles, generated parameters cells and full.yaml
  training/    the training engine (loop, resume, weight averaging, checkpoints), multi-GPU, the SAM
               embedding cache and decoder fine-tuning
  evaluation/  inference, metrics, statistics, latency, result files, the README table, result figures
  workflow/    what notebooks and run_all.sh share: data location, notebook 01's data steps and their
               re-use by 02-05, the headless pipeline, the generator of notebook cells
  app/         the Gradio demo: predictor, one request, examples, untrusted uploads, the page

Modules are imported on use; torch is only loaded by those that need it.
"""

__version__ = "0.1.0"
