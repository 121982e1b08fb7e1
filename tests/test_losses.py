"""Hand-computed checks of avalanche_sst.functional.losses (eq. 5-9 of Lee & Kim 2023, DML, LwM)."""

import math

import pytest
import torch

from avalanche_sst.functional import baseline_losses as B
from avalanche_sst.functional import losses as L

LN2 = 0.6931471805599453
LN4 = 1.3862943611198906


def val(t):
    """Python float of a 0-dim tensor (detached, so no autograd warning)."""
    return t.detach().item()


def logits_of(*probs):
    """Logits whose softmax is the given distribution(s): log(p)."""
    return torch.log(torch.tensor(probs, dtype=torch.float64))


P_HALF = [0.5, 0.5]
Q_3_1 = [0.75, 0.25]


# --------------------------------------------------------------------------
# divergences
# --------------------------------------------------------------------------
def test_kl_divergence_hand_values():
    p, q = logits_of(P_HALF), logits_of(Q_3_1)
    # KL(p||q) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3) = 0.1438410362
    assert val(L.kl_divergence(p, q)) == pytest.approx(0.1438410362, abs=1e-9)
    # KL(q||p) = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.3040988 - 0.1732868 = 0.1308120359
    assert val(L.kl_divergence(q, p)) == pytest.approx(0.1308120359, abs=1e-9)
    # batch mean: rows (p, q) and (p, p) -> (0.1438410362 + 0) / 2 = 0.0719205181
    pp = logits_of(P_HALF, P_HALF)
    pq = logits_of(Q_3_1, P_HALF)
    assert val(L.kl_divergence(pp, pq)) == pytest.approx(0.0719205181, abs=1e-9)
    assert val(L.kl_divergence(q, q)) == pytest.approx(0.0, abs=1e-12)


def test_kl_divergence_temperature_no_t2():
    p, q = logits_of(P_HALF), logits_of(Q_3_1)
    # T = 2: q_T ∝ sqrt(q) = [sqrt(3)/2, 1/2] -> [sqrt3/(sqrt3+1), 1/(sqrt3+1)] = [0.6339746, 0.3660254]
    # KL(p||q_T) = 0.5 ln(0.25 / (q1 q2)) = 0.5 ln((2+sqrt3)/(2 sqrt3)) = 0.5 ln 1.0773503 = 0.0372522860
    assert val(L.kl_divergence(p, q, temperature=2.0)) == pytest.approx(0.0372522860, abs=1e-9)


def test_distillation_loss_t2_and_teacher_detached():
    teacher = logits_of(P_HALF).requires_grad_(True)
    student = logits_of(Q_3_1).requires_grad_(True)
    # T = 1: KL(p_T || p_S) = 0.1438410362
    assert val(L.distillation_loss(student, teacher)) == pytest.approx(0.1438410362, abs=1e-9)
    # T = 2: 0.0372522860 * 4 = 0.1490091440
    loss = L.distillation_loss(student, teacher, temperature=2.0)
    assert val(loss) == pytest.approx(0.1490091440, abs=1e-9)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and val(student.grad.abs().sum()) > 0


def test_js_divergence_hand_value_symmetry_and_bounds():
    p, q = logits_of(P_HALF), logits_of(Q_3_1)
    # m = [0.625, 0.375]
    # KL(p||m) = 0.5 ln 0.8 + 0.5 ln(4/3) = -0.1115718 + 0.1438410 = 0.0322692605
    # KL(q||m) = 0.75 ln 1.2 + 0.25 ln(2/3) = 0.1367412 - 0.1013663 = 0.0353748906
    # JS = (0.0322692605 + 0.0353748906) / 2 = 0.0338220756
    assert val(L.js_divergence(p, q)) == pytest.approx(0.0338220756, abs=1e-9)
    assert val(L.js_divergence(q, p)) == pytest.approx(0.0338220756, abs=1e-9)
    assert val(L.js_divergence(p, p)) == pytest.approx(0.0, abs=1e-12)
    # disjoint supports -> ln 2
    a = torch.tensor([[100.0, -100.0]], dtype=torch.float64)
    b = torch.tensor([[-100.0, 100.0]], dtype=torch.float64)
    assert val(L.js_divergence(a, b)) == pytest.approx(LN2, abs=1e-9)


def test_divergence_validation_names_arguments():
    with pytest.raises(ValueError, match="logits_p.*logits_q"):
        L.kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="logits_q"):
        L.js_divergence(torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="temperature"):
        L.kl_divergence(torch.zeros(1, 2), torch.zeros(1, 2), temperature=0.0)
    with pytest.raises(ValueError, match="student_logits.*teacher_logits"):
        L.distillation_loss(torch.zeros(1, 2), torch.zeros(2, 2))


# --------------------------------------------------------------------------
# attention transfer
# --------------------------------------------------------------------------
def _student_feat():
    # channel 0 = [[1, 2], [0, -1]], channel 1 = [[3, 0], [0, 1]]
    return torch.tensor([[[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.0], [0.0, 1.0]]]])


def _teacher_feat():
    # one channel of ones -> map [1,1,1,1] / 2 = [0.5, 0.5, 0.5, 0.5]
    return torch.ones(1, 1, 2, 2)


def test_attention_map_hand_value():
    # squares: ch0 [1,4,0,1], ch1 [9,0,0,1] -> channel mean [5,2,0,1]
    # norm sqrt(25+4+0+1) = sqrt(30) -> [5,2,0,1]/5.4772256
    at = L.attention_map(_student_feat())
    assert at.shape == (1, 4)
    assert torch.allclose(at, torch.tensor([[0.9128709, 0.3651484, 0.0, 0.1825742]]), atol=1e-6)
    with pytest.raises(ValueError, match="features"):
        L.attention_map(torch.zeros(2, 3))


def test_attention_transfer_loss_hand_value():
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b = 1 + 1 - 2 * 0.5*(5+2+0+1)/sqrt(30) = 2 - 8/sqrt(30)
    #           = 2 - 1.4605935 = 0.5394065; mean over 4 positions = 0.1348516; * 1000 = 134.85163
    s, t = _student_feat(), _teacher_feat()
    assert val(L.attention_transfer_loss(s, t)) == pytest.approx(134.851628, rel=1e-6)
    assert val(L.attention_transfer_loss(s, t, beta=1.0)) == pytest.approx(0.134851628, rel=1e-6)
    # two blocks, the second identical -> mean(134.85163, 0) = 67.425814
    blocks = L.attention_transfer_loss([s, s], [t, s.clone()])
    assert val(blocks) == pytest.approx(67.425814, rel=1e-6)


def test_attention_transfer_loss_teacher_detached_and_validation():
    s = _student_feat().requires_grad_(True)
    t = _teacher_feat().requires_grad_(True)
    L.attention_transfer_loss([s], [t]).backward()
    assert t.grad is None
    assert s.grad is not None and val(s.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="student_feats has 2 blocks but teacher_feats has 1"):
        L.attention_transfer_loss([s, s], [t])
    with pytest.raises(ValueError, match="spatial"):
        L.attention_transfer_loss(s, torch.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match="at least one block"):
        L.attention_transfer_loss([], [])


# --------------------------------------------------------------------------
# AOD (eq. 5-8)
# --------------------------------------------------------------------------
def test_adaptive_weights():
    w1, w2 = L.adaptive_weights(torch.tensor(1.0), torch.tensor(3.0))
    # 1/(1+3) = 0.25, 3/(1+3) = 0.75
    assert val(w1) == pytest.approx(0.25) and val(w2) == pytest.approx(0.75)
    w1, w2 = L.adaptive_weights(0.0, 0.0)
    assert val(w1) == 0.5 and val(w2) == 0.5
    ce = torch.tensor(2.0, requires_grad=True)
    w1, w2 = L.adaptive_weights(ce * 1.0, torch.tensor(2.0))
    assert not w1.requires_grad and not w2.requires_grad
    assert val(w1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="ce_1"):
        L.adaptive_weights(-1.0, 1.0)
    with pytest.raises(ValueError, match="ce_2"):
        L.adaptive_weights(1.0, float("nan"))
    with pytest.raises(ValueError, match="ce_1"):
        L.adaptive_weights(torch.ones(2), 1.0)


def _aod_inputs():
    # C = 4, batch of 2 identical rows, target 0.
    uniform = logits_of([0.25] * 4, [0.25] * 4)  # student 1, flip view: CE = ln 4
    half = logits_of([0.5, 1 / 6, 1 / 6, 1 / 6], [0.5, 1 / 6, 1 / 6, 1 / 6])  # CE = ln 2
    l1f = uniform.clone().requires_grad_(True)
    l1c = half.clone().requires_grad_(True)  # student 1 colour view
    l2f = half.clone().requires_grad_(True)
    l2c = half.clone().requires_grad_(True)  # student 2 colour view = flip view -> CR 0
    y = torch.tensor([0, 0])
    return l1f, l1c, l2f, l2c, y


# Hand values for _aod_inputs:
# CE1 = ln 4 = 1.3862944, CE2 = ln 2 = 0.6931472
# W1 = 2 ln2 / 3 ln2 = 2/3, W2 = 1/3
# JS(uniform || [1/2,1/6,1/6,1/6]): m = [3/8, 5/24, 5/24, 5/24]
#   KL(u||m) = 0.25 ln(2/3) + 0.75 ln(6/5) = -0.1013663 + 0.1367412 = 0.0353749
#   KL(h||m) = 0.5 ln(4/3) + 0.5 ln(4/5) = 0.1438410 - 0.1115718 = 0.0322693
#   JS = 0.0338220756 (both directions)
# CR1 = KL(u || h) = 0.25 ln(0.25/0.5) + 0.75 ln(0.25/(1/6)) = -0.1732868 + 0.3040988 = 0.1308120
# CR2 = 0
JS_UH = 0.0338220756
CR1 = 0.1308120359


def test_aod_losses_default_totals():
    out = L.aod_losses(*_aod_inputs())
    assert val(out.ce_1) == pytest.approx(LN4, abs=1e-9)
    assert val(out.ce_2) == pytest.approx(LN2, abs=1e-9)
    assert val(out.w_1) == pytest.approx(2 / 3, abs=1e-9)
    assert val(out.w_2) == pytest.approx(1 / 3, abs=1e-9)
    assert val(out.kd_1) == pytest.approx(JS_UH, abs=1e-9)
    assert val(out.kd_2) == pytest.approx(JS_UH, abs=1e-9)
    assert val(out.cr_1) == pytest.approx(CR1, abs=1e-9)
    assert val(out.cr_2) == pytest.approx(0.0, abs=1e-12)
    # L1 = W2 CE1 + W1 KD1 + 0.5 CR1 = 1.3862944/3 + 2/3*0.0338221 + 0.5*0.1308120
    #    = 0.4620981 + 0.0225480 + 0.0654060 = 0.5500522
    assert val(out.total_1) == pytest.approx(0.5500521887, abs=1e-8)
    # L2 = W1 CE2 + W2 KD2 + 0.5*0 = 2/3*0.6931472 + 0.0338221/3 = 0.4620981 + 0.0112740 = 0.4733721
    assert val(out.total_2) == pytest.approx(0.4733721456, abs=1e-8)


def test_aod_losses_ablation_variants():
    # general KD: W = 0.5: L1 = 0.5*1.3862944 + 0.5*0.0338221 = 0.6931472 + 0.0169110 = 0.7100582
    out = L.aod_losses(*_aod_inputs(), adaptive=False, use_cr=False)
    assert val(out.total_1) == pytest.approx(0.7100582184, abs=1e-8)
    # non-adaptive with CR: 0.7100582 + 0.5*0.1308120 = 0.7754642
    out = L.aod_losses(*_aod_inputs(), adaptive=False)
    assert val(out.total_1) == pytest.approx(0.7754642363, abs=1e-8)
    # adaptive KD: 0.4620981 + 0.0225480 = 0.4846462
    out = L.aod_losses(*_aod_inputs(), use_cr=False)
    assert val(out.total_1) == pytest.approx(0.4846461708, abs=1e-8)
    assert val(out.cr_1) == 0.0
    # general training: CE with weight 1
    out = L.aod_losses(*_aod_inputs(), use_kd=False, use_cr=False)
    assert val(out.total_1) == pytest.approx(LN4, abs=1e-9)
    assert val(out.total_2) == pytest.approx(LN2, abs=1e-9)
    assert val(out.kd_1) == 0.0
    # alpha = 1: L2 = 0.4733721 + 1*0 ; L1 = 0.4846462 + 0.1308120 = 0.6154582
    out = L.aod_losses(*_aod_inputs(), alpha=1.0)
    assert val(out.total_1) == pytest.approx(0.6154582067, abs=1e-8)


def test_aod_losses_gradient_isolation():
    l1f, l1c, l2f, l2c, y = _aod_inputs()
    out = L.aod_losses(l1f, l1c, l2f, l2c, y)
    out.total_1.backward()
    # L1 reaches neither of student 2's logits (peer and W detached)
    assert l2f.grad is None and l2c.grad is None
    # CR flows through both views of student 1
    assert val(l1f.grad.abs().sum()) > 0 and val(l1c.grad.abs().sum()) > 0

    l1f, l1c, l2f, l2c, y = _aod_inputs()
    out = L.aod_losses(l1f, l1c, l2f, l2c, y)
    out.kd_1.backward()
    assert l2f.grad is None
    assert val(l1f.grad.abs().sum()) > 0

    l1f, l1c, l2f, l2c, y = _aod_inputs()
    out = L.aod_losses(l1f, l1c, l2f, l2c, y)
    out.total_2.backward()
    assert l1f.grad is None and l1c.grad is None
    assert val(l2f.grad.abs().sum()) > 0


def test_aod_losses_validation():
    l1f, l1c, l2f, l2c, y = _aod_inputs()
    with pytest.raises(ValueError, match="logits_1f.*logits_2c"):
        L.aod_losses(l1f, l1c, l2f, torch.zeros(2, 5), y)
    with pytest.raises(ValueError, match="targets"):
        L.aod_losses(l1f, l1c, l2f, l2c, torch.tensor([0]))
    with pytest.raises(ValueError, match="alpha"):
        L.aod_losses(l1f, l1c, l2f, l2c, y, alpha=-1.0)


# --------------------------------------------------------------------------
# MSL (eq. 9)
# --------------------------------------------------------------------------
def test_msl_loss_value_and_teacher_no_grad():
    student_logits = logits_of(Q_3_1).float().requires_grad_(True)
    teacher_logits = logits_of(P_HALF).float().requires_grad_(True)
    sf = _student_feat().requires_grad_(True)
    tf = _teacher_feat().requires_grad_(True)
    out = L.msl_loss(student_logits, teacher_logits, [sf], [tf])
    # KL(p_T||p_S) = 0.5 ln(4/3) = 0.1438410; AT = 134.8516283; total = 134.9954694
    assert val(out.kd) == pytest.approx(0.1438410362, abs=1e-6)
    assert val(out.at) == pytest.approx(134.8516283, rel=1e-6)
    assert val(out.total) == pytest.approx(134.9954694, rel=1e-6)
    out.total.backward()
    assert teacher_logits.grad is None and tf.grad is None
    assert val(student_logits.grad.abs().sum()) > 0 and val(sf.grad.abs().sum()) > 0


# --------------------------------------------------------------------------
# DML and LwM
# --------------------------------------------------------------------------
def test_dml_loss_value_and_peer_detached():
    me = logits_of([0.25] * 4).requires_grad_(True)
    peer = logits_of([0.5, 1 / 6, 1 / 6, 1 / 6]).requires_grad_(True)
    y = torch.tensor([0])
    # CE = ln 4 = 1.3862944; KL(peer||me) = 0.5 ln(0.5/0.25) + 0.5 ln((1/6)/(1/4))
    #      = 0.5 ln 2 + 0.5 ln(2/3) = 0.5 ln(4/3) = 0.1438410 -> 1.5301354
    loss = B.dml_loss(me, peer, y)
    assert val(loss) == pytest.approx(1.5301353973, abs=1e-8)
    # kl_weight 2: 1.3862944 + 0.2876821 = 1.6739764
    assert val(B.dml_loss(me, peer, y, kl_weight=2.0)) == pytest.approx(1.6739764336, abs=1e-8)
    loss.backward()
    assert peer.grad is None
    assert val(me.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="logits_self.*logits_peer"):
        B.dml_loss(me, torch.zeros(1, 3), y)


def test_grad_cam_map_hand_value():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, 8.0]]]])
    g = torch.tensor([[[[2.0, 0.0], [1.0, 1.0]], [[-1.0, 0.0], [-1.0, 0.0]]]])
    # channel weights: mean(2,0,1,1) = 1, mean(-1,0,-1,0) = -0.5
    # 1*A0 - 0.5*A1 = [[1-2, 2-0], [3-0, 4-4]] = [[-1, 2], [3, 0]] -> ReLU [0, 2, 3, 0]
    # L2 norm sqrt(13) -> [0, 2/3.6055513, 3/3.6055513, 0] = [0, 0.5547002, 0.8320503, 0]
    cam = B.grad_cam_map(a, g)
    assert cam.shape == (1, 4)
    assert torch.allclose(cam, torch.tensor([[0.0, 0.5547002, 0.8320503, 0.0]]), atol=1e-6)
    # all-zero map stays zero (no NaN)
    zero = B.grad_cam_map(a, torch.zeros_like(g))
    assert torch.equal(zero, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="activations.*gradients"):
        B.grad_cam_map(a, torch.zeros(1, 2, 3, 3))


def test_attention_distillation_loss_value_and_teacher_detached():
    s = torch.tensor([[0.0, 0.6, 0.8, 0.0], [0.5, 0.5, 0.5, 0.5]], requires_grad=True)
    t = torch.tensor([[0.6, 0.8, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]], requires_grad=True)
    # row 1: |0-0.6| + |0.6-0.8| + |0.8-0| + 0 = 0.6 + 0.2 + 0.8 = 1.6; row 2: 0 -> mean 0.8
    loss = B.attention_distillation_loss(s, t)
    assert val(loss) == pytest.approx(0.8, abs=1e-6)
    loss.backward()
    assert t.grad is None and s.grad is not None
    with pytest.raises(ValueError, match="map_student.*map_teacher"):
        B.attention_distillation_loss(s, torch.zeros(2, 3))
