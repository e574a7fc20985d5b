"""Mitigations of instability (Datta et al. 2023): losses and soft labels by hand, a distilled
student, the ensemble, costs, errors and determinism."""
import math

import pytest
import torch

from saliency_sanity.data.images import synthetic
import pandas as pd

from saliency_sanity.training.losses import distillation_targets, prediction_entropy, soft_cross_entropy
from saliency_sanity.training.mitigation import (METHOD_OPTIONS, MITIGATIONS, EnsembleModel, compare_to_ensemble,
                                        ensemble_predictions, share_of_ensemble_reduction, train_mitigated)
from saliency_sanity.metrics.stability import temporal_label_entropy
from saliency_sanity.training.train import TrainConfig, train_model, training_loss

BASE = TrainConfig(arch="vgg", seed=0, epochs=2, batch_size=32)
TRAIN, TEST = synthetic(96, seed=0), synthetic(40, seed=1)


def test_entropy_and_soft_cross_entropy_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert prediction_entropy(logits).item() == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    q = torch.tensor([[0.0, 1.0, 0.0]])
    assert soft_cross_entropy(logits, q).item() == pytest.approx(-math.log(0.25))


def test_training_loss_with_confidence_penalty_and_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    config = TrainConfig(confidence_penalty=0.3)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    expected = ce - 0.3 * prediction_entropy(logits).mean()
    torch.testing.assert_close(training_loss(logits, labels, config), expected)
    smooth = TrainConfig(label_smoothing=0.1)
    p = logits.log_softmax(-1)
    by_hand = -(0.9 * p.gather(1, labels[:, None]).squeeze(1) + 0.1 * p.mean(1)).mean()
    torch.testing.assert_close(training_loss(logits, labels, smooth), by_hand)


def test_distillation_targets_average_tempered_probabilities():
    z = torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]], [[4.0, 0.0]]])  # 3 epochs, 1 sample, 2 classes
    targets, mask = distillation_targets(z, temperature=2.0)
    expected = torch.stack([(z[e] / 2).softmax(-1) for e in range(3)]).mean(0)
    torch.testing.assert_close(targets, expected)
    assert mask.tolist() == [True]
    late, _ = distillation_targets(z, temperature=2.0, from_epoch=3)
    torch.testing.assert_close(late, (z[2] / 2).softmax(-1))
    # the teacher's prediction switched (0, 1, 0): temporal entropy > 0.5, so it is distilled
    _, unstable = distillation_targets(z, only_unstable=0.5)
    _, none = distillation_targets(z, only_unstable=0.7)  # its entropy is 0.64
    assert unstable.tolist() == [True] and none.tolist() == [False]
    with pytest.raises(ValueError, match="temperature"):
        distillation_targets(z, temperature=0)


def test_distilled_student_trains_on_the_teachers_soft_labels(tmp_path):
    teacher = TrainConfig(arch="vgg", seed=7, epochs=2, batch_size=32, record_train_logits=True)
    student = TrainConfig(arch="vgg", seed=1, epochs=1, batch_size=32, distill_teacher=teacher, distill_weight=1.0)
    run = train_model(student, TRAIN, TEST, device="cpu", progress=False, root=tmp_path)
    assert run.history.train_loss.notna().all() and len(run.history) == 1
    trained_teacher = train_model(teacher, TRAIN, TEST, device="cpu", progress=False, root=tmp_path)  # from the cache
    assert trained_teacher.train_logits(2).shape == (len(TRAIN.images), 10)
    with pytest.raises(ValueError, match="only apply to a distilled student"):
        TrainConfig(distill_temperature=3.0)
    with pytest.raises(ValueError, match="distill_weight"):
        TrainConfig(distill_teacher=teacher, distill_weight=1.5)


def test_ensemble_model_outputs_log_mean_probabilities():
    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(5, 4)
    mean_p = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
    torch.testing.assert_close(EnsembleModel(members)(x).softmax(-1), mean_p)
    torch.testing.assert_close(ensemble_predictions([m(x).detach() for m in members]), mean_p.double().detach())
    with pytest.raises(ValueError, match="at least one"):
        EnsembleModel([])


def test_train_mitigated_costs_and_determinism(tmp_path):
    first = train_mitigated("ensemble", BASE, TRAIN, TEST, seeds=[0, 1], device="cpu", progress=False, root=tmp_path,
                            ensemble_size=2)
    assert first.test_probabilities().shape == (2, len(TEST.images), 10)
    assert list(first.costs.columns) == ["method", "seed", "train_seconds", "teacher_seconds", "seconds",
                                         "train_epochs", "teacher_epochs", "epochs"]
    assert (first.costs.train_seconds > 0).all() and len(first.runs[0].members) == 2
    assert first.costs.epochs.tolist() == [4, 4]  # 2 members x 2 epochs, no teacher
    assert first.distilled is None and math.isnan(first.distilled_share)
    again = train_mitigated("ensemble", BASE, TRAIN, TEST, seeds=[0, 1], device="cpu", progress=False,
                            root=tmp_path / "other", ensemble_size=2)
    assert torch.equal(first.test_probabilities(), again.test_probabilities())
    with pytest.raises(ValueError, match="unknown mitigation"):
        train_mitigated("dropout", BASE, TRAIN, TEST, seeds=[0])
    with pytest.raises(ValueError, match="takes no option"):
        train_mitigated("label_smoothing", BASE, TRAIN, TEST, seeds=[0], temperature=2)


def test_localized_distillation_distils_only_the_teachers_unstable_images(tmp_path):
    assert "localized_distillation" in MITIGATIONS
    assert METHOD_OPTIONS["localized_distillation"]["distill_only_unstable"] == 0.0
    local = train_mitigated("localized_distillation", BASE, TRAIN, TEST, seeds=[0, 1], device="cpu", progress=False,
                            root=tmp_path)
    teacher = local.teacher
    assert teacher is not None and teacher.config.record_train_logits
    # the flag: the teacher's prediction switched at least once over its epochs (within-run entropy > 0)
    flagged = temporal_label_entropy(teacher.epoch_logits("train").argmax(-1)) > 0
    assert torch.equal(local.distilled, flagged) and local.distilled.shape == (len(TRAIN.images),)
    assert local.distilled_share == pytest.approx(flagged.double().mean().item())
    assert all(r.members[0].config.distill_only_unstable == 0.0 for r in local.runs)
    # cost: the teacher's epochs count on every predictor
    assert local.costs.train_epochs.tolist() == [2, 2] and local.costs.teacher_epochs.tolist() == [2, 2]
    assert local.costs.epochs.tolist() == [4, 4]
    assert (local.costs.seconds == local.costs.train_seconds + teacher.seconds).all()
    # the global distillation shares the (cached) teacher and distils every image
    everything = train_mitigated("distillation", BASE, TRAIN, TEST, seeds=[0], device="cpu", progress=False,
                                 root=tmp_path)
    assert everything.teacher.directory == teacher.directory and everything.teacher.resumed_from_epoch == 2
    assert everything.distilled.all() and everything.distilled_share == 1.0
    with pytest.raises(ValueError, match="takes no option"):
        train_mitigated("localized_distillation", BASE, TRAIN, TEST, seeds=[0], label_smoothing=0.1)


def test_share_of_ensemble_reduction_by_hand():
    # no mitigation: 20 % unstable, the ensemble: 10 %; a mitigation at 11 % reaches 90 % of its reduction
    assert share_of_ensemble_reduction(0.20, 0.11, 0.10) == pytest.approx(0.9)
    assert share_of_ensemble_reduction(0.20, 0.20, 0.10) == 0.0
    assert share_of_ensemble_reduction(0.20, 0.10, 0.10) == 1.0
    assert share_of_ensemble_reduction(0.20, 0.25, 0.10) == pytest.approx(-0.5)  # worse than none
    assert share_of_ensemble_reduction(0.20, 0.05, 0.10) == pytest.approx(1.5)  # better than the ensemble
    assert share_of_ensemble_reduction(40, 30, 0) == 0.25  # counts work too
    assert math.isnan(share_of_ensemble_reduction(0.10, 0.05, 0.10))  # the ensemble reduced nothing
    assert math.isnan(share_of_ensemble_reduction(0.10, 0.05, 0.12))
    with pytest.raises(ValueError, match="finite"):
        share_of_ensemble_reduction(0.2, float("nan"), 0.1)


def test_compare_to_ensemble_by_hand():
    frame = pd.DataFrame({"mitigation": ["none", "label_smoothing", "localized_distillation", "ensemble"],
                          "unstable": [0.20, 0.15, 0.11, 0.10], "seconds": [10.0, 12.0, 20.0, 30.0],
                          "epochs": [5, 5, 10, 15]})
    out = compare_to_ensemble(frame, costs=("seconds", "epochs"))
    assert out.share_of_ensemble_reduction.tolist() == pytest.approx([0.0, 0.5, 0.9, 1.0])
    assert out.seconds_vs_ensemble.tolist() == pytest.approx([1 / 3, 0.4, 2 / 3, 1.0])
    assert out.epochs_vs_ensemble.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1.0])
    assert list(frame.columns) == ["mitigation", "unstable", "seconds", "epochs"]  # the input is left alone
    with pytest.raises(ValueError, match="exactly one row"):
        compare_to_ensemble(frame[frame.mitigation != "ensemble"])
    with pytest.raises(ValueError, match="lacks column"):
        compare_to_ensemble(frame, costs=("minutes",))
