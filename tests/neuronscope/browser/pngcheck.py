"""A small PNG decoder (zlib + struct) for checking that a screenshot is not blank.

Pillow is used when installed; the fallback handles the 8-bit RGB/RGBA, non-interlaced PNGs that
chromium writes.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> np.ndarray:
    stride = width * bpp
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    pos = 0
    for row in range(height):
        ftype = raw[pos]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=pos + 1).astype(np.int32)
        pos += stride + 1
        if ftype == 0:
            cur = line
        elif ftype == 1:  # Sub: a running sum per channel, modulo 256
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) & 0xFF
        elif ftype == 2:  # Up
            cur = (line + prev) & 0xFF
        else:  # Average (3) and Paeth (4) depend on the decoded left neighbour: sequential
            vals = bytearray(line.astype(np.uint8).tobytes())
            up = prev.astype(np.uint8).tobytes()
            for i in range(stride):
                left = vals[i - bpp] if i >= bpp else 0
                if ftype == 3:
                    vals[i] = (vals[i] + ((left + up[i]) >> 1)) & 0xFF
                else:
                    ul = up[i - bpp] if i >= bpp else 0
                    p = left + up[i] - ul
                    pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (up[i] if pb <= pc else ul)
                    vals[i] = (vals[i] + pred) & 0xFF
            cur = np.frombuffer(bytes(vals), dtype=np.uint8).astype(np.int32)
        out[row] = cur
        prev = cur
    return out.reshape(height, width, bpp)


def decode_png(path: Path) -> np.ndarray:
    """Pixels as ``[height, width, channels]`` uint8."""
    try:
        from PIL import Image  # type: ignore[import-not-found,unused-ignore]

        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except ImportError:
        pass
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    pos = len(PNG_SIGNATURE)
    idat = bytearray()
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            width, height, depth, color, _comp, _filt, interlace = struct.unpack(">IIBBBBB", chunk)
            if depth != 8 or color not in (2, 6) or interlace != 0:
                raise ValueError(
                    f"{path}: expected 8-bit RGB(A) non-interlaced, got depth {depth} color {color}"
                )
            bpp = 3 if color == 2 else 4
        elif ctype == b"IDAT":
            idat += chunk
        elif ctype == b"IEND":
            break
    return _unfilter(zlib.decompress(bytes(idat)), width, height, bpp)[:, :, :3]
