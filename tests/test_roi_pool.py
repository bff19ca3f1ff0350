"""The RoI pooler's sparse-product backward against torchvision's own, on the same inputs; the
private torchvision it relies on, pinned."""

import importlib
import sys

import pytest
import torch
import torchvision
import torchvision.ops._utils as tv_utils
import torchvision.ops.poolers as tv_poolers
from torchvision.ops import MultiScaleRoIAlign

from detnas.nets import roi_pool
from detnas.nets.roi_pool import RoIPooler


def _inputs(seed: int, boxes_per_image: int = 40):
    g = torch.Generator().manual_seed(seed)
    sizes = {"0": 24, "1": 12, "2": 6, "3": 3}  # a 96-px image's P2..P5
    x = {k: torch.randn(3, 8, s, s + 1, generator=g, requires_grad=True) for k, s in sizes.items()}
    boxes = []
    for _ in range(3):  # boxes of every level, some past the image's border, some tiny
        xy = torch.rand(boxes_per_image, 2, generator=g) * 110 - 10
        wh = torch.rand(boxes_per_image, 2, generator=g) ** 2 * 300 + 0.2  # levels 0 to 2
        boxes.append(torch.cat([xy, xy + wh], 1))
    return x, boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_output_and_gradient_as_torchvision(seed):
    names, shapes = ["0", "1", "2", "3"], [(96, 100)] * 3
    x, boxes = _inputs(seed)
    ours = RoIPooler(names, 7, 2)(x, boxes, shapes)
    grad = torch.randn(ours.shape, generator=torch.Generator().manual_seed(seed + 10))
    ours.backward(grad)
    ours_grad = {k: v.grad.clone() for k, v in x.items()}
    for v in x.values():
        v.grad = None
    theirs = MultiScaleRoIAlign(names, 7, 2)(x, boxes, shapes)
    theirs.backward(grad)
    assert torch.equal(ours, theirs)  # the forward is torchvision's kernel
    for k, v in x.items():
        assert k == "3" or ours_grad[k].abs().sum() > 0  # P5 takes boxes of 448 px and more
        torch.testing.assert_close(ours_grad[k], v.grad, rtol=1e-4, atol=1e-4)  # other order


def test_empty_level_and_adaptive_sampling():
    """A level no box maps to gets a zero gradient; sampling_ratio 0 (a per-RoI grid) runs
    torchvision's own backward."""
    x, boxes = _inputs(3, boxes_per_image=2)
    boxes = [b[:, :2].repeat(1, 2) + torch.tensor([0, 0, 4.0, 4.0]) for b in boxes]  # all small
    out = RoIPooler(["0", "1", "2", "3"], 7, 2)(x, boxes, [(96, 100)] * 3)
    out.sum().backward()
    assert x["3"].grad is None or x["3"].grad.abs().sum() == 0
    adaptive = RoIPooler(["0", "1", "2", "3"], 7, 0)(x, boxes, [(96, 100)] * 3)
    assert torch.equal(adaptive, MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0)(
        x, boxes, [(96, 100)] * 3))


# --- the private torchvision it relies on ---------------------------------------------------------

BOXES = [torch.tensor([[0.0, 0, 8, 8], [1, 2, 40, 50]]), torch.tensor([[4.0, 4, 300, 300]])]
FEATURES = [torch.zeros(1, 1, 24, 25), torch.zeros(1, 1, 12, 13), torch.zeros(1, 1, 6, 7)]


def _behaviour_changes(convert, setup_scales) -> list[str]:
    """How ``convert`` and ``setup_scales`` differ from what the pooler reads from
    torchvision's ``convert_boxes_to_roi_format`` and ``_setup_scales``."""
    out = []
    rois = convert(BOXES)
    expected = torch.tensor([[0.0, 0, 0, 8, 8], [0, 1, 2, 40, 50], [1, 4, 4, 300, 300]])
    if not (isinstance(rois, torch.Tensor) and torch.equal(rois, expected)):
        out.append(f"convert_boxes_to_roi_format: not one (image index, x1, y1, x2, y2) row per "
                   f"box: {rois}")
    scales, levels = setup_scales(FEATURES, [(96, 100)], 224, 4)
    if list(scales) != [0.25, 0.125, 0.0625]:
        out.append(f"_setup_scales: scales {scales}, not each map's size over the image's")
    found = levels(BOXES).tolist()
    if found != [0, 0, 2]:  # FPN's level k0 + log2(sqrt(area) / 224), from the first map's
        out.append(f"_setup_scales: its level mapper puts the boxes at {found}, not [0, 0, 2]")
    return out


def test_the_private_torchvision_it_relies_on_is_there_and_does_what_it_reads():
    roi_pool.check_pooler_state()
    problems = _behaviour_changes(roi_pool.convert_boxes_to_roi_format, roi_pool._setup_scales)
    assert not problems, (f"torchvision {torchvision.__version__} changed what "
                          f"detnas/nets/roi_pool.py relies on: {'; '.join(problems)}")


def test_a_changed_behaviour_is_named():
    def no_index(boxes):
        return torch.cat(boxes)

    def other_levels(features, image_shapes, canonical_scale, canonical_level):
        scales, mapper = tv_poolers._setup_scales(features, image_shapes, canonical_scale,
                                                  canonical_level)
        return scales, lambda boxes: mapper(boxes) + 1

    problems = _behaviour_changes(no_index, other_levels)
    assert len(problems) == 2
    assert problems[0].startswith("convert_boxes_to_roi_format: not one (image index")
    assert problems[1] == ("_setup_scales: its level mapper puts the boxes at [1, 1, 3], not "
                           "[0, 0, 2]")


@pytest.mark.parametrize("change", ["gone", "parameters", "attribute"])
def test_on_a_torchvision_that_changed_them_the_module_does_not_import(monkeypatch, change):
    """A torchvision without the private names (or with other parameters, or a pooler without
    an attribute it reads) makes importing detnas.nets.roi_pool fail, saying what and on which
    torchvision."""
    if change == "gone":
        monkeypatch.delattr(tv_poolers, "_setup_scales")
        said = "torchvision.ops.poolers._setup_scales is gone"
    elif change == "parameters":
        monkeypatch.setattr(tv_utils, "convert_boxes_to_roi_format",
                            lambda boxes, spatial_scale: boxes)
        said = ("torchvision.ops._utils.convert_boxes_to_roi_format takes (boxes, spatial_scale), "
                "not (boxes)")
    else:
        init = MultiScaleRoIAlign.__init__

        def renamed(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.level_mapper = self.__dict__.pop("map_levels")

        monkeypatch.setattr(MultiScaleRoIAlign, "__init__", renamed)
        said = "a MultiScaleRoIAlign has no map_levels"
    monkeypatch.delitem(sys.modules, "detnas.nets.roi_pool")
    with pytest.raises(ImportError) as error:
        importlib.import_module("detnas.nets.roi_pool")
    assert str(error.value) == (
        f"detnas.nets.roi_pool: torchvision {torchvision.__version__} changed what the RoI pooler "
        f"relies on: {said} (written against torchvision 0.29: install that, or adapt "
        "detnas/nets/roi_pool.py)")
