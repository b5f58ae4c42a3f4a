"""Tests of bnlstm.nn: BNLSTM, SequenceBatchNorm, Trace, reestimate_stats.

These test what the model computes, whichever path it takes (the reference per-step
loop or the fast path of bnlstm/fused.py; a forward with a Trace always takes the
reference loop, so comparing a traced and an untraced forward compares the two).
Small sizes throughout: the whole file runs in seconds on two CPU cores.
"""
import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

import bnlstm
from bnlstm import BNLSTM, SequenceBatchNorm, Trace, reestimate_stats
from bnlstm.nn import INITS, NORMS, STATS

I, H, T, B = 3, 8, 6, 5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _rand(*shape, dtype=torch.float64, seed=None, scale=1.0):
    g = torch.Generator().manual_seed(seed if seed is not None else sum(shape))
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def _params_only(model):
    """The state dict without the running statistics (to copy weights across stats modes)."""
    return {k: v for k, v in model.state_dict().items()
            if not any(s in k for s in ("running_mean", "running_var", "num_batches_tracked"))}


def _bn_modules(model, k=0):
    return getattr(model, f"bn_ih_l{k}"), getattr(model, f"bn_hh_l{k}"), getattr(model, f"bn_c_l{k}")


# ------------------------------------------------------------------ an independent reference
def _manual_bnlstm(model, x, hx=None):
    """The paper's equations, written out from scratch for layer after layer (no dropout).

    Training mode: per-step batch mean and biased variance; evaluation mode: the model's
    running statistics of row min(t, max_length - 1) (row 0 for shared statistics).
    """
    Tn, Bn, _ = x.shape
    Hn, L = model.hidden_size, model.num_layers
    if hx is None:
        hx = (x.new_zeros(L, Bn, Hn), x.new_zeros(L, Bn, Hn))

    def bn(v, mod, t):
        if mod is None:
            return v
        if model.training:
            mean, var = v.mean(0), v.var(0, unbiased=False)
        else:
            r = 0 if mod.stats == "shared" else min(t, mod.max_length - 1)
            mean, var = mod.running_mean[r], mod.running_var[r]
        out = (v - mean) / torch.sqrt(var + mod.eps) * mod.weight
        return out + mod.bias if mod.bias is not None else out

    layer_in, hs, cs = x, [], []
    for k in range(L):
        w_ih, w_hh = getattr(model, f"weight_ih_l{k}"), getattr(model, f"weight_hh_l{k}")
        b = (getattr(model, f"bias_ih_l{k}") + getattr(model, f"bias_hh_l{k}")) if model.bias else 0
        bn_ih, bn_hh, bn_c = (getattr(model, f"bn_{n}_l{k}", None) for n in ("ih", "hh", "c"))
        h, c = hx[0][k], hx[1][k]
        outs = []
        for t in range(Tn):
            gates = bn(layer_in[t] @ w_ih.t(), bn_ih, t) + bn(h @ w_hh.t(), bn_hh, t) + b
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(bn(c, bn_c, t))
            outs.append(h)
        layer_in = torch.stack(outs)
        hs.append(h)
        cs.append(c)
    return layer_in, (torch.stack(hs), torch.stack(cs))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("training", [True, False])
def test_matches_the_papers_equations(norm, training):
    """Output, states and gradients equal a from-scratch BN-LSTM (two layers, float64)."""
    m = BNLSTM(I, H, num_layers=2, norm=norm, max_length=4, dtype=torch.float64)
    m.train()
    with torch.no_grad():                      # non-trivial weights and running statistics
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
        for _ in range(3):
            m(_rand(4, 7, I, seed=_) * 2 + 1)
    m.train(training)
    x = _rand(T, B, I, seed=1)                 # T = 6 > max_length = 4: rows clamp in eval
    hx = (_rand(2, B, H, seed=2, scale=0.5), _rand(2, B, H, seed=3, scale=0.5))
    ref = copy.deepcopy(m)
    out, (h_n, c_n) = m(x, hx)
    r_out, (r_h, r_c) = _manual_bnlstm(ref, x, hx)
    for a, b in ((out, r_out), (h_n, r_h), (c_n, r_c)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    w = _rand(*out.shape, seed=4)
    (out * w).sum().add(h_n.sum() + c_n.pow(2).sum()).backward()
    (r_out * w).sum().add(r_h.sum() + r_c.pow(2).sum()).backward()
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-8, msg=name)


# ------------------------------------------------------------------ nn.LSTM equivalence
def _lstm_pair(dtype, num_layers=1, batch_first=False, bias=True, input_size=I):
    ref = nn.LSTM(input_size, H, num_layers=num_layers, bias=bias, batch_first=batch_first,
                  dtype=dtype)
    m = BNLSTM(input_size, H, num_layers=num_layers, bias=bias, batch_first=batch_first,
               norm="none", dtype=dtype)
    assert set(m.state_dict()) == set(ref.state_dict())
    m.load_state_dict(ref.state_dict())         # strict: no missing, no extra keys
    return ref, m


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("case", ["plain", "multilayer_batch_first", "given_hx", "unbatched",
                                  "no_bias", "eval"])
def test_norm_none_equals_nn_lstm(dtype, tol, case):
    L = 2 if case in ("multilayer_batch_first", "given_hx") else 1
    ref, m = _lstm_pair(dtype, num_layers=L, batch_first=case == "multilayer_batch_first",
                        bias=case != "no_bias")
    if case == "eval":
        ref.eval()
        m.eval()
    if case == "unbatched":
        x = _rand(T, I, dtype=dtype)
    elif case == "multilayer_batch_first":
        x = _rand(B, T, I, dtype=dtype)
    else:
        x = _rand(T, B, I, dtype=dtype)
    hx = None
    if case in ("given_hx", "unbatched"):
        shape = (L, B, H) if case == "given_hx" else (L, H)
        hx = (_rand(*shape, dtype=dtype, seed=11), _rand(*shape, dtype=dtype, seed=12))
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    hxs = [None if hx is None else tuple(t.clone().requires_grad_(True) for t in hx)
           for _ in range(2)]
    results = []
    for mod, xx, hh in ((ref, xs[0], hxs[0]), (m, xs[1], hxs[1])):
        out, (h_n, c_n) = mod(xx, hh)
        loss = (out * _rand(*out.shape, dtype=dtype, seed=5)).sum() + (h_n * 0.5).sum() \
            + (c_n * _rand(*c_n.shape, dtype=dtype, seed=6)).sum()
        loss.backward()
        results.append((out, h_n, c_n))
    for a, b in zip(*results):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, atol=tol, rtol=tol)
    if hx is not None:
        for a, b in zip(hxs[0], hxs[1]):
            torch.testing.assert_close(b.grad, a.grad, atol=tol, rtol=tol)
    ref_grads = dict(ref.named_parameters())
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=tol, rtol=tol, msg=name)


def test_norm_none_trace_path_equals_nn_lstm():
    ref, m = _lstm_pair(torch.float64, num_layers=2)
    x = _rand(T, B, I)
    out, (h_n, c_n) = m(x, trace=Trace())
    r_out, (r_h, r_c) = ref(x)
    torch.testing.assert_close(out, r_out, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(c_n, r_c, atol=1e-10, rtol=1e-10)


def test_bn_state_dict_has_the_documented_keys():
    m = BNLSTM(I, H, num_layers=2)
    keys = set(m.state_dict())
    for k in range(2):
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            assert f"{w}_l{k}" in keys
        for n in ("ih", "hh", "c"):
            for b in ("weight", "running_mean", "running_var", "num_batches_tracked"):
                assert f"bn_{n}_l{k}.{b}" in keys
        assert f"bn_c_l{k}.bias" in keys
        assert f"bn_ih_l{k}.bias" not in keys and f"bn_hh_l{k}.bias" not in keys
    # an nn.LSTM state dict loads non-strictly into the BN model: only BN entries missing
    res = m.load_state_dict(nn.LSTM(I, H, num_layers=2).state_dict(), strict=False)
    assert not res.unexpected_keys
    assert all(k.startswith("bn_") for k in res.missing_keys)
    assert not hasattr(BNLSTM(I, H, norm="input"), "bn_hh_l0")
    assert not hasattr(BNLSTM(I, H, norm="input"), "bn_c_l0")


# ------------------------------------------------------------------ scale invariance
def _scaled_output(norm, which, factor):
    torch.manual_seed(0)                          # the same weights for every call
    m = BNLSTM(I, H, norm=norm, eps=1e-14, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
        getattr(m, f"weight_{which}_l0").mul_(factor)
    m.train()
    hx = (_rand(1, B, H, seed=21), _rand(1, B, H, seed=22))
    return m(_rand(T, B, I, seed=23), hx)[0]


@pytest.mark.parametrize("norm,invariant_to", [("full", ("ih", "hh")), ("input", ("ih",)),
                                               ("none", ())])
def test_training_output_invariant_to_rescaled_normalized_weights(norm, invariant_to):
    base = _scaled_output(norm, "ih", 1.0)
    for which in ("ih", "hh"):
        scaled = _scaled_output(norm, which, 3.0)
        diff = (scaled - base).abs().max().item()
        if which in invariant_to:
            assert diff < 1e-8, (norm, which, diff)
        else:
            assert diff > 1e-3, (norm, which, diff)


# ------------------------------------------------------------------ running statistics
def test_running_stats_update_in_training_only():
    m = BNLSTM(I, H, max_length=10)
    x = _rand(T, B, I, dtype=torch.float32)
    m.eval()
    before = copy.deepcopy(m.state_dict())
    m(x)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    m.train()
    m(x)
    after = m.state_dict()
    for n in ("ih", "hh", "c"):
        assert not torch.equal(after[f"bn_{n}_l0.running_mean"][:T],
                               before[f"bn_{n}_l0.running_mean"][:T])
        assert not torch.equal(after[f"bn_{n}_l0.running_var"][:T],
                               before[f"bn_{n}_l0.running_var"][:T])
        # rows of steps not seen are untouched
        assert torch.equal(after[f"bn_{n}_l0.running_mean"][T:], before[f"bn_{n}_l0.running_mean"][T:])
        assert after[f"bn_{n}_l0.num_batches_tracked"].tolist() == [1] * T + [0] * (10 - T)


@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_running_stats_momentum_formula(momentum):
    m = BNLSTM(I, H, max_length=10, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    m.train()
    x = _rand(T, B, I, seed=31)
    hx = (_rand(1, B, H, seed=32), _rand(1, B, H, seed=33))
    fast = copy.deepcopy(m)
    tr = Trace()
    m(x, hx, trace=tr)
    fast(x, hx)                                  # the untraced path must update the same way
    rec = tr.layers[0]
    unbias = B / (B - 1)
    for bn, key in zip(_bn_modules(m), ("wx", "wh", "c")):
        mean, var = rec[key + "_mean"], rec[key + "_var"]
        # the trace's statistics are those of the tensors the model normalized
        torch.testing.assert_close(bn.running_mean[:T], momentum * mean, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(bn.running_var[:T], (1 - momentum) + momentum * var * unbias,
                                   atol=1e-12, rtol=1e-10)
    for a, b in zip(_bn_modules(m), _bn_modules(fast)):
        torch.testing.assert_close(b.running_mean, a.running_mean, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(b.running_var, a.running_var, atol=1e-12, rtol=1e-10)
        assert torch.equal(a.num_batches_tracked, b.num_batches_tracked)
    # W_hh h_{t-1}: the trace's mean is the batch mean of the recurrent term itself
    h_prev = [hx[0][0]] + [h.detach() for h in rec["h"][:-1]]
    wh_mean = torch.stack([(hp @ m.weight_hh_l0.t()).mean(0) for hp in h_prev])
    torch.testing.assert_close(m.bn_hh_l0.running_mean[:T], momentum * wh_mean,
                               atol=1e-12, rtol=1e-10)
    # a second forward: running = (1 - m) running + m stat
    prev = m.bn_hh_l0.running_mean.clone()
    tr2 = Trace()
    m(x * 2 + 1, hx, trace=tr2)
    torch.testing.assert_close(m.bn_hh_l0.running_mean[:T],
                               (1 - momentum) * prev[:T] + momentum * tr2.layers[0]["wh_mean"],
                               atol=1e-12, rtol=1e-10)


def test_no_grad_training_forward_updates_stats_like_grad_forward():
    m = BNLSTM(I, H, max_length=10, dtype=torch.float64)
    m2 = copy.deepcopy(m)
    x = _rand(T, B, I)
    m(x)[0].sum().backward()
    with torch.no_grad():
        m2(x)
    for a, b in zip(m.buffers(), m2.buffers()):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


# ------------------------------------------------------------------ batch dependence
def _trained_stats_model(**kw):
    m = BNLSTM(I, H, max_length=10, dtype=torch.float64, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
        m.train()
        for s in range(3):
            m(_rand(T, 16, I, seed=100 + s) * 1.5 + 0.5)
    return m


@pytest.mark.parametrize("norm", ["input", "full"])
def test_eval_sample_independent_of_batch_training_not(norm):
    m = _trained_stats_model(norm=norm)
    x = _rand(T, 7, I, seed=41) * 2
    m.eval()
    with torch.no_grad():
        full = m(x)[0]
        one = m(x[:, 3:4])[0]
        sub = m(x[:, [6, 0, 2]])[0]
        alone = m(x[:, 5])[0]                   # unbatched (T, I)
    torch.testing.assert_close(one[:, 0], full[:, 3], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(sub, full[:, [6, 0, 2]], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(alone, full[:, 5], atol=1e-12, rtol=1e-10)
    m.train()
    with torch.no_grad():
        full_t = m(x)[0]
        sub_t = m(x[:, [6, 0, 2]])[0]
    assert (sub_t - full_t[:, [6, 0, 2]]).abs().max() > 1e-3


# ------------------------------------------------------------------ per-step vs shared
def test_stats_buffer_shapes():
    for stats, rows in (("per_step", 12), ("shared", 1)):
        m = BNLSTM(I, H, max_length=12, stats=stats, num_layers=2)
        for k in range(2):
            for n, feat in (("ih", 4 * H), ("hh", 4 * H), ("c", H)):
                bn = getattr(m, f"bn_{n}_l{k}")
                assert bn.running_mean.shape == (rows, feat)
                assert bn.running_var.shape == (rows, feat)
                assert bn.num_batches_tracked.shape == (rows,)
                assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)


def test_per_step_and_shared_train_identically():
    ps = BNLSTM(I, H, max_length=10, dtype=torch.float64)
    with torch.no_grad():
        for p in ps.parameters():
            p.add_(0.2 * torch.randn_like(p))
    sh = BNLSTM(I, H, max_length=10, stats="shared", dtype=torch.float64)
    sh.load_state_dict(_params_only(ps), strict=False)
    x = _rand(T, B, I)
    outs = []
    for m in (ps, sh):
        out = m(x)[0]
        out.pow(2).sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-12, rtol=1e-10)
    for (name, p), q in zip(ps.named_parameters(), sh.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-8, msg=name)


def test_per_step_stats_follow_a_transient_shared_do_not():
    """Inputs whose scale grows with t: per-step population statistics reproduce the
    training-mode output in evaluation, one shared set does not."""
    Tn = 12
    scale = torch.linspace(0.2, 5.0, Tn, dtype=torch.float64).view(Tn, 1, 1)
    batches = [_rand(Tn, 64, I, seed=200 + s) * scale + 0.3 * scale for s in range(4)]
    ps = BNLSTM(I, H, max_length=Tn, dtype=torch.float64)
    sh = BNLSTM(I, H, max_length=Tn, stats="shared", dtype=torch.float64)
    sh.load_state_dict(_params_only(ps), strict=False)
    x = _rand(Tn, 256, I, seed=300) * scale + 0.3 * scale
    errs = {}
    for name, m in (("per_step", ps), ("shared", sh)):
        reestimate_stats(m, batches)
        m.train()
        with torch.no_grad():
            target = copy.deepcopy(m)(x)[0]
        m.eval()
        with torch.no_grad():
            errs[name] = (m(x)[0] - target).abs().mean().item()
    assert errs["per_step"] < 0.01, errs
    assert errs["shared"] > 5 * errs["per_step"], errs


@pytest.mark.parametrize("momentum", [0.1, None])
def test_shared_row_is_the_sequential_update_over_steps(momentum):
    m = BNLSTM(I, H, max_length=10, stats="shared", momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = _rand(T, B, I, seed=51)
    hx = (_rand(1, B, H, seed=52), _rand(1, B, H, seed=53))
    fast = copy.deepcopy(m)
    tr = Trace()
    m(x, hx, trace=tr)
    fast(x, hx)
    rec = tr.layers[0]
    for bn, bn_fast, key in zip(_bn_modules(m), _bn_modules(fast), ("wx", "wh", "c")):
        rm = torch.zeros_like(bn.running_mean[0])
        rv = torch.ones_like(bn.running_var[0])
        for t in range(T):
            f = momentum if momentum is not None else 1.0 / (t + 1)
            rm = (1 - f) * rm + f * rec[key + "_mean"][t]
            rv = (1 - f) * rv + f * rec[key + "_var"][t] * B / (B - 1)
        for b in (bn, bn_fast):
            torch.testing.assert_close(b.running_mean[0], rm, atol=1e-12, rtol=1e-10)
            torch.testing.assert_close(b.running_var[0], rv, atol=1e-12, rtol=1e-10)
            assert b.num_batches_tracked.tolist() == [T]


# ------------------------------------------------------------------ beyond max_length
def test_eval_beyond_max_length_uses_last_row():
    ML, Tn = 4, 9
    m = BNLSTM(I, H, max_length=ML, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
        for bn in m.norm_layers():
            bn.running_mean.copy_(0.3 * torch.randn_like(bn.running_mean))
            bn.running_var.copy_(0.5 + torch.rand_like(bn.running_var))
    # the same model with rows ML..Tn-1 copies of row ML-1
    long = BNLSTM(I, H, max_length=Tn, dtype=torch.float64)
    long.load_state_dict(_params_only(m), strict=False)
    with torch.no_grad():
        for a, b in zip(m.norm_layers(), long.norm_layers()):
            rows = torch.arange(Tn).clamp(max=ML - 1)
            b.running_mean.copy_(a.running_mean[rows])
            b.running_var.copy_(a.running_var[rows])
    m.eval()
    long.eval()
    x = _rand(Tn, B, I, seed=61)
    with torch.no_grad():
        out = m(x)[0]
        torch.testing.assert_close(out, long(x)[0], atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(m(x, trace=Trace())[0], out, atol=1e-12, rtol=1e-10)
        # distinctive statistics in the last row change steps >= ML - 1 only
        m.bn_c_l0.running_mean[ML - 1] += 3.0
        out2 = m(x)[0]
    assert torch.equal(out2[:ML - 1], out[:ML - 1])
    assert (out2[ML - 1:] - out[ML - 1:]).abs().amin(dim=(1, 2)).gt(0).all()
    assert (out2[ML - 1:] - out[ML - 1:]).abs().max() > 0.01


def test_training_beyond_max_length():
    ML, Tn = 4, 9
    m = BNLSTM(I, H, max_length=ML, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    long = BNLSTM(I, H, max_length=Tn, dtype=torch.float64)
    long.load_state_dict(_params_only(m), strict=False)
    x = _rand(Tn, B, I, seed=71)
    tr = Trace()
    ref = copy.deepcopy(m)
    out = m(x)[0]
    out.pow(2).sum().backward()
    ref(x, trace=tr)
    torch.testing.assert_close(out, long(x)[0], atol=1e-12, rtol=1e-10)  # batch statistics
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    for bn, key in zip(_bn_modules(m), ("wx", "wh", "c")):
        assert bn.running_mean.shape[0] == ML
        assert bn.num_batches_tracked.tolist() == [1] * ML
        # the last row holds step ML-1's statistic, not a later step's
        torch.testing.assert_close(bn.running_mean, 0.1 * tr.layers[0][key + "_mean"][:ML],
                                   atol=1e-12, rtol=1e-10)
    assert len(tr.layers[0]["h"]) == Tn
    for a, b in zip(_bn_modules(m), _bn_modules(ref)):   # the traced (reference) path too
        assert b.num_batches_tracked.tolist() == [1] * ML
        torch.testing.assert_close(b.running_mean, a.running_mean, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(b.running_var, a.running_var, atol=1e-12, rtol=1e-10)


# ------------------------------------------------------------------ reestimate_stats
@pytest.mark.parametrize("was_training", [False, True])
def test_reestimate_stats_is_the_plain_average(was_training):
    m = BNLSTM(I, H, max_length=10, momentum=0.1, h0_noise=0.3, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
        for bn in m.norm_layers():             # stale statistics: must be reset first
            bn.running_mean.fill_(7.0)
            bn.running_var.fill_(9.0)
            bn.num_batches_tracked.fill_(5)
    batches = [_rand(T, n, I, seed=80 + n) * (1 + n / 4) for n in (4, 6, 9)]
    # per-batch statistics, without noise on h_0
    probe = copy.deepcopy(m)
    probe.h0_noise = 0.0
    probe.train()
    recs = []
    with torch.no_grad():
        for xb in batches:
            tr = Trace()
            probe(xb, trace=tr)
            recs.append((tr.layers[0], xb.shape[1]))
    m.train(was_training)
    n = reestimate_stats(m, iter(batches), h0_noise=False)
    assert n == 3
    assert m.training == was_training
    assert all(mod.training == was_training for mod in m.modules())
    assert m.h0_noise == 0.3
    assert all(bn.momentum == 0.1 for bn in m.norm_layers())
    for bn, key in zip(_bn_modules(m), ("wx", "wh", "c")):
        mean = sum(r[key + "_mean"] for r, _ in recs) / 3
        var = sum(r[key + "_var"] * nb / (nb - 1) for r, nb in recs) / 3
        torch.testing.assert_close(bn.running_mean[:T], mean, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(bn.running_var[:T], var, atol=1e-12, rtol=1e-10)
        assert torch.all(bn.running_mean[T:] == 0) and torch.all(bn.running_var[T:] == 1)
        assert bn.num_batches_tracked.tolist() == [3] * T + [0] * (10 - T)


def test_reestimate_stats_keeps_the_training_noise_by_default():
    """By default the statistics are those of the training computation (h_0 noise on): the
    recurrent term's first step then has the noise's variance, not zero; off on request."""
    batches = [_rand(T, 16, I, seed=90 + k) for k in range(3)]
    torch.manual_seed(0)
    m = BNLSTM(I, H, max_length=10, h0_noise=0.5, dtype=torch.float64)
    quiet = copy.deepcopy(m)
    reestimate_stats(m, iter(batches))
    reestimate_stats(quiet, iter(batches), h0_noise=False)
    assert m.h0_noise == 0.5 and quiet.h0_noise == 0.5
    assert float(quiet.bn_hh_l0.running_var[0].max()) == 0.0       # W_h h_0 = 0 for every example
    assert float(m.bn_hh_l0.running_var[0].min()) > 1e-3


def test_reestimate_stats_with_forward_and_wrapper_restores_on_error():
    lstm = BNLSTM(I, H, max_length=10, momentum=0.2, h0_noise=0.1)
    wrapper = nn.Sequential()                   # any module holding a BNLSTM
    wrapper.add_module("lstm", lstm)
    wrapper.eval()
    batches = [(_rand(T, 4, I, dtype=torch.float32, seed=s), None) for s in range(2)]
    n = reestimate_stats(wrapper, batches, forward=lambda b: lstm(b[0]))
    assert n == 2 and lstm.bn_hh_l0.num_batches_tracked[0] == 2

    def failing():
        yield _rand(T, 4, I, dtype=torch.float32)
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        reestimate_stats(lstm, failing())
    assert not lstm.training
    assert lstm.h0_noise == 0.1
    assert all(bn.momentum == 0.2 for bn in lstm.norm_layers())


# ------------------------------------------------------------------ initialization
def test_gamma_beta_and_forget_bias_init():
    for g in (0.1, 0.37):
        m = BNLSTM(I, H, num_layers=2, gamma_init=g)
        for k in range(2):
            bn_ih, bn_hh, bn_c = _bn_modules(m, k)
            for bn in (bn_ih, bn_hh, bn_c):
                assert isinstance(bn, SequenceBatchNorm)
                assert torch.all(bn.weight == g)
                assert bn.weight.requires_grad
            assert bn_ih.bias is None and bn_hh.bias is None          # beta_x = beta_h = 0
            assert isinstance(bn_c.bias, nn.Parameter) and torch.all(bn_c.bias == 0)
            b = getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}")
            assert torch.all(b[H:2 * H] == 1.0)
            assert torch.all(b[:H] == 0) and torch.all(b[2 * H:] == 0)
    m = BNLSTM(I, H, forget_bias=2.5)
    assert torch.all((m.bias_ih_l0 + m.bias_hh_l0)[H:2 * H] == 2.5)
    m = BNLSTM(I, H, forget_bias=None)
    assert torch.all(m.bias_ih_l0 == 0) and torch.all(m.bias_hh_l0 == 0)
    m = BNLSTM(I, H, init="pytorch")
    assert torch.all((m.bias_ih_l0 + m.bias_hh_l0)[H:2 * H] == 1.0)


def _blocks(w):
    return w.detach().double().chunk(4, 0)


def test_init_paper_authors_orthogonal_pytorch():
    eye = torch.eye(H, dtype=torch.float64)
    In = 5                                        # I < H: orthonormal columns in each block
    m = BNLSTM(In, H, num_layers=2, init="paper")
    for k in range(2):
        for blk in _blocks(getattr(m, f"weight_hh_l{k}")):
            assert torch.equal(blk, eye)
        for blk in _blocks(getattr(m, f"weight_ih_l{k}")):
            torch.testing.assert_close(blk.t() @ blk, torch.eye(blk.shape[1], dtype=torch.float64),
                                       atol=1e-5, rtol=0)
    m = BNLSTM(In, H, init="authors")
    for gate, blk in enumerate(_blocks(m.weight_hh_l0)):     # gate order i, f, g, o
        torch.testing.assert_close(blk @ blk.t(), eye, atol=1e-5, rtol=0)
        assert torch.equal(blk, eye) == (gate == 2), gate
    for blk in _blocks(m.weight_ih_l0):
        torch.testing.assert_close(blk.t() @ blk, torch.eye(In, dtype=torch.float64), atol=1e-5, rtol=0)
    m = BNLSTM(In, H, init="orthogonal")
    for blk in _blocks(m.weight_hh_l0):
        torch.testing.assert_close(blk @ blk.t(), eye, atol=1e-5, rtol=0)
        assert not torch.allclose(blk, eye)
    # blocks are drawn independently
    a, b = _blocks(m.weight_hh_l0)[:2]
    assert not torch.allclose(a, b)
    Hb = 25
    m = BNLSTM(In, Hb, init="pytorch", forget_bias=None)
    bound = 1 / math.sqrt(Hb)
    for p in (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0):
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.8 * bound                    # uniform over the range, not tiny
        assert p.min() < 0 < p.max()
    assert torch.all(m.bn_hh_l0.weight == 0.1)


# ------------------------------------------------------------------ h0 noise
def test_h0_noise():
    m = BNLSTM(I, H, h0_noise=0.5, dtype=torch.float64)
    x = _rand(T, B, I)
    m.train()
    with torch.no_grad():
        a, b = m(x)[0], m(x)[0]
        assert (a - b).abs().max() > 1e-4
        # also applied on top of a given state, and for the plain LSTM
        hx = (_rand(1, B, H), _rand(1, B, H, seed=3))
        assert (m(x, hx)[0] - m(x, hx)[0]).abs().max() > 1e-4
        plain = BNLSTM(I, H, norm="none", h0_noise=0.5, dtype=torch.float64)
        assert (plain(x)[0] - plain(x)[0]).abs().max() > 1e-4
        m.eval()
        assert torch.equal(m(x)[0], m(x)[0])
        quiet = BNLSTM(I, H, dtype=torch.float64)
        quiet.train()
        torch.manual_seed(1)
        c = quiet(x)[0]
        torch.manual_seed(2)
        assert torch.equal(quiet(x)[0], c)


# ------------------------------------------------------------------ Trace
def test_trace_shapes_and_agreement_with_untraced_forward():
    L, Tn, Bn = 2, 7, 4
    m = BNLSTM(I, H, num_layers=L, max_length=10, dtype=torch.float64)
    x = _rand(Tn, Bn, I)
    m_fast = copy.deepcopy(m)
    tr = Trace()
    out, (h_n, c_n) = m(x, trace=tr)
    out_f, (h_f, c_f) = m_fast(x)
    torch.testing.assert_close(out, out_f, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(c_n, c_f, atol=1e-10, rtol=1e-10)
    assert len(tr.layers) == L
    for k, rec in enumerate(tr.layers):
        for key in ("wx_mean", "wx_var", "wh_mean", "wh_var"):
            assert rec[key].shape == (Tn, 4 * H), key
            assert not rec[key].requires_grad
        for key in ("c_mean", "c_var"):
            assert rec[key].shape == (Tn, H), key
        for key in ("g_pre", "c_out_pre"):
            assert rec[key].shape == (Tn, Bn, H), key
        assert len(rec["h"]) == Tn and all(h.shape == (Bn, H) for h in rec["h"])
        assert torch.all(rec["wx_var"] >= 0) and torch.all(rec["c_var"] >= 0)
        # in training, BN(c_t) has batch mean beta = 0 and batch variance ~ gamma^2
        cop = rec["c_out_pre"][1:]
        torch.testing.assert_close(cop.mean(1), torch.zeros_like(cop.mean(1)), atol=1e-10, rtol=0)
        var = cop.var(1, unbiased=False)
        assert torch.all(var < 0.1 ** 2 + 1e-9) and torch.all(var[var > 0] > 0.5 * 0.1 ** 2)
    torch.testing.assert_close(torch.stack([h.detach() for h in tr.layers[1]["h"]]), out,
                               atol=0, rtol=0)
    # layer 1 records its input term from layer 0's output
    wx1 = torch.stack([h.detach() for h in tr.layers[0]["h"]]) @ m.weight_ih_l1.detach().t()
    torch.testing.assert_close(tr.layers[1]["wx_mean"], wx1.mean(1), atol=1e-12, rtol=1e-10)
    out.sum().backward()
    for k in range(L):
        gn = np.asarray(tr.grad_norms(k), dtype=np.float64)
        assert gn.shape == (Tn,)
        assert np.all(np.isfinite(gn)) and np.all(gn > 0)
    # keep_tanh_inputs=False / keep_h=False skip what they say
    tr2 = Trace(keep_tanh_inputs=False, keep_h=False)
    m(x, trace=tr2)[0].sum().backward()
    assert tr2.layers[0]["wh_mean"].shape == (Tn, 4 * H)
    assert len(tr2.layers[0]["h"]) == 0
    assert len(tr2.layers[0]["g_pre"]) == 0
    with pytest.raises(RuntimeError):
        tr2.grad_norms(0)


def test_trace_records_moments_for_plain_lstm_too():
    m = BNLSTM(I, H, norm="none", dtype=torch.float64)
    x = _rand(T, B, I)
    tr = Trace()
    m(x, trace=tr)
    wx = x @ m.weight_ih_l0.detach().t()
    torch.testing.assert_close(tr.layers[0]["wx_mean"], wx.mean(1), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(tr.layers[0]["wx_var"], wx.var(1, unbiased=False), atol=1e-12,
                               rtol=1e-10)


def _log_grad_ratio(gamma, seed, init):
    torch.manual_seed(seed)
    m = BNLSTM(8, 32, gamma_init=gamma, max_length=100, init=init)
    x = torch.randn(100, 16, 8, generator=torch.Generator().manual_seed(100 + seed))
    tr = Trace()
    out, _ = m(x, trace=tr)
    out[-1].sum().backward()
    gn = np.asarray(tr.grad_norms(0), dtype=np.float64)
    assert gn.shape == (100,) and np.all(gn > 0) and np.all(np.isfinite(gn))
    tanh_slope = (1 - torch.tanh(tr.layers[0]["c_out_pre"]) ** 2).mean().item()
    return math.log10(gn[0] / gn[-1]), tanh_slope


def test_gamma_init_gradient_flow_through_time():
    """The paper's Figure 1 argument, measured on this BN-LSTM (T=100, H=32, x ~ N(0,1)).

    Figure 1b holds: gamma=1 puts BN(c_t) at unit variance, where tanh' averages about
    0.6, while gamma=0.1 keeps tanh nearly linear. Figure 1a (a batch-normalized *tanh RNN*)
    shows the gradient at t=0 vanishing with gamma=1. This LSTM does not show that: the
    cell path carries the gradient and the recurrent BN's Jacobian gamma/std(W_h h) grows
    with gamma, so with gamma=1 ||dL/dh_0|| / ||dL/dh_T|| is larger, by orders of
    magnitude with orthogonal W_hh blocks (several seeds, consistently; with the identity
    W_hh of init="paper" the ordering varies with the seed, so it is not asserted).
    """
    for seed in range(2):
        r01, slope01 = _log_grad_ratio(0.1, seed, "orthogonal")
        r10, slope10 = _log_grad_ratio(1.0, seed, "orthogonal")
        assert slope01 > 0.97 and slope10 < 0.75, (slope01, slope10)
        assert r10 > r01 + 1.5, (seed, r01, r10)


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("arg,choices", [("norm", NORMS), ("stats", STATS), ("init", INITS)])
def test_bad_choice_names_valid_choices(arg, choices):
    with pytest.raises(ValueError) as e:
        BNLSTM(I, H, **{arg: "bogus"})
    msg = str(e.value)
    assert arg in msg and "bogus" in msg
    assert all(c in msg for c in choices)


@pytest.mark.parametrize("kw", [dict(hidden_size=0), dict(input_size=0), dict(num_layers=0),
                                dict(max_length=0), dict(hidden_size=2.5), dict(dropout=1.0),
                                dict(dropout=-0.1), dict(gamma_init=0.0), dict(h0_noise=-1.0),
                                dict(momentum=1.5)])
def test_bad_numbers(kw):
    args = dict(input_size=I, hidden_size=H)
    args.update(kw)
    with pytest.raises(ValueError):
        BNLSTM(**args)


def test_bad_inputs():
    m = BNLSTM(I, H, num_layers=2)
    with pytest.raises(ValueError, match="input_size"):
        m(torch.randn(T, B, I + 1))
    with pytest.raises(ValueError, match="input_size"):
        m(torch.randn(T, I + 1))
    with pytest.raises(ValueError):
        m(torch.randn(2, T, B, I))
    with pytest.raises(ValueError):
        m(torch.randn(I))
    good = torch.zeros(2, B, H)
    for bad in (torch.zeros(1, B, H), torch.zeros(2, B + 1, H), torch.zeros(2, B, H + 1),
                torch.zeros(B, H)):
        with pytest.raises(ValueError, match="hidden state"):
            m(torch.randn(T, B, I), (bad, good))
        with pytest.raises(ValueError, match="hidden state"):
            m(torch.randn(T, B, I), (good, bad))
    with pytest.raises(ValueError, match="hidden state"):
        m(torch.randn(T, I), (torch.zeros(2, H + 1), torch.zeros(2, H + 1)))


@pytest.mark.parametrize("norm", ["input", "full"])
def test_batch_of_one_in_training_is_refused_clearly(norm):
    m = BNLSTM(I, H, norm=norm)
    m.train()
    for x in (torch.randn(T, 1, I), torch.randn(T, I)):
        with pytest.raises(ValueError, match="batch") as e:
            m(x)
        assert "2" in str(e.value)
    m.eval()
    assert m(torch.randn(T, I))[0].shape == (T, H)
    plain = BNLSTM(I, H, norm="none")
    plain.train()
    assert plain(torch.randn(T, 1, I))[0].shape == (T, 1, H)


# ------------------------------------------------------------------ state, repr, resets
def test_state_dict_round_trip():
    m = _trained_stats_model(num_layers=2)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = BNLSTM(I, H, num_layers=2, max_length=10, dtype=torch.float64)
    fresh.load_state_dict(torch.load(buf))
    m.eval()
    fresh.eval()
    x = _rand(T, B, I, seed=91)
    with torch.no_grad():
        assert torch.equal(m(x)[0], fresh(x)[0])
    for a, b in zip(m.buffers(), fresh.buffers()):
        assert torch.equal(a, b)
    # a fresh model with default statistics gives something else
    other = BNLSTM(I, H, num_layers=2, max_length=10, dtype=torch.float64)
    other.load_state_dict(_params_only(m), strict=False)
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(other(x)[0], m(x)[0])


def test_extra_repr_mentions_non_defaults_only():
    assert BNLSTM(I, H).extra_repr() == f"{I}, {H}"
    r = BNLSTM(I, H, num_layers=2, norm="input", stats="shared", gamma_init=0.5,
               batch_first=True).extra_repr()
    for s in ("num_layers=2", "norm='input'", "stats='shared'", "gamma_init=0.5", "batch_first=True"):
        assert s in r, r
    for s in ("max_length", "momentum", "eps", ", init=", "forget_bias", "h0_noise", "dropout",
              ", bias="):
        assert s not in r, r
    assert "BNLSTM(" in repr(BNLSTM(I, H))


def test_reset_parameters_vs_reset_running_stats():
    m = _trained_stats_model()
    with torch.no_grad():
        m.bn_c_l0.weight.fill_(0.7)
    params = {k: v.clone() for k, v in m.named_parameters()}
    assert any(not torch.all(bn.running_mean == 0) for bn in m.norm_layers())
    m.reset_running_stats()
    for k, v in m.named_parameters():
        assert torch.equal(v, params[k]), k
    for bn in m.norm_layers():
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
        assert torch.all(bn.num_batches_tracked == 0)
    m.reset_parameters()
    assert torch.all(m.bn_c_l0.weight == 0.1)
    assert torch.equal(m.weight_hh_l0[:H].double(), torch.eye(H, dtype=torch.float64))
    assert not torch.equal(m.weight_ih_l0, params["weight_ih_l0"])


# ------------------------------------------------------------------ dtypes and dropout
def test_float64_and_conversion():
    m = BNLSTM(I, H, num_layers=2, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    assert all(b.dtype == torch.float64 for b in m.buffers() if b.is_floating_point())
    out, (h, c) = m(_rand(T, B, I))
    assert out.dtype == h.dtype == c.dtype == torch.float64
    m2 = BNLSTM(I, H).double()
    m2.eval()
    assert m2(_rand(T, B, I))[0].dtype == torch.float64
    m2.float().train()
    assert m2(_rand(T, B, I, dtype=torch.float32))[0].dtype == torch.float32


@pytest.mark.parametrize("norm", ["none", "full"])
def test_multilayer_dropout_in_training_only(norm):
    kw = dict(num_layers=3, norm=norm, max_length=10, dtype=torch.float64)
    m = BNLSTM(I, H, dropout=0.5, **kw)
    m0 = BNLSTM(I, H, dropout=0.0, **kw)
    m0.load_state_dict(m.state_dict())
    x = _rand(T, B, I)
    m.train()
    m0.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = m(x)
        torch.manual_seed(1)
        a2 = m(x)
        b = m(x)
        ref = m0(x)
        layer0 = BNLSTM(I, H, norm=norm, max_length=10, dtype=torch.float64)
        layer0.load_state_dict({k: v for k, v in m.state_dict().items()
                                if k.endswith("_l0") or "_l0." in k})
        l0 = layer0(x)
    torch.testing.assert_close(a[0], a2[0], atol=0, rtol=0)       # same seed, same mask
    assert (a[0] - b[0]).abs().max() > 1e-3                        # new mask
    assert (a[0] - ref[0]).abs().max() > 1e-3                      # dropout is applied
    # no dropout on the last layer's output: its last step is h_n of the last layer
    torch.testing.assert_close(a[0][-1], a[1][0][-1], atol=0, rtol=0)
    # no dropout on the first layer's own state (dropout acts between layers only)
    torch.testing.assert_close(a[1][0][0], l0[1][0][0], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(a[1][1][0], l0[1][1][0], atol=1e-12, rtol=1e-10)
    m.eval()
    m0.load_state_dict(m.state_dict())            # the same population statistics
    m0.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], m0(x)[0], atol=1e-12, rtol=1e-10)
        assert torch.equal(m(x)[0], m(x)[0])


# ------------------------------------------------------------------ a tiny task
def test_learns_a_tiny_sequence_task():
    """Sign of the sum of the first 3 of 20 random +-1 values, read from the last state."""
    torch.manual_seed(0)
    Tn, Hn = 20, 16
    lstm = BNLSTM(1, Hn, batch_first=True, max_length=Tn)
    head = nn.Linear(Hn, 2)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-2)
    g = torch.Generator().manual_seed(1)

    def batch(n):
        x = torch.randint(0, 2, (n, Tn, 1), generator=g).float() * 2 - 1
        return x, (x[:, :3, 0].sum(1) > 0).long()

    for _ in range(150):
        x, y = batch(64)
        loss = nn.functional.cross_entropy(head(lstm(x)[0][:, -1]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(2000)
    lstm.train()
    with torch.no_grad():
        reestimate_stats(lstm, [batch(256)[0] for _ in range(4)])
        lstm.eval()
        acc = (head(lstm(x)[0][:, -1]).argmax(1) == y).float().mean().item()
    assert acc > 0.9, acc


def test_eval_uses_the_longest_trained_step_not_untrained_rows():
    """The T_max rule: rows training never reached (max_length > training length) are not used."""
    torch.manual_seed(0)
    m = BNLSTM(1, 8, max_length=784)
    reestimate_stats(m, [torch.rand(50, 16, 1) for _ in range(3)])
    for bn in m.norm_layers():
        assert bn.t_max == 50
    m.eval()
    x = torch.rand(120, 4, 1)
    out, _ = m(x)
    # the same model with max_length equal to the training length: the rule must agree
    short = BNLSTM(1, 8, max_length=50)
    sd = {k: (v[:50] if v.dim() and v.shape[0] == 784 else v) for k, v in m.state_dict().items()}
    short.load_state_dict(sd)
    short.eval()
    ref, _ = short(x)
    assert torch.allclose(out, ref, atol=1e-6)
    with torch.no_grad():                     # traced (reference) path agrees too
        traced, _ = m(x, trace=Trace(keep_h=False))
    assert torch.allclose(traced, ref, atol=1e-6)
    m.reset_running_stats()                   # nothing tracked: every row counts
    assert all(bn.t_max == 784 for bn in m.norm_layers())


# ------------------------------------------------------------------ BNTanhRNN (Figure 1a)
def _manual_tanh_rnn(model, x, h0=None):
    """BNTanhRNN's four norms written out from scratch (training mode, per-step batch stats):

        sum:   h_t = tanh(gamma * std(W_h h + W_x x) + b)
        full:  h_t = tanh(gamma_h * std(W_h h) + gamma_x * std(W_x x) + b)
        input: h_t = tanh(W_h h + gamma_x * std(W_x x) + b)
        none:  h_t = tanh(W_h h + W_x x + b)
    where std(v) = (v - mean_batch(v)) / sqrt(var_batch(v) + eps), biased variance.
    """
    def std(v, eps):
        return (v - v.mean(0)) / torch.sqrt(v.var(0, unbiased=False) + eps)

    h = x.new_zeros(x.shape[1], model.hidden_size) if h0 is None else h0
    out = []
    for t in range(x.shape[0]):
        wx, wh = x[t] @ model.weight_ih_l0.t(), h @ model.weight_hh_l0.t()
        if model.norm == "sum":
            pre = model.bn_l0.weight * std(wh + wx, model.eps)
        else:
            if model.norm in ("input", "full"):
                wx = model.bn_ih_l0.weight * std(wx, model.eps)
            if model.norm == "full":
                wh = model.bn_hh_l0.weight * std(wh, model.eps)
            pre = wh + wx
        h = torch.tanh(pre + model.bias_l0)
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("norm", bnlstm.nn.TANH_NORMS)
def test_tanh_rnn_matches_its_equations(norm):
    """Output and every gradient (float64) against the written-out reference, with random
    gammas and biases so that no term hides behind its initial value."""
    m = bnlstm.BNTanhRNN(I, H, norm=norm, init="orthogonal", max_length=T, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = _rand(T, B, I)
    out, h_n = m(x)
    ref = _manual_tanh_rnn(m, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h_n[0], ref[-1], rtol=1e-10, atol=1e-12)
    w = _rand(T, B, H, seed=7)
    ga = torch.autograd.grad((out * w).sum(), list(m.parameters()))
    gb = torch.autograd.grad((ref * w).sum(), list(m.parameters()))
    for name, a, b in zip([n for n, _ in m.named_parameters()], ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
    # the running statistics of the summed term are what nn.BatchNorm1d would keep
    if norm == "sum":
        with torch.no_grad():
            h, mean0 = torch.zeros(B, H, dtype=torch.float64), None
            pre0 = x[0] @ m.weight_ih_l0.t() + h @ m.weight_hh_l0.t()
            mean0 = pre0.mean(0)
        torch.testing.assert_close(m.bn_l0.running_mean[0], 0.1 * mean0, rtol=1e-10, atol=1e-12)


def test_tanh_rnn_sum_differs_from_separate_norms():
    x = _rand(T, B, I)
    torch.manual_seed(0)
    a, _ = bnlstm.BNTanhRNN(I, H, norm="sum", max_length=T, dtype=torch.float64)(x)
    torch.manual_seed(0)
    b, _ = bnlstm.BNTanhRNN(I, H, norm="full", max_length=T, dtype=torch.float64)(x)
    assert not torch.allclose(a, b, atol=1e-3)


def test_tanh_rnn_inits_and_names():
    m = bnlstm.BNTanhRNN(I, H)
    assert m.norm == "sum" and m.init == "paper"
    assert torch.equal(m.weight_hh_l0.detach(), torch.eye(H))                 # paper: W_h = I
    w = m.weight_ih_l0.detach()                                              # (H, I), orthogonal
    torch.testing.assert_close(w.t() @ w, torch.eye(I), atol=1e-5, rtol=0)
    assert torch.equal(m.bias_l0.detach(), torch.zeros(H))
    assert {n for n, _ in m.named_modules() if n} == {"bn_l0"}
    o = bnlstm.BNTanhRNN(I, H, init="orthogonal", norm="full").weight_hh_l0.detach()
    assert not torch.allclose(o, torch.eye(H))
    torch.testing.assert_close(o @ o.t(), torch.eye(H), atol=1e-5, rtol=0)
    assert torch.equal(bnlstm.BNTanhRNN(I, H, init="authors").weight_hh_l0.detach(), torch.eye(H))
    assert bnlstm.BNTanhRNN(I, H, init="pytorch").weight_hh_l0.abs().max() <= 1 / math.sqrt(H)
    assert "norm='full'" in repr(bnlstm.BNTanhRNN(I, H, norm="full"))
    for kw in (dict(norm="bogus"), dict(init="bogus"), dict(gamma_init=0.0), dict(h0_noise=-1.0)):
        with pytest.raises(ValueError):
            bnlstm.BNTanhRNN(I, H, **kw)
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(T, B, I + 1))


def test_grad_norms_per_example_is_the_batch_mean_of_example_norms():
    m = BNLSTM(I, H, max_length=T, dtype=torch.float64)
    tr = Trace()
    out, _ = m(_rand(T, B, I), trace=tr)
    (out[-1] * _rand(B, H, seed=3)).sum().backward()
    hs = tr.layers[0]["h"]
    want = torch.stack([h.grad.norm(dim=1).mean() for h in hs])
    torch.testing.assert_close(tr.grad_norms(0, per_example=True), want)
    torch.testing.assert_close(tr.grad_norms(0), torch.stack([h.grad.norm() for h in hs]))
    assert not torch.allclose(tr.grad_norms(0), want)


def test_batch_statistics_normalizes_by_the_batch_and_leaves_the_population_alone():
    from bnlstm.nn import batch_statistics
    torch.manual_seed(0)
    m = bnlstm.BNLSTM(3, 5, batch_first=True, max_length=4, h0_noise=0.3).double()
    for _ in range(3):
        m(torch.randn(6, 4, 3, dtype=torch.float64))
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(6, 7, 3, dtype=torch.float64)
    with torch.no_grad(), batch_statistics(m):
        assert m.training and m.h0_noise == 0.0
        out = m(x)[0]
    assert not m.training and m.h0_noise == 0.3
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    ref = copy.deepcopy(m)
    for bn in ref.norm_layers():
        bn.momentum = 0.0
    ref.h0_noise = 0.0
    ref.train()
    with torch.no_grad():
        assert torch.allclose(out, ref(x)[0], atol=1e-12)
        assert not torch.allclose(out, m(x)[0])              # eval mode: the population's
