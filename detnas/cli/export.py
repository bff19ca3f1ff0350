"""``detnas export``: a found network to TorchScript and ONNX, for use outside detnas."""

from __future__ import annotations

from pathlib import Path

from detnas.cli.common import print_json


def register(sub) -> None:
    p = sub.add_parser("export", help="export a backbone or detector to TorchScript and ONNX")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a retrained classifier or detector, or a supernet (then give --arch)")
    p.add_argument("--arch", default=None,
                   help="arch.json or registered name: the path to take from a supernet "
                        "(checked against a fixed network's checkpoint)")
    p.add_argument("--part", choices=("backbone", "detector"), default="backbone",
                   help="the backbone (TorchScript + ONNX) or the whole detector (TorchScript)")
    p.add_argument("--format", dest="formats", action="append", choices=("torchscript", "onnx"),
                   help="repeatable; default: both for the backbone, torchscript for the detector")
    p.add_argument("--input-size", type=int, default=224, help="side of the traced input")
    p.add_argument("--no-tracking", dest="tracking", action="store_false",
                   help="do not log to the checkpoint's MLflow run")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from detnas.export import export

    sidecar = export(args.checkpoint, args.out, args.arch, args.part, args.formats,
                     args.input_size, args.tracking)
    print_json({"out": str(args.out), "files": sidecar["files"], "check": sidecar["check"]})
    return 0
