"""brainseg_utils: the package behind the brainseg notebooks (BraTS 2020, U-Net vs fine-tuned SAM).

Modules (imported on use; torch is only loaded by the ones that need it):
  synthetic   synthetic BraTS-layout dataset        brats       discovery, validation, loading
  slices      slice cache and patient split         dataset     torch Dataset over the cache
  transforms  albumentations pipelines              unet        the U-Net
  losses      focal + Dice                          train       the shared training engine
  sam         SAM backends and batched decoder      embeddings  frozen-encoder embedding cache
  metrics     Dice/IoU/precision/recall/HD95        evaluate    test-split evaluation and result files
  viz         figures and the slice explorer        demo        the Gradio demo
  checkpoints checkpoint files, device + AMP policy   upload      untrusted upload checks and loading
  report      README results table                  data, paths, env, io   plumbing
"""

__version__ = "0.1.0"
__all__ = ["brats", "checkpoints", "data", "dataset", "demo", "embeddings", "env", "evaluate", "io", "losses",
           "metrics", "paths", "report", "sam", "slices", "synthetic", "train", "transforms", "unet", "upload", "viz"]
