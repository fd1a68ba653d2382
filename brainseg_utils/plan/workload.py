"""How much work a profile means for the data found: cases, slices, epochs, encoder passes.

Per-case slice counts come from the data itself (the label and FLAIR volumes of up to ``SAMPLE`` cases:
axial slices with tumour, slices with brain, depth), or, for ``--cases N`` without data, from BraTS 2020's
typical case (``BRATS_CASE``: 155 slices, ~76 with whole tumour, ~135 with brain; assumptions, labelled so).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import nibabel as nib
import numpy as np

from brainseg_utils.data.slices import SliceConfig

SAMPLE = 3
# A typical BraTS 2020 training case when no data is at hand: depth 155; ~76 axial slices with whole tumour
# (the seed's ~28k tumour slices over 369 cases); ~135 slices with brain. An assumption, reported as such.
BRATS_CASE = {"depth": 155, "tumour_slices": 76.0, "brain_slices": 135.0, "voxels": 240 * 240 * 155}
EMBEDDING_BYTES = 2 * 1024**2  # one cached SAM embedding (256 x 64 x 64 float32)


@dataclass
class CaseShape:
    depth: int
    tumour_slices: float
    brain_slices: float
    voxels: int
    measured: bool
    free_slices: float | None = None  # brain slices without tumour (None: brain - tumour)


def measure_cases(cases: list) -> CaseShape:
    """Mean slice counts of up to ``SAMPLE`` labelled cases (label and FLAIR volumes), with the slice cache's
    own thresholds (``SliceConfig``: minimum tumour and brain pixels per slice)."""
    cfg = SliceConfig()
    sample = cases[: max(1, min(SAMPLE, len(cases)))]
    rows = []
    for case in sample:
        seg = np.asanyarray(nib.load(str(case.seg)).dataobj)
        flair = np.asanyarray(nib.load(str(case.images["flair"])).dataobj)
        d = seg.shape[-1]
        tumour_px = (seg.reshape(-1, d) > 0).sum(0)
        brain_px = (flair.reshape(-1, d) != 0).sum(0)
        tumour = tumour_px >= cfg.min_tumour_pixels
        free = (tumour_px == 0) & (brain_px >= cfg.min_brain_pixels)
        rows.append((d, tumour.sum(), (brain_px > 0).sum(), int(np.prod(seg.shape)), free.sum()))
    depth, tumour, brain, voxels, free = (float(np.mean(col)) for col in zip(*rows, strict=True))
    return CaseShape(int(depth), tumour, brain, int(voxels), True, free)


def typical_brats() -> CaseShape:
    return CaseShape(**BRATS_CASE, measured=False)


@dataclass
class Workload:
    """Counts the stages multiply unit costs by."""

    cases: int
    train_cases: int
    val_cases: int
    test_cases: int
    slices_per_case: float  # in the slice cache
    tumour_slices_per_case: float  # in the slice cache
    brain_slices_per_case: float  # predicted per test case in evaluation
    unet_epochs: int
    sam_epochs: int
    prompts: tuple[str, ...]
    cached_embeddings: int
    overflow: str
    image_bytes: int  # one cache slice (image + mask)
    case: dict
    embedding_bytes: int = EMBEDDING_BYTES  # one cached SAM embedding
    cells: dict = field(default_factory=dict)  # code cells per notebook (papermill saves after each)
    box_negatives: float = 0.0  # > 0: the box decoder also trains on tumour-free slices (negative boxes)
    wise_passes: int = 0  # validation passes per decoder after training (SAM_WISE_FT: one per coefficient tried)

    @property
    def train_slices(self) -> float:
        return self.train_cases * self.slices_per_case

    @property
    def val_slices(self) -> float:
        return self.val_cases * self.slices_per_case

    def sam_train_slices(self, prompt: str) -> float:
        """Slices one decoder trains on per epoch: box prompts need a tumour unless negative boxes are on; a
        subsample stops at the cache."""
        tumour_only = prompt == "box" and not self.box_negatives
        share = self.tumour_slices_per_case / self.slices_per_case if tumour_only else 1.0
        n = self.train_slices
        if self.overflow == "subsample":  # the cache holds a seeded subsample of train + val slices
            n = min(n, self.cached_embeddings * self.train_slices / max(1.0, self.train_slices + self.val_slices))
        return n * share

    def encoded_on_the_fly(self, prompt: str) -> float:
        """Slices re-encoded per epoch because the embedding cache holds fewer (``SAM_OVERFLOW: encode``)."""
        if self.overflow != "encode":
            return 0.0
        total = self.train_slices + self.val_slices
        missing = max(0.0, total - self.cached_embeddings) / max(1.0, total)
        return self.sam_train_slices(prompt) * missing

    def to_json(self) -> dict:
        out = asdict(self)
        out["prompts"] = list(self.prompts)
        out.update(train_slices=round(self.train_slices), val_slices=round(self.val_slices))
        return out


def split_counts(n: int, fractions) -> tuple[int, int, int]:
    """(train, val, test) case counts as ``slices.write_split_once`` rounds them."""
    n_val, n_test = max(1, round(n * fractions[1])), max(1, round(n * fractions[2]))
    return n - n_val - n_test, n_val, n_test


def notebook_cells(folder) -> dict[str, int]:
    """Code cells per notebook in ``folder`` (+1: the parameters cell papermill injects)."""
    import json
    from pathlib import Path

    out = {}
    for path in sorted(Path(folder).glob("0*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        out[path.stem] = 1 + sum(c["cell_type"] == "code" for c in cells)
    return out


def workload(configs, cases: int, shape: CaseShape, cells: dict | None = None) -> Workload:
    data = configs.data
    tumour = math.ceil(shape.tumour_slices / data.slice_step)
    free_available = shape.free_slices if shape.free_slices is not None else shape.brain_slices - shape.tumour_slices
    per_case = tumour + min(round(data.tumour_free_fraction * tumour), max(0.0, free_available))
    train, val, test = split_counts(cases, data.split_fractions)
    budget = int(configs.sam.cache_budget_gb * 1e9 // EMBEDDING_BYTES)
    total = (train + val) * per_case
    return Workload(
        cases=cases,
        train_cases=train,
        val_cases=val,
        test_cases=test,
        slices_per_case=per_case,
        tumour_slices_per_case=float(tumour),
        brain_slices_per_case=shape.brain_slices,
        unet_epochs=configs.unet_train.epochs,
        sam_epochs=configs.sam_train.epochs,
        prompts=tuple(configs.sam.prompts),
        cached_embeddings=int(min(total, budget)),
        overflow=configs.sam.overflow,
        image_bytes=(len(data.modalities) * 2 + 1) * data.img_size**2,
        case=asdict(shape),
        cells=dict(cells or {}),
        box_negatives=float(configs.sam.box_negatives),
        wise_passes=wise_passes(configs.sam.wise_ft),
    )


def wise_passes(setting) -> int:
    """Validation passes ``finetune.record_wise_ft`` makes per decoder: none for plain fine-tuning (1), else one
    per coefficient tried (``"auto"``: the whole grid)."""
    from brainseg_utils.models.sam.wise import candidates

    tried = candidates(setting)
    return 0 if tried == (1.0,) else len(tried)
