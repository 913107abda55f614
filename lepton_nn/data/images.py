"""One image from a file, for `lepton-nn predict`, as a (28, 28, 1) float32 image in [0, 1].

A .npy array is read by NumPy and must already be 28×28. Any other file is read by Pillow (the
optional extra "images": PNG, JPEG, GIF, BMP, TIFF, WebP, …, in any mode Pillow opens): it
becomes 8-bit grey and is resized to 28×28 (see read_image for how, and why that filter).
"""
from pathlib import Path

import numpy as np

SIZE = (28, 28)  # MNIST's images, width × height
PILLOW_EXTRA = 'reading images needs Pillow, the optional extra "images": pip install -e ".[images]"'


def pillow():
    """PIL.Image, or an ImportError naming the extra."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(PILLOW_EXTRA) from err
    return Image


def read_image(path, background=0):
    """An image file as a uint8 grey-scale (28, 28) array, read by Pillow.

    Grey: Pillow's ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B (palette, CMYK, YCbCr, HSV
    and bilevel images go through it too); 16-bit samples (modes I;16, I) are scaled by 255/65535
    rather than clipped at 255, as Pillow's own convert("L") would; float images (mode F) are
    taken as already in [0, 1]; LAB keeps its lightness band. Transparent pixels are composited
    over `background` (0 black, MNIST's background; 255 white for a dark digit on a light
    background). An animated or multi-page file gives its first frame.

    Resize: a non-square image is stretched (crop it to the digit first). The filter is Pillow's
    BILINEAR, which widens its triangle to the scale factor when it shrinks, so every pixel
    counts and a stroke's edges turn to grey levels, the anti-aliasing MNIST's digits had; unlike
    LANCZOS its weights are never negative, so strokes get no ringing halos, and unlike BOX it
    enlarges a small image smoothly rather than in blocks.
    Any file Pillow cannot read raises ValueError naming it.
    """
    Image = pillow()
    try:
        with Image.open(path) as im:
            im.load()
            grey = _grey(im, background, Image)
            if grey.size != SIZE:
                grey = grey.resize(SIZE, Image.Resampling.BILINEAR)
            return np.asarray(grey)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow raises OSError (UnidentifiedImageError, truncated data), SyntaxError or ValueError
        # (malformed headers) from its decoders; the message must say which file.
        raise ValueError(f"{path}: not an image Pillow can read ({type(err).__name__}: {err})") from None


def _grey(im, background, Image):
    """A Pillow image (any mode) as a mode "L" image; see read_image for the rules."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        values = np.asarray(im, dtype=np.float64) * (255.0 if im.mode == "F" else 255.0 / 65535.0)
        values = np.nan_to_num(values, nan=0.0)  # a NaN in a float image would poison the resize
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), mode="L")
    if im.mode == "LAB":
        return im.getchannel("L")
    if im.has_transparency_data:
        under = Image.new("RGBA", im.size, (background,) * 3 + (255,))
        im = Image.alpha_composite(under, im.convert("RGBA"))
    return im.convert("L")


def load_image(path, invert=False):
    """One image for predict: a .npy file of shape (28, 28) or (28, 28, 1), or any image file
    Pillow reads (read_image: grey, resized to 28×28).

    uint8 pixels are scaled to [0, 1]; float arrays are taken as already scaled. MNIST digits
    are light on a dark background: invert=True flips a dark-on-light image (and composites
    transparent pixels over white, its background, before the flip).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    else:
        image = read_image(path, background=255 if invert else 0)
    if image.shape not in ((28, 28), (28, 28, 1)):
        raise ValueError(f"{path}: expected a 28×28 image, got shape {image.shape}")
    if image.dtype.kind in "ui":
        image = image.astype(np.float32) / 255.0
    elif image.dtype.kind == "f":
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below
            image = image.astype(np.float32)
        # A NaN pixel would flow through the model into a NaN "prediction": refuse it here.
        bad = ~np.isfinite(image)
        if bad.any():
            raise ValueError(f"{path}: expected finite pixel values, found {int(bad.sum())} of "
                             f"{image.size} pixels NaN or infinite (as float32)")
    else:
        raise ValueError(f"{path}: expected numeric pixels, got dtype {image.dtype}")
    if invert:
        image = 1.0 - image
    return image.reshape(28, 28, 1)
