"""Datasets and loaders: the embedded synthetic sets, COCO / VOC / ImageFolder readers, splits.

The names below load their module (and torch) when first used: the torch-free modules of the
package (`detnas.data.files`, `detnas.data.synthetic`) serve the config's checks, which the
workflow runs when it is parsed.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "CocoDetection": "coco",
    "ImageFolderClassification": "imagefolder",
    "classification_loader": "imagefolder",
    "convert_voc": "voc",
    "detection_loader": "coco",
    "load_coco_json": "files",
    "make_search_split": "split",
    "make_synthetic_classification": "synthetic",
    "make_synthetic_detection": "synthetic",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
