"""Mixed precision of the training loops (`detnas.plan.config.TrainConfig.amp`): bf16 | fp16 | off.

- ``bf16``: autocast to bfloat16, no loss scaling (its range is fp32's). On a GPU without native
  bf16 (compute capability < 8: V100, T4, RTX 20xx) it falls back to fp16, with a warning.
- ``fp16``: autocast to float16 with a `torch.amp.GradScaler`: the loss is scaled before the
  backward pass, the gradients unscaled before the step, a step with inf/NaN gradients skipped
  and the scale lowered (`step` returns False then).
- ``off``: float32.

Mixed precision applies on CUDA only (`for_device`): on the CPU the loops run in float32, so CPU
runs stay bit-reproducible. The scaler's state goes into the resume checkpoint (`state_dict`).
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)

MODES = ("bf16", "fp16", "off")


class Precision:
    """Autocast and (fp16) loss scaling for one training loop on ``device``."""

    def __init__(self, amp: str, device: torch.device | str):
        if amp not in MODES:
            raise ValueError(f"amp: {amp!r} ({' | '.join(MODES)})")
        self.device = torch.device(device)
        if amp == "bf16" and self.device.type == "cuda" and not _native_bf16(self.device):
            name = torch.cuda.get_device_name(self.device)
            log.warning("amp: bf16 is not supported natively on %s; using fp16 autocast with a "
                        "gradient scaler instead (set amp: fp16 to silence this, or off)", name)
            amp = "fp16"
        self.mode = amp
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None

    @classmethod
    def for_device(cls, amp: str, device: torch.device) -> Precision:
        """``amp`` on CUDA; float32 elsewhere (the value is still checked)."""
        if amp not in MODES:
            raise ValueError(f"amp: {amp!r} ({' | '.join(MODES)})")
        return cls(amp if device.type == "cuda" else "off", device)

    def autocast(self):
        """The forward pass's context: autocast to ``dtype``, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to differentiate (scaled for fp16)."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def backward(self, loss: torch.Tensor) -> None:
        self.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step ``optimizer`` on the (unscaled) gradients; False when fp16 skipped the step
        for inf/NaN gradients (the scale is then lowered)."""
        if self.scaler is None:
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def _native_bf16(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 8  # Ampere and later
