"""Cost of a NATS search step against a plain training step of the same detector.

The mixed op runs one convolution per candidate dilation, so the searched 3x3 convs cost K times
theirs; the rest of the detector is unchanged. A search step is two passes (a weight step and an
architecture step). Prints, side by side in one run: step times, their ratio, the backbone's share
and its own slowdown (near K for the searched convs, less for the whole backbone), and FLOPs.

    python benchmarks/bench_nats.py --depth 50 --width 64 --size 512 --batch 2 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from detnas.nats import search as nats_search
from detnas.nats.ops import DilationMixConv, arch_parameters, make_searchable
from detnas.nets.detection import build_detector, detection_loss, detector_backbone
from detnas.nets.resnet import ResNetBackbone, bottlenecks
from detnas.plan.config import DetectorConfig, NatsConfig, TrainConfig, load
from detnas.run.engine import Dist, backward, make_optimizer, resolve_device


def _batch(n: int, size: int, num_classes: int, device):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(n)]
    targets = []
    for _ in range(n):
        xy = torch.rand(4, 2, generator=g) * size * 0.5
        boxes = torch.cat([xy, xy + size * 0.1 + torch.rand(4, 2, generator=g) * size * 0.4], 1)
        labels = torch.randint(1, num_classes + 1, (4,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def _time(fns: dict, device, steps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each ``fns[name]()``, runs interleaved so that load drifts hit all."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def _flops(net, x) -> int:
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="detector input size")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--detector", default="fpn", choices=("fpn", "retinanet"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = load(None, ["device=cpu", "tracking.enabled=false"])
    cfg.nats = NatsConfig(depth=args.depth, width=args.width, groups=args.groups,
                          search=TrainConfig(lr=0.01, batch_size=args.batch))
    det_cfg = DetectorConfig(min_size=args.size, max_size=args.size,
                             fpn_channels=max(64, 4 * args.width))
    k = len(cfg.nats.candidates)
    torch.manual_seed(0)
    plain = build_detector(ResNetBackbone(args.depth, args.width), args.detector, 4, det_cfg)
    searched = nats_search.build_search_model(cfg.nats, args.detector, 4, det_cfg)
    searched.load_state_dict(plain.state_dict(), strict=False)  # same weights; alphas stay 0
    plain.to(device).train()
    searched.to(device).train()
    batch = _batch(args.batch, args.size, 4, device)
    sgd = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    alphas = arch_parameters(searched)
    s_sgd = make_optimizer(searched, cfg.nats.search, exclude=alphas)
    adam = nats_search.make_arch_optimizer(alphas, cfg.nats)

    def plain_step():
        loss = sum(plain(*batch).values())
        loss.backward()
        sgd.step()
        sgd.zero_grad(set_to_none=True)

    def weight_step():  # as `detnas.run.engine.train` takes it
        backward(searched, detection_loss, batch, Dist(device=device), False)
        s_sgd.step()

    def arch_step():
        backward(searched, detection_loss, batch, Dist(device=device), False)
        adam.step()

    # the backbone alone, at the detector's input size: forward + backward
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    bb_plain, bb_search = detector_backbone(plain), detector_backbone(searched)

    def fwd_bwd(net):
        return lambda: sum(o.mean() for o in net(x).values()).backward()

    # the searched 3x3 convs alone, on the inputs they see in the backbone: forward + backward
    convs = [b.conv2 for b in bottlenecks(bb_plain).values()]
    inputs = []
    hooks = [c.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach())) for c in convs]
    bb_plain(x)
    for h in hooks:
        h.remove()
    mixed = [DilationMixConv(c, cfg.nats.candidates, args.groups) for c in convs]

    def convs_fwd_bwd(layers):
        def run():
            for layer, inp in zip(layers, inputs, strict=True):
                layer(inp.requires_grad_()).mean().backward()
        return run

    t = _time({"plain": plain_step, "weight": weight_step, "arch": arch_step,
               "bb_plain": fwd_bwd(bb_plain), "bb_search": fwd_bwd(bb_search),
               "conv_plain": convs_fwd_bwd(convs),
               "conv_mixed": convs_fwd_bwd(mixed)}, device, args.steps)
    t_plain, t_weight, t_arch, t_bb_plain, t_bb_search, t_conv_plain, t_conv_mixed = t.values()
    t_search = t_weight + t_arch
    f_plain, f_search = _flops(bb_plain, x), _flops(bb_search, x)
    conv2 = ResNetBackbone(args.depth, args.width).to(device)
    ref = ResNetBackbone(args.depth, args.width).to(device)
    make_searchable(conv2, cfg.nats.candidates, args.groups)
    f_conv2 = (_flops(conv2, x) - _flops(ref, x)) / (k - 1)  # FLOPs of the searched convs once

    share = t_bb_plain / t_plain
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}"
          f", {torch.get_num_threads()} threads), ResNet-{args.depth} width {args.width}, "
          f"{args.detector}, batch {args.batch} x {args.size}px, K={k} candidates, "
          f"{args.groups} groups")
    print(f"plain train step        {t_plain * 1e3:9.1f} ms")
    print(f"search step (w + alpha) {t_search * 1e3:9.1f} ms   ratio {t_search / t_plain:.2f}x "
          f"(weight step {t_weight / t_plain:.2f}x, alpha step {t_arch / t_plain:.2f}x; "
          f"the alpha step computes no weight gradients)")
    print(f"backbone fwd+bwd plain  {t_bb_plain * 1e3:9.1f} ms   share of plain step "
          f"{share:.0%}")
    print(f"backbone fwd+bwd mixed  {t_bb_search * 1e3:9.1f} ms   ratio "
          f"{t_bb_search / t_bb_plain:.2f}x")
    print(f"searched 3x3 convs      {t_conv_plain * 1e3:9.1f} ms plain, "
          f"{t_conv_mixed * 1e3:.1f} ms mixed: ratio {t_conv_mixed / t_conv_plain:.2f}x (K={k})")
    print(f"backbone FLOPs          plain {f_plain / 1e9:.3f} G, mixed {f_search / 1e9:.3f} G, "
          f"ratio {f_search / f_plain:.2f}x; searched 3x3 convs {f_conv2 / f_plain:.0%} of "
          f"the backbone, cost x{(f_search - f_plain) / f_conv2 + 1:.2f} (= K)")
    print(f"predicted per-pass ratio from the backbone share: "
          f"{1 + share * (t_bb_search / t_bb_plain - 1):.2f}x")


if __name__ == "__main__":
    main()
