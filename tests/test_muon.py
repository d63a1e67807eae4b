"""Muon (train.optim.name: muon): one step against a float64 reference written out by hand,
bit-equal to torch.optim.Muon + torch.optim.AdamW, the parameter split, exact resume, refusals."""
import pytest
import torch
from torch import nn

from lmforge.config import ConfigError
from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer
from lmforge.stages.pretrain import build, run
from lmforge.train.muon import NS_COEFFICIENTS, MuonAdamW, newton_schulz
from lmforge.train.optim import OptimConfig, muon_groups

from conftest import crash_after_checkpoint
from test_trainer import cfg_for, losses   # the same tiny pretraining setup as the AdamW tests


class Toy(nn.Module):
    """The three kinds of parameter: an embedding, hidden matrices (tall and wide), a norm gain."""
    def __init__(self, dtype):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = nn.Parameter(torch.randn(11, 6, generator=g, dtype=dtype))
        self.layers = nn.ParameterList([nn.Parameter(torch.randn(6, 9, generator=g, dtype=dtype)),
                                        nn.Parameter(torch.randn(9, 6, generator=g, dtype=dtype))])
        self.norm = nn.Parameter(torch.ones(6, dtype=dtype))

    def loss(self, x):
        h = self.embed[x] * self.norm
        h = torch.tanh(h @ self.layers[0]) @ self.layers[1]
        return (h ** 2).mean() + h.sum() * 1e-2


def reference_steps(model: Toy, batches, lr, wd, betas, eps, momentum, ns_steps):
    """Muon and AdamW written out in float64 from their papers' formulas, independently of
    lmforge.train.muon: M <- mu M + (1-mu) G (lerp form), Nesterov G + mu (M - G), five quintic
    Newton-Schulz steps X <- aX + b(XX^T)X + c(XX^T)^2 X on the wide orientation, decoupled
    weight decay, the step scaled by 0.2 sqrt(max(A, B))."""
    a, b, c = NS_COEFFICIENTS
    params = dict(model.named_parameters())
    mbuf = {n: torch.zeros_like(p) for n, p in params.items()}
    m1 = {n: torch.zeros_like(p) for n, p in params.items()}
    m2 = {n: torch.zeros_like(p) for n, p in params.items()}
    for t, x in enumerate(batches, start=1):
        model.zero_grad()
        model.loss(x).backward()
        with torch.no_grad():
            for n, p in params.items():
                g = p.grad
                if n.startswith("layers."):
                    mbuf[n] = momentum * mbuf[n] + (1 - momentum) * g
                    u = g + momentum * (mbuf[n] - g)
                    X = u.T if u.shape[0] > u.shape[1] else u
                    X = X / X.norm()
                    for _ in range(ns_steps):
                        A = X @ X.T
                        X = a * X + (b * A + c * A @ A) @ X
                    X = X.T if u.shape[0] > u.shape[1] else X
                    p.mul_(1 - lr * wd)
                    p.sub_(lr * 0.2 * max(p.shape) ** 0.5 * X)
                else:
                    decay = wd if p.ndim >= 2 else 0.0
                    m1[n] = betas[0] * m1[n] + (1 - betas[0]) * g
                    m2[n] = betas[1] * m2[n] + (1 - betas[1]) * g * g
                    mhat, vhat = m1[n] / (1 - betas[0] ** t), m2[n] / (1 - betas[1] ** t)
                    p.mul_(1 - lr * decay)
                    p.sub_(lr * mhat / (vhat.sqrt() + eps))


def lmforge_groups(model, wd, momentum, ns_steps, ns_dtype):
    hidden = list(model.layers)
    return [{"params": hidden, "weight_decay": wd, "muon": True, "momentum": momentum, "nesterov": True,
             "ns_steps": ns_steps, "lr_scale": "match_rms_adamw", "lr_mult": 1.0, "ns_dtype": ns_dtype},
            {"params": [model.embed], "weight_decay": wd}, {"params": [model.norm], "weight_decay": 0.0}]


def batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 11, (4, 5), generator=g) for _ in range(n)]


def test_one_step_equals_a_float64_reference():
    lr, wd, betas, eps, mu = 0.02, 0.1, (0.9, 0.95), 1e-8, 0.95
    ref, ours = Toy(torch.float64), Toy(torch.float64)
    reference_steps(ref, batches(), lr, wd, betas, eps, mu, 5)
    opt = MuonAdamW(lmforge_groups(ours, wd, mu, 5, "float64"), lr=lr, betas=betas, eps=eps, foreach=False)
    for x in batches():
        opt.zero_grad()
        ours.loss(x).backward()
        opt.step()
    for (n, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert (p - q).abs().max().item() < 1e-12, n
    # and the step is not a no-op: the weights moved by far more than the tolerance
    assert (ours.layers[0] - Toy(torch.float64).layers[0]).abs().max() > 1e-3


def test_bit_equal_to_torch_muon_and_adamw_in_bfloat16():
    """With the reference dtype (bfloat16 Newton-Schulz) our one optimizer takes exactly the
    steps of torch.optim.Muon on the matrices and torch.optim.AdamW on the rest."""
    ours, theirs = Toy(torch.float32), Toy(torch.float32)
    opt = MuonAdamW(lmforge_groups(ours, 0.1, 0.95, 5, "bfloat16"), lr=0.01, betas=(0.9, 0.95), eps=1e-8)
    t_muon = torch.optim.Muon(list(theirs.layers), lr=0.01, weight_decay=0.1, momentum=0.95,
                              adjust_lr_fn="match_rms_adamw")
    t_adam = torch.optim.AdamW([{"params": [theirs.embed], "weight_decay": 0.1},
                                {"params": [theirs.norm], "weight_decay": 0.0}], lr=0.01, betas=(0.9, 0.95), eps=1e-8)
    for x in batches():
        for m, opts in ((ours, [opt]), (theirs, [t_muon, t_adam])):
            for o in opts:
                o.zero_grad()
            m.loss(x).backward()
            for o in opts:
                o.step()
    for (n, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(p, q), n


def test_newton_schulz_flattens_the_spectrum():
    """A matrix with singular values from 1e-2 to 1 comes out with all of them near 1
    (about [0.7, 1.2] for these coefficients): the update is orthogonalised. (Five steps lift
    a singular value of 1e-3 of the norm only to ~0.3: small directions stay damped.)"""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(48, 48, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(24, 24, generator=g, dtype=torch.float64))
    s = torch.logspace(-2, 0, 24, dtype=torch.float64)
    m = u[:, :24] @ torch.diag(s) @ v.T
    out = torch.linalg.svdvals(newton_schulz(m, 5, torch.float64))
    assert out.min() > 0.5 and out.max() < 1.3, out
    cond_in = torch.linalg.svdvals(m).max() / torch.linalg.svdvals(m).min()   # 100 (up to rounding)
    assert out.max() / out.min() < 2 and cond_in > 99


def test_hidden_matrices_on_muon_the_rest_on_adamw():
    model = Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32))
    groups = muon_groups(model, OptimConfig(name="muon"))
    names = {id(p): n for n, p in model.named_parameters()}
    on_muon = {names[id(p)] for p in groups[0]["params"]}
    assert groups[0]["muon"] and on_muon
    assert all(n.startswith("layers.") and n.endswith("proj.weight") for n in on_muon)
    assert {n for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("layers.")} == on_muon
    rest = {names[id(p)] for g in groups[1:] for p in g["params"]}
    assert "embed_tokens.weight" in rest and "lm_head.weight" in rest and "norm.weight" in rest
    assert len(on_muon) + len(rest) == len(list(model.parameters()))


def test_muon_trains_and_resumes_bit_identically(token_data, tmp_path):
    straight = tmp_path / "straight"
    summary = run(cfg_for(token_data, straight, "train.steps=8", "train.ckpt_every=4", "train.optim.name=muon"),
                  progress=False)
    a = losses(straight)
    assert a[-1] < a[0] - 0.25          # it learns (AdamW on the same 8 steps: 4.86 -> 4.50)
    split = tmp_path / "split"
    cfg = cfg_for(token_data, split, "train.steps=8", "train.ckpt_every=4", "train.optim.name=muon")
    assert isinstance(build(cfg, progress=False).optimizer, MuonAdamW)
    crash_after_checkpoint(build, cfg, 4, split)
    run(cfg, progress=False)
    assert losses(split) == a[4:]       # bit-identical after resume
    assert summary["step"] == 8


def test_switching_optimizer_on_resume_is_one_config_error(token_data, tmp_path):
    out = tmp_path / "run"
    cfg = cfg_for(token_data, out, "train.steps=4", "train.ckpt_every=2")
    crash_after_checkpoint(build, cfg, 2, out)
    with pytest.raises(ConfigError, match="train.optim.name: muon"):
        run(cfg_for(token_data, out, "train.steps=4", "train.ckpt_every=2", "train.optim.name=muon"), progress=False)


def test_unknown_optimizer_and_bad_muon_keys_refused(token_data, tmp_path):
    for bad, key in (("train.optim.name=sgd", "name"), ("train.optim.muon.lr_scale=spectral", "lr_scale"),
                     ("train.optim.muon.ns_dtype=half", "ns_dtype"), ("train.optim.muon.bogus=1", "bogus")):
        with pytest.raises(ConfigError, match=key):
            cfg_for(token_data, tmp_path / "x", bad)
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [nn.Parameter(torch.ones(3))], "muon": True}], lr=0.1)
