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
