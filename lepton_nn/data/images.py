"""One image from a file, for `lepton-nn predict`: a .png (read with the standard library's
zlib) or a .npy array, as a (28, 28, 1) float32 image in [0, 1]."""
import struct
import zlib
from pathlib import Path

import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type → samples per pixel


def read_png(path):
    """A PNG as a uint8 grey-scale (H, W) array, with the standard library only (zlib).

    Supports 8-bit grey, grey + alpha, RGB, RGBA and palette images, non-interlaced (what image
    editors write by default). Colour becomes grey as 0.299 R + 0.587 G + 0.114 B; transparency
    is composited over black (MNIST's background). Anything else raises ValueError.
    """
    data = Path(path).read_bytes()
    if data[:8] != _PNG_SIGNATURE:
        raise ValueError(f"{path}: not a PNG file")
    pos, header, palette, idat = 8, None, None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4 or zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise ValueError(f"{path}: truncated or corrupt PNG (chunk {kind!r})")
        if kind == b"IHDR" and length != 13 or kind == b"PLTE" and (length % 3 or not length):
            raise ValueError(f"{path}: corrupt PNG ({kind.decode('latin-1')} chunk of {length} bytes)")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise ValueError(f"{path}: truncated or corrupt PNG (no IHDR or IDAT chunk)")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _PNG_CHANNELS or interlace != 0:
        raise ValueError(f"{path}: unsupported PNG (bit depth {depth}, colour type {colour}, interlace {interlace}); "
                         f"only 8-bit non-interlaced grey/RGB/RGBA/palette images are read — save the image "
                         f"as such or as a .npy array")
    if colour == 3 and palette is None:
        raise ValueError(f"{path}: palette PNG without a PLTE chunk")
    channels = _PNG_CHANNELS[colour]
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as err:
        raise ValueError(f"{path}: corrupt PNG image data ({err})") from None
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise ValueError(f"{path}: corrupt PNG (image data has {len(raw)} bytes, expected {height * (stride + 1)})")
    pixels = _unfilter(np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1), channels, path)
    pixels = pixels.reshape(height, width, channels).astype(np.float64)
    if colour == 3:
        if pixels.max(initial=0) >= len(palette):
            raise ValueError(f"{path}: corrupt PNG (palette index {int(pixels.max())} beyond its "
                             f"{len(palette)} colours)")
        pixels = palette[pixels[..., 0].astype(np.intp)].astype(np.float64)
        channels = 3
    grey = pixels[..., 0] if channels <= 2 else pixels[..., :3] @ np.array([0.299, 0.587, 0.114])
    if channels in (2, 4):
        grey = grey * pixels[..., -1] / 255.0
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


def _unfilter(rows, bpp, path):
    """Undo PNG's per-row filters (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth), byte arithmetic mod 256."""
    out = np.zeros((rows.shape[0], rows.shape[1] - 1), dtype=np.int32)
    previous = np.zeros(out.shape[1], dtype=np.int32)
    for r, (kind, line) in enumerate(zip(rows[:, 0], rows[:, 1:].astype(np.int32))):
        if kind in (0, 2):
            current = (line + (previous if kind == 2 else 0)) % 256
        elif kind in (1, 3, 4):
            current = line.copy()
            for i in range(len(current)):
                a = current[i - bpp] if i >= bpp else 0
                b, c = previous[i], (previous[i - bpp] if i >= bpp else 0)
                if kind == 1:
                    predictor = a
                elif kind == 3:
                    predictor = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                current[i] = (current[i] + predictor) % 256
        else:
            raise ValueError(f"{path}: corrupt PNG (unknown row filter {kind})")
        out[r] = previous = current
    return out.astype(np.uint8)


def load_image(path, invert=False):
    """One image for predict: a .png or a .npy file of shape (28, 28) or (28, 28, 1).

    uint8 pixels are scaled to [0, 1]; float arrays are taken as already scaled. MNIST digits
    are light on a dark background: invert=True flips a dark-on-light image.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() == ".png":
        image = read_png(path)
    elif path.suffix.lower() == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    else:
        raise ValueError(f"{path}: expected a .png or .npy image")
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
