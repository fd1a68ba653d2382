"""Small upload files shared by the upload and demo tests (imported as ``uploads``: pytest puts tests/ on the path)."""

import nibabel as nib
import numpy as np
from PIL import Image


def slice_png(path, size=(80, 96), mode="L"):
    """A grey, 16-bit or RGB PNG of a bright disc with a brighter spot in it."""
    yy, xx = np.mgrid[: size[0], : size[1]]
    img = ((np.hypot(yy - 40, xx - 50) < 30) * 120 + (np.hypot(yy - 35, xx - 55) < 8) * 120).astype(np.uint8)
    if mode == "I;16":
        Image.fromarray(img.astype(np.uint16) * 200).save(path)
    elif mode == "RGB":
        Image.fromarray(np.stack([img] * 3, -1)).save(path)
    else:
        Image.fromarray(img).save(path)
    return path


def nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def raw_nifti_header(path, shape, dtype=np.float32, data=b""):
    """A .nii holding only a header that declares ``shape`` / ``dtype`` (plus ``data`` bytes): header-bomb and
    truncation cases without allocating the declared volume."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + data)
    return path


def launch_local(demo, **kwargs):
    """Start a Gradio app on 127.0.0.1 without blocking; returns its URL."""
    _, url, _ = demo.launch(
        prevent_thread_lock=True, inline=False, share=False, quiet=True, server_name="127.0.0.1", **kwargs
    )
    return url
