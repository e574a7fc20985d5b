"""Training losses and soft targets of the mitigations (Datta et al. 2023; Pereyra et al. 2017).

Kept apart from :mod:`saliency_sanity.training.mitigation`, which trains with them through
:mod:`saliency_sanity.training.train`: the training loop needs the losses, the mitigations need the loop.
"""
from __future__ import annotations

import torch

from ..metrics.stability import temporal_label_entropy


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy H(p) = -sum_c p_c log p_c of softmax(logits), per sample -> [B].

    Pereyra et al. (2017), Eq. 2: the confidence penalty subtracts beta * H(p(.|x)) from the loss.
    """
    log_p = logits.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft labels, -sum_c q_c log softmax(logits)_c, per sample -> [B]."""
    return -(targets * logits.log_softmax(-1)).sum(-1)


def distillation_targets(epoch_logits: torch.Tensor, temperature: float = 2.0, *, from_epoch: int = 1,
                         only_unstable: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporally averaged, temperature-scaled soft labels and the mask of samples to distil.

    After Datta et al. (2023), a data-centric mitigation that uses the per-sample instability
    estimate: q(x) = mean over the teacher's epochs e >= ``from_epoch`` of softmax(z_e(x) / T), with
    z_e the teacher's training-set logits after epoch e (our choice: the probabilities, not the
    logits, are averaged). ``epoch_logits`` [E, N, K] -> targets
    [N, K] (float32) and mask [N] (bool): True where the temporal label entropy of the teacher's
    predictions over those epochs exceeds ``only_unstable``, everywhere when it is None.
    """
    if not isinstance(epoch_logits, torch.Tensor) or epoch_logits.dim() != 3 or not epoch_logits.is_floating_point():
        raise ValueError("epoch_logits must be a floating tensor [N_epochs, N_samples, N_classes], got "
                         f"{getattr(epoch_logits, 'shape', type(epoch_logits).__name__)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 1 <= from_epoch <= epoch_logits.shape[0]:
        raise ValueError(f"from_epoch must be in [1, {epoch_logits.shape[0]}], got {from_epoch}")
    z = epoch_logits[from_epoch - 1:].float()
    targets = (z / temperature).softmax(-1).mean(0)
    if only_unstable is None:
        return targets, torch.ones(z.shape[1], dtype=torch.bool, device=z.device)
    return targets, temporal_label_entropy(z.argmax(-1)) > only_unstable
