"""Datasets and loaders: the embedded synthetic sets, COCO / VOC / ImageFolder readers, splits."""

from detnas.data.coco import CocoDetection, detection_loader, load_coco_json
from detnas.data.imagefolder import ImageFolderClassification, classification_loader
from detnas.data.split import make_search_split
from detnas.data.synthetic import make_synthetic_classification, make_synthetic_detection
from detnas.data.voc import convert_voc

__all__ = [
    "CocoDetection",
    "ImageFolderClassification",
    "classification_loader",
    "convert_voc",
    "detection_loader",
    "load_coco_json",
    "make_search_split",
    "make_synthetic_classification",
    "make_synthetic_detection",
]
