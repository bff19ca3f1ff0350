"""ImageFolder reader on a tiny fixture in ImageNet's layout, its errors and its loader."""

import shutil
from pathlib import Path

import pytest
import torch

from detnas.data import ImageFolderClassification, classification_loader
from detnas.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD

IMAGENET = Path(__file__).parent / "fixtures" / "imagenet"


def test_reads_imagenet_layout():
    train = ImageFolderClassification(IMAGENET / "train", 24, train=True)
    val = ImageFolderClassification(IMAGENET / "val", 24, train=False, cache=False)
    assert train.classes == ["n01440764", "n01443537", "n01484850"] == val.classes
    assert train.num_classes == 3 and len(train) == 9 and len(val) == 6
    image, label = train[4]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32 and label == 1
    assert torch.equal(val[0][0], val[0][0])  # evaluation transform is deterministic
    # normalisation: undoing it lands in [0, 1]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = val[0][0] * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_loader_batches_and_reproducible_order():
    ds = ImageFolderClassification(IMAGENET / "val", 16, train=False)

    def labels(seed):
        return torch.cat([y for _, y in classification_loader(ds, 4, True, seed)]).tolist()

    assert labels(1) == labels(1) and sorted(labels(1)) == [0, 0, 1, 1, 2, 2]
    images, ys = next(iter(classification_loader(ds, 4, False, 0)))
    assert images.shape == (4, 3, 16, 16) and ys.tolist() == [0, 0, 1, 1]


def test_bad_imagefolder_input(tmp_path):
    with pytest.raises(ValueError, match="nope: dataset folder does not exist"):
        ImageFolderClassification(tmp_path / "nope", 16, train=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: empty split: no class folders"):
        ImageFolderClassification(tmp_path / "empty", 16, train=True)
    root = tmp_path / "val"
    shutil.copytree(IMAGENET / "val", root)
    (root / "n09999999").mkdir()
    (root / "n09999999" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="n09999999: class folder has no images"):
        ImageFolderClassification(root, 16, train=False)
    shutil.rmtree(root / "n09999999")
    bad = next((root / "n01443537").iterdir())
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"{bad.name}: not a readable image"):
        ImageFolderClassification(root, 16, train=False)
