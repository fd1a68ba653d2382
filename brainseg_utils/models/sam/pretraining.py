"""What each SAM backend was pretrained on, from its published sources, and whether BraTS was in it.

A BraTS 2020 test patient that was in a backend's pretraining data makes that backend's BraTS rows (zero-shot and
fine-tuned alike) optimistic: the model may have seen the test patients. ``PRETRAINING`` records, per backend, the
data, whether BraTS (which years, which sequences) is in it, and the sources checked; ``results.md``, the README
table, the docs and notebooks 03/04 show it beside every affected row. ViT-B (SA-1B natural images only) is the
uncontaminated comparison: when a run has it, its rows are the primary SAM comparison (``PRIMARY_BACKEND``).

Checked (issue 25, item 2):
  * SAM: the segment-anything README ("trained on a dataset of 11 million images and 1.1 billion masks") and the
    paper (Kirillov et al. 2023: "over 1 billion masks on 11M licensed and privacy respecting images").
  * MedSAM: Ma et al. 2024, Nature Communications 15:654 (1,570,263 image-mask pairs, 10 modalities, 30+ cancer
    types, from public collections); the MedSAM README of April-July 2023 (commit 49a5578) asks users of the
    training set to credit its sources, BraTS2021 among them.
  * LiteMedSAM: the LiteMedSAM branch README (a TinyViT encoder distilled from MedSAM's ViT-B, then the whole model
    fine-tuned; the baseline of the CVPR 2024 "MedSAM on Laptop" challenge); the challenge's training set holds
    BraTS FLAIR, T1 and T1ce volumes named ``MR_BraTS_<seq>_BraTS-GLI-<id>`` (BraTS 2023 adult glioma naming, as a
    participant's loader parses them: PaulCalot/MedSAM-Laptop, scripts/utils/name_mapper.py), and its weights
    start from MedSAM's in any case.
  * BraTS 2021 (Baid et al. 2021, arXiv:2107.02314: 1,251 training cases) and BraTS 2023 adult glioma (its
    training data are BraTS 2021's) contain the BraTS 2020 training cases (issue 25; the case lists were not
    compared here). A BraTS 2020 test split is therefore likely inside MedSAM's and LiteMedSAM's pretraining data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pretraining:
    """One backend's pretraining: ``data`` (one line), ``brats`` (is BraTS in it: years, sequences),
    ``may_have_seen_test`` (True: its BraTS 2020 rows may include test patients it was trained on), ``sources``."""

    data: str
    brats: str
    may_have_seen_test: bool
    sources: tuple[str, ...]


_SA1B = Pretraining(
    data="SA-1B: 11 M licensed natural photographs with 1.1 B masks; no medical images",
    brats="no",
    may_have_seen_test=False,
    sources=(
        "https://github.com/facebookresearch/segment-anything (README: 11 million images, 1.1 billion masks)",
        "https://arxiv.org/abs/2304.02643 (Kirillov et al. 2023, Segment Anything: SA-1B)",
    ),
)
_MEDSAM_PAPER = "https://www.nature.com/articles/s41467-024-44824-z (Ma et al. 2024: 1,570,263 image-mask pairs)"
_MEDSAM_README = (
    "https://github.com/bowang-lab/MedSAM/blob/49a5578a3d20e6330d2df7f2ed48622f941a7b08/README.md "
    "(training-set sources include BraTS2021)"
)
_BRATS2021 = "https://arxiv.org/abs/2107.02314 (BraTS 2021: 1,251 training cases, incl. the BraTS 2020 ones)"

PRETRAINING: dict[str, Pretraining] = {
    "vit_b": _SA1B,
    "vit_l": _SA1B,
    "vit_h": _SA1B,
    "medsam": Pretraining(
        data="SAM ViT-B fine-tuned on 1.57 M medical image-mask pairs from public collections (10 modalities)",
        brats="yes: BraTS 2021 (MR; sequences not stated), which contains the BraTS 2020 training cases",
        may_have_seen_test=True,
        sources=(_MEDSAM_PAPER, _MEDSAM_README, _BRATS2021),
    ),
    "litemedsam": Pretraining(
        data="TinyViT encoder distilled from MedSAM's, then fine-tuned; the CVPR 2024 MedSAM-on-Laptop baseline",
        brats="yes: MedSAM's BraTS 2021 and the challenge's BraTS FLAIR, T1, T1ce volumes (BraTS-GLI: 2023 adult "
        "glioma); both contain the BraTS 2020 training cases",
        may_have_seen_test=True,
        sources=(
            "https://github.com/bowang-lab/MedSAM/tree/LiteMedSAM (README: distilled from MedSAM, then fine-tuned)",
            "https://arxiv.org/abs/2412.16085 (Efficient MedSAMs: the challenge and its training set)",
            "https://github.com/PaulCalot/MedSAM-Laptop (scripts/utils/name_mapper.py: MR_BraTS_FLAIR/T1/T1CE "
            "files named BraTS-GLI-*)",
            _MEDSAM_README,
            _BRATS2021,
        ),
    ),
}
PRIMARY_BACKEND = "vit_b"  # natural images only: the SAM comparison that cannot have seen a BraTS test patient
MARK = "†"  # beside a row whose backend may have seen the test patients


def pretraining(backend: str) -> Pretraining:
    if backend not in PRETRAINING:
        raise KeyError(f"unknown SAM backend {backend!r}; options: {sorted(PRETRAINING)}")
    return PRETRAINING[backend]


def note(backend: str | None) -> str:
    """The short note beside a row: "" for the U-Net and uncontaminated backends."""
    if backend is None or not pretraining(backend).may_have_seen_test:
        return ""
    return f"{MARK} pretrained on BraTS (may have seen the test patients)"


def section_lines(backends, dataset: str) -> list[str]:
    """The "SAM pretraining" section of results.md for the backends of a run (markdown lines)."""
    backends = list(backends)
    if not backends:
        return []
    flag_text = (
        "On BraTS 2020 its rows may have seen the test patients (not on this synthetic data)."
        if dataset == "synthetic"
        else "Its rows may have seen these BraTS 2020 test patients."
    )
    lines = ["", "SAM pretraining (what each backend learnt from before this project; published sources):"]
    for b in backends:
        p = pretraining(b)
        flag = f" {MARK} {flag_text}" if p.may_have_seen_test else ""
        lines.append(f"- {b}: {p.data}. BraTS in it: {p.brats}.{flag} Sources: {'; '.join(p.sources)}")
    if PRIMARY_BACKEND in backends:
        lines.append(
            f"- Primary SAM comparison: the {PRIMARY_BACKEND} rows (natural images only, listed first among SAM rows)."
        )
    elif any(pretraining(b).may_have_seen_test for b in backends):
        lines.append(
            f"- No {PRIMARY_BACKEND} rows in this run: every SAM row here comes from a backend pretrained on BraTS; "
            "attach the official sam_vit_b_01ec64.pth for an uncontaminated comparison."
        )
    return lines
