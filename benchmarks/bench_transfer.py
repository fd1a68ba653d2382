"""Transfer benchmark: does a U-Net trained only on our synthetic data work on real brain anatomy?

    python benchmarks/bench_transfer.py [--out outputs/benchmarks/transfer.json] [--work outputs/benchmarks/transfer]
                                        [--sets NAME|NAME=PATH ...] [--sam] [--epochs N] [--cases N] [--no-mr-intensity]

1. Generates the default synthetic dataset (the quick profile's ``configs/quick.yaml``: cases, depth,
   seed 0), builds the slice cache (its modalities, image size, tumour-free fraction and slice step), writes the
   patient split and trains the quick-profile U-Net (its base channels, epochs, batch and learning rate;
   AdamW, the package's augmentation), all with the package's own functions as notebooks 01-02 do. Every
   default comes from ``configs/quick.yaml``, so the benchmark follows the profile the run uses. The trained
   model is reused when the data, the generator/augmentation source and the hyper-parameters
   are the same (keyed folder under ``--work``).
2. Evaluates with notebook 04's per-patient protocol (``evaluate.predict_case``: every brain
   slice predicted at the cache size, mapped back to the native grid, 3-D Dice of the whole
   tumour) on
     * every real-anatomy construction (``benchmarks/constructions.py``: MNI152 2009 template, tumours and
       contrasts by code that shares nothing with the generator, each construction differently; real anatomy,
       synthetic tumours, NOT BraTS), built under ``--sets-dir``, or a set written elsewhere (``NAME=PATH``,
       e.g. one built independently of this repository). Reported per set; ``worst_real_set`` is the one
       the goal is judged on;
     * ``synthetic_test``: the synthetic test split (in-domain; 2-3 cases at 16 cases);
     * ``synthetic_extra``: ``--extra-cases`` more synthetic cases from another seed (in-domain,
       a less noisy mean than the small test split).
3. With ``--sam``: the pretrained LiteMedSAM (zero-shot, NOT fine-tuned) prompted with the
   ground-truth box of every tumour slice (an ORACLE prompt), on the real-anatomy set and the
   synthetic test split, same 3-D protocol (slices without tumour predicted empty). Cached per
   dataset fingerprint, since it does not depend on the U-Net.
4. ``flair_overlap`` of each real-anatomy set and the synthetic training data (no model): the fraction of
   normal brain brighter than the median edema voxel, i.e. how badly "bright = tumour" works on each.

Writes JSON (``--out``): per-case and mean Dice for every model and set, training history,
generation seconds per case (contended 2-core CPU unless stated), the exact configuration.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # realanatomy.py beside this file

import constructions  # noqa: E402

from brainseg_utils.config import TrainConfig  # noqa: E402
from brainseg_utils.data.brats import discover_cases  # noqa: E402
from brainseg_utils.data.dataset import SliceDataset  # noqa: E402
from brainseg_utils.data.slices import SliceCache, SliceConfig, build_cache, resize_slice, write_split_once  # noqa: E402
from brainseg_utils.data.synthetic import APPEARANCES, SyntheticConfig, generate_dataset  # noqa: E402
from brainseg_utils.data.transforms import train_augmentation  # noqa: E402
from brainseg_utils.data.volumes import load_case, normalise_volume  # noqa: E402
from brainseg_utils.evaluation import metrics as M  # noqa: E402
from brainseg_utils.evaluation.grid import batched  # noqa: E402
from brainseg_utils.evaluation.inference import Models, load_unet, predict_case, to_native  # noqa: E402
from brainseg_utils.models.unet import UNet  # noqa: E402
from brainseg_utils.parameters import profile_configs  # noqa: E402
from brainseg_utils.runtime.io import atomic_write_json, canonical_sha256, file_fingerprint  # noqa: E402
from brainseg_utils.training.engine import fit  # noqa: E402

PROFILE = profile_configs("quick")  # every default below is the quick profile's (configs/quick.yaml over config.py)
MODALITIES = tuple(PROFILE.data.modalities)  # U-Net input channels; --modalities replaces it (set once in main)


def _source_sha(*names: str) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update((ROOT / "brainseg_utils" / n).read_bytes())
    return h.hexdigest()


GENERATOR = tuple(
    f"data/{n}.py" for n in ("synthetic", "phantom", "phantom_anatomy", "phantom_tumours", "phantom_fields")
)


def _code_sha(*names: str) -> str:
    """sha256 of modules' code without comments and docstrings (their AST): editing prose keeps the key."""
    return hashlib.sha256("".join(_module_sha(n) for n in names).encode()).hexdigest()


def _module_sha(name: str) -> str:
    tree = ast.parse((ROOT / "brainseg_utils" / name).read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def synthetic_data(
    work: Path, cases: int, seed: int, depth: int, tag: str, appearance: str = "fixed"
) -> tuple[Path, float]:
    """Generate (or reuse) a synthetic dataset keyed by the generator's code and its configuration;
    returns (root, s/case)."""
    cfg = SyntheticConfig(cases=cases, seed=seed, depth=depth, appearance=appearance)
    gen_sha = _code_sha(*GENERATOR)[:12]
    out = work / f"synthetic-{tag}"
    stamp = out / "GENERATOR_SHA"
    if out.exists() and (not stamp.exists() or stamp.read_text() != gen_sha):
        shutil.rmtree(out)  # another generator version: regenerate (keeps disk use to one copy)
    t0 = time.perf_counter()
    generate_dataset(out, cfg, workers=2, progress=False)
    stamp.write_text(gen_sha)
    marker = json.loads((out / "SYNTHETIC.json").read_text())
    secs = marker.get("generation_seconds", time.perf_counter() - t0)
    return out, float(secs) / cases


def train_unet(work: Path, syn: Path, a) -> tuple[Path, dict, dict]:
    """Slice cache, split and quick-profile U-Net on ``syn`` (reused when keyed inputs match)."""
    cases = discover_cases(syn)
    scfg = SliceConfig(
        img_size=a.img_size,
        modalities=MODALITIES,
        tumour_free_fraction=a.tumour_free_fraction,
        slice_step=a.slice_step,
        seed=a.seed,
    )
    cache = build_cache(cases, work / "slices", scfg, progress=False)
    split_path = work / "splits.json"
    split_path.unlink(missing_ok=True)  # the split depends only on case ids and seed: recreate each time
    split = write_split_once(split_path, [c.case_id for c in cases], tuple(a.split_fractions), a.seed)
    tcfg = TrainConfig(
        epochs=a.epochs,
        batch_size=a.batch,
        lr=a.lr,
        weight_decay=PROFILE.unet_train.weight_decay,
        grad_clip=PROFILE.unet_train.grad_clip,
        amp=not a.no_amp,
        channels_last=a.channels_last,
        num_workers=0,
        seed=a.seed,
        ema_decay=a.ema_decay,
        resume="auto",
        device="cpu" if a.cpu else "auto",
        progress=False,
    )
    mcfg = {
        "in_channels": len(MODALITIES),
        "base_channels": a.base,
        "bilinear": PROFILE.unet.bilinear,
        "dropout": a.dropout,
    }
    key = canonical_sha256(
        {
            "cache": cache.key,
            "train": {k: v for k, v in vars(tcfg).items() if k != "progress"},
            "model": mcfg,
            "aug": a.aug_strength,
            "mr_intensity": a.mr_intensity,
            "src": _source_sha(
                "data/transforms.py", "data/dataset.py", "training/engine.py", "training/ema.py", "models/losses.py"
            ),
        }
    )
    unet_dir = work / "unet" / key[:16]
    torch.manual_seed(a.seed)
    model = UNet(**mcfg)
    train_ds = SliceDataset(
        cache, cache.rows_for(split["train"]), train_augmentation(a.aug_strength, a.mr_intensity), seed=a.seed
    )
    val_ds = SliceDataset(cache, cache.rows_for(split["val"]))
    meta = {
        "dataset": "synthetic",
        "split_sha256": split["sha256"],
        "cache_key": cache.key,
        "img_size": a.img_size,
        "modalities": list(MODALITIES),
    }
    t0 = time.perf_counter()
    history = fit(model, train_ds, val_ds, unet_dir, tcfg, meta=meta)
    train_info = {
        "seconds_this_call": round(time.perf_counter() - t0, 1),
        "dir": str(unet_dir),
        "train_slices": len(train_ds),
        "val_slices": len(val_ds),
        "history": history,
    }
    return unet_dir / "best.pt", split, train_info


def unet_dice(model, cases, img_size: int, device) -> dict:
    """Per-patient 3-D whole-tumour Dice (notebook 04's protocol) of ``model`` on ``cases``."""
    models = Models(model)
    per_case = {}
    for c in cases:
        res = predict_case(models, c, img_size, MODALITIES, device)
        per_case[c.case_id] = M.dice(res["pred"]["unet"], res["gt"])
    return _summary(per_case)


@torch.no_grad()
def training_fit(model, cache, train_ids, cases_by_id: dict, img_size: int, device) -> dict:
    """Does the model fit what it trained on? Pooled 2-D Dice (at the cache size, > 0.5, no augmentation) on
    the tumour slices it trained on and on the training cases' other tumour slices (tumour at source resolution,
    both). Both low and close: the model underfits (more optimizer steps or capacity would help); the first high
    and the second low: it memorises its few slices (more data or augmentation would help)."""
    rows = cache.rows_for(train_ids)
    index = cache.index.iloc[rows]
    seen = set(zip(index["case_id"], index["z"].astype(int), strict=True))
    rows = rows[index["tumour_px"].to_numpy() > 0]  # tumour-free training slices: not comparable

    def pooled(images: np.ndarray, masks: np.ndarray) -> dict:
        def predict(i: int, j: int) -> torch.Tensor:
            return (model(torch.from_numpy(np.asarray(images[i:j], np.float32)).to(device)) > 0).cpu()

        p = batched(predict, len(images), 16)[:, 0].numpy()  # logit > 0 <=> probability > 0.5
        m = np.asarray(masks).astype(bool)
        dice = 2.0 * (p & m).sum() / max(p.sum() + m.sum(), 1)
        return {"dice": round(float(dice), 4), "slices": int(len(images))}

    out = {"training_tumour_slices": pooled(cache.images[rows], cache.masks[rows])}
    imgs, masks = [], []
    for cid in train_ids:
        vol = load_case(cases_by_id[cid], MODALITIES)
        wt = vol["wt"]
        for z in np.flatnonzero(wt.reshape(-1, wt.shape[2]).any(0)):
            if (cid, int(z)) not in seen:
                img, mask = resize_slice(vol["image"][..., z], wt[..., z], img_size)
                imgs.append(img)
                masks.append(mask)
    out["other_tumour_slices_of_training_cases"] = pooled(np.stack(imgs), np.stack(masks))
    out["what"] = (
        "pooled 2-D Dice at the cache size: the tumour slices trained on vs the training cases' other tumour slices "
        "(close and low: underfitting; far apart: memorising)"
    )
    return out


def _summary(per_case: dict) -> dict:
    vals = list(per_case.values())
    return {
        "per_case": {k: round(float(v), 4) for k, v in per_case.items()},
        "mean": round(float(np.mean(vals)), 4),
        "median": round(float(np.median(vals)), 4),
        "min": round(float(np.min(vals)), 4),
        "max": round(float(np.max(vals)), 4),
        "n": len(vals),
    }


def flair_overlap(cases) -> dict:
    """How far "bright on FLAIR = tumour" works, per case: the fraction of normal brain voxels (seg 0, image != 0)
    brighter than the median edema voxel (seg 2) of the normalised FLAIR (``normalise_volume``). 0: a global
    threshold separates edema from normal brain (a shortcut a model can learn); larger: it must use local contrast.
    Cases without edema are skipped. Needs no model: a cheap realism check of a generator against the real set.
    """
    per_case = {}
    for c in cases:
        raw = np.asarray(nib.load(c.images["flair"]).dataobj, dtype=np.float32)
        seg = np.asarray(nib.load(c.seg).dataobj)
        f = normalise_volume(raw)
        edema, normal = seg == 2, (raw != 0) & (seg == 0)
        if edema.any() and normal.any():
            per_case[c.case_id] = float((f[normal] > np.median(f[edema])).mean())
    if not per_case:
        raise ValueError(f"flair_overlap: none of {len(cases)} cases has both edema (label 2) and normal brain")
    return _summary(per_case)


@torch.no_grad()
def sam_box_dice(cases, img_size: int, device, cache_file: Path) -> dict:
    """Pretrained LiteMedSAM, ground-truth box per tumour slice (ORACLE), per-patient 3-D Dice; cached."""
    from brainseg_utils.models.sam.backends import build_backend
    from brainseg_utils.models.sam.decoder import SamDecoderModel
    from brainseg_utils.models.sam.prompts import mask_to_box

    fp = canonical_sha256(
        {
            "cases": {c.case_id: [file_fingerprint(c.images["flair"]), file_fingerprint(c.seg)] for c in cases},
            "img_size": img_size,
            "v": 1,
        }
    )
    if cache_file.exists():
        stored = json.loads(cache_file.read_text())
        if stored.get("fingerprint") == fp:
            return stored["result"]
    backend = build_backend("litemedsam").to(device)
    dec = SamDecoderModel(backend, "box", img_size).to(device).eval()
    per_case = {}
    for c in cases:
        vol = load_case(c, ("flair",))  # SAM sees FLAIR whatever the U-Net takes
        gt = vol["wt"].astype(bool)
        h, w, d = gt.shape
        zs = np.flatnonzero(gt.reshape(-1, d).any(0))
        pred = np.zeros_like(gt)
        rows = []
        for z in zs:
            img, m = resize_slice(vol["image"][..., z], gt[..., z].astype(np.uint8), img_size)
            if m.any():
                rows.append((z, img, mask_to_box(m)))
        for i in range(0, len(rows), 8):
            chunk = rows[i : i + 8]
            x = torch.from_numpy(np.stack([r[1] for r in chunk]).astype(np.float32)).to(device)
            boxes = torch.from_numpy(np.stack([r[2] for r in chunk])).to(device)
            prob = torch.sigmoid(dec(backend.encode(x), boxes))[:, 0].cpu()
            native = to_native(prob, h, w)
            for k, (z, _, _) in enumerate(chunk):
                pred[:, :, z] = native[k]
        per_case[c.case_id] = M.dice(pred, gt)
    result = {
        **_summary(per_case),
        "model": "sam_litemedsam_box_zeroshot",
        "prompt": "oracle ground-truth box per tumour slice (zero-shot, pretrained decoder, not fine-tuned)",
    }
    atomic_write_json(cache_file, {"fingerprint": fp, "result": result})
    return result


def real_sets(a) -> dict:
    """{name: cases} of every requested real-anatomy set: NAME builds (or reuses) that construction under
    ``--sets-dir``; NAME=PATH reads a set written elsewhere (e.g. an independently built one)."""
    out = {}
    for spec in a.sets:
        name, _, path = spec.partition("=")
        if path:
            root = Path(path)
        elif name in constructions.NAMES:
            root = constructions.build(name, Path(a.sets_dir) / name, a.real_cases, a.real_seed, workers=None)
        else:
            raise SystemExit(f"--sets: unknown construction {name!r}; known: {list(constructions.NAMES)}, or NAME=PATH")
        cases = discover_cases(root)
        if not cases:
            raise SystemExit(f"--sets {spec}: no BraTS cases under {root}")
        out[name] = cases[: a.real_cases] if not path else cases
    return out


def describe_set(name: str, specs: list[str]) -> str:
    given = next((sp.partition("=")[2] for sp in specs if sp.partition("=")[0] == name and "=" in sp), "")
    made = f"given folder {given}" if given else f"construction benchmarks/{constructions.NAMES[name]}.py"
    return f"REAL anatomy with SYNTHETIC tumours ({made}); not BraTS"


def worst_set(results: dict, real: dict) -> dict:
    """The real-anatomy set with the lowest U-Net mean Dice: the goal is judged there, not on the mean."""
    name = min(real, key=lambda n: results[n]["unet"]["mean"])
    return {
        "set": name,
        "mean": results[name]["unet"]["mean"],
        "per_set": {n: results[n]["unet"]["mean"] for n in real},
    }


def main(argv: list[str] | None = None) -> int:
    global MODALITIES
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/benchmarks/transfer.json")
    p.add_argument("--work", default="outputs/benchmarks/transfer", help="datasets, cache and models (reused)")
    p.add_argument(
        "--sets",
        nargs="+",
        default=list(constructions.NAMES),
        help=f"real-anatomy constructions to evaluate on, NAME or NAME=PATH (default all: {list(constructions.NAMES)})",
    )
    p.add_argument("--sets-dir", default="outputs/benchmarks/sets", help="where NAME sets are built (reused)")
    p.add_argument("--real-cases", type=int, default=12)
    p.add_argument(
        "--real-seed", type=int, default=0, help="seed of the real-anatomy set (fixed: --seed varies training)"
    )
    p.add_argument("--cases", type=int, default=PROFILE.data.synthetic_cases)
    p.add_argument("--extra-cases", type=int, default=6, help="extra in-domain synthetic cases (seed + 1000); 0: none")
    p.add_argument("--depth", type=int, default=PROFILE.data.synthetic_depth)
    p.add_argument("--slice-step", type=int, default=PROFILE.data.slice_step)
    p.add_argument(
        "--split-fractions",
        type=float,
        nargs=3,
        default=list(PROFILE.data.split_fractions),
        metavar=("TRAIN", "VAL", "TEST"),
        help="patient split (default from the profile)",
    )
    p.add_argument("--tumour-free-fraction", type=float, default=PROFILE.data.tumour_free_fraction)
    p.add_argument("--batch", type=int, default=PROFILE.unet_train.batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--img-size", type=int, default=PROFILE.data.img_size)
    p.add_argument("--epochs", type=int, default=PROFILE.unet_train.epochs)
    p.add_argument("--lr", type=float, default=PROFILE.unet_train.lr)
    p.add_argument("--base", type=int, default=PROFILE.unet.base_channels)
    p.add_argument("--dropout", type=float, default=PROFILE.unet.dropout, help="U-Net bottleneck dropout")
    p.add_argument("--aug-strength", type=float, default=1.0)
    p.add_argument(
        "--ema-decay",
        type=float,
        default=PROFILE.unet_train.ema_decay,
        help="moving average of the U-Net weights per step (0: off; default from the profile)",
    )
    p.add_argument(
        "--no-mr-intensity",
        dest="mr_intensity",
        action="store_false",
        help="train without transforms' MR-like bias field / gamma / blur (the earlier augmentation)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=PROFILE.unet_train.channels_last,
        help="channels_last memory format (default: the profile's CHANNELS_LAST)",
    )
    p.add_argument("--no-amp", action="store_true", help="fp32 training on CUDA too (the CPU path is fp32 anyway)")
    p.add_argument("--cpu", action="store_true", help="force CPU even when CUDA is available")
    p.add_argument("--sam", action="store_true", help="also LiteMedSAM zero-shot with the oracle box")
    p.add_argument(
        "--appearance",
        default=PROFILE.data.synthetic_appearance,
        choices=APPEARANCES,
        help="synthetic contrast: clinical FLAIR ranges per case (fixed, the default) or wider ranges (randomised)",
    )
    p.add_argument(
        "--modalities", default=",".join(MODALITIES), help="U-Net input channels, e.g. flair or flair,t1,t1ce,t2"
    )
    p.add_argument("--label", default="", help="free text stored in the JSON (what this run changed)")
    a = p.parse_args(argv)
    MODALITIES = profile_configs("quick", MODALITIES=a.modalities).data.modalities  # parsed and checked there
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if a.cpu or not torch.cuda.is_available() else "cuda")
    sources = {"generator_code_sha256": _code_sha(*GENERATOR), "transforms_sha256": _source_sha("data/transforms.py")}

    syn, gen_s = synthetic_data(work, a.cases, a.seed, a.depth, "train", a.appearance)
    best, split, train_info = train_unet(work, syn, a)
    model, _ = load_unet(best, split["sha256"], device)
    real = real_sets(a)
    by_id = {c.case_id: c for c in discover_cases(syn)}
    test_cases = [by_id[c] for c in split["test"]]
    results = {name: {"unet": unet_dice(model, cases, a.img_size, device)} for name, cases in real.items()}
    results["synthetic_test"] = {"unet": unet_dice(model, test_cases, a.img_size, device)}
    cache = SliceCache.open(work / "slices")
    train_info["fit"] = training_fit(model, cache, split["train"], by_id, a.img_size, device)
    if a.extra_cases:
        extra, _ = synthetic_data(work, a.extra_cases, a.seed + 1000, a.depth, "extra", a.appearance)
        results["synthetic_extra"] = {"unet": unet_dice(model, discover_cases(extra), a.img_size, device)}
    overlap = {name: flair_overlap(cases) for name, cases in real.items()}
    overlap["synthetic_train"] = flair_overlap(discover_cases(syn))
    if a.sam:
        for name, cases in real.items():
            results[name]["sam_litemedsam_box_zeroshot"] = sam_box_dice(
                cases, a.img_size, device, work / f"sam_{name}.json"
            )
        results["synthetic_test"]["sam_litemedsam_box_zeroshot"] = sam_box_dice(
            test_cases, a.img_size, device, work / "sam_synthetic_test.json"
        )
    out = {
        "label": a.label,
        "what": "U-Net trained only on the default synthetic data (quick profile), per-patient 3-D whole-tumour Dice",
        "sets": {
            **{name: describe_set(name, a.sets) for name in real},
            "synthetic_test": "in-domain: the synthetic test split",
            "synthetic_extra": f"in-domain: {a.extra_cases} more synthetic cases, seed {a.seed + 1000}",
        },
        "protocol": "evaluate.predict_case: every brain slice at the cache size, bilinear back to native, > 0.5, "
        "3-D Dice vs seg > 0",
        "config": {k: v for k, v in vars(a).items() if k not in ("out", "work", "sets_dir")},
        **sources,
        "generation_seconds_per_case": round(gen_s, 2),
        "generation_note": "wall time of generate_dataset / cases with 2 worker processes on a contended 2-core CPU",
        "device": str(device),
        "torch_threads": a.threads,
        "training": train_info,
        "results": results,
        "worst_real_set": worst_set(results, real),
        "flair_overlap": {
            "what": "per case, fraction of normal brain voxels brighter than the median edema voxel (normalised "
            "FLAIR); 0 = a global threshold finds the edema",
            **overlap,
        },
    }
    atomic_write_json(a.out, out)
    for s, r in results.items():
        for name, v in r.items():
            print(f"{s:16s} {name:30s} mean Dice {v['mean']:.3f} (n={v['n']}, min {v['min']:.3f}, max {v['max']:.3f})")
    for s, v in overlap.items():
        print(f"{s:16s} FLAIR normal-brighter-than-edema fraction: mean {v['mean']:.4f} (max {v['max']:.4f})")
    w = out["worst_real_set"]
    print(f"worst real-anatomy set: {w['set']} (U-Net mean Dice {w['mean']:.3f}; the goal holds on the worst)")
    print(f"generation {gen_s:.2f} s/case; wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
