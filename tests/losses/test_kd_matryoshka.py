"""Distillation (kl_div, m3_kd), Matryoshka and false-negative masking against plain-Python
hand computations, and the objective that the training loop calls."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from boom_ray.config import TrainConfig
from boom_ray.losses.distillation import distillation_loss, teacher_targets
from boom_ray.losses.info_nce import info_nce_loss
from boom_ray.losses.matryoshka import matryoshka_loss, truncate
from boom_ray.losses.objective import training_loss


def _unit(*xs):
    n = math.sqrt(sum(x * x for x in xs))
    return [x / n for x in xs]


Q = [_unit(1, 0.2, 0, 0.3), _unit(0.1, 1, 0.3, -0.2)]
P = [_unit(0.9, 0.1, 0.1, 0.0), _unit(0.5, 0.5, 0, 0.2),     # row 0: pos, neg
     _unit(0, 1, 0.2, 0.1), _unit(1, 0.1, 0.4, -0.3)]        # row 1: pos, neg
TEACHER = [[2.0, 0.5], [1.0, 1.5]]
G, T = 2, 0.5


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _logits(q, p, t):
    return [[_dot(qi, pj) / t for pj in p] for qi in q]


def _hand_info_nce(q, p, t, skip=()):
    """skip: (row, column) candidates left out."""
    s = _logits(q, p, t)
    return sum(_lse([v for j, v in enumerate(s[i]) if (i, j) not in skip]) - s[i][i * G]
               for i in range(len(q))) / len(q)


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("kd_t", [1.0, 2.0])
def test_kl_div_is_info_nce_plus_teacher_cross_entropy_on_the_group(kd_t):
    s = _logits(Q, P, T)
    kd = 0.0
    for i, scores in enumerate(TEACHER):
        targets = _softmax([x / kd_t for x in scores])
        local = s[i][i * G:(i + 1) * G]
        kd -= sum(tj * (lj - _lse(local)) for tj, lj in zip(targets, local))
    expected = _hand_info_nce(Q, P, T) + kd / len(Q)
    got = distillation_loss("kl_div", _t(Q), _t(P), _t(TEACHER), T, kd_t)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_m3_kd_weights_each_group_passage_with_earlier_ones_removed():
    s = _logits(Q, P, T)
    expected = 0.0
    for k in range(G):
        terms = []
        for i in range(len(Q)):
            t_ik = _softmax(TEACHER[i])[k]
            cands = [v for j, v in enumerate(s[i]) if not (i * G <= j < i * G + k)]
            terms.append(t_ik * (_lse(cands) - s[i][i * G + k]))
        expected += sum(terms) / len(Q)
    got = distillation_loss("m3_kd", _t(Q), _t(P), _t(TEACHER), T)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # one-hot teacher on the positive: m3_kd is InfoNCE
    onehot = _t([[50.0, -50.0], [50.0, -50.0]])
    assert distillation_loss("m3_kd", _t(Q), _t(P), onehot, T).item() == pytest.approx(
        info_nce_loss(_t(Q), _t(P), T).item(), rel=1e-9)


def test_teacher_targets_and_bad_inputs():
    torch.testing.assert_close(teacher_targets(_t([[0.0, math.log(3)]])), _t([[0.25, 0.75]]))
    torch.testing.assert_close(teacher_targets(_t([[0.0, 2.0]]), 2.0), _t([[1.0, math.e]]) / (1 + math.e))
    with pytest.raises(ValueError, match="unknown kd_loss"):
        distillation_loss("mse", _t(Q), _t(P), _t(TEACHER), T)
    with pytest.raises(ValueError, match="teacher scores of shape"):
        distillation_loss("kl_div", _t(Q), _t(P), _t([[1.0, 2.0, 3.0]]), T)


def test_false_negative_copies_of_a_positive_leave_other_rows_candidates():
    """Row 1's negative is a copy of row 0's positive (same text id): for row 0 it is masked; row
    1's own group is untouched; a copy that is nobody's positive changes nothing."""
    ids = torch.tensor([10, 11, 12, 10])
    expected = _hand_info_nce(Q, P, T, skip={(0, 3)})
    assert info_nce_loss(_t(Q), _t(P), T, passage_ids=ids).item() == pytest.approx(expected, rel=1e-10)
    assert info_nce_loss(_t(Q), _t(P), T, passage_ids=torch.tensor([10, 11, 12, 11])).item() == \
        pytest.approx(_hand_info_nce(Q, P, T), rel=1e-10)
    # two rows with the same positive: each one's positive is masked for the other
    same = torch.tensor([7, 1, 7, 2])
    assert info_nce_loss(_t(Q), _t(P), T, passage_ids=same).item() == pytest.approx(
        _hand_info_nce(Q, P, T, skip={(0, 2), (1, 0)}), rel=1e-10)


def test_matryoshka_sums_weighted_losses_of_truncated_renormalised_embeddings():
    q, p = _t(Q), _t(P)
    expected = 0.0
    for dim, w in [(2, 0.5), (4, 1.0)]:
        qd = [_unit(*row[:dim]) for row in Q]
        pd = [_unit(*row[:dim]) for row in P]
        expected += w * _hand_info_nce(qd, pd, T)
    got = matryoshka_loss(lambda a, b: info_nce_loss(a, b, T), q, p, [2, 4], [0.5, 1.0])
    assert got.item() == pytest.approx(expected, rel=1e-10)
    assert matryoshka_loss(lambda a, b: info_nce_loss(a, b, T), q, p, None).item() == pytest.approx(
        _hand_info_nce(Q, P, T), rel=1e-10)
    with pytest.raises(ValueError, match="cannot truncate"):
        truncate(q, 5)


def test_objective_follows_the_train_config():
    micro = SimpleNamespace(in_batch=torch.tensor([True, True]), passage_ids=torch.tensor([10, 11, 12, 10]),
                            teacher_scores=_t(TEACHER))
    plain = TrainConfig(temperature=T)
    assert training_loss(_t(Q), _t(P), micro, plain).item() == pytest.approx(
        _hand_info_nce(Q, P, T, skip={(0, 3)}), rel=1e-10)
    off = TrainConfig(temperature=T, mask_false_negatives=False)
    assert training_loss(_t(Q), _t(P), micro, off).item() == pytest.approx(_hand_info_nce(Q, P, T), rel=1e-10)
    kd = TrainConfig(temperature=T, kd_loss="m3_kd", matryoshka_dims=[2, 4], mask_false_negatives=False)
    expected = sum(distillation_loss("m3_kd", truncate(_t(Q), d), truncate(_t(P), d), _t(TEACHER), T).item()
                   for d in (2, 4))
    assert training_loss(_t(Q), _t(P), micro, kd).item() == pytest.approx(expected, rel=1e-10)
    from boom_ray.errors import BoomError

    with pytest.raises(BoomError, match="no teacher scores"):
        training_loss(_t(Q), _t(P), SimpleNamespace(in_batch=None, teacher_scores=None), kd)
