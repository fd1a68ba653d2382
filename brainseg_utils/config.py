"""Run parameters: the one source of their defaults, and the notebook-name -> field mapping.

Owns the validated configs every notebook builds from its papermill parameters cell:

  ``DataConfig``   notebook 01: data root, synthetic fallback, slice cache, split
  ``TrainConfig``  notebooks 02 and 03: the training engine's hyper-parameters (``train.fit``)
  ``UNetConfig``   notebook 02: U-Net width/upsampling/dropout and augmentation strength
  ``SamConfig``    notebook 03: SAM backend, prompts, box jitter, embedding-cache budget

Each has ``from_params(**params)`` that takes the notebook's UPPER_CASE names (``UNET_EPOCHS``,
``SAM_EPOCHS``, ``SEED``, ...; ``TrainConfig.from_params`` first takes ``model="unet"`` or ``"sam"``)
and raises on an unknown name, listing the options. The dataclass defaults ARE the full profile
(the original project's hyper-parameters, ``configs/full.yaml``); every parameters cell starts from
them and ``configs/quick.yaml`` overrides a few for a CPU (``tests/test_config.py`` checks all three).

Imports stay light (no torch): notebook 01 and ``run_all.sh`` use this module before any model exists.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

from brainseg_utils.data.brats import MODALITIES
from brainseg_utils.data.slices import SliceConfig
from brainseg_utils.data.synthetic import APPEARANCES, SyntheticConfig

OVERFLOW = ("subsample", "encode")  # what SAM training does with slices beyond the embedding budget


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

    data_root: str = ""  # empty: auto-detect BraTS on Kaggle/Colab, else the synthetic dataset
    output_dir: str = "outputs"  # run folder shared by notebooks 01-05
    synthetic_dir: str = "data/synthetic"
    synthetic_cases: int = 60
    synthetic_depth: int = 155
    synthetic_appearance: str = "fixed"  # or "randomised": contrast / bias strength per case (synthetic.py)
    seed: int = 0
    img_size: int = 240  # BraTS native in-plane size
    modalities: tuple[str, ...] = ("flair",)
    tumour_free_fraction: float = 0.3
    slice_step: int = 1
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    skip_bad_cases: bool = False

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
    """Training hyper-parameters of ``train.fit`` (defaults: the original project's, the full profile)."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    amp: bool = True  # mixed precision on CUDA; on CPUs with native bf16, bf16 SAM-decoder training
    channels_last: bool = False
    num_workers: int = 2  # DataLoader worker processes
    seed: int = 0
    resume: str = "auto"  # "auto": continue from last.pt if present; "never"; or a checkpoint path
    threshold: float = 0.5
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    stop_after_epoch: int | None = None  # end this call after that epoch (as if disconnected)
    progress: bool = True
    num_gpus: int | str = "auto"  # processes for train.fit_processes: "auto" = every visible GPU; batch is per GPU
    ema_decay: float = 0.0  # > 0: validate and save an exponential moving average of the weights (per step)

    # notebook parameter -> field, per model; shared names (AMP, DEVICE, SEED, RESUME) mean the same in both
    UNET_PARAMS: ClassVar[dict[str, str]] = {
        "UNET_EPOCHS": "epochs",
        "UNET_BATCH_SIZE": "batch_size",
        "UNET_LR": "lr",
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
    """U-Net architecture and augmentation of notebook 02 (the original project's)."""

    base_channels: int = 64  # width of the first level (64: about 31 M parameters)
    bilinear: bool = False  # bilinear upsampling instead of transposed convolutions
    dropout: float = 0.3  # bottleneck dropout
    aug_strength: float = 1.0  # scales the augmentation probabilities; 0 turns augmentation off

    PARAMS: ClassVar[dict[str, str]] = {
        "UNET_BASE_CHANNELS": "base_channels",
        "UNET_BILINEAR": "bilinear",
        "UNET_DROPOUT": "dropout",
        "UNET_AUG_STRENGTH": "aug_strength",
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
        """From notebook 02's ``UNET_BASE_CHANNELS`` / ``UNET_BILINEAR`` / ``UNET_DROPOUT`` / ``UNET_AUG_STRENGTH``."""
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

        return train_augmentation(self.aug_strength)


# ----------------------------------------------------------------------------- SAM (03)
@dataclass(frozen=True)
class SamConfig:
    """SAM backend, prompt modes and embedding cache of notebook 03 (the full profile's)."""

    # auto: the official SAM ViT-B where its file is found (sam_discovery: SAM_CHECKPOINT, Kaggle inputs,
    # Drive, caches, checkpoints/), else LiteMedSAM; or litemedsam, vit_b, vit_l, vit_h, medsam
    backend: str = "auto"
    checkpoint: str = ""  # weights path for vit_*/medsam (empty: searched); unused by litemedsam (bundled)
    prompts: tuple[str, ...] = ("box", "none")  # one decoder per mode
    box_jitter_px: int = 5  # training boxes grow by 0..this many pixels per side
    cache_budget_gb: float = 16.0  # embedding-cache disk budget (2 MiB per slice)
    # Full BraTS is ~38k train+val slices (~76 GB of embeddings): beyond the budget the rest are encoded on
    # the fly, so the decoders see every slice the U-Net sees (a subsample would be stated in every table).
    overflow: str = "encode"
    encode_batch: int = 8  # slices per encoder batch while building the cache

    PARAMS: ClassVar[dict[str, str]] = {
        "SAM_BACKEND": "backend",
        "SAM_CHECKPOINT": "checkpoint",
        "SAM_PROMPTS": "prompts",
        "SAM_BOX_JITTER_PX": "box_jitter_px",
        "SAM_CACHE_BUDGET_GB": "cache_budget_gb",
        "SAM_OVERFLOW": "overflow",
        "SAM_ENCODE_BATCH": "encode_batch",
    }

    def __post_init__(self) -> None:
        from brainseg_utils.models.sam.backends import BACKENDS, parse_prompts  # torch: only when a SAM config is built

        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ValueError(f"SAM_BACKEND must be one of {['auto', *sorted(BACKENDS)]}, got {self.backend!r}")
        prompts = self.prompts if isinstance(self.prompts, str) else ",".join(self.prompts)
        object.__setattr__(self, "prompts", tuple(parse_prompts(prompts)))
        if self.overflow not in OVERFLOW:
            raise ValueError(f"SAM_OVERFLOW must be one of {OVERFLOW}, got {self.overflow!r}")
        if self.box_jitter_px < 0:
            raise ValueError(f"SAM_BOX_JITTER_PX must be >= 0, got {self.box_jitter_px}")
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


# ----------------------------------------------------------------------------- all parameters
def parameter_defaults() -> dict[str, object]:
    """Every notebook parameter a config owns -> its default, as the notebook writes it (UPPER_CASE names).

    A name shared by several configs (``SEED``, ``DEVICE``, ...) must have one default; this raises if not.
    """
    out: dict[str, object] = {}
    sources = [
        (DataConfig(), DataConfig.PARAMS),
        (TrainConfig(), TrainConfig.UNET_PARAMS),
        (TrainConfig(), TrainConfig.SAM_PARAMS),
        (UNetConfig(), UNetConfig.PARAMS),
        (SamConfig(), SamConfig.PARAMS),
    ]
    for cfg, names in sources:
        for name, field in names.items():
            value = getattr(cfg, field)
            if name in out and out[name] != value:
                raise AssertionError(f"parameter {name} has two defaults: {out[name]!r} and {value!r}")
            out[name] = value
    return out
