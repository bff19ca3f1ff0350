"""Decoding image files into tensors, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to an RGB uint8 tensor of shape (3, H, W).

    Raises:
        ValueError: the file does not exist, cannot be read, or is not a complete image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"{path}: image file does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
