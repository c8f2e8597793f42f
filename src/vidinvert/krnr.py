"""K-order recursive noise representation (K-RNR): an edit's start latent built from the clean latent and the noise.

Source: H. Yesiltepe and P. Yanardag, "Dynamic View Synthesis as an Inverse Problem", NeurIPS 2025
(arXiv:2506.08004), and the authors' code (github.com/yesiltepe-hidir/inverse-dvs,
``schedulers/scheduling_ddim_cogvideox.py``: ``k_rnr`` and ``adaptive_k_rnr``; used in ``reconstruct.py``). Facts
taken from there:

- On a zero-terminal-SNR schedule (CogVideoX's) the fully inverted latent carries no usable signal at the noisiest
  step, so the edit starts a little later (the authors' reconstruction uses strength 0.95) from a latent built
  from the VAE latent ``x0`` and the inverted terminal latent ``eps``.
- With ``a = sqrt(alpha_bar_t)`` and ``b = sqrt(1 - alpha_bar_t)`` at the edit's first timestep, the order-K
  representation is the recursion ``n_0 = eps``, ``n_k = a x0 + b n_(k-1)``, in closed form
  ``n_K = a (1 + b + ... + b^(K-1)) x0 + b^K eps``. Order 0 returns ``eps``; order 1 is the usual forward noising
  ``a x0 + b eps`` with the inverted latent as the noise.
- The adaptive variant computes order K and then moves it, element by element, to the mean and standard deviation
  that order 2 would have, taking the VAE posterior's mean and standard deviation as the moments of ``x0``.

Worked out here (and tested): since ``x0 = mean + std * z`` for the posterior sample, that moment matching returns
``c2 x0 + b^2 eps`` for every K >= 1, i.e. exactly the order-2 representation of the same ``x0`` (up to the
authors' 1e-9 guard in the division); for K = 0 it returns order 2 of the posterior mean. With the posterior mean as
``x0`` (vidinvert's deterministic encode) every K gives order 2.
"""

from __future__ import annotations

import math

import torch

from .errors import VidinvertError

GUARD = 1e-9  # the authors' guard against a zero standard deviation


def krnr_coefficients(alpha_bar: float, order: int) -> tuple[float, float]:
    """``(c_x0, c_noise)`` of the order-``order`` representation at noise level ``alpha_bar``."""
    if order < 0:
        raise ValueError(f"K-RNR order must be >= 0, got {order}")
    if not 0.0 <= alpha_bar <= 1.0:
        raise ValueError(f"alpha_bar must be in [0, 1], got {alpha_bar}")
    a, b = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    return a * sum(b**i for i in range(order)), b**order


def krnr(clean: torch.Tensor, noise: torch.Tensor, alpha_bar: float, order: int) -> torch.Tensor:
    """Order-``order`` recursive noise representation ``c_x0 * clean + c_noise * noise`` (float32 in, same out)."""
    c_clean, c_noise = krnr_coefficients(alpha_bar, order)
    return c_clean * clean + c_noise * noise


def krnr_adaptive(
    clean: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: float,
    order: int,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """The authors' adaptive K-RNR: order ``order``, moved to the per-element mean and std of order 2.

    Args:
        clean: VAE latent ``x0`` (a posterior sample or its mean).
        noise: the inverted terminal latent.
        alpha_bar: noise level of the edit's first step.
        order: K.
        mean, std: the VAE posterior's mean and standard deviation (scaled like ``clean``); default: ``clean`` and
            zero, i.e. ``clean`` is the posterior mean.
    """
    mean = clean if mean is None else mean
    std = torch.zeros_like(clean) if std is None else std
    c_clean, c_noise = krnr_coefficients(alpha_bar, order)
    t_clean, t_noise = krnr_coefficients(alpha_bar, 2)
    current = c_clean * clean + c_noise * noise
    current_mean, current_std = c_clean * mean + c_noise * noise, c_clean * std
    target_mean, target_std = t_clean * mean + t_noise * noise, t_clean * std
    return (current - current_mean) / (current_std + GUARD) * target_std + target_mean


def refuse_on_flow(is_flow: bool) -> None:
    """A one-line error for K-RNR on a flow-matching schedule (Wan): its coefficients are DDIM's alpha-bar levels."""
    if is_flow:
        raise VidinvertError(
            "K-RNR is built on DDIM's alpha-bar levels and does not apply to flow-matching models such as Wan",
            "drop --krnr (a flow edit can start from the inverted latent at any --edit-fraction)",
        )


__all__ = ["krnr", "krnr_adaptive", "krnr_coefficients", "refuse_on_flow"]
