"""GAN losses: non-saturating logistic loss, lazy R1, the auxiliary class loss and mode seeking."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_adversarial(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_adversarial(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient norm of D's logit at the real images (`real_images` must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


def mode_seeking(images: torch.Tensor, z: torch.Tensor, tau: float) -> torch.Tensor:
    """Reward image distance per unit z distance between the two halves of a paired batch.

    The batch is [first halves; second halves] with the same class per pair (Mao et al. 2019,
    capped at `tau` as in DSGAN so it cannot push samples off the data manifold). Returns a loss
    to minimise (the negative capped ratio, averaged over pairs).
    """
    a, b = images.chunk(2)
    za, zb = z.chunk(2)
    ratio = (a - b).abs().mean(dim=(1, 2, 3)) / (za - zb).abs().mean(dim=1)
    return -ratio.clamp(max=tau).mean()
