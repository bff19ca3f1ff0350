"""The RoI pooler's sparse-product backward against torchvision's own, on the same inputs."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

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
