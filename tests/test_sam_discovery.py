"""sam_discovery.py: official SAM / MedSAM checkpoints found on Kaggle/Drive-like trees, checked, and explained.

No network, no real weights: wrong files are tiny or sparse; the one "official-looking" file is a SAM ViT-B
with random weights (93.7 M parameters, ~375 MB, built once per module: ~5 s) accepted because the test
overrides the expected size and sha256.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest
import torch

from brainseg_utils.config import SamConfig
from brainseg_utils.models.sam import discovery as sd
from brainseg_utils.models.sam import weights
from brainseg_utils.runtime.io import file_sha256

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_B = "sam_vit_b_01ec64.pth"
KAGGLE_MODEL_DIR = ("segment-anything", "pytorch", "vit-b", "1")  # how a Kaggle Model is mounted


def hosted_roots(tmp: Path) -> list[sd.SearchRoot]:
    """A Kaggle-like and a Drive-like root, as default_roots() builds them, under ``tmp``."""
    return [
        sd.SearchRoot("Kaggle inputs", tmp / "kaggle" / "input", 5),
        sd.SearchRoot("Google Drive", tmp / "content" / "drive" / "MyDrive", 4),
    ]


def put(path: Path, data: bytes = b"", size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
        if size is not None:
            fh.truncate(size)  # sparse: the right size costs no disk
    return path


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory) -> tuple[Path, weights.OfficialFile]:
    """A SAM ViT-B state dict with random weights under the official name, and its OfficialFile."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    model = sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path_factory.mktemp("weights") / OFFICIAL_B
    torch.save(model.state_dict(), path)
    del model
    return path, weights.OfficialFile(OFFICIAL_B, path.stat().st_size, file_sha256(path))


def fake_medsam(path: Path, drop: str | None = None, reshape: str | None = None) -> Path:
    """A MedSAM-shaped checkpoint ({"model": state}) of zero tensors that share one element of storage
    (shapes are real, the file is ~100 kB); optionally one key dropped and one shape wrong."""
    state = {k: torch.zeros(()).expand(s) for k, s in sd.vit_b_shapes().items() if k != drop}
    if reshape:
        state[reshape] = torch.zeros(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


# ----------------------------------------------------------------------------- parameters and places
def test_parse_checkpoint_param():
    assert sd.parse_checkpoint_param("") == {} and sd.parse_checkpoint_param(None) == {}
    assert sd.parse_checkpoint_param(" /w/sam_vit_b_01ec64.pth ") == {"": "/w/sam_vit_b_01ec64.pth"}
    assert sd.parse_checkpoint_param("/w/a=b.pth") == {"": "/w/a=b.pth"}  # '=' inside a path is a path
    assert sd.parse_checkpoint_param("vit_b=/a.pth, medsam=/b.pth") == {"vit_b": "/a.pth", "medsam": "/b.pth"}
    with pytest.raises(ValueError, match=r"SAM_CHECKPOINT is a path or backend=/path/file.pth .*got 'vit_x=/a.pth'"):
        sd.parse_checkpoint_param("vit_x=/a.pth")
    with pytest.raises(ValueError, match="got 'medsam'"):
        sd.parse_checkpoint_param("vit_b=/a.pth,medsam")


def test_default_roots_are_the_documented_places_in_order(tmp_path):
    roots = sd.default_roots(home=tmp_path)
    assert [str(r.path) for r in roots[:4]] == [
        "/kaggle/input",
        "/content/drive/MyDrive",
        str(tmp_path / ".cache"),
        str(ROOT / "checkpoints"),
    ]
    assert all(1 <= r.max_depth <= 10 and r.max_dirs <= 20_000 for r in roots)  # bounded by a folder budget
    assert roots[0].max_depth >= 6  # a Kaggle Model's file: models/<owner>/<model>/<framework>/<variation>/<version>/
    assert roots[1].max_dirs < roots[0].max_dirs  # a Drive (network file system) gets a smaller budget


def test_walk_is_bounded(tmp_path):
    root = tmp_path / "r"
    put(root / "a" / "b" / "c" / OFFICIAL_B, b"x")  # depth 3
    put(root / "a" / "b" / "c" / "d" / OFFICIAL_B, b"x")  # depth 4: beyond max_depth 3
    put(root / ".hidden" / OFFICIAL_B, b"x")  # hidden folders are skipped
    put(root / "a" / "renamed.bin", size=1234)  # found by its size
    os.symlink(root / "a", root / "link")  # a linked folder is not followed (no duplicate, no loop)
    seen = sd.walk(
        [sd.SearchRoot("test", root, 3), sd.SearchRoot("gone", tmp_path / "absent", 3)], {OFFICIAL_B}, {1234}
    )
    assert [p.relative_to(root).as_posix() for p, _ in seen.candidates] == ["a/renamed.bin", f"a/b/c/{OFFICIAL_B}"]
    # r, a, b, c: not d (too deep), .hidden or link
    assert seen.looked_in == [f"{root} (test, depth <= 3): 4 folders", f"{tmp_path / 'absent'} (gone): absent"]
    capped = sd.walk([sd.SearchRoot("test", root, 9, max_dirs=2)], {OFFICIAL_B})
    assert capped.candidates == [] and capped.looked_in == [f"{root} (test, depth <= 9): stopped after 2 folders"]


# ----------------------------------------------------------------------------- wrong bytes are rejected
def test_kaggle_and_drive_trees_with_wrong_bytes_are_rejected(tmp_path):
    roots = hosted_roots(tmp_path)
    truncated = put(roots[0].path.joinpath(*KAGGLE_MODEL_DIR, OFFICIAL_B), b"\0" * 1000)
    same_size = put(roots[1].path / "models" / "sam" / OFFICIAL_B, size=weights.OFFICIAL["vit_b"].size)
    renamed = put(roots[0].path / "my-sam" / "model.pth", size=weights.OFFICIAL["vit_b"].size)  # right size, other name
    put(roots[0].path / "brats20" / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii", b"nii")

    found = sd.find_checkpoint("vit_b", "", roots, env={})
    assert found.path is None and found.sha256 is None
    assert len(found.rejected) == 3
    by_path = {p: next(r for r in found.rejected if r.startswith(str(p))) for p in (truncated, same_size, renamed)}
    assert (
        "expected the official sam_vit_b_01ec64.pth for vit_b (375,042,383 bytes), found 1,000 bytes"
        in (by_path[truncated])
    )
    for p in (same_size, renamed):
        assert "(sha256 ec2df62732614e57…), found sha256 " in by_path[p] and "corrupted download" in by_path[p]
    text = found.explanation
    assert text.startswith("vit_b weights (sam_vit_b_01ec64.pth) not found: looked in ")
    assert f"{roots[0].path} (Kaggle inputs, depth <= 5)" in text and f"{roots[1].path} (Google Drive" in text

    with pytest.raises(FileNotFoundError, match=r"SAM_BACKEND='vit_b': vit_b weights .* not found: looked in .*"):
        sd.choose_backend("vit_b", "", roots, env={})

    bad_medsam = put(roots[1].path / sd.MEDSAM_FILE, b"not a torch file")
    medsam = sd.find_checkpoint("medsam", "", roots, env={})
    assert medsam.path is None
    assert medsam.rejected[0].startswith(f"{bad_medsam}: expected a SAM ViT-B (MedSAM) checkpoint, found a file torch")


def test_auto_falls_back_to_litemedsam_with_the_not_found_explanation(tmp_path):
    roots = hosted_roots(tmp_path)
    put(roots[1].path / OFFICIAL_B, b"\0" * 10)
    choice = sd.choose_backend("auto", "", roots, env={})
    assert (choice.backend, choice.checkpoint) == ("litemedsam", "")
    assert choice.reason.startswith("SAM_BACKEND='auto': official SAM vit_b weights (sam_vit_b_01ec64.pth) not found:")
    assert "Rejected: " + str(roots[1].path / OFFICIAL_B) in choice.reason
    assert "using LiteMedSAM" in choice.reason and "Official SAM weights on Kaggle/Colab" in choice.reason
    assert choice.short == "litemedsam (official SAM ViT-B not found)"

    cfg, choice2 = SamConfig().resolve(roots=roots, env={})  # the full profile's default is "auto"
    assert SamConfig().backend == "auto" and choice2.reason == choice.reason
    assert (cfg.backend, cfg.checkpoint, cfg.variant("box")) == ("litemedsam", "", "sam_litemedsam_box")
    with pytest.raises(ValueError, match="call SamConfig.resolve"):
        SamConfig().variant("box")
    lite = sd.choose_backend("litemedsam", "", roots, env={"SAM_CHECKPOINT": "/env/is/for/vit_b.pth"})
    assert (lite.backend, lite.checkpoint) == ("litemedsam", "") and "bundled" in lite.reason and lite.found is None
    own = sd.choose_backend("litemedsam", "/w/lite.pth", roots, env={})  # one's own LiteMedSAM weights
    assert own.checkpoint == "/w/lite.pth" and own.reason.endswith(
        "weights from /w/lite.pth (SAM_CHECKPOINT parameter)"
    )


def test_a_wrong_explicit_checkpoint_is_an_error(tmp_path):
    wrong = put(tmp_path / "elsewhere" / OFFICIAL_B, b"\0" * 5)
    roots = hosted_roots(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"SAM_CHECKPOINT parameter: {wrong}: expected the official")):
        sd.choose_backend("auto", str(wrong), roots, env={})
    with pytest.raises(ValueError, match="SAM_CHECKPOINT environment variable: .*found 5 bytes"):
        sd.choose_backend("vit_b", "", roots, env={"SAM_CHECKPOINT": str(wrong)})
    with pytest.raises(FileNotFoundError, match="SAM_CHECKPOINT parameter: checkpoint .*nope.pth does not exist"):
        sd.find_checkpoint("vit_b", str(tmp_path / "nope.pth"), roots, env={})
    lenient = sd.find_checkpoint("vit_b", str(wrong), roots, env={}, strict=False)  # evaluation: search goes on
    assert lenient.path is None and lenient.rejected[0].startswith(str(wrong))
    assert lenient.looked_in[0] == f"{wrong} (SAM_CHECKPOINT parameter)"


# ----------------------------------------------------------------------------- right files are accepted
def test_random_vit_b_under_the_official_name_is_found_and_loads(tmp_path, vit_b_file, monkeypatch):
    src, ref = vit_b_file
    roots = hosted_roots(tmp_path)
    kaggle = roots[0].path.joinpath(*KAGGLE_MODEL_DIR, OFFICIAL_B)
    drive = roots[1].path / "sam" / OFFICIAL_B
    for p in (kaggle, drive):
        p.parent.mkdir(parents=True)
        os.link(src, p)  # hard links: no 375 MB copies

    # without the override the random file is not the official one (its size already differs)
    first = sd.find_checkpoint("vit_b", "", roots, env={})
    assert first.path is None and f"(375,042,383 bytes), found {ref.size:,} bytes" in first.rejected[0]
    monkeypatch.setitem(weights.OFFICIAL, "vit_b", ref)  # what the test overrides: the expected size and sha256
    choice = sd.choose_backend("auto", "", roots, env={})
    assert (choice.backend, choice.checkpoint) == ("vit_b", str(kaggle)), "Kaggle inputs are searched first"
    assert choice.reason == (
        f"SAM_BACKEND='auto': vit_b weights (sam_vit_b_01ec64.pth) found at {kaggle} "
        "(Kaggle inputs; size and sha256 verified)"
    )
    assert choice.found.sha256 == ref.sha256 and choice.short == f"vit_b ({OFFICIAL_B})"
    explicit = sd.choose_backend("auto", str(src), roots, env={})  # SAM_CHECKPOINT comes first
    assert explicit.checkpoint == str(src) and "(SAM_CHECKPOINT parameter;" in explicit.reason
    from_env = sd.choose_backend("auto", "", roots, env={"SAM_CHECKPOINT": str(drive)})
    assert from_env.checkpoint == str(drive) and "(SAM_CHECKPOINT environment variable;" in from_env.reason
    folder = sd.choose_backend("auto", str(drive.parent.parent), roots, env={})  # a folder is searched first
    assert folder.checkpoint == str(drive) and "(SAM_CHECKPOINT parameter;" in folder.reason

    loads, real_load = [], torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    backend = choice.build(runtime="pytorch")
    assert loads and all(w is True for w in loads), f"every torch.load with weights_only=True, got {loads}"
    assert backend.name == "vit_b" and backend.checkpoint_sha256 == ref.sha256 and backend.provenance == choice.reason
    saved = real_load(src, weights_only=True, mmap=True)
    got = backend.model.state_dict()
    for key in ("image_encoder.patch_embed.proj.weight", "mask_decoder.iou_token.weight"):
        assert torch.equal(got[key], saved[key]), key

    # evaluation / demo: the weights must be the ones the decoders were trained with
    again = sd.backend_for_decoder("vit_b", ref.sha256, "", roots, env={}, runtime="pytorch")
    assert again.provenance.startswith(f"vit_b weights (sam_vit_b_01ec64.pth) found at {kaggle}")
    with pytest.raises(FileNotFoundError, match=r"trained vit_b decoders need .*differs from the vit_b weights"):
        sd.backend_for_decoder("vit_b", "0" * 64, "", roots, env={})

    # a MedSAM file must not be the official SAM ViT-B under another name
    medsam = roots[1].path / sd.MEDSAM_FILE
    os.link(src, medsam)
    assert sd.find_checkpoint("medsam", "", roots, env={}).rejected == (
        f"{medsam}: expected a MedSAM ViT-B checkpoint, found the official SAM ViT-B (use vit_b)",
    )


def test_medsam_is_checked_by_keys_and_shapes(tmp_path):
    roots = hosted_roots(tmp_path)
    good = fake_medsam(roots[1].path / "medsam" / sd.MEDSAM_FILE)
    assert good.stat().st_size < 2_000_000
    found = sd.find_checkpoint("medsam", "", roots, env={})
    assert found.path == good and found.sha256 == file_sha256(good)
    assert found.explanation == (
        f"medsam weights (medsam_vit_b.pth) found at {good} (Google Drive; keys/shapes checked)"
    )
    assert sd.choose_backend("medsam", "", roots, env={}).checkpoint == str(good)

    bad = fake_medsam(
        roots[0].path / "x" / sd.MEDSAM_FILE, drop="mask_decoder.iou_token.weight", reshape="image_encoder.pos_embed"
    )
    with pytest.raises(ValueError) as err:
        sd.check_candidate(bad, "medsam")
    assert str(err.value) == (
        f"{bad}: expected a SAM ViT-B (MedSAM) checkpoint, found another architecture: "
        "1 missing keys (e.g. mask_decoder.iou_token.weight); "
        "1 wrong shapes (e.g. image_encoder.pos_embed: (3,) vs (1, 64, 64, 768))"
    )
    found = sd.find_checkpoint("medsam", "", roots, env={})  # Kaggle's bad one is rejected, Drive's taken
    assert found.path == good and found.rejected[0].startswith(f"{bad}: expected a SAM ViT-B")
    unsafe = tmp_path / "unsafe" / sd.MEDSAM_FILE
    unsafe.parent.mkdir()
    torch.save({"model": {"x": torch.zeros(1)}, "obj": argparse.Namespace(code="anything")}, unsafe)
    with pytest.raises(ValueError, match="refused .*weights_only=True"):
        sd.check_candidate(unsafe, "medsam")


def test_backend_for_bundled_litemedsam_needs_no_search(tmp_path):
    backend = sd.backend_for_decoder("litemedsam", None, "", hosted_roots(tmp_path), env={}, runtime="pytorch")
    assert backend.name == "litemedsam" and "bundled" in backend.provenance
    with pytest.raises(FileNotFoundError, match=r"trained medsam decoders need .*SAM_CHECKPOINT=medsam=/path"):
        sd.backend_for_decoder("medsam", "ab" * 32, "", hosted_roots(tmp_path), env={})


# ----------------------------------------------------------------------------- one name
def test_one_name_for_the_sam_checkpoint_everywhere():
    """03, 04 and 05 all take SAM_CHECKPOINT (so a full.yaml run with SAM_CHECKPOINT set reaches 04 and 05),
    app.py reads the SAM_CHECKPOINT environment variable, and the old 04-only name is gone everywhere."""
    from test_config import notebook_parameters

    nbs = {p.name[:2]: p for p in (ROOT / "notebooks").glob("*.ipynb")}
    for key in ("03", "04", "05"):
        assert notebook_parameters(nbs[key])["SAM_CHECKPOINT"] == "", key
    code04 = "".join("".join(c["source"]) for c in json.loads(nbs["04"].read_text())["cells"])
    assert 'load_models(run, split["sha256"], device, configs.evaluation.sam_checkpoint)' in code04
    assert 'os.environ.get("SAM_CHECKPOINT"' in (ROOT / "app.py").read_text()
    files = [*nbs.values(), ROOT / "app.py", ROOT / "README.md", *(ROOT / "configs").glob("*.yaml")]
    files += (ROOT / "brainseg_utils").rglob("*.py")
    offenders = [p.name for p in files if "SAM_CHECKPOINTS" in p.read_text()]
    assert not offenders, f"the old parameter name SAM_CHECKPOINTS is still used in {offenders}"


def test_evaluation_names_every_backend_and_why():
    """metrics.json's sam_backends lands in results.md; model names map to their backend (vit_b vs vit_b_x)."""
    from types import SimpleNamespace

    from brainseg_utils.evaluation import evaluate as ev
    from brainseg_utils.evaluation import results_table

    models = SimpleNamespace(backends={"vit_b": None, "litemedsam": None, "medsam": None})
    assert [ev.backend_of(models, n) for n in ("unet", "sam_vit_b_unet_box", "sam_medsam_none")] == [
        None,
        "vit_b",
        "medsam",
    ]
    metrics = {
        "dataset": {"name": "synthetic", "n_test_cases": 2, "split_sha256": "ab" * 32},
        "models": {},
        "statistics": {},
        "conventions": {},
        "latency_protocol": "-",
        "sam_backends": {
            "vit_b": {"checkpoint_sha256": "cd" * 32, "why": "vit_b weights (sam_vit_b_01ec64.pth) found at /k/x"},
            "litemedsam": {"checkpoint_sha256": "ef" * 32, "why": ""},
        },
    }
    text = results_table.results_markdown(metrics)
    assert (
        "SAM backends (which weights ran and why):\n"
        "- vit_b: vit_b weights (sam_vit_b_01ec64.pth) found at /k/x\n"
        f"- litemedsam: sha256 {'ef' * 32}\n"
    ) in text


def test_a_vit_b_run_reaches_evaluation_with_sam_checkpoint_alone(tmp_path, vit_b_file, monkeypatch):
    """Issue 11, blocker 8: a vit_b run set up with SAM_CHECKPOINT (as in 03) loads in 04 with the same parameter,
    and with nothing typed when the file sits in a searched place; another backend's file is refused."""
    from brainseg_utils.evaluation import inference
    from brainseg_utils.models.sam.decoder import SamDecoderModel
    from brainseg_utils.models.unet import UNet
    from brainseg_utils.runtime.checkpoints import save_checkpoint
    from brainseg_utils.runtime.paths import RunDir

    src, ref = vit_b_file
    monkeypatch.setitem(weights.OFFICIAL, "vit_b", ref)
    split = "a" * 64
    run = RunDir(tmp_path / "run")
    unet = UNet(base_channels=4)
    run.unet_best.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        run.unet_best,
        {
            "model": unet.state_dict(),
            "config": {"model": unet.config, "train": {}},
            "meta": {"split_sha256": split, "img_size": 64, "dataset": "synthetic"},
        },
    )
    backend = sd.choose_backend("vit_b", str(src), [], env={}).build(runtime="pytorch")
    dec = SamDecoderModel(backend, "none", 64)
    path = run.sam("sam_vit_b_none") / "best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"split_sha256": split, "checkpoint_sha256": ref.sha256, "backend": "vit_b"}
    save_checkpoint(path, {"model": dec.state_dict(), "config": {"model": dec.config, "train": {}}, "meta": meta})

    monkeypatch.setattr(sd, "default_roots", lambda home=None: [])  # nothing on this machine is searched
    monkeypatch.delenv("SAM_CHECKPOINT", raising=False)
    models = inference.load_models(run, split, "cpu", str(src))  # 04's SAM_CHECKPOINT, as 03 was given it
    assert models.names() == ["unet", "sam_vit_b_none"]
    assert models.unet_config == {"model": unet.config, "train": {}, "augmentation": None}  # for the seed protocol
    assert models.backends["vit_b"].provenance.endswith("(SAM_CHECKPOINT parameter; size and sha256 verified)")
    with pytest.raises(FileNotFoundError, match=r"trained vit_b decoders need .* set SAM_CHECKPOINT=vit_b=/path"):
        inference.load_models(run, split, "cpu", "")
    cache = tmp_path / "home" / ".cache" / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.link(src, cache / OFFICIAL_B)
    monkeypatch.setattr(sd, "default_roots", lambda home=None: [sd.SearchRoot("user cache", cache.parents[2], 5)])
    found = inference.load_models(run, split, "cpu", "")  # nothing typed: found in ~/.cache
    assert f"found at {cache / OFFICIAL_B} (user cache;" in found.backends["vit_b"].provenance
