"""SAM mask-decoder fine-tuning, one decoder per prompt mode (what notebook 03 runs).

Steps, each a function the notebook calls in its own cell:
  * ``training_embeddings``: encode the train + validation slices once into the embedding cache
    (within the disk budget; beyond it a seeded subsample or on-the-fly encoding, and the model's
    recorded ``data.note`` says so);
  * ``finetune_variant``: for one prompt mode, score the pretrained decoder zero-shot on the
    validation slices (``zero_shot.json``), then train the decoder with the shared engine
    (``train.fit``) into ``sam/sam_<backend>_<prompt>/``. The box mode trains and selects its
    checkpoint on tumour slices (a box needs a tumour) with ground-truth boxes enlarged by
    0..``jitter_px`` pixels per side; the no-prompt mode uses every slice.
"""

from __future__ import annotations

from dataclasses import dataclass

from brainseg_utils.config import OVERFLOW, TrainConfig
from brainseg_utils.data.dataset import training_meta
from brainseg_utils.data.slices import SliceCache
from brainseg_utils.models.sam import wise
from brainseg_utils.models.sam.backends import SamBackend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.runtime.checkpoints import load_checkpoint, resolve_device, save_checkpoint
from brainseg_utils.runtime.io import atomic_write_json
from brainseg_utils.training import distributed
from brainseg_utils.training.embeddings import EmbeddingCache, EmbeddingDataset, build_embedding_cache
from brainseg_utils.training.engine import evaluate_dataset, fit_processes


def unet_validation_boxes(run, cache: SliceCache, split: dict, info: dict, rows, device="cpu") -> dict | None:
    """{row: (K, 4)} cascade boxes for the validation ``rows`` from notebook 02's U-Net (its whole-volume
    predictions of the validation cases, 3-D cleaned with the threshold chosen there); None without a U-Net."""
    from brainseg_utils.evaluation import cascade
    from brainseg_utils.evaluation.inference import load_unet

    if not run.unet_best.exists():
        return None
    dev = resolve_device(device)
    unet, _ = load_unet(run.unet_best, split["sha256"], dev)
    size, modalities = int(cache.images.shape[-1]), tuple(cache.manifest["config"]["modalities"])
    clean = cascade.cleanup_for(run, unet, run.unet_best, split, info["root"], size, modalities, dev, predictions=True)
    return cascade.validation_boxes(clean.val_predictions, cache, rows)


def validation_dataset(run, backend, emb, cache: SliceCache, split: dict, info: dict, prompt: str, device="cpu"):
    """(the validation items of ``prompt``, the cascade boxes they carry or None): the box mode is validated
    with the cleaned U-Net mask's component boxes when notebook 02's U-Net is there (``unet_validation_boxes``),
    else with ground-truth boxes; the no-prompt mode on every validation slice."""
    on_the_fly = backend if emb.overflow == "encode" else None
    val_rows = cache.rows_for(split["val"])
    val_boxes = unet_validation_boxes(run, cache, split, info, val_rows, device) if prompt == "box" else None
    ds = EmbeddingDataset(emb.cache, cache, val_rows, prompt, jitter_px=0, backend=on_the_fly, boxes=val_boxes)
    return ds, val_boxes


def validation_previews(run, backend, emb, cache: SliceCache, split: dict, info: dict, prompts, device="cpu", n=4):
    """(rows, panels, boxes) for ``previews.previews_figure``: for each prompt mode its pretrained decoder
    (zero-shot) and its fine-tuned ``best.pt``, on the same ``n`` validation slices (``previews.preview_rows`` of
    the slices every mode validates on), with the boxes each was prompted with."""
    from brainseg_utils.evaluation.inference import load_sam_decoder
    from brainseg_utils.evaluation.previews import predict_rows, preview_rows

    sets = {p: validation_dataset(run, backend, emb, cache, split, info, p, device) for p in prompts}
    common = set.intersection(*(set(map(int, ds.rows)) for ds, _ in sets.values()))
    rows = preview_rows(cache, sorted(common), n)
    size = int(cache.images.shape[-1])
    panels, boxes = {}, {}
    for prompt, (ds, val_boxes) in sets.items():
        name = {"none": "no prompt", "box": "U-Net box" if val_boxes is not None else "GT box (oracle)"}[prompt]
        best = run.sam(f"sam_{backend.name}_{prompt}") / "best.pt"
        tuned, _ = load_sam_decoder(best, backend, split["sha256"], device)
        for label, model in ((f"{name}\nzero-shot", SamDecoderModel(backend, prompt, size).to(device)),
                             (f"{name}\nfine-tuned", tuned)):  # fmt: skip
            panels[label], boxes[label] = predict_rows(model, ds, rows, device)
    return rows, panels, boxes


@dataclass
class TrainingEmbeddings:
    """The embedding cache for training plus how it covers the requested slices."""

    cache: EmbeddingCache
    overflow: str
    policy: str  # one line for the notebook and the checkpoints' data note ("" when every slice is cached)

    @property
    def complete(self) -> bool:
        return self.cache.manifest["n"] == self.cache.manifest["requested"]


def training_embeddings(
    run,
    backend: SamBackend,
    cache: SliceCache,
    split: dict,
    budget_gb: float,
    overflow: str = "subsample",
    seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
    num_gpus: int | str = 1,
) -> TrainingEmbeddings:
    """Encode the train + validation slices of ``split`` once (reused / resumed on later calls).

    ``num_gpus`` (notebook ``NUM_GPUS``; "auto" = every visible GPU): on CUDA with more than one GPU, one
    process per GPU encodes a disjoint shard of the slices into the same cache (``distributed.launch``;
    the manifest is written once, at the end); on a CPU or one GPU, this process encodes everything."""
    if overflow not in OVERFLOW:
        raise ValueError(f"SAM_OVERFLOW must be one of {OVERFLOW}, got {overflow!r}")
    rows = list(cache.rows_for(split["train"])) + list(cache.rows_for(split["val"]))
    args = (backend, cache, rows, run.sam_embeddings, budget_gb, seed, batch_size, device, progress)
    n = 1 if resolve_device(device).type != "cuda" else distributed.resolve_num_processes(num_gpus)
    if n > 1:
        print(f"encoding the embedding cache on {n} GPUs (one shard per process)")
        distributed.launch(build_embedding_cache, args, n)
    emb = build_embedding_cache(*args)  # n > 1: opens the cache the processes finished
    m = emb.manifest
    policy = (
        ""
        if m["n"] == m["requested"]
        else (
            f"embedding budget {budget_gb:g} GB holds {m['n']} of {m['requested']} train+val slices: "
            + ("seeded subsample used for training" if overflow == "subsample" else "the rest encoded on the fly")
        )
    )
    return TrainingEmbeddings(emb, overflow, policy)


def finetune_variant(
    run,
    backend: SamBackend,
    emb: TrainingEmbeddings,
    cache: SliceCache,
    split: dict,
    info: dict,
    prompt: str,
    cfg: TrainConfig,
    jitter_px: int = 5,
    seed: int = 0,
    negatives: float = 0.1,
    wise_alpha: float | str = 1.0,
) -> tuple[list[dict], dict]:
    """Zero-shot score, then decoder training for one prompt mode. Returns (history, zero-shot record).

    Box mode: trained with ``negatives`` (tumour-free slices and, with that probability, tumour slices get a box
    on tumour-free tissue and an empty target); validated, and its checkpoint selected, on the validation slices
    prompted as the automatic cascade prompts them (``unet_validation_boxes``: the cleaned U-Net mask's
    component boxes) when notebook 02's U-Net is there, else on oracle ground-truth boxes (said, and recorded).
    ``wise_alpha`` (``SAM_WISE_FT``: a coefficient, or "auto" to choose it on the validation slices): below 1 the
    decoder is used as a WiSE-FT blend with the pretrained one (``record_wise_ft``); the returned record's
    ``"wise_ft"`` holds the coefficient with its validation Dice."""
    variant = f"sam_{backend.name}_{prompt}"
    on_the_fly = backend if emb.overflow == "encode" else None
    neg = negatives if prompt == "box" else 0.0
    train_ds = EmbeddingDataset(
        emb.cache, cache, cache.rows_for(split["train"]), prompt, jitter_px=jitter_px, seed=seed, backend=on_the_fly,
        negatives=neg,
    )  # fmt: skip
    val_ds, val_boxes = validation_dataset(run, backend, emb, cache, split, info, prompt, cfg.device)
    selection = {
        "none": "no prompt",
        "box": "oracle ground-truth boxes (no U-Net checkpoint yet: run notebook 02 first for cascade selection)",
    }[prompt]
    if val_boxes is not None:
        selection = "U-Net boxes: one per component of the cleaned U-Net mask (the automatic cascade)"
    model = SamDecoderModel(backend, prompt, int(cache.images.shape[-1]))
    zs = evaluate_dataset(model, val_ds, cfg.batch_size, cfg.device, cfg.amp)
    zero_shot = {
        "val_dice": zs["dice"],
        "val_dice_tumour": zs["dice_tumour"],
        "val_loss": zs["loss"],
        "prompt": prompt,
        "oracle_box": prompt == "box" and val_boxes is None,
        "validation_prompt": selection,
        "n_val_slices": len(val_ds),
    }
    atomic_write_json(run.sam(variant) / "zero_shot.json", {"dataset": info["name"], **zero_shot})
    print(
        f"\n{variant}: {len(train_ds)} training / {len(val_ds)} validation slices"
        + f"; zero-shot validation Dice {zs['dice']:.4f}"
        + (f"\n  validated and selected with {selection}" if prompt == "box" else "")
        + (f"\n  trained with negative boxes (tumour-free slices; {neg:.0%} of tumour slices)" if neg > 0 else "")
    )
    if emb.policy:
        print(emb.policy)
    meta = training_meta(
        cache,
        split,
        info,
        train_ds.rows,
        val_ds.rows,
        note=emb.policy,
        embedding_key=emb.cache.key,
        backend=backend.name,
        checkpoint_sha256=backend.checkpoint_sha256,
        prompt=prompt,
        box_jitter_px=jitter_px,
        box_negatives=neg,
        selection=selection,
    )
    history = fit_processes(  # cfg.num_gpus > 1: DDP processes; one device: exactly train.fit
        model, train_ds, val_ds, run.sam(variant), cfg, meta=meta, params=model.trainable_parameters()
    )
    zero_shot["wise_ft"] = record_wise_ft(run.sam(variant) / "best.pt", backend, val_ds, cfg, wise_alpha)
    return history, zero_shot


def record_wise_ft(best, backend: SamBackend, val_ds, cfg: TrainConfig, setting: float | str = 1.0) -> dict:
    """Record WiSE-FT's coefficient (``models/sam/wise.py``) in ``best``'s meta with its validation Dice beside the
    as-trained one. ``setting`` "auto": every coefficient of ``wise.GRID`` is scored on ``val_ds`` (the slices and
    prompts that selected the checkpoint) and the best kept. The stored weights stay those training selected, so a
    later run with another setting (or a resumed run) re-records without retraining. Returns the record."""
    ckpt = load_checkpoint(best, expect_arch="sam_decoder")
    trained = float(ckpt.get("best_metric", float("nan")))
    tried = wise.candidates(setting)
    scores = {1.0: trained} if tried == (1.0,) else {}  # plain fine-tuning: nothing to score
    for a in (t for t in tried if t not in scores):
        model = wise.decoder_from_checkpoint(backend, ckpt, best, a)
        scores[a] = evaluate_dataset(model, val_ds, cfg.batch_size, cfg.device, cfg.amp)["dice"]
    alpha = wise.choose(scores)
    rec = wise.record(alpha, scores[alpha], scores.get(1.0, trained), scores)
    ckpt["meta"] = {**ckpt.get("meta", {}), "wise_ft": rec}
    save_checkpoint(best, ckpt)
    if len(tried) > 1:
        print("  WiSE-FT on the validation slices: " + ", ".join(f"alpha {a:g} {d:.4f}" for a, d in scores.items()))
    if alpha < 1:
        print(f"  {wise.note(alpha)}: validation Dice {scores[alpha]:.4f} (as trained {rec['val_dice_finetuned']:.4f})")
    return rec
