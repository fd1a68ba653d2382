"""brainseg_utils: the package behind the brainseg notebooks (BraTS 2020, U-Net vs fine-tuned SAM).

Modules (imported on use; torch is only loaded by the ones that need it), by what they own:
  config      run parameters and their one set of defaults (the full profile); notebook names -> configs
  paths       RunDir: every output path of a run; open_run_data (cache + hash-checked split)
  env, io     where we run (Colab/Kaggle/local), code version; atomic writes and hashes
  bootstrap   the notebooks' bootstrap cell (one source, tested)
  synthetic   synthetic BraTS-layout dataset        brats       discovery, validation, loading
  data        real BraTS or synthetic: which data   slices      slice cache and patient split
  dataset     torch Dataset over the cache          transforms  albumentations pipelines
  unet        the U-Net                             losses      focal + Dice
  sam         SAM backends and batched decoder      embeddings  frozen-encoder embedding cache
  train       the shared training engine            finetune    SAM decoder training per prompt mode
  inference   trained models -> native-grid masks   metrics     Dice/IoU/precision/recall/HD95
  evaluate    test-split evaluation, result files   report      README results table
  viz         figures and the slice explorer        demo        the Gradio demo
  checkpoints checkpoint files, device + AMP policy  upload      untrusted upload checks and loading
  encoder_runtime  frozen-model CPU inference (OpenVINO fp32 when installed, PyTorch otherwise)
"""

__version__ = "0.1.0"
__all__ = [
    "bootstrap",
    "brats",
    "checkpoints",
    "config",
    "data",
    "dataset",
    "demo",
    "embeddings",
    "encoder_runtime",
    "env",
    "evaluate",
    "finetune",
    "inference",
    "io",
    "losses",
    "metrics",
    "paths",
    "report",
    "sam",
    "slices",
    "synthetic",
    "train",
    "transforms",
    "unet",
    "upload",
    "viz",
]
