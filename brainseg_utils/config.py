"""Run parameters: the one source of their defaults, and the notebook-name -> field mapping.

Owns the validated configs every notebook builds from its papermill parameters cell:

  ``DataConfig``   notebook 01: data root, synthetic fallback, slice cache, split
  ``TrainConfig``  notebooks 02 and 03: the training engine's hyper-parameters (``train.fit``)
  ``UNetConfig``   notebook 02: U-Net width/upsampling/dropout and augmentation strength
  ``SamConfig``    notebook 03: SAM backend, prompts, box jitter, embedding-cache budget

Each has ``from_params(**params)`` that takes the notebook's UPPER_CASE names (``UNET_EPOCHS``,
``SAM_EPOCHS``, ``SEED``, ...; ``TrainConfig.from_params`` first takes ``model="unet"`` or ``"sam"``)
and raises on an unknown name, listing the options. The dataclass defaults ARE the full profile
(``configs/full.yaml``: this project's defaults, which differ from the seed's protocol in the ways
``evaluation/protocol.py`` lists); every parameters cell starts from them, ``configs/quick.yaml`` overrides a
few for a CPU and ``configs/seed.yaml`` restores the seed's protocol (``tests/test_config.py`` checks them all).

Imports stay light (no torch): notebook 01 and ``run_all.sh`` use this module before any model exists.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

from brainseg_utils.data.brats import MODALITIES
from brainseg_utils.data.slices import SliceConfig
from brainseg_utils.data.synthetic import APPEARANCES, SyntheticConfig

OVERFLOW = ("subsample", "encode")  # what SAM training does with slices beyond the embedding budget
LR_SCHEDULES = ("cosine", "constant")  # the learning-rate schedule of train.fit (per epoch)


def _from_params(cls, names: dict[str, str], params: dict, fixed: dict | None = None, what: str = ""):
    """``cls(**kwargs)`` from notebook parameters: ``names`` maps NOTEBOOK_NAME -> field.

    A lower-case field name is accepted too (``epochs=3``). Unknown names raise ``TypeError`` with the
    options; ``fixed`` fields are set by the caller and cannot be given.
    """
    fixed = fixed or {}
    by_field = {f: f for f in names.values()}
    kwargs, unknown = dict(fixed), []
    for key, value in params.items():
        field = names.get(key) or by_field.get(key)
        if field is None or field in fixed:
            unknown.append(key)
        else:
            kwargs[field] = value
    if unknown:
        raise TypeError(f"unknown {what or cls.__name__} parameter(s) {unknown}; options: {sorted(names)}")
    return cls(**kwargs)


def _params_of(cls) -> dict[str, str]:
    """NOTEBOOK_NAME -> field for a config whose parameter names are its field names upper-cased."""
    return {f.name.upper(): f.name for f in fields(cls)}


# ----------------------------------------------------------------------------- data (notebook 01)
@dataclass(frozen=True)
class DataConfig:
    """Validated data parameters of notebook 01 (see its parameters cell for meanings)."""

    data_root: str = ""  # BraTS 2020 training root or "synthetic"; empty: found, else synthetic
    synthetic_dir: str = "data/synthetic"  # where synthetic volumes are written when no BraTS data is found
    synthetic_cases: int = 60  # synthetic cases to generate
    synthetic_depth: int = 155  # axial slices per synthetic volume (BraTS: 155)
    synthetic_appearance: str = "fixed"  # contrast drawn per case: "fixed" (clinical ranges) or "randomised" (wider)
    seed: int = 0  # seeds synthetic data, slice sampling and the split
    img_size: int = 240  # slice size in the cache (BraTS native: 240)
    modalities: tuple[str, ...] = ("flair",)  # "flair" or "flair,t1,t1ce,t2" (input channels)
    tumour_free_fraction: float = 0.3  # tumour-free brain slices kept per tumour slice (for false-positive rates)
    slice_step: int = 1  # keep every k-th tumour slice (1 keeps all)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train / val / test, by patient
    skip_bad_cases: bool = False  # True: skip cases that fail validation (logged) instead of stopping

    PARAMS: ClassVar[dict[str, str]]

    def __post_init__(self) -> None:
        mods = self.modalities
        if isinstance(mods, str):
            mods = tuple(m.strip() for m in mods.split(",") if m.strip())
        bad = [m for m in mods if m not in MODALITIES]
        if not mods or bad:
            raise ValueError(
                f"MODALITIES must be a comma-separated subset of {','.join(MODALITIES)}, got {self.modalities!r}"
            )
        object.__setattr__(self, "modalities", tuple(mods))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        self.slice_config()  # validates img_size, fraction, step
        if self.synthetic_appearance not in APPEARANCES:
            raise ValueError(
                f"SYNTHETIC_APPEARANCE must be one of {list(APPEARANCES)}, got {self.synthetic_appearance!r}"
            )
        self.synthetic_config()

    def synthetic_config(self) -> SyntheticConfig:
        return SyntheticConfig(
            cases=self.synthetic_cases,
            seed=self.seed,
            depth=self.synthetic_depth,
            appearance=self.synthetic_appearance,
        )

    def slice_config(self) -> SliceConfig:
        return SliceConfig(
            img_size=self.img_size,
            modalities=self.modalities,
            tumour_free_fraction=self.tumour_free_fraction,
            slice_step=self.slice_step,
            seed=self.seed,
        )

    @classmethod
    def from_params(cls, **params) -> DataConfig:
        """Build from notebook 01's parameters (``IMG_SIZE=...``); unknown names are an error."""
        return _from_params(cls, cls.PARAMS, params, what="data")


DataConfig.PARAMS = _params_of(DataConfig)


# ----------------------------------------------------------------------------- training (02, 03)
@dataclass
class TrainConfig:
    """Training hyper-parameters of ``train.fit`` (defaults: the full profile)."""

    epochs: int = 30  # training epochs
    batch_size: int = 16  # slices per batch (per GPU)
    lr: float = 1e-4  # AdamW learning rate (the start of the schedule)
    lr_schedule: str = "cosine"  # "cosine" (annealed to 0 over the epochs) or "constant" (the seed's)
    weight_decay: float = 1e-2  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm (0 disables clipping)
    amp: bool = True  # mixed precision on CUDA; bf16 SAM-decoder training on CPUs with native bf16
    channels_last: bool = False  # channels_last memory format (faster convolutions on recent GPUs and CPUs)
    num_workers: int = 2  # DataLoader worker processes
    seed: int = 0  # seeds initialisation, shuffling, augmentation and box jitter
    resume: str = "auto"  # auto: continue from last.pt if present; never; or a checkpoint path
    threshold: float = 0.5  # probability threshold of the validation Dice
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    stop_after_epoch: int | None = None  # end this call after that epoch (as if disconnected)
    progress: bool = True  # progress bars
    num_gpus: int | str = "auto"  # auto = every visible GPU (>1: DDP via Accelerate), or a number; batch is per GPU
    ema_decay: float = 0.0  # >0: validate and save a moving average of the weights (decay per step)

    # notebook parameter -> field, per model; shared names (AMP, DEVICE, SEED, RESUME) mean the same in both
    UNET_PARAMS: ClassVar[dict[str, str]] = {
        "UNET_EPOCHS": "epochs",
        "UNET_BATCH_SIZE": "batch_size",
        "UNET_LR": "lr",
        "UNET_LR_SCHEDULE": "lr_schedule",
        "UNET_WEIGHT_DECAY": "weight_decay",
        "GRAD_CLIP": "grad_clip",
        "AMP": "amp",
        "CHANNELS_LAST": "channels_last",
        "UNET_EMA_DECAY": "ema_decay",
        "NUM_WORKERS": "num_workers",
        "SEED": "seed",
        "RESUME": "resume",
        "DEVICE": "device",
        "NUM_GPUS": "num_gpus",
    }
    SAM_PARAMS: ClassVar[dict[str, str]] = {
        "SAM_EPOCHS": "epochs",
        "SAM_BATCH_SIZE": "batch_size",
        "SAM_LR": "lr",
        "AMP": "amp",
        "SEED": "seed",
        "RESUME": "resume",
        "DEVICE": "device",
        "NUM_GPUS": "num_gpus",
    }
    # the SAM decoder trains on memory-mapped embeddings (and may run the encoder on the fly): one process
    SAM_FIXED: ClassVar[dict] = {"num_workers": 0}

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule (UNET_LR_SCHEDULE) must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if isinstance(self.num_gpus, str) and self.num_gpus.strip().isdigit():  # papermill -r NUM_GPUS 2
            object.__setattr__(self, "num_gpus", int(self.num_gpus))
        if not (self.num_gpus == "auto" or (isinstance(self.num_gpus, int) and self.num_gpus >= 1)):
            raise ValueError(f"num_gpus (NUM_GPUS) must be 'auto' or an integer >= 1, got {self.num_gpus!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay (UNET_EMA_DECAY) must be in [0, 1), got {self.ema_decay}")

    @classmethod
    def params(cls, model: str) -> dict[str, str]:
        """Notebook parameter -> field for ``model`` ("unet": notebook 02, "sam": notebook 03)."""
        if model not in ("unet", "sam"):
            raise ValueError(f"model must be 'unet' or 'sam', got {model!r}")
        return cls.UNET_PARAMS if model == "unet" else cls.SAM_PARAMS

    @classmethod
    def from_params(cls, model: str, **params) -> TrainConfig:
        """From notebook 02's (``model="unet"``: ``UNET_EPOCHS``, ...) or 03's (``"sam"``: ``SAM_EPOCHS``, ...)
        parameters; unknown names are an error."""
        fixed = cls.SAM_FIXED if model == "sam" else None
        return _from_params(cls, cls.params(model), params, fixed, what=f"{model} training")


# ----------------------------------------------------------------------------- U-Net (02)
@dataclass(frozen=True)
class UNetConfig:
    """U-Net architecture and augmentation of notebook 02 (defaults: the full profile)."""

    base_channels: int = 64  # width of the first level (64: 31.0 M parameters, 28.9 M with bilinear upsampling)
    bilinear: bool = False  # bilinear upsampling instead of transposed convolutions
    dropout: float = 0.3  # dropout in the bottleneck
    aug_strength: float = 1.0  # scales augmentation probabilities (0 turns augmentation off)
    mr_augment: bool = True  # MR-like intensity augmentation (bias field, gamma, blur); the seed had none

    PARAMS: ClassVar[dict[str, str]] = {
        "UNET_BASE_CHANNELS": "base_channels",
        "UNET_BILINEAR": "bilinear",
        "UNET_DROPOUT": "dropout",
        "UNET_AUG_STRENGTH": "aug_strength",
        "UNET_MR_AUGMENT": "mr_augment",
    }

    def __post_init__(self) -> None:
        if self.base_channels < 1:
            raise ValueError(f"UNET_BASE_CHANNELS must be >= 1, got {self.base_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNET_DROPOUT must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.aug_strength <= 1.0:
            raise ValueError(f"UNET_AUG_STRENGTH must be in [0, 1], got {self.aug_strength}")

    @classmethod
    def from_params(cls, **params) -> UNetConfig:
        """From notebook 02's ``UNET_BASE_CHANNELS`` / ``UNET_BILINEAR`` / ``UNET_DROPOUT`` / ``UNET_AUG_STRENGTH`` /
        ``UNET_MR_AUGMENT``."""
        return _from_params(cls, cls.PARAMS, params, what="U-Net")

    def build(self, in_channels: int = 1):
        """The U-Net (``unet.UNet``) for ``in_channels`` input channels."""
        from brainseg_utils.models.unet import UNet

        return UNet(
            in_channels=in_channels, base_channels=self.base_channels, bilinear=self.bilinear, dropout=self.dropout
        )

    def augmentation(self):
        """The training augmentation pipeline (``transforms.train_augmentation``) at ``aug_strength``."""
        from brainseg_utils.data.transforms import train_augmentation

        return train_augmentation(self.aug_strength, self.mr_augment)


# ----------------------------------------------------------------------------- SAM (03)
@dataclass(frozen=True)
class SamConfig:
    """SAM backend, prompt modes and embedding cache of notebook 03 (the full profile's)."""

    # auto: the official SAM ViT-B where its file is found (models/sam discovery: SAM_CHECKPOINT, Kaggle inputs,
    # Drive, caches, checkpoints/), else LiteMedSAM (bundled)
    backend: str = "auto"  # auto: vit_b if its official file is found, else litemedsam; or vit_l/h, medsam
    checkpoint: str = ""  # weights path (or vit_b=/a.pth,medsam=/b.pth); empty: searched; litemedsam: bundled
    prompts: tuple[str, ...] = ("box", "none")  # prompt modes to train, comma-separated (box, none): one decoder each
    box_jitter_px: int = 5  # training boxes grow by 0..this many pixels per side (MedSAM-style; never shrink)
    box_negatives: float = 0.1  # tumour-free slices + this share of tumour slices: off-tumour box, empty target
    cache_budget_gb: float = 16.0  # disk budget of the embedding cache (2 MiB per slice)
    # Full BraTS is ~38k train+val slices (~76 GB of embeddings): beyond the budget the rest are encoded on
    # the fly, so the decoders see every slice the U-Net sees (a subsample would be stated in every table).
    overflow: str = "encode"  # beyond the budget: encode (on the fly, slow) or subsample (seeded)
    encode_batch: int = 8  # slices per encoder batch when building the cache
    # WiSE-FT (models/sam/wise.py): decoders used as (1 - a) x pretrained + a x fine-tuned weights; auto picks a
    wise_ft: float | str = "auto"  # WiSE-FT a: auto (0.25/0.5/0.75/1, best on validation) or a number in (0, 1]

    PARAMS: ClassVar[dict[str, str]] = {
        "SAM_BACKEND": "backend",
        "SAM_CHECKPOINT": "checkpoint",
        "SAM_PROMPTS": "prompts",
        "SAM_BOX_JITTER_PX": "box_jitter_px",
        "SAM_BOX_NEGATIVES": "box_negatives",
        "SAM_CACHE_BUDGET_GB": "cache_budget_gb",
        "SAM_OVERFLOW": "overflow",
        "SAM_ENCODE_BATCH": "encode_batch",
        "SAM_WISE_FT": "wise_ft",
    }

    def __post_init__(self) -> None:
        from brainseg_utils.models.sam.backends import BACKENDS  # torch: only when a SAM config is built
        from brainseg_utils.models.sam.prompts import parse_prompts
        from brainseg_utils.models.sam.wise import parse_setting

        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ValueError(f"SAM_BACKEND must be one of {['auto', *sorted(BACKENDS)]}, got {self.backend!r}")
        prompts = self.prompts if isinstance(self.prompts, str) else ",".join(self.prompts)
        object.__setattr__(self, "prompts", tuple(parse_prompts(prompts)))
        if self.overflow not in OVERFLOW:
            raise ValueError(f"SAM_OVERFLOW must be one of {OVERFLOW}, got {self.overflow!r}")
        if self.box_jitter_px < 0:
            raise ValueError(f"SAM_BOX_JITTER_PX must be >= 0, got {self.box_jitter_px}")
        if not 0 <= self.box_negatives < 1:
            raise ValueError(f"SAM_BOX_NEGATIVES must be in [0, 1), got {self.box_negatives}")
        object.__setattr__(self, "wise_ft", parse_setting(self.wise_ft))
        if not self.cache_budget_gb >= 0:
            raise ValueError(f"SAM_CACHE_BUDGET_GB must be >= 0, got {self.cache_budget_gb}")
        if self.encode_batch < 1:
            raise ValueError(f"SAM_ENCODE_BATCH must be >= 1, got {self.encode_batch}")

    @classmethod
    def from_params(cls, **params) -> SamConfig:
        """From notebook 03's ``SAM_BACKEND``, ``SAM_PROMPTS``, ... parameters; unknown names are an error."""
        return _from_params(cls, cls.PARAMS, params, what="SAM")

    def resolve(self, roots=None, env: dict | None = None):
        """(this config with a concrete backend and checkpoint, the ``sam_discovery.BackendChoice`` saying why).

        ``SAM_BACKEND="auto"`` becomes ``vit_b`` when the official ViT-B is found, else ``litemedsam``;
        ``vit_*``/``medsam`` without ``SAM_CHECKPOINT`` are searched for (``FileNotFoundError`` naming where).
        ``roots`` / ``env`` replace the searched places and ``os.environ`` (tests).
        """
        from brainseg_utils.models.sam.discovery import choose_backend

        choice = choose_backend(self.backend, self.checkpoint, roots=roots, env=env)
        return replace(self, backend=choice.backend, checkpoint=choice.checkpoint), choice

    def variant(self, prompt: str) -> str:
        """Model / folder name of the decoder trained with ``prompt``: ``sam_<backend>_<prompt>``."""
        if self.backend == "auto":
            raise ValueError("SAM_BACKEND='auto' names no variant: call SamConfig.resolve() first")
        return f"sam_{self.backend}_{prompt}"


# ----------------------------------------------------------------------------- every notebook, 04, 05
@dataclass(frozen=True)
class RunConfig:
    """Where a notebook's run lives and how it shows things (every notebook)."""

    output_dir: str = "outputs"  # run folder shared by notebooks 01-05
    interactive: bool = True  # show live widgets (the slice explorer); run_all.sh sets False
    device: str = "auto"  # auto, cpu, cuda

    PARAMS: ClassVar[dict[str, str]]

    @classmethod
    def from_params(cls, **params) -> RunConfig:
        return _from_params(cls, cls.PARAMS, params, what="run")


RunConfig.PARAMS = _params_of(RunConfig)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation switches of notebook 04."""

    sam_checkpoint: str = ""  # SAM weights path (or vit_b=/a.pth,medsam=/b.pth); empty: searched as in 03
    latency_runs: int = 20  # timed batch-1 runs per model (after 3 warm-up runs)
    export_nifti: bool = True  # write predicted volumes as NIfTI
    max_test_cases: int = 0  # evaluate only the first N test cases (0 evaluates all)

    PARAMS: ClassVar[dict[str, str]]

    def __post_init__(self) -> None:
        if self.latency_runs < 1:
            raise ValueError(f"LATENCY_RUNS must be >= 1, got {self.latency_runs}")
        if self.max_test_cases < 0:
            raise ValueError(f"MAX_TEST_CASES must be >= 0, got {self.max_test_cases}")

    @classmethod
    def from_params(cls, **params) -> EvalConfig:
        return _from_params(cls, cls.PARAMS, params, what="evaluation")


EvalConfig.PARAMS = _params_of(EvalConfig)


@dataclass(frozen=True)
class DemoConfig:
    """Demo switches of notebook 05."""

    launch_demo: bool = False  # True opens the Gradio app (inline in Jupyter/Colab)
    share: bool = False  # public Gradio link (anyone with it can use the app; set AUTH too)
    auth: str = ""  # "user:password" to protect the app; empty disables
    sam_checkpoint: str = ""  # SAM weights path (or vit_b=/a.pth,medsam=/b.pth); empty: searched as in 03

    PARAMS: ClassVar[dict[str, str]]

    def __post_init__(self) -> None:
        if self.auth and ":" not in self.auth:
            raise ValueError(f'AUTH must be "user:password" or empty, got a value without ":" ({len(self.auth)} chars)')

    @classmethod
    def from_params(cls, **params) -> DemoConfig:
        return _from_params(cls, cls.PARAMS, params, what="demo")

    def auth_pair(self) -> tuple[str, str] | None:
        """(user, password) for ``gr.Blocks.launch(auth=...)``, or None."""
        return tuple(self.auth.split(":", 1)) if self.auth else None


DemoConfig.PARAMS = _params_of(DemoConfig)
