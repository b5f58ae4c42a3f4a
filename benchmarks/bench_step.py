"""Training-step speed of bnlstm.BNLSTM against nn.LSTM and a naive BN-LSTM.

One training step = forward over the sequence, a linear head on the last h,
cross-entropy, backward, RMSprop step (batch 100, hidden 100, as the paper's
pixel MNIST runs). Variants are timed round-robin in one process (repeats
interleaved, medians reported), so that the ratios to nn.LSTM are measured under
the same machine load; absolute times on a shared machine drift.

    python benchmarks/bench_step.py            # full run (about 1.5-2 min on 2 cores)
    python benchmarks/bench_step.py --quick    # smoke run
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/bench_step.py
    python benchmarks/bench_step.py --device cuda

Sections: (1) median step time and ratio to nn.LSTM per T; (2) first-step
latency (a fresh model's first step: no compile step anywhere); (3) peak memory
of one training step at the longest T (see ``--help`` / the printed note for how
it is measured); (4) the cost of probes: a step with ``trace=Trace()`` every N
steps.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bnlstm.nn import fused  # noqa: E402
from bnlstm.nn import BNLSTM, Trace  # noqa: E402

B, H, N_CLASSES = 100, 100, 10


# ------------------------------------------------------------ the naive baseline
class NaiveBNLSTM(nn.Module):
    """The straightforward BN-LSTM: a Python loop over ``x[t]``, per-step BN with the
    batch mean / variance and per-step running buffers, autograd records every op."""

    def __init__(self, input_size, hidden_size, max_length=784, eps=1e-5, momentum=0.1):
        super().__init__()
        Hh = hidden_size
        self.hidden_size, self.eps, self.momentum = hidden_size, eps, momentum
        self.weight_ih = nn.Parameter(torch.empty(4 * Hh, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * Hh, Hh))
        self.bias = nn.Parameter(torch.zeros(4 * Hh))
        nn.init.orthogonal_(self.weight_ih)
        nn.init.orthogonal_(self.weight_hh)
        self.gamma_x = nn.Parameter(torch.full((4 * Hh,), 0.1))
        self.gamma_h = nn.Parameter(torch.full((4 * Hh,), 0.1))
        self.gamma_c = nn.Parameter(torch.full((Hh,), 0.1))
        self.beta_c = nn.Parameter(torch.zeros(Hh))
        for name, f in (("x", 4 * Hh), ("h", 4 * Hh), ("c", Hh)):
            self.register_buffer(f"rm_{name}", torch.zeros(max_length, f))
            self.register_buffer(f"rv_{name}", torch.ones(max_length, f))

    def bn(self, v, name, t, gamma, beta=None):
        mean = v.mean(0)
        var = ((v - mean) ** 2).mean(0)
        if self.training:
            with torch.no_grad():
                rm, rv = getattr(self, "rm_" + name), getattr(self, "rv_" + name)
                n = v.shape[0]
                rm[t].mul_(1 - self.momentum).add_(self.momentum * mean)
                rv[t].mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
        out = gamma * (v - mean) / torch.sqrt(var + self.eps)
        return out if beta is None else out + beta

    def forward(self, x):
        T, Bb, _ = x.shape
        h = x.new_zeros(Bb, self.hidden_size)
        c = x.new_zeros(Bb, self.hidden_size)
        outs = []
        for t in range(T):
            wx = self.bn(x[t] @ self.weight_ih.t(), "x", t, self.gamma_x)
            wh = self.bn(h @ self.weight_hh.t(), "h", t, self.gamma_h)
            i, f, g, o = (wx + wh + self.bias).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.bn(c, "c", t, self.gamma_c, self.beta_c))
            outs.append(h)
        return torch.stack(outs), (h, c)


# ------------------------------------------------------------------- variants
VARIANTS = ("nn.LSTM", "naive BN-LSTM", "BNLSTM none", "BNLSTM input", "BNLSTM full",
            "BNLSTM full (ref path)")


def make_model(variant, I, device):
    if variant == "nn.LSTM":
        return nn.LSTM(I, H)
    if variant == "naive BN-LSTM":
        return NaiveBNLSTM(I, H)
    norm = variant.split()[1]
    return BNLSTM(I, H, norm=norm)


class Runner:
    """A model, a head, an optimizer and one fixed batch; ``step()`` = one training step."""

    def __init__(self, variant, T, I, device, seed=0):
        torch.manual_seed(seed)
        self.variant = variant
        self.ref = variant.endswith("(ref path)")
        self.model = make_model(variant, I, device).to(device)
        self.head = nn.Linear(H, N_CLASSES).to(device)
        params = list(self.model.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.RMSprop(params, lr=1e-3)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(T, B, I, generator=g).to(device)
        self.y = torch.randint(0, N_CLASSES, (B,), generator=g).to(device)
        self.device = device

    def step(self, trace=None):
        if self.ref:
            with fused.disabled():
                return self._step(trace)
        return self._step(trace)

    def _step(self, trace=None):
        if trace is not None:
            out, _ = self.model(self.x, trace=trace)
        else:
            out, _ = self.model(self.x)
        loss = F.cross_entropy(self.head(out[-1]), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if trace is not None:
            trace.grad_norms(0)
        self.opt.step()
        return loss


def settle_tuner(runner, max_steps=100):
    """Steps ``runner`` (a BNLSTM variant) until its loop tuner has measured every
    thread mode; returns the tuner. Its call count stays 0 where the model never
    uses the loops (norm="none", one torch thread): nothing to wait for."""
    tuner = fused.workspace(runner.model).tuner
    for _ in range(max_steps):
        if tuner.calls == 0 or not tuner.summary()["measuring"]:
            break
        runner.step()
    return tuner


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- memory child
def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(variant, T, I, device):
    """Runs in a subprocess: peak memory of one training step after one warm-up step,
    above the process's memory before its first step (so buffers kept between steps,
    like BNLSTM's workspace, count)."""
    r = Runner(variant, T, I, device)
    base0 = _rss_kb("VmRSS") if not device.startswith("cuda") else None
    r.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        r.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM (peak RSS)
            f.write("5")
        r.step()
        peak = (_rss_kb("VmHWM") - base0) * 1024
    print(json.dumps({"peak_bytes": peak}))


def measure_memory(variant, T, I, device):
    env = dict(os.environ)
    if not device.startswith("cuda"):
        # glibc malloc with a fixed mmap threshold: every big tensor is mmapped and
        # unmapped when freed, so RSS follows the live tensors (tcmalloc would cache).
        env.pop("LD_PRELOAD", None)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", variant, str(T), str(I),
           "--device", device, "--threads", str(torch.get_num_threads()), "--loop-threads", fused.LOOP_THREADS]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        return None, res.stderr.strip().splitlines()[-1:]
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"], None


# ------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="smoke run: short sequences, 2 repeats")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--reps", type=int, default=None, help="timed repeats per variant (default by T)")
    ap.add_argument("--with-reference", action="store_true",
                    help="also time BNLSTM's own reference path at every T (slow at T=784)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--probe-every", type=int, default=50)
    ap.add_argument("--loop-threads", default="auto", choices=("auto",) + fused.LOOP_MODES,
                    help="bnlstm.nn.fused.LOOP_THREADS for the BNLSTM variants (default: auto)")
    ap.add_argument("--_memory-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fused.LOOP_THREADS = args.loop_threads
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    if args._memory_child:
        v, T, I = args._memory_child
        memory_child(v, int(T), int(I), device)
        return

    preload = os.environ.get("LD_PRELOAD", "")
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
          + f", {torch.get_num_threads()} threads, tcmalloc preloaded: {'tcmalloc' in preload}")
    load0 = os.getloadavg()
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in load0)
          + f" on {os.cpu_count()} CPUs")
    print(f"batch {B}, hidden {H}; step = forward + linear head on last h + cross-entropy + "
          "backward + RMSprop")
    configs = [(28, 28), (98, 1)] if args.quick else [(28, 28), (196, 1), (784, 1)]
    t_start = time.perf_counter()
    results, first, probe_info, tuned = {}, {}, {}, {}
    for T, I in configs:
        variants = list(VARIANTS)
        if not (args.with_reference or T <= 196):
            variants.remove("BNLSTM full (ref path)")
        reps = args.reps or (2 if args.quick else {28: 25, 196: 7}.get(T, 7))
        runners = {}
        for v in variants:                     # first-step latency of a fresh model
            runners[v] = Runner(v, T, I, device)
            first[(T, v)] = timed(runners[v].step, device)
        for v in variants:                     # one more warm-up each; BNLSTM's loop
            runners[v].step()                  # tuner measures its thread modes first
            if v.startswith("BNLSTM"):
                tuner = settle_tuner(runners[v])
                if tuner.calls > 1:
                    tuned[(T, v)] = tuner.best
        times = {v: [] for v in variants}
        for _ in range(reps):                  # round-robin
            for v in variants:
                times[v].append(timed(runners[v].step, device))
        results[T] = {v: statistics.median(ts) for v, ts in times.items()}
        # a probe step (trace: reference path + grad norms) of the BNLSTM full model
        r = runners["BNLSTM full"]
        # probe steps interleaved with plain steps (pairs), medians of each: a single
        # probe sample taken apart from the plain steps read load spikes as probe cost
        # (after one untimed probe step: the first one pays one-time costs, seconds with
        # 2 threads, which are no throughput cost of a run)
        first_probe = timed(lambda: r.step(trace=Trace()), device)
        tps, tfs = [], []
        for _ in range(1 if args.quick else (3 if T > 200 else 5)):
            tfs.append(timed(r.step, device))
            tps.append(timed(lambda: r.step(trace=Trace()), device))
        probe_info[T] = (statistics.median(tps), statistics.median(tfs), first_probe)
        del runners
        print(f"[T={T} timed in {time.perf_counter() - t_start:.0f} s]", file=sys.stderr, flush=True)

    print("\n## Training step, median ms (ratio to nn.LSTM)")
    header = f"{'variant':24s}" + "".join(f"{f'T={T} (I={I})':>22s}" for T, I in configs)
    print(header)
    for v in VARIANTS:
        row = f"{v:24s}"
        for T, _ in configs:
            if v in results[T]:
                ms, r = results[T][v] * 1e3, results[T][v] / results[T]["nn.LSTM"]
                row += f"{ms:13.1f} ({r:5.2f}x)"
            else:
                row += f"{'-':>22s}"
        print(row)

    if tuned:
        print("\nBNLSTM loop thread mode chosen by bnlstm.nn.fused.LoopTuner (after measuring each): "
              + ", ".join(f"T={T} {v.split()[1]}: {m}" for (T, v), m in tuned.items()
                          if "ref" not in v))
    print("\n## First step of a fresh model, ms (nothing is compiled: no compile wait)")
    print(header)
    for v in VARIANTS:
        row = f"{v:24s}"
        for T, _ in configs:
            row += f"{first[(T, v)] * 1e3:22.1f}" if (T, v) in first else f"{'-':>22s}"
        print(row)

    if not args.no_memory:
        T, I = configs[-1]
        print(f"\n## Peak memory of one training step at T={T}, MB (ratio to nn.LSTM)")
        if device.startswith("cuda"):
            print("measured: torch.cuda.max_memory_allocated() during the step minus memory "
                  "allocated before it, after a warm-up step, one subprocess per variant")
        else:
            print("measured: peak RSS (VmHWM, reset via /proc/self/clear_refs) during the second step "
                  "minus RSS before the first one, one subprocess per variant, glibc malloc "
                  "with MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave RSS at once; includes "
                  "all of the step's tensors (activations, gradients, optimizer temps) and buffers kept between steps")
        mem = {}
        for v in VARIANTS:
            if v == "BNLSTM full (ref path)" and not args.with_reference and T > 196:
                continue
            mem[v], err = measure_memory(v, T, I, device)
            if mem[v] is None:
                print(f"{v:24s} failed: {err}")
        base = mem.get("nn.LSTM")
        for v, b in mem.items():
            if b is not None:
                print(f"{v:24s} {b / 2**20:10.1f}" + (f"  ({b / base:4.2f}x)" if base else ""))

    print(f"\n## Probes: a step with trace=Trace() (reference path, grad norms) every "
          f"{args.probe_every} steps, BNLSTM full (medians of probe / plain step pairs, "
          "interleaved: 3 at T > 200, 5 below)")
    N = args.probe_every if not args.quick else min(args.probe_every, 10)
    for T, _ in configs:
        tp, tf, t1 = probe_info[T]
        overhead = (tp - tf) / (N * tf)
        print(f"T={T:4d}: probe step {tp * 1e3:9.1f} ms, plain step {tf * 1e3:8.1f} ms -> "
              f"estimated throughput cost {100 * overhead:5.1f}% (1 probe per {N} steps; "
              f"first probe step {t1 * 1e3:.0f} ms, untimed)")
    # a direct measurement on the shortest sequence: blocks of N steps, with and without a probe
    T, I = configs[0]
    r = Runner("BNLSTM full", T, I, device)
    r.step()
    settle_tuner(r)             # warm-up, until BNLSTM's loop tuner has measured its modes
    r.step(trace=Trace())       # one-time costs of the first probe step: not counted
    blocks = 2 if args.quick else 6
    tot = {True: 0.0, False: 0.0}
    for _ in range(blocks):
        for probe in (False, True):
            def block():
                for s in range(N):
                    r.step(trace=Trace() if probe and s == 0 else None)
            tot[probe] += timed(block, device)
    print(f"T={T:4d} measured over {blocks} x {N} steps each way: throughput with probes / without = "
          f"{tot[False] / tot[True]:.3f} (cost {100 * (tot[True] / tot[False] - 1):.1f}%)")
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")
    print("load average at start / end (1, 5, 15 min): "
          + ", ".join(f"{v:.2f}" for v in load0) + " / "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
