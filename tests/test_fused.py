"""The fast paths (bnlstm/nn/fused/) against the reference per-step loop.

Float64 throughout: outputs, gradients of every parameter, of the input and of
(h_0, c_0), running statistics and num_batches_tracked must agree. The fast path
folds the input BN and batches matmuls differently, so agreement is to rounding
(1e-10 here), not bitwise. Every comparison also checks which path each side took
(``fused.CALLS``), so that a fast path that silently fell back to the reference loop
fails here instead of comparing the reference with itself.
"""
import contextlib
import copy
import itertools

import pytest
import torch

from bnlstm.nn import fused
from bnlstm.nn.fused import folding, functions, threads
from bnlstm.nn import BNLSTM, Trace

ATOL = 1e-10
GRAD_TOL = 1e-8  # the goal is 1e-6; float64 gives far better


def _run(model, xs, hx, *, fast, seed=0, grad=True):
    """Runs ``model`` (in place) over the inputs ``xs`` in turn; returns outputs and grads."""
    results = []
    torch.manual_seed(seed)
    with _path(model, fast):
        for x in xs:
            x = x.clone().requires_grad_(grad)
            h = None
            if hx is not None:
                h = tuple(t.clone().requires_grad_(grad) for t in hx)
            model.zero_grad(set_to_none=True)
            out, (h_n, c_n) = model(x, h)
            r = {"out": out.detach().clone(), "h_n": h_n.detach().clone(), "c_n": c_n.detach().clone()}
            if grad:
                g = torch.Generator().manual_seed(123)
                w_out = torch.randn(out.shape, generator=g, dtype=out.dtype)
                w_h = torch.randn(h_n.shape, generator=g, dtype=out.dtype)
                w_c = torch.randn(c_n.shape, generator=g, dtype=out.dtype)
                loss = (out * w_out).sum() + (h_n * w_h).sum() + (c_n * w_c).sum()
                loss.backward()
                r["x.grad"] = x.grad.clone()
                if h is not None:
                    r["h0.grad"], r["c0.grad"] = h[0].grad.clone(), h[1].grad.clone()
                for name, p in model.named_parameters():
                    r["grad " + name] = p.grad.clone() if p.grad is not None else None
            results.append(r)
    return results


@contextlib.contextmanager
def _path(model, fast: bool):
    """Runs the block on the fast path (``fast``) or the reference loop, and checks that it
    did: the fast path the model's mode takes (``fused.CALLS``) answered, or none did."""
    before = dict(fused.CALLS)
    with (contextlib.nullcontext() if fast else fused.disabled()):
        yield
    grew = {k: fused.CALLS[k] - before.get(k, 0) for k in ("train", "eval", "lstm")}
    if fast:
        want = "lstm" if model.norm == "none" else ("train" if model.training else "eval")
        assert grew[want] > 0, f"the {want!r} fast path did not run: {grew}"
    else:
        assert not any(grew.values()), f"a fast path ran under fused.disabled(): {grew}"


def _compare(model_kwargs, shapes, *, hx=False, train=True, batch_first=False, input_size=1,
             grad=True, B=5):
    torch.manual_seed(0)
    H = model_kwargs.get("hidden_size", 4)
    kw = dict(model_kwargs)
    kw.setdefault("hidden_size", H)
    m = BNLSTM(input_size, batch_first=batch_first, dtype=torch.float64, **kw)
    with torch.no_grad():  # move off the init so every gate and gamma matters
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    m.train(train)
    xs = []
    for T in shapes:
        shape = (B, T, input_size) if batch_first else (T, B, input_size)
        xs.append(torch.randn(shape, dtype=torch.float64))
    L = m.num_layers
    h = (torch.randn(L, B, H, dtype=torch.float64), torch.randn(L, B, H, dtype=torch.float64)) if hx else None
    m_ref, m_fast = copy.deepcopy(m), copy.deepcopy(m)
    ref = _run(m_ref, xs, h, fast=False, grad=grad)
    got = _run(m_fast, xs, h, fast=True, grad=grad)
    for r, g in zip(ref, got):
        assert r.keys() == g.keys()
        for key in r:
            a, b = r[key], g[key]
            if a is None or b is None:
                assert a is None and b is None, key
                continue
            tol = GRAD_TOL if "grad" in key else ATOL
            torch.testing.assert_close(b, a, atol=tol, rtol=tol, msg=lambda s: f"{key}: {s}")
    bufs_ref = dict(m_ref.named_buffers())
    for name, b in m_fast.named_buffers():
        a = bufs_ref[name]
        if a.dtype == torch.long:
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(b, a, atol=ATOL, rtol=ATOL, msg=lambda s: f"{name}: {s}")
    return m_ref, m_fast


@pytest.mark.parametrize("norm,stats,momentum", list(itertools.product(
    ("none", "input", "full"), ("per_step", "shared"), (0.1, None))))
def test_train_grid(norm, stats, momentum):
    # sequences of different lengths, the last beyond max_length: per-row counts differ
    _compare(dict(norm=norm, stats=stats, momentum=momentum, max_length=6), (5, 3, 8))


@pytest.mark.parametrize("norm", ("none", "input", "full"))
@pytest.mark.parametrize("input_size", (1, 3))
def test_multilayer_dropout_hx_batch_first(norm, input_size):
    _compare(dict(norm=norm, num_layers=2, dropout=0.3, max_length=6), (4, 7), hx=True,
             batch_first=True, input_size=input_size)


@pytest.mark.parametrize("norm", ("input", "full"))
@pytest.mark.parametrize("stats", ("per_step", "shared"))
def test_eval_mode(norm, stats):
    m_ref, m_fast = _compare(dict(norm=norm, stats=stats, max_length=4), (3, 5), train=True)
    # now evaluate the trained statistics, including steps beyond max_length
    m = copy.deepcopy(m_ref)
    for p in m.modules():
        if hasattr(p, "running_var") and p.running_var is not None:
            with torch.no_grad():
                p.running_mean.add_(0.1 * torch.randn_like(p.running_mean))
                p.running_var.mul_(1.5)
    torch.manual_seed(1)
    x = torch.randn(7, 5, 1, dtype=torch.float64)
    m.eval()
    outs = {}
    for fast in (False, True):
        mm = copy.deepcopy(m)
        xx = x.clone().requires_grad_(True)
        with _path(mm, fast):
            out, (h_n, c_n) = mm(xx)
            (out.sum() + c_n.sum()).backward()
        outs[fast] = (out.detach(), h_n.detach(), c_n.detach(), xx.grad,
                      [p.grad for p in mm.parameters()])
    for a, b in zip(outs[False][:4], outs[True][:4]):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=ATOL)
    for a, b in zip(outs[False][4], outs[True][4]):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(b, a, atol=GRAD_TOL, rtol=GRAD_TOL)


@pytest.mark.parametrize("norm", ("input", "full"))
def test_input_size_many_and_hx(norm):
    _compare(dict(norm=norm, hidden_size=3), (6,), hx=True, input_size=5, B=4)


def test_no_bias_and_unbatched_eval():
    _compare(dict(norm="full", bias=False), (4,))
    m = BNLSTM(2, 3, dtype=torch.float64).eval()
    x = torch.randn(5, 2, dtype=torch.float64)
    with _path(m, fast=False):
        ref = m(x)
    with _path(m, fast=True):
        got = m(x)
    torch.testing.assert_close(got[0], ref[0], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(got[1][1], ref[1][1], atol=ATOL, rtol=ATOL)


def test_h0_noise_same_rng():
    _compare(dict(norm="full", h0_noise=0.1), (4,))


def test_no_grad_forward_updates_stats():
    _compare(dict(norm="full", momentum=None), (4, 2), grad=False)


def test_float32_close():
    torch.manual_seed(0)
    m = BNLSTM(1, 8, norm="full")
    x = torch.randn(20, 6, 1)
    m_ref, m_fast = copy.deepcopy(m), copy.deepcopy(m)
    with _path(m_ref, fast=False):
        a = m_ref(x)[0]
    with _path(m_fast, fast=True):
        b = m_fast(x)[0]
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    for (n, x1), x2 in zip(m_ref.named_buffers(), m_fast.buffers()):
        torch.testing.assert_close(x2, x1, atol=1e-5, rtol=1e-4, msg=n)


def test_trace_takes_reference_path(monkeypatch):
    m = BNLSTM(1, 4, dtype=torch.float64)
    called = []
    monkeypatch.setattr(fused, "layer_forward", lambda *a: called.append(1))
    tr = Trace()
    out, _ = m(torch.randn(3, 5, 1, dtype=torch.float64), trace=tr)
    out.sum().backward()
    assert not called
    assert len(tr.layers) == 1 and tr.grad_norms(0).shape == (3,)


def test_batch_of_one_still_raises():
    m = BNLSTM(1, 4)
    with pytest.raises(ValueError, match="at least 2"):
        m(torch.randn(3, 1, 1))


def test_backward_twice_with_retain_graph():
    torch.manual_seed(0)
    m = BNLSTM(1, 4, dtype=torch.float64)
    x = torch.randn(5, 3, 1, dtype=torch.float64)
    out, _ = m(x)
    loss = out.pow(2).sum()
    loss.backward(retain_graph=True)
    g1 = m.weight_hh_l0.grad.clone()
    loss.backward()
    torch.testing.assert_close(m.weight_hh_l0.grad, 2 * g1)


def test_gradcheck_fast_path():
    torch.manual_seed(0)
    m = BNLSTM(1, 3, norm="full", dtype=torch.float64, momentum=0.0)
    x = torch.randn(4, 4, 1, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)

    def f(x, h0, c0):
        out, (h, c) = m(x, (h0, c0))
        return out, c
    assert torch.autograd.gradcheck(f, (x, h0, c0))


# ----------------------------------------------------------------------- workspace
def _grads_ref_and_fast(steps, input_size=1, norm="full"):
    """``steps(model)`` runs forwards/backwards on a model; returns the parameter grads
    of the reference path and of the fast path (with its reused buffers)."""
    torch.manual_seed(0)
    m = BNLSTM(input_size, 4, norm=norm, dtype=torch.float64)
    res = []
    for fast in (False, True):
        mm = copy.deepcopy(m)
        with _path(mm, fast):
            steps(mm)
        res.append(({n: p.grad.clone() for n, p in mm.named_parameters() if p.grad is not None},
                    {n: b.clone() for n, b in mm.named_buffers()}, mm))
    return res


def _assert_same(res):
    (ga, ba, _), (gb, bb, _) = res
    assert ga.keys() == gb.keys() and len(ga) > 0
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], atol=GRAD_TOL, rtol=GRAD_TOL, msg=n)
    for n in ba:
        torch.testing.assert_close(bb[n].double(), ba[n].double(), atol=ATOL, rtol=ATOL, msg=n)


@pytest.mark.parametrize("input_size", (1, 3))
@pytest.mark.parametrize("norm", ("input", "full"))
def test_workspace_reused_across_steps(input_size, norm):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(6, 5, input_size, generator=g, dtype=torch.float64) for _ in range(3)]

    def steps(m):
        for x in xs:                      # three training steps, grads accumulate
            m(x)[0].pow(2).sum().backward()
    res = _grads_ref_and_fast(steps, input_size, norm)
    _assert_same(res)
    ws = fused.workspace(res[1][2])
    assert ws.nbytes() > 0
    # the same storage is lent again on the next step (no new allocation)
    before = {k: b.data_ptr() for k, (b, _) in ws._bufs.items()}
    res[1][2](xs[0])[0].sum().backward()
    assert {k: b.data_ptr() for k, (b, _) in ws._bufs.items()} == before


@pytest.mark.parametrize("input_size", (1, 3))
def test_workspace_two_forwards_before_backward(input_size):
    # the second forward must not reuse the buffers the first one saved for backward
    g = torch.Generator().manual_seed(2)
    x1, x2 = (torch.randn(5, 4, input_size, generator=g, dtype=torch.float64) for _ in range(2))

    def steps(m):
        m(x1)[0].sum().backward()         # fills the workspace
        o1, _ = m(x1)
        o2, _ = m(x2)
        (o1.pow(2).sum() + (o2 * 3).sin().sum()).backward()
    _assert_same(_grads_ref_and_fast(steps, input_size))


def test_workspace_retained_graph_not_overwritten():
    g = torch.Generator().manual_seed(3)
    x1, x2 = (torch.randn(5, 4, 1, generator=g, dtype=torch.float64) for _ in range(2))

    def steps(m):
        loss = m(x1)[0].pow(2).sum()
        loss.backward(retain_graph=True)
        m(x2)[0].sin().sum().backward()   # must not take the retained graph's buffers
        loss.backward()                   # second pass through the retained graph
    _assert_same(_grads_ref_and_fast(steps))


def test_workspace_not_copied_or_pickled():
    import io
    m = BNLSTM(1, 4, norm="full")
    m(torch.randn(5, 3, 1))[0].sum().backward()
    assert fused.workspace(m).nbytes() > 0
    assert fused.workspace(copy.deepcopy(m)).nbytes() == 0
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m2 = torch.load(buf, weights_only=False)
    assert fused.workspace(m2).nbytes() == 0
    m2(torch.randn(5, 3, 1))[0].sum().backward()      # and it works after loading
    fused.workspace(m).clear()
    assert fused.workspace(m).nbytes() == 0


# ------------------------------------------------------------------ loop threads
@pytest.fixture
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("mode", fused.LOOP_MODES)
def test_every_loop_mode_matches_reference(mode, two_threads, monkeypatch):
    monkeypatch.setattr(fused, "LOOP_THREADS", mode)
    seen = []
    real = functions.loop_threads

    def spy(m):
        seen.append(m)
        return real(m)
    monkeypatch.setattr(functions, "loop_threads", spy)
    _compare(dict(norm="full", max_length=6), (5, 8), input_size=1)
    _compare(dict(norm="input"), (4,), input_size=3)
    assert seen and set(seen) == {mode}
    assert torch.get_num_threads() == 2            # restored after every loop


def test_loop_threads_bad_value(monkeypatch, two_threads):
    monkeypatch.setattr(fused, "LOOP_THREADS", "fast")
    with pytest.raises(ValueError, match="LOOP_THREADS must be 'auto' or one of"):
        BNLSTM(1, 4)(torch.randn(3, 2, 1))


def test_loop_tuner_explores_then_keeps_the_fastest(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    tuner = fused.LoopTuner(modes=("threads", "mkl", "serial"), samples=2, min_seconds=0.005,
                            every=10, every_seconds=5.0)
    fake = {"threads": 3e-3, "mkl": 2e-3, "serial": 5e-3}   # seconds per call of 10 steps
    got = []
    for _ in range(12):
        mode, rec = tuner.mode()
        got.append((mode, rec))
        if rec:
            tuner.record(mode, fake[mode], 10)
    assert got[0] == ("mkl", False)                 # warm-up step, not measured
    measured = [m for m, r in got if r]
    # turns taken; each mode until 2 samples and 0.005 s: mkl needs a third sample
    assert measured[:6] == ["threads", "mkl", "serial"] * 2 and measured[6:] == ["mkl"]
    assert tuner.best == "mkl" and got[-1] == ("mkl", False)
    assert tuner.summary()["us_per_step"]["mkl"] == [200.0, 200.0, 200.0]
    # the load changes; after `every` steps it waits for `every_seconds` too
    fake = {"threads": 9e-3, "mkl": 8e-3, "serial": 1e-3}
    for _ in range(20):
        mode, rec = tuner.mode()
        assert (mode, rec) == ("mkl", False)
    clock[0] = 6.0
    for _ in range(20):
        mode, rec = tuner.mode()
        if rec:
            tuner.record(mode, fake[mode], 10)
    assert tuner.best == "serial" and not tuner.summary()["measuring"]


def test_loop_tuner_used_by_training(two_threads, monkeypatch):
    monkeypatch.setattr(fused, "LOOP_THREADS", "auto")
    m = BNLSTM(1, 4, norm="full")
    tuner = fused.workspace(m).tuner
    tuner.min_seconds = 0.0
    for _ in range(1 + tuner.samples * len(tuner.modes)):
        m(torch.randn(5, 3, 1))[0].sum().backward()
    s = tuner.summary()
    assert not s["measuring"], s
    assert all(len(v) == tuner.samples and all(x > 0 for x in v)
               for v in s["us_per_step"].values()), s
    assert s["best"] in fused.LoopTuner.available_modes()


@pytest.mark.parametrize("with_bias", (True, False))
def test_input_bn_function_gradcheck(with_bias):
    # the hand-written backward of the input term for input size > 1
    from bnlstm.nn import SequenceBatchNorm
    torch.manual_seed(0)
    T, B, I, H = 3, 5, 3, 2
    bn = SequenceBatchNorm(4 * H, max_length=T, dtype=torch.float64)
    sv = folding.gate_scale(torch.empty(4 * H, H, dtype=torch.float64))
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4 * H, I, dtype=torch.float64, requires_grad=True)
    gamma = (torch.rand(4 * H, dtype=torch.float64) + 0.1).requires_grad_()
    b = torch.randn(4 * H, dtype=torch.float64, requires_grad=True) if with_bias else None

    def f(x, w, gamma, *b):
        return functions.InputBN.apply(x, w, gamma, b[0] if b else None, sv, 1e-5, bn)
    args = (x, w, gamma) + ((b,) if with_bias else ())
    assert torch.autograd.gradcheck(f, args)
    # and without a gradient for x (the usual first layer): same weight gradients
    x2 = x.detach()
    g1 = torch.autograd.grad(f(x, w, gamma, *args[3:]).sin().sum(), (w, gamma))
    g2 = torch.autograd.grad(f(x2, w, gamma, *args[3:]).sin().sum(), (w, gamma))
    for a, c in zip(g1, g2):
        torch.testing.assert_close(c, a)


def test_double_backward_is_refused_on_the_fast_path_and_works_on_the_reference():
    torch.manual_seed(0)
    m = BNLSTM(3, 4, dtype=torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64)

    def penalty():
        out, _ = m(x)
        g, = torch.autograd.grad(out.pow(2).sum(), m.weight_hh_l0, create_graph=True)
        g.pow(2).sum().backward()
    with pytest.raises(RuntimeError, match="once_differentiable"):
        penalty()
    with fused.disabled():
        penalty()
    assert m.weight_hh_l0.grad is not None and torch.isfinite(m.weight_hh_l0.grad).all()


@pytest.mark.parametrize("norm", ("none", "input", "full"))
def test_learned_h0_fast_path_matches_reference(norm):
    """``learn_h0``: h0 and c0 are parameters; their gradients (through the batch's copies)
    agree on both paths, and they are the state an omitted ``hx`` starts from."""
    m_ref, m_fast = _compare(dict(norm=norm, num_layers=2, learn_h0=True, max_length=6), (5, 7),
                             input_size=2)
    assert m_ref.h0.grad is not None and float(m_ref.h0.grad.abs().sum()) > 0
    assert float(m_ref.c0.grad.abs().sum()) > 0
    x = torch.randn(6, 3, 2, dtype=torch.float64)
    m_ref.eval()
    given = (m_ref.h0[:, None].expand(2, 3, 4).detach(), m_ref.c0[:, None].expand(2, 3, 4).detach())
    with torch.no_grad():
        torch.testing.assert_close(m_ref(x)[0], m_ref(x, given)[0], atol=0, rtol=0)
        zeros = tuple(torch.zeros_like(t) for t in given)
        assert not torch.allclose(m_ref(x)[0], m_ref(x, zeros)[0])
