#!/usr/bin/python3
"""Self-test for tests/torch_ref.py (the PyTorch parity reference).

    /usr/bin/python3 tests/torch_ref_selftest.py

1. safetensors reader/writer: round trip (F32, F64, I32, BF16) and a hand-built file.
2. layer-kind rule (decoder_sparse_step / mlp_only_layers).
3. the attention and MoE blocks against slow, separately written loop versions
   (RoPE as pairwise rotations, routing per token), also with the Qwen2-MoE switches
   (q/k/v biases, sigmoid-gated shared expert) and the OLMoE ones (q/k norm over the whole
   projection, clip_qkv after the norm).
4. autograd vs central finite differences in float64 for random entries of every
   trainable tensor (embeddings, attention, q/k norms, layer norms, dense FFN,
   router, experts, final norm, lm_head) with the balance and z losses on, and a
   check that the balancing bias has zero effect on the loss (selection only).
   The config is chosen so top-K routing does not change under the perturbations.
5. a fake trainer DIR built from the reference's own outputs: torch_ref.py must pass
   on it, FAIL when one gradient is scaled by 1.01 or one step loss by 1+1e-3, and
   exit 2 when a file is missing.
Exit status 0 when everything holds.
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
import torch_ref as R  # noqa: E402

FAILS = []
PASSES = [0]


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)
    else:
        PASSES[0] += 1


def tiny_config(**over):
    """Dense and MoE layers interleaved (MoE at 1 and 3), qk_norm, GQA 4:2, untied."""
    d = {
        "vocab_size": 23, "hidden_size": 16, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "intermediate_size": 20, "num_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 12, "decoder_sparse_step": 2, "mlp_only_layers": [],
        "norm_topk_prob": True, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False, "upcycle_qk_norm": True,
    }
    d.update(over)
    return d


def random_params(cfg, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    P = {}
    for n, (shape, _) in R.param_shapes(cfg).items():
        if n.endswith("e_score_correction_bias"):
            t = 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif len(shape) == 1:  # norm weights: around 1
            t = 1.0 + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            t = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(shape[1]) * 1.5
        P[n] = t.to(dtype)
    return P


# ----------------------------------------------------------------------------- 1
def test_safetensors(tmp):
    path = os.path.join(tmp, "rt.safetensors")
    a = torch.randn(3, 5)
    b = torch.arange(24, dtype=torch.int32).reshape(2, 3, 4)
    c = torch.randn(7, dtype=torch.float64)
    d = torch.tensor([1.0, -2.5, 3.140625, 1e-3, 65504.0])
    R.save_safetensors(path, {"a": a, "b": b, "c": c, "d": (d, "BF16")}, {"format": "pt"})
    got, meta = R.load_safetensors(path)
    check(torch.equal(got["a"], a) and torch.equal(got["b"], b) and torch.equal(got["c"], c)
          and got["b"].dtype == torch.int32 and meta == {"format": "pt"},
          "safetensors round trip F32/I32/F64 + metadata")
    # bf16 keeps 8 significant bits: exact for values representable, rel 2^-8 otherwise
    check(got["d"].dtype == torch.float32 and got["d"][:3].tolist() == [1.0, -2.5, 3.140625]
          and torch.allclose(got["d"], d, rtol=2 ** -8, atol=0),
          "safetensors BF16 -> float32 widening")
    # Hand-built file: data stored in reverse order, unpadded header, 0-d tensor.
    x = np.array([[1.5, -2.0]], dtype="<f4")
    y = np.array([7, -8, 9], dtype="<i4")
    z = np.array(0.25, dtype="<f4")
    data = z.tobytes() + y.tobytes() + x.tobytes()
    hdr = json.dumps({"x": {"dtype": "F32", "shape": [1, 2], "data_offsets": [16, 24]},
                      "y": {"dtype": "I32", "shape": [3], "data_offsets": [4, 16]},
                      "z": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + data)
    got, _ = R.load_safetensors(path)
    check(got["x"].tolist() == [[1.5, -2.0]] and got["y"].tolist() == [7, -8, 9]
          and got["z"].shape == () and got["z"].item() == 0.25,
          "safetensors reader on a hand-built file (offsets relative to data buffer)")


# ----------------------------------------------------------------------------- 2
def test_layer_rule():
    C = lambda **o: R.Config(tiny_config(**o))  # noqa: E731
    check(C().moe_layers() == [1, 3], "MoE layers with decoder_sparse_step=2: [1, 3]")
    check(C(decoder_sparse_step=1, mlp_only_layers=[0, 2]).moe_layers() == [1, 3],
          "MoE layers with mlp_only_layers=[0,2]: [1, 3]")
    check(C(decoder_sparse_step=1).moe_layers() == [0, 1, 2, 3], "all-MoE with step 1")
    check(C(num_experts=0).moe_layers() == [], "num_experts=0 -> dense model")


# ----------------------------------------------------------------------------- 3
def attention_loop(cfg, P, pre, x):
    """Per (batch, head, query) loop; RoPE as rotations of pairs (m, m + hd/2)."""
    B, T, _ = x.shape
    H, KV, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    half = hd // 2

    def norm(v, w):
        return v / torch.sqrt((v * v).mean() + cfg.rms_norm_eps) * w

    def heads(name, n, norm_name=None):
        """[b][t][head] -> vector: projection (+ bias), q/k norm (whole row or per head), clip"""
        y = x @ P[pre + name + "_proj.weight"].t()
        if cfg.attention_bias:
            y = y + P[pre + name + "_proj.bias"]
        out = [[None] * T for _ in range(B)]
        for b in range(B):
            for t in range(T):
                row = y[b, t]
                if norm_name and cfg.qk_norm and cfg.qk_norm_full:
                    row = norm(row, P[pre + norm_name])
                hs = [row[h * hd:(h + 1) * hd] for h in range(n)]
                if norm_name and cfg.qk_norm and not cfg.qk_norm_full:
                    hs = [norm(hv, P[pre + norm_name]) for hv in hs]
                if cfg.clip_qkv:
                    hs = [torch.clamp(hv, -cfg.clip_qkv, cfg.clip_qkv) for hv in hs]
                out[b][t] = hs
        return out

    def rot(v, pos):
        out = v.clone()
        for m in range(half):
            ang = pos / cfg.rope_theta ** (2 * m / hd)
            c, s = math.cos(ang), math.sin(ang)
            out[m] = v[m] * c - v[m + half] * s
            out[m + half] = v[m + half] * c + v[m] * s
        return out

    q, k, v = heads("q", H, "q_norm.weight"), heads("k", KV, "k_norm.weight"), heads("v", KV)
    out = torch.zeros(B, T, H * hd, dtype=x.dtype)
    for b in range(B):
        for j in range(H):
            kvh = j // (H // KV)
            ks = [rot(k[b][t][kvh], t) for t in range(T)]
            for t in range(T):
                qt = rot(q[b][t][j], t)
                sc = torch.stack([qt.dot(ks[u]) for u in range(t + 1)]) / math.sqrt(hd)
                p = torch.softmax(sc, 0)
                out[b, t, j * hd:(j + 1) * hd] = sum(p[u] * v[b][u][kvh] for u in range(t + 1))
    return out @ P[pre + "o_proj.weight"].t()


def moe_loop(cfg, P, i, x):
    """Per-token routing, written directly from the spec."""
    pre = f"model.layers.{i}.mlp."
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        probs = torch.softmax(P[pre + "gate.weight"] @ x[n], 0)
        score = probs + P[pre + "gate.e_score_correction_bias"]
        order = sorted(range(cfg.num_experts), key=lambda e: -score[e].item())[:cfg.num_experts_per_tok]
        w = probs[order]
        if cfg.norm_topk_prob:
            w = w / w.sum()
        for wk, e in zip(w, order):
            q = pre + f"experts.{e}."
            hid = torch.nn.functional.silu(P[q + "gate_proj.weight"] @ x[n]) * (P[q + "up_proj.weight"] @ x[n])
            out[n] += wk * (P[q + "down_proj.weight"] @ hid)
        if cfg.shared_expert_size:
            q = pre + "shared_expert."
            hid = torch.nn.functional.silu(P[q + "gate_proj.weight"] @ x[n]) * (P[q + "up_proj.weight"] @ x[n])
            gate = 1.0 / (1.0 + math.exp(-(P[pre + "shared_expert_gate.weight"][0] @ x[n]).item()))
            out[n] += gate * (P[q + "down_proj.weight"] @ hid)
    return out


def test_blocks():
    cfg = R.Config(tiny_config())
    P = random_params(cfg, 1, torch.float64)
    g = torch.Generator().manual_seed(2)
    B, T = 2, 6
    x = torch.randn(B, T, cfg.hidden_size, generator=g, dtype=torch.float64)
    cos, sin = R.rope_cos_sin(cfg, T, torch.float64)
    a = R.attention(cfg, P, "model.layers.1.self_attn.", x, cos, sin)
    b = attention_loop(cfg, P, "model.layers.1.self_attn.", x)
    check((a - b).abs().max().item() < 1e-12, f"attention (GQA, qk_norm, RoPE, causal) vs loop: "
          f"max diff {(a - b).abs().max().item():.2g}")
    xf = x.reshape(B * T, -1)
    m, _, _, sel = R.moe(cfg, P, 1, xf)
    ml = moe_loop(cfg, P, 1, xf)
    check((m - ml).abs().max().item() < 1e-12, f"MoE routing/combine vs per-token loop: "
          f"max diff {(m - ml).abs().max().item():.2g}")
    # the bias must change which experts are chosen for some token, or the test is weak
    P2 = dict(P)
    P2["model.layers.1.mlp.gate.e_score_correction_bias"] = torch.zeros(cfg.num_experts, dtype=torch.float64)
    _, _, _, sel0 = R.moe(cfg, P2, 1, xf)
    check(not torch.equal(sel.sort(-1).values, sel0.sort(-1).values),
          "balancing bias changes the selection for some tokens")
    cfg2 = R.Config(tiny_config(norm_topk_prob=False))
    m2, _, _, _ = R.moe(cfg2, P, 1, xf)
    check((m2 - moe_loop(cfg2, P, 1, xf)).abs().max().item() < 1e-12,
          "MoE vs loop with norm_topk_prob=false")
    # the Hugging Face families' switches
    families = {
        "Qwen2-MoE (q/k/v biases, no q/k norm, shared expert)":
            dict(upcycle_attention_bias=True, upcycle_qk_norm=False, upcycle_shared_expert_size=10,
                 norm_topk_prob=False),
        "OLMoE (q/k norm over the projection, clip_qkv 0.6)":
            dict(upcycle_qk_norm_full=True, upcycle_clip_qkv=0.6, norm_topk_prob=False),
    }
    for what, over in families.items():
        cf = R.Config(tiny_config(**over))
        Pf = random_params(cf, 3, torch.float64)
        a = R.attention(cf, Pf, "model.layers.1.self_attn.", x, cos, sin)
        b = attention_loop(cf, Pf, "model.layers.1.self_attn.", x)
        check((a - b).abs().max().item() < 1e-12, f"attention vs loop, {what}: max diff {(a - b).abs().max().item():.2g}")
        mf, _, _, _ = R.moe(cf, Pf, 1, xf)
        mlf = moe_loop(cf, Pf, 1, xf)
        check((mf - mlf).abs().max().item() < 1e-12, f"MoE vs loop, {what}: max diff {(mf - mlf).abs().max().item():.2g}")
    # clip_qkv must bite in that config, or the check above is weak
    cf = R.Config(tiny_config(**families["OLMoE (q/k norm over the projection, clip_qkv 0.6)"]))
    Pf = random_params(cf, 3, torch.float64)
    pre = "model.layers.1.self_attn."
    qn = R.rms_norm(x @ Pf[pre + "q_proj.weight"].t(), Pf[pre + "q_norm.weight"], cf.rms_norm_eps)
    frac = (qn.abs() > cf.clip_qkv).double().mean().item()
    check(0 < frac < 1, f"clip_qkv 0.6 clamps part of the normed q ({100 * frac:.0f}%)")


# ----------------------------------------------------------------------------- 4
def test_finite_differences():
    cfg = R.Config(tiny_config())
    P = random_params(cfg, 6, torch.float64)  # seed picked so every expert gets tokens
    g = torch.Generator().manual_seed(4)
    B, T = 2, 12
    tok = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g)
    inp, tgt = tok[:, :-1], tok[:, 1:]
    aux, zc = 0.05, 0.01
    shapes = R.param_shapes(cfg)

    def loss_and_sel(Q):
        o = R.forward(cfg, Q, inp, tgt, aux, zc)
        return o, {i: s.sort(-1).values for i, s in o.selected.items()}

    Pg = {n: t.clone().requires_grad_(shapes[n][1]) for n, t in P.items()}
    out, sel0 = loss_and_sel(Pg)
    out.loss.backward()

    every_expert_used = all(bool((c > 0).all()) for c in out.loads.values())
    check(every_expert_used, f"every expert receives tokens (loads {[c.tolist() for c in out.loads.values()]})")

    h, worst, count, unstable = 1e-6, 0.0, 0, 0
    for n, (shape, trainable) in shapes.items():
        if not trainable:
            continue
        numel = int(np.prod(shape))
        for idx in torch.randperm(numel, generator=g)[:3].tolist():
            vals = []
            for sgn in (+1, -1):
                Q = dict(P)
                t = P[n].clone().view(-1)
                t[idx] += sgn * h
                Q[n] = t.view(shape)
                with torch.no_grad():
                    o, sel = loss_and_sel(Q)
                unstable += any(not torch.equal(sel[i], sel0[i]) for i in sel)
                vals.append(o.loss.item())
            fd = (vals[0] - vals[1]) / (2 * h)
            ag = Pg[n].grad.view(-1)[idx].item() if Pg[n].grad is not None else 0.0
            err = abs(fd - ag) / max(abs(ag), 1e-3)  # relative, absolute below |g| = 1e-3
            worst = max(worst, err)
            count += 1
            if err > 1e-5:
                print(f"     {n}[{idx}]: autograd {ag:.10g} fd {fd:.10g} rel {err:.2g}")
    check(unstable == 0, "top-K selection unchanged under every perturbation")
    check(worst < 1e-5, f"autograd vs central FD (float64, h=1e-6, aux+z losses on): "
          f"{count} entries over {sum(1 for s in shapes.values() if s[1])} tensors, worst rel err {worst:.2g}")
    kinds = ["mlp.gate.weight", "experts.0.gate_proj", "experts.3.down_proj", "q_proj", "k_norm",
             "q_norm", "o_proj", "input_layernorm", "post_attention_layernorm", "mlp.up_proj",
             "embed_tokens", "lm_head", "model.norm"]
    check(all(any(k in n for n in shapes if shapes[n][1]) for k in kinds),
          "FD covered router, expert, attention, q/k norm, layer norms, dense FFN, embed, head")

    # the balancing bias affects selection only: tiny perturbations leave the loss unchanged
    bn = R.bias_name(1)
    with torch.no_grad():
        Q = dict(P)
        Q[bn] = P[bn] + 1e-7
        d = abs(R.forward(cfg, Q, inp, tgt, aux, zc).loss.item() - out.loss.item())
    check(d == 0.0, "e_score_correction_bias has no effect on the loss beyond selection")

    # tied embeddings: gradient of the shared matrix includes the head contribution
    cfgt = R.Config(tiny_config(tie_word_embeddings=True))
    Pt = {n: P[n].clone().requires_grad_(s[1]) for n, s in R.param_shapes(cfgt).items()}
    o = R.forward(cfgt, Pt, inp, tgt)
    o.loss.backward()
    n, idx = "model.embed_tokens.weight", 5 * cfg.hidden_size + 3
    vals = []
    for sgn in (+1, -1):
        Q = {k: v.detach() for k, v in Pt.items()}
        t = Q[n].clone().view(-1)
        t[idx] += sgn * h
        Q[n] = t.view(Q[n].shape)
        with torch.no_grad():
            vals.append(R.forward(cfgt, Q, inp, tgt).loss.item())
    fd, ag = (vals[0] - vals[1]) / (2 * h), Pt[n].grad.view(-1)[idx].item()
    check(abs(fd - ag) <= 1e-6 * abs(ag) + 1e-9, f"tied embeddings FD ({fd:.8g} vs {ag:.8g})")


# ----------------------------------------------------------------------------- 5
def write_fake_dir(d, cfgd, S=3, B=2, T=8, seed=5, dtype=torch.float32):
    """A DIR as the C trainer would write it, filled with the reference's own outputs
    (computed in dtype; float64 gives an independent-rounding 'ours' stored as float32)."""
    os.makedirs(d, exist_ok=True)
    cfg = R.Config(cfgd)
    P = random_params(cfg, seed, torch.float32).items()
    P = {n: t.to(dtype) for n, t in P}
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, cfg.vocab_size, (S, B, T + 1), generator=g, dtype=torch.int64)
    hp = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "grad_clip": 1.0,
          "bias_update_rate": 1e-3, "aux_loss_coef": 0.01, "z_loss_coef": 0.001}
    lrs = [3e-3 * (1 - s / S) for s in range(S)]
    shapes = R.param_shapes(cfg)
    Pg = {n: t.clone().requires_grad_(shapes[n][1]) for n, t in P.items()}
    out = R.forward(cfg, Pg, tokens[0, :, :-1], tokens[0, :, 1:], hp["aux_loss_coef"], hp["z_loss_coef"])
    out.loss.backward()
    ours = {"logits": out.logits.detach().float(), "loss": out.loss.detach().reshape(1).float()}
    for n, (_, tr) in shapes.items():
        if tr:
            g = Pg[n].grad
            ours["grad." + n] = (g if g is not None else torch.zeros_like(Pg[n])).float()
    losses, loads = R.train(cfg, P, tokens, lrs, hp, dtype)
    P = {n: t.float() for n, t in P.items()}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfgd, f, indent=1)
    R.save_safetensors(os.path.join(d, "model.safetensors"), P, {"format": "pt"})
    R.save_safetensors(os.path.join(d, "batch.safetensors"), {"tokens": tokens.int()})
    R.save_safetensors(os.path.join(d, "ours.safetensors"), ours)
    with open(os.path.join(d, "ours_steps.json"), "w") as f:
        json.dump({"losses": losses, "lrs": lrs, "train": hp,
                   "loads": [[sl[i] for i in cfg.moe_layers()] for sl in loads]}, f)
    return losses


def run_ref(d):
    p = subprocess.run([sys.executable, os.path.join(HERE, "torch_ref.py"), d],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    return p.returncode, p.stdout, p.stderr


def test_fake_dir(tmp):
    d = os.path.join(tmp, "dump")
    losses = write_fake_dir(d, tiny_config())
    check(losses[-1] != losses[0], f"fake DIR: training moves the loss ({losses[0]:.5f} -> {losses[-1]:.5f})")
    rc, out, err = run_ref(d)
    print("     | " + out.rstrip().replace("\n", "\n     | "))
    check(rc == 0 and out.rstrip().endswith("parity: 5 passed, 0 failed"),
          "torch_ref.py passes on its own outputs (exit 0)")

    # one gradient off by 1%
    ours, _ = R.load_safetensors(os.path.join(d, "ours.safetensors"))
    saved = {k: v.clone() for k, v in ours.items()}
    ours["grad.model.layers.1.mlp.experts.2.up_proj.weight"] *= 1.01
    R.save_safetensors(os.path.join(d, "ours.safetensors"), ours)
    rc, out, _ = run_ref(d)
    print("     | " + out.rstrip().replace("\n", "\n     | "))
    check(rc == 1 and "FAIL grads" in out and "experts.2.up_proj" in out
          and out.rstrip().endswith("parity: 4 passed, 1 failed"),
          "torch_ref.py FAILS when one gradient is scaled by 1.01 (exit 1)")
    R.save_safetensors(os.path.join(d, "ours.safetensors"), saved)

    # one training loss off by 1e-3 relative
    sp = os.path.join(d, "ours_steps.json")
    steps = json.load(open(sp))
    good = json.dumps(steps)
    steps["losses"][2] *= 1 + 1e-3
    json.dump(steps, open(sp, "w"))
    rc, out, _ = run_ref(d)
    check(rc == 1 and "FAIL train" in out, "torch_ref.py FAILS when step 2's loss is off by 1e-3")
    open(sp, "w").write(good)

    # one (token, expert) selection moved between two experts at a step: fails unless the
    # reference has near ties there (this fake DIR's routing has clear margins)
    steps = json.load(open(sp))
    loads = steps["loads"][1][0]
    a, b = max(range(len(loads)), key=lambda e: loads[e]), min(range(len(loads)), key=lambda e: loads[e])
    loads[a] -= 1
    loads[b] += 1
    json.dump(steps, open(sp, "w"))
    rc, out, _ = run_ref(d)
    check(rc == 1 and "FAIL loads" in out and "beyond their near ties" in out,
          "torch_ref.py FAILS when step 1's loads swap one selection away from a near tie")
    open(sp, "w").write(good)

    # malformed: missing file, wrong grad shape
    os.rename(os.path.join(d, "batch.safetensors"), os.path.join(d, "b.bak"))
    rc, out, err = run_ref(d)
    check(rc == 2 and "batch.safetensors" in err, f"missing batch file -> exit 2 ({err.strip()})")
    os.rename(os.path.join(d, "b.bak"), os.path.join(d, "batch.safetensors"))
    bad = dict(saved)
    bad["grad.model.norm.weight"] = bad["grad.model.norm.weight"][:-1]
    R.save_safetensors(os.path.join(d, "ours.safetensors"), bad)
    rc, out, err = run_ref(d)
    check(rc == 2 and "grad.model.norm.weight" in err, f"mis-shaped gradient -> exit 2 ({err.strip()})")
    R.save_safetensors(os.path.join(d, "ours.safetensors"), saved)
    rc, _, _ = run_ref(d)
    check(rc == 0, "restored DIR passes again")

    # 'ours' computed in float64 (rounding independent of the float32 reference): the
    # default tolerances must be met by a correct implementation with different rounding.
    d3 = os.path.join(tmp, "f64")
    write_fake_dir(d3, tiny_config(vocab_size=97, hidden_size=48, head_dim=16, num_experts=8,
                                   moe_intermediate_size=24, intermediate_size=64),
                   S=4, B=2, T=16, dtype=torch.float64)
    rc, out, _ = run_ref(d3)
    print("     | " + out.rstrip().replace("\n", "\n     | "))
    check(rc == 0, "float64-computed DIR passes the float32 reference at default tolerances")

    # dense-only, tied, no qk_norm, MHA variant also passes end to end
    d2 = os.path.join(tmp, "dense")
    write_fake_dir(d2, tiny_config(num_experts=0, tie_word_embeddings=True, upcycle_qk_norm=False,
                                   num_key_value_heads=4), S=2)
    steps = json.load(open(os.path.join(d2, "ours_steps.json")))
    steps.pop("loads")
    json.dump(steps, open(os.path.join(d2, "ours_steps.json"), "w"))
    rc, out, _ = run_ref(d2)
    check(rc == 0 and out.rstrip().endswith("parity: 4 passed, 0 failed"),
          "dense/tied/no-qk-norm/MHA DIR passes (no loads -> 4 checks)")


def main():
    torch.set_num_threads(min(4, torch.get_num_threads()))
    tmp = tempfile.mkdtemp(prefix="torch_ref_selftest.")
    try:
        test_safetensors(tmp)
        test_layer_rule()
        test_blocks()
        test_finite_differences()
        test_fake_dir(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"selftest: {'all passed' if not FAILS else f'{len(FAILS)} FAILED'}")
    print(f"selftest: {PASSES[0]} passed, {len(FAILS)} failed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
