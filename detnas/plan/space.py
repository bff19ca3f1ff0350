"""Search spaces, the `Arch` value and its text encoding, sampling and variation, named archs.

Pure Python (no torch): the search and the workflow use this module without building models.

An architecture is one choice index per block. Its only text form is one digit per block with the
stages separated by ``-``, e.g. ``2120-2112-33130031-3132`` in the 300M space.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHOICES = ("shuffle3x3", "shuffle5x5", "shuffle7x7", "xception")
"""The four choice blocks, by index: ShuffleNetV2 blocks with a 3x3, 5x5 or 7x7 depthwise conv,
and the Xception-style block (three 3x3 depthwise convs)."""

KERNEL_SIZES = (3, 5, 7, 3)
"""Depthwise kernel size of each choice (the Xception block uses 3x3 throughout)."""


@dataclass(frozen=True)
class Space:
    """A ShuffleNetV2-style search space: a 3x3/2 first conv, four stages of choice blocks.

    The first block of each stage has stride 2, the others stride 1 (total stride 32).
    """

    name: str
    stage_blocks: tuple[int, ...]  # choice blocks per stage
    first_channels: int  # output channels of the first conv
    stage_channels: tuple[int, ...]  # output channels of each stage
    last_channels: int  # 1x1 "last conv" of the classifier

    @property
    def num_blocks(self) -> int:
        return sum(self.stage_blocks)

    @property
    def num_choices(self) -> int:
        return len(CHOICES)

    def block_layout(self) -> list[tuple[int, int, int, int]]:
        """(stage, in_channels, out_channels, stride) of every block, in block order."""
        layout = []
        in_channels = self.first_channels
        for stage, (blocks, out_channels) in enumerate(
            zip(self.stage_blocks, self.stage_channels, strict=True)
        ):
            for i in range(blocks):
                layout.append((stage, in_channels, out_channels, 2 if i == 0 else 1))
                in_channels = out_channels
        return layout

    def size(self) -> int:
        """Number of candidate architectures."""
        return self.num_choices**self.num_blocks


SPACES: dict[str, Space] = {
    space.name: space
    for space in (
        # The paper's small space, used for the ablations (ShuffleNetV2-20 has ~300M FLOPs).
        Space("300M", (4, 4, 8, 4), 16, (64, 160, 320, 640), 1024),
        # The large space of DetNASNet (ShuffleNetV2-40 has ~1.3G FLOPs).
        Space("1.3G", (8, 8, 16, 8), 48, (96, 240, 480, 960), 1024),
        # The same 40 blocks at DetNASNet (3.8G) widths. Last conv 1728, not 1024: every official
        # definition of the 3.8G net (DetNAS maskrcnn_benchmark/modeling/backbone/detnasnet.py,
        # ShuffleNet-Series DetNAS/network.py) has 1728, and its released ImageNet model with it.
        Space("3.8G", (8, 8, 16, 8), 72, (172, 432, 864, 1728), 1728),
        # The embedded default: 10 blocks (4^10 candidates), trains on 2 CPU cores in minutes.
        Space("tiny", (2, 2, 4, 2), 16, (32, 64, 128, 256), 512),
        # Unit tests: every block kind (stride 1 and 2) at a few channels.
        Space("test", (1, 2, 2, 1), 8, (16, 32, 48, 64), 128),
    )
}


def get_space(name: str) -> Space:
    """The space called ``name``; a ValueError lists the known ones otherwise."""
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError(f"unknown space {name!r}; known spaces: {', '.join(SPACES)}") from None


@dataclass(frozen=True)
class Arch:
    """One path through a space: a choice index per block."""

    space: str
    choices: tuple[int, ...]

    def __post_init__(self):
        space = get_space(self.space)
        if len(self.choices) != space.num_blocks:
            raise ValueError(
                f"an arch of space {self.space} has {space.num_blocks} blocks, "
                f"got {len(self.choices)}"
            )
        bad = [c for c in self.choices if not (isinstance(c, int) and 0 <= c < len(CHOICES))]
        if bad:
            raise ValueError(f"choices must be integers 0..{len(CHOICES) - 1}, got {bad[0]!r}")

    @classmethod
    def parse(cls, text: str, space: str) -> Arch:
        """Parse the text encoding (``2120-2112-33130031-3132``) in ``space``."""
        layout = get_space(space).stage_blocks
        expected = "-".join("d" * n for n in layout)
        stages = text.strip().split("-")
        if [len(s) for s in stages] != list(layout):
            raise ValueError(
                f"arch {text!r} does not fit space {space}: expected {len(layout)} stages of "
                f"{'/'.join(map(str, layout))} digits ({expected})"
            )
        digits = "".join(stages)
        for d in digits:
            if d not in "0123456789"[: len(CHOICES)]:
                raise ValueError(
                    f"arch {text!r}: {d!r} is not a choice (digits 0..{len(CHOICES) - 1})"
                )
        return cls(space, tuple(int(d) for d in digits))

    def __str__(self) -> str:
        out, i = [], 0
        for n in get_space(self.space).stage_blocks:
            out.append("".join(str(c) for c in self.choices[i : i + n]))
            i += n
        return "-".join(out)

    def stages(self) -> list[tuple[int, ...]]:
        """The choices grouped by stage."""
        out, i = [], 0
        for n in get_space(self.space).stage_blocks:
            out.append(self.choices[i : i + n])
            i += n
        return out


# --- sampling and variation (all take a seeded random.Random) -------------------------------------

Cost = Callable[[Arch], float]


def sample(space: str, rng: random.Random) -> Arch:
    """A uniformly random architecture."""
    n = get_space(space).num_blocks
    return Arch(space, tuple(rng.randrange(len(CHOICES)) for _ in range(n)))


def sample_within(
    space: str,
    rng: random.Random,
    cost: Cost,
    high: float,
    low: float = 0.0,
    tries: int = 10_000,
) -> Arch:
    """A uniformly random architecture with ``low <= cost(arch) <= high`` (rejection sampling).

    Raises:
        ValueError: no architecture was found in ``tries`` draws (the range is likely infeasible).
    """
    return sample_where(space, rng, lambda arch: low <= cost(arch) <= high,
                        f"cost in [{low:.4g}, {high:.4g}]", tries)


def sample_where(space: str, rng: random.Random, accept: Callable[[Arch], bool],
                 what: str, tries: int = 10_000) -> Arch:
    """A uniformly random architecture that ``accept`` accepts (rejection sampling).

    Raises:
        ValueError: none found in ``tries`` draws; ``what`` says what was asked for.
    """
    for _ in range(tries):
        arch = sample(space, rng)
        if accept(arch):
            return arch
    raise ValueError(
        f"no architecture of space {space} with {what} after {tries} random draws; the range is "
        "infeasible or too narrow"
    )


def sample_binned(
    space: str,
    rng: random.Random,
    cost: Cost,
    bins: Sequence[tuple[float, float]],
    tries: int = 10_000,
) -> Arch:
    """DetNAS/SPOS supernet sampling: draw one cost bin uniformly, then rejection-sample into it."""
    low, high = bins[rng.randrange(len(bins))]
    return sample_within(space, rng, cost, high=high, low=low, tries=tries)


def mutate(arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
    """Re-draw each block's choice with probability ``prob`` (the official EA's mutation)."""
    choices = tuple(
        rng.randrange(len(CHOICES)) if rng.random() < prob else c for c in arch.choices
    )
    return Arch(arch.space, choices)


def crossover(a: Arch, b: Arch, rng: random.Random) -> Arch:
    """Take each block from ``a`` or ``b`` with equal chance."""
    if a.space != b.space:
        raise ValueError(f"cannot cross archs of spaces {a.space} and {b.space}")
    pairs = zip(a.choices, b.choices, strict=True)
    return Arch(a.space, tuple(x if rng.random() < 0.5 else y for x, y in pairs))


# --- the registry of named architectures ----------------------------------------------------------


@dataclass(frozen=True)
class NamedArch:
    name: str
    space: str
    encoding: str
    source: str  # where the encoding comes from

    @property
    def arch(self) -> Arch:
        return Arch.parse(self.encoding, self.space)


_DETNASNET = "00312102-03123320-2113202221310333-13333333"
_PAPER = "DetNAS (Chen et al., 2019), released models"

REGISTRY: dict[str, NamedArch] = {
    a.name: a
    for a in (
        NamedArch("DetNAS-COCO-FPN-300M", "300M", "2120-2112-33130031-3132", _PAPER),
        NamedArch("DetNAS-COCO-RetinaNet-300M", "300M", "2311-3213-31113320-3333", _PAPER),
        NamedArch("DetNAS-VOC-FPN-300M", "300M", "2103-1303-20113333-3331", _PAPER),
        NamedArch("DetNAS-VOC-RetinaNet-300M", "300M", "1300-2333-23333220-2311", _PAPER),
        NamedArch("DetNASNet", "1.3G", _DETNASNET, _PAPER),
        NamedArch("DetNASNet-3.8G", "3.8G", _DETNASNET, _PAPER),
        NamedArch(
            "SPOS-ImageNet-300M", "300M", "2101-2020-20230000-3233", "SPOS ImageNet search"
        ),
        NamedArch("ShuffleNetV2-20", "300M", "0000-0000-00000000-0000", "hand-crafted"),
        NamedArch(
            "ShuffleNetV2-40", "1.3G", "00000000-00000000-0000000000000000-00000000",
            "hand-crafted",
        ),
        NamedArch(
            "ShuffleNetV2-40-3.8G", "3.8G", "00000000-00000000-0000000000000000-00000000",
            "hand-crafted",
        ),
        NamedArch("ShuffleNetV2-tiny", "tiny", "00-00-0000-00", "hand-crafted"),
    )
}


def resolve(name_or_encoding: str, space: str | None = None) -> Arch:
    """An `Arch` from a registered name or from an encoding in ``space``.

    Raises:
        ValueError: neither a registered name nor a valid encoding of ``space``.
    """
    if name_or_encoding in REGISTRY:
        named = REGISTRY[name_or_encoding]
        if space is not None and space != named.space:
            raise ValueError(
                f"{name_or_encoding} is an arch of space {named.space}, not of space {space}"
            )
        return named.arch
    if space is None:
        raise ValueError(
            f"{name_or_encoding!r} is not a registered arch name (see `detnas arch list`); "
            "give --space to read it as an encoding"
        )
    return Arch.parse(name_or_encoding, space)
