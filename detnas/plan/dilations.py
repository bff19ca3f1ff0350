"""What a dilated ResNet is, without torch: depths, dilation encodings and NATS candidates.

The config check (`detnas.plan.config`), the report and the backbone specs read these; the torch
modules (`detnas.nets.resnet`, `detnas.nats.ops`) build networks from them.
"""

from __future__ import annotations

DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

Dilation = tuple[int, int]


def parse_dilations(text: str) -> tuple[Dilation, ...]:
    """``"1,2x1,3"`` -> ``((1, 1), (2, 1), (3, 3))``: one dilation per channel group.

    Raises:
        ValueError: not a comma-separated list of positive ``D`` or ``HxW`` integers.
    """
    out = []
    for token in str(text).split(","):
        parts = token.strip().split("x")
        if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"dilation encoding {text!r}: bad token {token!r} (D or HxW, D >= 1)")
        out.append((int(parts[0]), int(parts[-1])))
    return tuple(out)


def format_dilations(dilations) -> str:
    """The inverse of `parse_dilations`: ``((1, 1), (2, 1))`` -> ``"1,2x1"``."""
    return ",".join(f"{h}" if h == w else f"{h}x{w}" for h, w in dilations)


def check_candidates(candidates, where: str) -> tuple[Dilation, ...]:
    """Candidate dilations as ``((h, w), ...)``.

    Raises:
        ValueError: empty, duplicated, or not lists of one or two integers >= 1.
    """
    ok = isinstance(candidates, list | tuple) and len(candidates) > 0 and all(
        isinstance(c, list | tuple) and len(c) in (1, 2)
        and all(isinstance(v, int) and v >= 1 for v in c) for c in candidates)
    if not ok:
        raise ValueError(f"{where}: candidates {candidates!r} must be a non-empty list of [H, W] "
                         f"dilations >= 1")
    out = tuple((c[0], c[-1]) for c in candidates)
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: duplicate candidate dilations in {candidates!r}")
    return out
