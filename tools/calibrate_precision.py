"""Measure the low-precision rule of compare/check/tolerances.py (LOW_FACTOR, LOW_FLOOR) on right
hand-written backwards: for each seed and shape, in bfloat16 and float16, the error of the
hand-written gradient against the float64 truth, autograd's, their ratio and the share of the
bound it uses; prints the worst per dtype and function.

    PYTHONPATH=. python tools/calibrate_precision.py [seeds]      # 100 by default, ~1 minute
"""
import sys, torch, numpy as np, math
sys.path.insert(0, "tests")
from helpers import load_example
from compare.check import precision, tolerances
from compare.check.tensors import TensorFunctionSubject
from compare.check.witnesses import analytic
from compare.check.engine import draws
sce = load_example("softmax_ce_fused")
attn = load_example("attention_bf16")
def sp(x): return torch.nn.functional.softplus(x)
def sp_vjp(g, x): return g * torch.sigmoid(x)
def ln(x): return torch.nn.functional.layer_norm(x, x.shape[-1:])
def ln_vjp(g, x):
    a = x.to(torch.promote_types(x.dtype, torch.float32)); ga = g.to(a.dtype)
    mu = a.mean(-1, keepdim=True); s = (a.var(-1, unbiased=False, keepdim=True) + 1e-5).rsqrt(); xh = (a - mu) * s
    return (s * (ga - ga.mean(-1, keepdim=True) - xh * (ga * xh).mean(-1, keepdim=True))).to(x.dtype)
def mm(a, b): return a @ b
def mm_vjp(g, a, b): return g @ b.T, a.T @ g
def gelu(x): return torch.nn.functional.gelu(x)
def gelu_vjp(g, x):
    a = x.to(torch.promote_types(x.dtype, torch.float32))
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2))); pdf = torch.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    return (g.to(a.dtype) * (cdf + a * pdf)).to(x.dtype)
cases = []
worst, ratio = {}, {}


def factor_decides(t, fl):
    return tolerances.LOW_FACTOR * t > fl


n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
for dt in (torch.bfloat16, torch.float16):
    for seed in range(n):
        gen = torch.Generator().manual_seed(seed)
        B, C = 2 + seed % 30, 2 + (seed * 7) % 40
        subs = [("sce", TensorFunctionSubject(sce.SoftmaxCrossEntropy, None, sce.reference, list(sce.inputs(dt, B, C, seed)))),
                ("softplus", TensorFunctionSubject(sp, sp_vjp, sp, [(3 * torch.randn(B, C, generator=gen)).to(dt)])),
                ("layernorm", TensorFunctionSubject(ln, ln_vjp, ln, [(2 * torch.randn(B, C, generator=gen) + 1).to(dt)])),
                ("matmul", TensorFunctionSubject(mm, mm_vjp, mm, [torch.randn(B, C, generator=gen).to(dt), torch.randn(C, 5 + seed % 9, generator=gen).to(dt)])),
                ("gelu", TensorFunctionSubject(gelu, gelu_vjp, gelu, [(3 * torch.randn(B, C, generator=gen)).to(dt)])),
                ("attention", TensorFunctionSubject(attn.attention, attn.attention_vjp, attn.reference,
                                                    list(attn.inputs(dt, 1 + seed % 2, 2 + seed % 9, 4 + seed % 13, seed))))]
        for name, s in subs:
            first = s.forward(False)
            rng = draws(seed)
            gs = [s.rounded(i, np.asarray(rng.standard_normal(y.shape))) for i, y in enumerate(first)]
            runs = analytic(s, gs)
            for lab in runs["manual"].grads:
                ours, theirs = precision.errors(runs, lab, lambda r: r.grads)
                fl = tolerances.LOW_FLOOR * precision.unit_roundoff(str(dt)[6:])
                for m, o, t in (("rel", ours.rel_err, theirs.rel_err), ("elem", ours.elem_rel, theirs.elem_rel)):
                    share = o / max(tolerances.LOW_FACTOR * t, fl)  # share of the bound used
                    r = o / max(t, 1e-300)
                    k = (str(dt)[6:], name)
                    if share > worst.get(k, (0,))[0]: worst[k] = (share, r, m, seed, lab, o, t)
                    if factor_decides(t, fl) and r > ratio.get(k, (0,))[0]:  # where the factor, not the floor, bounds
                        ratio[k] = (r, m, seed, lab, o, t)
for k, v in sorted(worst.items()): print(k, "share %.3f ratio %.2f %s seed %d %s ours %.2g autograd %.2g" % v)
for k, v in sorted(ratio.items()): print(k, "worst ratio where the factor decides %.2f %s seed %d %s ours %.2g autograd %.2g" % v)
