"""SAM checkpoint files: the official Segment Anything checkpoints (name, size, sha256), their verification,
and the state dict inside a loaded checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from brainseg_utils.runtime.io import file_sha256


@dataclass(frozen=True)
class OfficialFile:
    name: str
    size: int | None  # bytes; None where public sources disagree (the sha256 decides)
    sha256: str


# The official Segment Anything checkpoints (segment-anything README).
OFFICIAL = {
    "vit_b": OfficialFile(
        "sam_vit_b_01ec64.pth", 375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
    ),
    "vit_l": OfficialFile(
        "sam_vit_l_0b3195.pth", None, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"
    ),
    "vit_h": OfficialFile(
        "sam_vit_h_4b8939.pth", 2_564_550_879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"
    ),
}


def verify_file(path: str | os.PathLike, ref: OfficialFile, what: str) -> str:
    """Check ``path`` against a reference file: size first (cheap), then sha256. Returns the sha256.

    ``what`` names the expected file in the messages, e.g. "the official sam_vit_b_01ec64.pth for vit_b".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; expected {what}")
    size = path.stat().st_size
    if ref.size is not None and size != ref.size:
        raise ValueError(
            f"{path}: expected {what} ({ref.size:,} bytes), found {size:,} bytes (a truncated download or another file)"
        )
    digest = file_sha256(path)
    if digest != ref.sha256:
        raise ValueError(
            f"{path}: expected {what} (sha256 {ref.sha256[:16]}…), found sha256 {digest[:16]}… "
            "(a corrupted download or another file)"
        )
    return digest


def verify_official_checkpoint(path: str | os.PathLike, kind: str) -> str:
    """Check ``path`` is the official ``kind`` checkpoint (size, then sha256). Returns the sha256."""
    return verify_file(path, OFFICIAL[kind], f"the official {OFFICIAL[kind].name} for {kind}")


def state_dict_of(obj: dict) -> dict:
    """The state dict inside a loaded checkpoint (plain, or under "model" / "state_dict")."""
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj
