"""Training losses of DRN: the primal (progressive) loss, the dual loss and the gradient-sensitive loss.

All losses work on images in the 0..255 range (as the official code does), so their values are
mean absolute errors in grey levels.

Notation (paper Eq. 1): for a batch of HR crops ``y`` and ``P = log2(scale)``, the pyramid is
``x_k = imresize(y, 1 / 2**(P - k))`` for ``k = 0..P`` (``x_P = y``, ``x_0`` the LR input); the
primal network returns ``P_0..P_P`` from ``x_0`` and dual block ``k - 1`` maps scale ``k`` to ``k - 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSS_KINDS = ("l1", "gs")


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error, computed in float32 whatever the inputs' dtype."""
    return F.l1_loss(pred.float(), target.float())


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along width and height, zero at the last column/row.

    Returns ``(dx, dy)``, each the same shape as ``x`` (N x C x H x W).
    """
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def gradient_mask(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The per-image normalised gradient magnitude ``M`` of the target, N x 1 x H x W in 0..1.

    ``G = sqrt(dx**2 + dy**2)`` of the channel mean (the luminance structure, so all colour
    channels share one mask), then ``M = (G - min G) / (max G - min G)`` with min and max taken
    over each image separately. A flat image (``max G == min G``) gets ``M = 0`` everywhere,
    which makes the loss a plain L1 loss. The mask is a constant (no gradient flows into it).
    """
    with torch.no_grad():
        grey = target.float().mean(dim=1, keepdim=True)
        dx, dy = image_gradients(grey)
        mag = torch.sqrt(dx * dx + dy * dy)
        lo = mag.amin(dim=(1, 2, 3), keepdim=True)
        hi = mag.amax(dim=(1, 2, 3), keepdim=True)
        return (mag - lo) / (hi - lo).clamp_min(eps)


class GradientSensitiveLoss(nn.Module):
    """The gradient-sensitive loss of "DRN with gradient-sensitive loss" (Guo et al.).

    Our reading of the method, with ``M`` from :func:`gradient_mask` computed on the *target*::

        loss = L1((1 - M) * SR, (1 - M) * HR) + lambda_g * L1(grad(M * SR), grad(M * HR))

    * Smooth regions (small ``M``) are supervised on pixel values; edges and texture (large ``M``)
      are supervised on their gradients, so the network is not pushed towards the blurry mean
      of plausible edges.
    * ``grad`` is the pair of forward differences of :func:`image_gradients` (horizontal and
      vertical, per colour channel); the second term is the mean of the L1 distances of both.
    * ``min``/``max`` are per image.
    * In training it replaces L1 wherever the primal network is compared with a target (final
      output and, with progressive supervision, the intermediate outputs); the dual loss stays L1,
      since the dual model's targets are bicubic images where edge sharpness is not the goal.
    """

    def __init__(self, lambda_g: float = 2.0) -> None:
        super().__init__()
        self.lambda_g = lambda_g

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr, hr = sr.float(), hr.float()
        mask = gradient_mask(hr)
        inv = 1.0 - mask
        pixel = F.l1_loss(inv * sr, inv * hr)
        sdx, sdy = image_gradients(mask * sr)
        hdx, hdy = image_gradients(mask * hr)
        grad = 0.5 * (F.l1_loss(sdx, hdx) + F.l1_loss(sdy, hdy))
        return pixel + self.lambda_g * grad


def make_criterion(kind: str) -> Criterion:
    """The primal criterion for ``kind`` ("l1" or "gs")."""
    if kind == "l1":
        return l1_loss
    if kind == "gs":
        return GradientSensitiveLoss()
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSS_KINDS}")


def primal_loss(
    outputs: Sequence[torch.Tensor],
    pyramid: Sequence[torch.Tensor],
    criterion: Criterion = l1_loss,
    progressive: bool = True,
) -> torch.Tensor:
    """``criterion(P_P, y)`` plus, if ``progressive``, ``criterion(P_k, x_k)`` for every ``k < P``."""
    if len(outputs) != len(pyramid):
        raise ValueError(f"{len(outputs)} outputs for a pyramid of {len(pyramid)} levels")
    loss = criterion(outputs[-1], pyramid[-1])
    if progressive:
        for out, target in zip(outputs[:-1], pyramid[:-1], strict=True):
            loss = loss + criterion(out, target)
    return loss


def dual_loss(
    dual_blocks: Sequence[nn.Module],
    outputs: Sequence[torch.Tensor],
    pyramid: Sequence[torch.Tensor],
    criterion: Criterion = l1_loss,
) -> torch.Tensor:
    """``sum_{k=1..P} criterion(D_{k-1}(P_k), x_{k-1})``: the closed-loop term of Eq. 1.

    Gradients flow into both the dual blocks and (through ``P_k``) the primal network.
    """
    if len(dual_blocks) != len(outputs) - 1:
        raise ValueError(f"{len(dual_blocks)} dual blocks for {len(outputs)} primal outputs")
    loss = outputs[0].new_zeros((), dtype=torch.float32)
    for k in range(1, len(outputs)):
        loss = loss + criterion(dual_blocks[k - 1](outputs[k]), pyramid[k - 1])
    return loss
