#!/usr/bin/python3
"""Independent PyTorch reference for the upcycle C trainer (Qwen3-MoE semantics, plus the
Qwen2-MoE and OLMoE switches: q/k/v biases, a sigmoid-gated shared expert, q/k norm over the
whole projection, clip_qkv; the order of operations of transformers' modeling_qwen2_moe.py and
modeling_olmoe.py).

Usage:
    /usr/bin/python3 tests/torch_ref.py DIR [--tol-logits X] [--tol-loss X]
                                            [--tol-grad X] [--tol-train X]

DIR is written by the C trainer and must contain:
    config.json         Hugging Face Qwen3-MoE config (+ "upcycle_qk_norm", and when set
                        "upcycle_attention_bias", "upcycle_shared_expert_size",
                        "upcycle_qk_norm_full", "upcycle_clip_qkv")
    model.safetensors   initial weights, HF names
    batch.safetensors   "tokens" int32 [S, B, T+1]; batch s = tokens[s]
    ours.safetensors    "logits" [B,T,V], "loss" [1] (batch 0, initial weights)
                        and "grad.<name>" for every trainable parameter
    ours_steps.json     {"losses": [S], "lrs": [S], "loads": optional,
                         "train": {beta1, beta2, eps, weight_decay, grad_clip,
                                   bias_update_rate, aux_loss_coef, z_loss_coef}}

Checks (one output line each, "ok <check> (worst rel err X)" or "FAIL <check> (...)"):
    logits  max|l_torch - l_ours| / max|l_torch|                    <= tol-logits (1e-4)
    loss    |L_torch - L_ours| / |L_torch|                           <= tol-loss   (1e-4)
    grads   per tensor ||g_torch - g_ours|| / max(||g_torch||, 1e-8) <= tol-grad   (1e-4)
    train   per step |L_torch - L_ours| / |L_torch| over S AdamW steps <= tol-train (1e-4)
    loads   (only if ours_steps.json has "loads") per-step expert loads, exact except for
            swaps at near ties (TIE_TOL)
The last line is "parity: N passed, M failed".
Exit status: 0 all passed, 1 some check failed, 2 DIR malformed (message on stderr).

Everything is plain fp32 torch on the CPU, written for clarity rather than speed.
The module is also imported by tests/torch_ref_selftest.py (model, safetensors I/O).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F


class Malformed(Exception):
    """DIR is missing something or something has the wrong shape/type (exit 2)."""


# =============================================================================
# safetensors I/O (no safetensors package on this machine)
#   [u64 LE header length N][N bytes JSON header][data buffer]
#   header: {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}
#   offsets are relative to the start of the data buffer.
# =============================================================================
_NP_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}


def load_safetensors(path):
    """Return ({name: torch.Tensor}, metadata dict). BF16 is widened to float32."""
    if not os.path.isfile(path):
        raise Malformed(f"missing file {path}")
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise Malformed(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise Malformed(f"{path}: header length {n} runs past end of file")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Malformed(f"{path}: bad JSON header: {e}")
    if not isinstance(header, dict):
        raise Malformed(f"{path}: header is not a JSON object")
    data = memoryview(blob)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise Malformed(f"{path}: tensor {name!r} has a bad header entry {info!r}")
        count = int(np.prod(shape)) if shape else 1
        itemsize = 2 if dtype == "BF16" else (np.dtype(_NP_DTYPES[dtype]).itemsize
                                               if dtype in _NP_DTYPES else None)
        if itemsize is None:
            raise Malformed(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        if not (0 <= begin <= end <= len(data)) or end - begin != count * itemsize:
            raise Malformed(f"{path}: tensor {name!r} data_offsets {begin},{end} do not fit "
                            f"shape {shape} x {dtype} in a {len(data)}-byte buffer")
        raw = data[begin:end]
        if dtype == "BF16":
            # bf16 is the top half of an fp32: shift into the high 16 bits.
            u16 = np.frombuffer(raw, dtype="<u2", count=count)
            arr = (u16.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_NP_DTYPES[dtype]).newbyteorder("<"),
                                count=count).astype(_NP_DTYPES[dtype])
        out[name] = torch.from_numpy(arr.copy().reshape(shape))
    return out, meta


def save_safetensors(path, tensors, metadata=None):
    """Write {name: tensor} (float32/float64/int32/int64 tensors, or (tensor, "BF16"))."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        want_bf16 = isinstance(t, tuple)
        if want_bf16:
            t = t[0]
        arr = t.detach().cpu().contiguous().numpy() if torch.is_tensor(t) else np.asarray(t)
        if want_bf16:  # round-to-nearest-even fp32 -> bf16
            u32 = arr.astype(np.float32).view(np.uint32).astype(np.uint64)
            u32 = (u32 + 0x7FFF + ((u32 >> 16) & 1)) >> 16
            raw, dtype = u32.astype("<u2").tobytes(), "BF16"
        else:
            dtype = {np.dtype(v): k for k, v in _NP_DTYPES.items()}[arr.dtype]
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # pad so the data buffer is 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)


# =============================================================================
# Config
# =============================================================================
class Config:
    """The Hugging Face Qwen3-MoE config keys the reference uses."""

    def __init__(self, d):
        def need(k):
            if k not in d:
                raise Malformed(f"config.json: missing key {k!r}")
            return d[k]

        family = d.get("model_type", "qwen3_moe")
        self.mixtral = family == "mixtral"
        d = dict(d)
        if "num_local_experts" in d and "num_experts" not in d:
            d["num_experts"] = d["num_local_experts"]
        if family in ("mixtral", "olmoe"):  # every layer MoE; intermediate_size is the experts' width
            d["moe_intermediate_size"] = d.get("intermediate_size", 0)
            d["decoder_sparse_step"], d["mlp_only_layers"] = 1, []
        if self.mixtral:  # top-K renormalized
            d["norm_topk_prob"] = True
        # each family's own switches, as its transformers code computes them (qwen3_moe configs
        # written before the family check say theirs with upcycle_* keys)
        if family in ("qwen2_moe", "mixtral"):
            d["upcycle_qk_norm"] = False
        if family == "qwen2_moe":
            d["upcycle_attention_bias"] = d.get("qkv_bias", True)
            d["upcycle_shared_expert_size"] = d.get("shared_expert_intermediate_size", 0)
        if family == "olmoe":
            d["upcycle_qk_norm"], d["upcycle_qk_norm_full"] = True, True
            d["upcycle_clip_qkv"] = d.get("clip_qkv") or 0
        if family == "qwen3":  # dense
            d["upcycle_qk_norm"], d["num_experts"] = True, 0
        try:
            self.vocab_size = int(need("vocab_size"))
            self.hidden_size = int(need("hidden_size"))
            self.num_hidden_layers = int(need("num_hidden_layers"))
            self.num_attention_heads = int(need("num_attention_heads"))
            self.num_key_value_heads = int(d.get("num_key_value_heads", self.num_attention_heads))
            self.head_dim = int(d.get("head_dim") or self.hidden_size // self.num_attention_heads)
            self.num_experts = int(d.get("num_experts", 0) or 0)
            self.num_experts_per_tok = int(d.get("num_experts_per_tok", 0) or 0)
            self.moe_intermediate_size = int(d.get("moe_intermediate_size", 0) or 0)
            self.decoder_sparse_step = int(d.get("decoder_sparse_step", 1) or 1)
            self.mlp_only_layers = [int(i) for i in (d.get("mlp_only_layers") or [])]
            self.norm_topk_prob = bool(d.get("norm_topk_prob", False))
            self.rope_theta = float(d.get("rope_theta", 10000.0))
            self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-6))
            self.tie_word_embeddings = bool(d.get("tie_word_embeddings", False))
            self.qk_norm = bool(d.get("upcycle_qk_norm", False))
            self.intermediate_size = int(d.get("intermediate_size", 0) or 0)
            self.attention_bias = bool(d.get("upcycle_attention_bias", False))
            self.shared_expert_size = int(d.get("upcycle_shared_expert_size", 0) or 0)
            self.qk_norm_full = bool(d.get("upcycle_qk_norm_full", False))
            self.clip_qkv = float(d.get("upcycle_clip_qkv", 0) or 0)
        except (TypeError, ValueError) as e:
            raise Malformed(f"config.json: bad value: {e}")
        if min(self.vocab_size, self.hidden_size, self.num_hidden_layers,
               self.num_attention_heads, self.num_key_value_heads, self.head_dim) <= 0:
            raise Malformed("config.json: sizes must be positive")
        if self.num_attention_heads % self.num_key_value_heads:
            raise Malformed("config.json: num_attention_heads not a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise Malformed("config.json: head_dim must be even for RoPE")
        if self.qk_norm_full and not self.qk_norm:
            raise Malformed("config.json: upcycle_qk_norm_full needs upcycle_qk_norm")
        if self.shared_expert_size < 0 or self.clip_qkv < 0:
            raise Malformed("config.json: upcycle_shared_expert_size and upcycle_clip_qkv must be >= 0")
        if self.num_experts > 0:
            if not (0 < self.num_experts_per_tok <= self.num_experts):
                raise Malformed("config.json: need 0 < num_experts_per_tok <= num_experts")
            if self.moe_intermediate_size <= 0:
                raise Malformed("config.json: moe_intermediate_size must be positive")
        if any(not self.is_moe(i) for i in range(self.num_hidden_layers)) and self.intermediate_size <= 0:
            raise Malformed("config.json: intermediate_size must be positive (dense layers exist)")

    def is_moe(self, i):
        """Layer i is MoE iff experts exist, i is not mlp-only and (i+1) % sparse_step == 0."""
        return (self.num_experts > 0 and i not in self.mlp_only_layers
                and (i + 1) % self.decoder_sparse_step == 0)

    def moe_layers(self):
        return [i for i in range(self.num_hidden_layers) if self.is_moe(i)]


MIXTRAL_PROJ = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def mixtral_to_ours(name):
    """model.layers.L.block_sparse_moe.{gate.weight, experts.E.wK.weight} -> the Qwen3-MoE names"""
    parts = name.split(".")
    if len(parts) > 3 and parts[3] == "block_sparse_moe":
        parts[3] = "mlp"
        if len(parts) == 8 and parts[4] == "experts":
            parts[6] = MIXTRAL_PROJ.get(parts[6], parts[6])
    return ".".join(parts)


def bias_name(i):
    return f"model.layers.{i}.mlp.gate.e_score_correction_bias"


def param_shapes(cfg):
    """Ordered {name: (shape, trainable)} of every tensor in model.safetensors."""
    C, V, hd = cfg.hidden_size, cfg.vocab_size, cfg.head_dim
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    s = {"model.embed_tokens.weight": ((V, C), True)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = ((C,), True)
        for proj, width in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
            s[p + f"self_attn.{proj}_proj.weight"] = ((width, C), True)
            if cfg.attention_bias:  # Qwen2-MoE: q/k/v biases, none on o_proj
                s[p + f"self_attn.{proj}_proj.bias"] = ((width,), True)
        s[p + "self_attn.o_proj.weight"] = ((C, H * hd), True)
        if cfg.qk_norm:  # per head, or over the whole projection (OLMoE)
            s[p + "self_attn.q_norm.weight"] = ((H * hd if cfg.qk_norm_full else hd,), True)
            s[p + "self_attn.k_norm.weight"] = ((KV * hd if cfg.qk_norm_full else hd,), True)
        s[p + "post_attention_layernorm.weight"] = ((C,), True)
        if cfg.is_moe(i):
            E, Im = cfg.num_experts, cfg.moe_intermediate_size
            s[p + "mlp.gate.weight"] = ((E, C), True)
            s[bias_name(i)] = ((E,), False)  # balancing bias: updated by rule, not gradient
            if cfg.shared_expert_size:
                S = cfg.shared_expert_size
                s[p + "mlp.shared_expert.gate_proj.weight"] = ((S, C), True)
                s[p + "mlp.shared_expert.up_proj.weight"] = ((S, C), True)
                s[p + "mlp.shared_expert.down_proj.weight"] = ((C, S), True)
                s[p + "mlp.shared_expert_gate.weight"] = ((1, C), True)
            for e in range(E):
                q = p + f"mlp.experts.{e}."
                s[q + "gate_proj.weight"] = ((Im, C), True)
                s[q + "up_proj.weight"] = ((Im, C), True)
                s[q + "down_proj.weight"] = ((C, Im), True)
        else:
            I = cfg.intermediate_size
            s[p + "mlp.gate_proj.weight"] = ((I, C), True)
            s[p + "mlp.up_proj.weight"] = ((I, C), True)
            s[p + "mlp.down_proj.weight"] = ((C, I), True)
    s["model.norm.weight"] = ((C,), True)
    if not cfg.tie_word_embeddings:
        s["lm_head.weight"] = ((V, C), True)
    return s


# =============================================================================
# Model (functional: params is a dict name -> tensor; dtype follows the params)
# =============================================================================
def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(cfg, T, dtype):
    """cos/sin tables [T, hd]; angles computed in float64, then cast."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)                                    # [T, hd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def attention(cfg, P, pre, x, cos, sin):
    """Causal GQA self-attention on normed input x [B,T,C]; returns o_proj output."""
    B, T, _ = x.shape
    H, KV, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    def proj(name):
        y = x @ P[pre + name + "_proj.weight"].t()                     # [B, T, width]
        if cfg.attention_bias:
            y = y + P[pre + name + "_proj.bias"]
        return y

    q, k, v = proj("q"), proj("k"), proj("v")
    if cfg.qk_norm and cfg.qk_norm_full:  # OLMoE: RMSNorm over the whole projection
        q = rms_norm(q, P[pre + "q_norm.weight"], cfg.rms_norm_eps)
        k = rms_norm(k, P[pre + "k_norm.weight"], cfg.rms_norm_eps)
    q, k, v = q.view(B, T, H, hd), k.view(B, T, KV, hd), v.view(B, T, KV, hd)
    if cfg.qk_norm and not cfg.qk_norm_full:  # Qwen3: per-head RMSNorm over hd, before RoPE
        q = rms_norm(q, P[pre + "q_norm.weight"], cfg.rms_norm_eps)
        k = rms_norm(k, P[pre + "k_norm.weight"], cfg.rms_norm_eps)
    if cfg.clip_qkv:  # OLMoE: after the q/k norm, before RoPE
        q, k, v = (t.clamp(-cfg.clip_qkv, cfg.clip_qkv) for t in (q, k, v))
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    q = q * c + rotate_half(q) * s
    k = k * c + rotate_half(k) * s
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, hd]
    group = H // KV  # query head j reads kv head j // group
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)                # [B, H, T, T]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)                # True above diagonal
    scores = scores.masked_fill(causal, float("-inf"))
    att = torch.softmax(scores, dim=-1) @ v                            # [B, H, T, hd]
    att = att.transpose(1, 2).reshape(B, T, H * hd)
    return att @ P[pre + "o_proj.weight"].t()


def swiglu(x, wg, wu, wd):
    return (F.silu(x @ wg.t()) * (x @ wu.t())) @ wd.t()


# A routing decision whose margin is below this is a near tie: float32 reassociation (a vector
# width, a blocked sum) may decide it either way, in our trainer or here.
TIE_TOL = 1e-4


def moe(cfg, P, i, x):
    """Top-K routed SwiGLU experts. x [N,C]. Returns (out [N,C], router_logits, probs, selected)."""
    pre = f"model.layers.{i}.mlp."
    E, K = cfg.num_experts, cfg.num_experts_per_tok
    router_logits = x @ P[pre + "gate.weight"].t()                     # [N, E]
    probs = torch.softmax(router_logits, dim=-1)
    bias = P[bias_name(i)].detach()
    scores = probs.detach() + bias
    selected = torch.topk(scores, K, dim=-1).indices                   # bias: selection only
    if K < E:  # tokens whose K-th and (K+1)-th scores are within TIE_TOL: float32 noise may swap them
        top = torch.topk(scores, K + 1, dim=-1).values
        moe.near_ties = int((top[:, K - 1] - top[:, K] < TIE_TOL).sum())
    else:
        moe.near_ties = 0
    weights = probs.gather(-1, selected)                               # [N, K]
    if cfg.norm_topk_prob:
        weights = weights / weights.sum(-1, keepdim=True)
    out = torch.zeros_like(x)
    for e in range(E):
        hit = selected == e                                            # [N, K]
        rows = hit.any(-1).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        w = (weights * hit.to(weights.dtype)).sum(-1)[rows]            # each expert once per token
        q = pre + f"experts.{e}."
        y = swiglu(x[rows], P[q + "gate_proj.weight"], P[q + "up_proj.weight"],
                   P[q + "down_proj.weight"])
        out = out.index_add(0, rows, w[:, None] * y)
    if cfg.shared_expert_size:  # Qwen2-MoE: every token, scaled by sigmoid(x . w_sg)
        shared = swiglu(x, P[pre + "shared_expert.gate_proj.weight"], P[pre + "shared_expert.up_proj.weight"],
                        P[pre + "shared_expert.down_proj.weight"])
        out = out + torch.sigmoid(x @ P[pre + "shared_expert_gate.weight"].t()) * shared
    return out, router_logits, probs, selected


class Output:
    pass


def forward(cfg, P, tokens, targets, aux_loss_coef=0.0, z_loss_coef=0.0):
    """tokens/targets int64 [B,T]. Returns Output with logits [B,T,V], loss (CE + aux terms), ce,
    loads and selected (per MoE layer)."""
    B, T = tokens.shape
    eps = cfg.rms_norm_eps
    dtype = P["model.embed_tokens.weight"].dtype
    cos, sin = rope_cos_sin(cfg, T, dtype)
    h = P["model.embed_tokens.weight"][tokens]                         # [B, T, C]
    aux = torch.zeros((), dtype=dtype)
    loads, selected, near_ties = {}, {}, {}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        x = rms_norm(h, P[p + "input_layernorm.weight"], eps)
        h = h + attention(cfg, P, p + "self_attn.", x, cos, sin)
        x = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        if cfg.is_moe(i):
            N, E, K = B * T, cfg.num_experts, cfg.num_experts_per_tok
            y, rl, probs, sel = moe(cfg, P, i, x.reshape(N, -1))
            h = h + y.view(B, T, -1)
            counts = torch.bincount(sel.reshape(-1), minlength=E)      # (token, slot) selections
            loads[i], selected[i] = counts, sel
            near_ties[i] = moe.near_ties
            if aux_loss_coef:  # Switch balance loss; f_e carries no gradient
                f = counts.to(dtype) / (N * K)
                aux = aux + aux_loss_coef * E * (f * probs.mean(0)).sum()
            if z_loss_coef:    # router z-loss
                aux = aux + z_loss_coef * torch.logsumexp(rl, dim=-1).pow(2).mean()
        else:
            h = h + swiglu(x, P[p + "mlp.gate_proj.weight"], P[p + "mlp.up_proj.weight"],
                           P[p + "mlp.down_proj.weight"])
    h = rms_norm(h, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if cfg.tie_word_embeddings else P["lm_head.weight"]
    o = Output()
    o.logits = h @ head.t()                                            # [B, T, V]
    o.ce = F.cross_entropy(o.logits.reshape(B * T, -1), targets.reshape(-1))
    o.loss = o.ce + aux
    o.loads = loads          # {moe layer: [E] int64 counts}
    o.selected = selected    # {moe layer: [N, K] expert indices}
    o.near_ties = near_ties  # {moe layer: tokens whose K-th and (K+1)-th scores are within TIE_TOL}
    return o


# =============================================================================
# Training (AdamW + loss-free balancing bias update), mirrors the C trainer
# =============================================================================
def train(cfg, init, tokens, lrs, hp, dtype=torch.float32):
    """Run len(lrs) steps from init on tokens [S,B,T+1]; returns (losses, loads per step).
    dtype is float32 for the parity check (float64 only for the self-test)."""
    shapes = param_shapes(cfg)
    P = {n: init[n].clone().to(dtype).requires_grad_(shapes[n][1]) for n in shapes}
    trainable = [n for n in shapes if shapes[n][1]]
    decay = [P[n] for n in trainable if P[n].ndim >= 2]
    no_decay = [P[n] for n in trainable if P[n].ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lrs[0], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    N = tokens.shape[1] * (tokens.shape[2] - 1)
    losses, step_loads, step_ties = [], [], []
    for s, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        out = forward(cfg, P, tokens[s, :, :-1], tokens[s, :, 1:],
                      hp["aux_loss_coef"], hp["z_loss_coef"])
        out.loss.backward()
        # An expert no token picked gets no autograd grad; the C trainer keeps dense zeroed
        # gradient buffers, so give it an explicit zero grad (AdamW would otherwise skip the
        # tensor entirely: no moment decay, no weight decay).
        for n in trainable:
            if P[n].grad is None:
                P[n].grad = torch.zeros_like(P[n])
        losses.append(out.loss.item())
        step_loads.append({i: c.tolist() for i, c in out.loads.items()})
        step_ties.append(dict(out.near_ties))
        if hp["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_([P[n] for n in trainable], hp["grad_clip"])
        opt.step()
        with torch.no_grad():  # loss-free balancing, using this step's loads
            mean = N * cfg.num_experts_per_tok / max(cfg.num_experts, 1)
            for i, counts in out.loads.items():
                b = P[bias_name(i)]
                b += hp["bias_update_rate"] * torch.sign(mean - counts.to(dtype))
    train.near_ties = step_ties  # per step {moe layer: near ties}
    return losses, step_loads


# =============================================================================
# Parity driver
# =============================================================================
TRAIN_KEYS_REQUIRED = ("beta1", "beta2", "eps", "weight_decay", "grad_clip")
TRAIN_KEYS_DEFAULT0 = ("bias_update_rate", "aux_loss_coef", "z_loss_coef")


def load_dir(d):
    """Read and validate DIR; raises Malformed on any structural problem."""
    if not os.path.isdir(d):
        raise Malformed(f"{d} is not a directory")

    def read_json(name):
        path = os.path.join(d, name)
        if not os.path.isfile(path):
            raise Malformed(f"missing file {path}")
        try:
            with open(path) as f:
                return json.load(f)
        except json.JSONDecodeError as e:
            raise Malformed(f"{path}: bad JSON: {e}")

    cfgd = read_json("config.json")
    if not isinstance(cfgd, dict):
        raise Malformed("config.json is not a JSON object")
    cfg = Config(cfgd)
    shapes = param_shapes(cfg)

    model, _ = load_safetensors(os.path.join(d, "model.safetensors"))
    if cfg.mixtral:  # Mixtral's names for the MoE block
        model = {mixtral_to_ours(n): t for n, t in model.items()}
    # the balancing biases: training state, in training/ (or, earlier, beside the weights)
    for side in (os.path.join(d, "training", "balance_bias.safetensors"), os.path.join(d, "balance_bias.safetensors")):
        if os.path.isfile(side):
            model.update(load_safetensors(side)[0])
            break
    for n, (shape, _) in shapes.items():  # no biases saved (zero, and no training state): zero
        if n.endswith("e_score_correction_bias") and n not in model:
            model[n] = torch.zeros(shape)
    for n, (shape, _) in shapes.items():
        if n not in model:
            raise Malformed(f"model.safetensors: missing tensor {n}")
        if tuple(model[n].shape) != shape:
            raise Malformed(f"model.safetensors: {n} has shape {list(model[n].shape)}, "
                            f"config implies {list(shape)}")
        if not model[n].is_floating_point():
            raise Malformed(f"model.safetensors: {n} is not floating point")
        model[n] = model[n].float()
    extra = sorted(set(model) - set(shapes))
    if extra:
        raise Malformed(f"model.safetensors: tensors the config does not imply: {extra[:5]}"
                        + (" ..." if len(extra) > 5 else ""))

    batch, _ = load_safetensors(os.path.join(d, "batch.safetensors"))
    if "tokens" not in batch:
        raise Malformed("batch.safetensors: missing tensor 'tokens'")
    tokens = batch["tokens"]
    if tokens.is_floating_point() or tokens.ndim != 3 or tokens.shape[2] < 2 or tokens.shape[0] < 1:
        raise Malformed(f"batch.safetensors: tokens must be integer [S,B,T+1], got "
                        f"{tokens.dtype} {list(tokens.shape)}")
    tokens = tokens.long()
    if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise Malformed(f"batch.safetensors: token ids outside [0, {cfg.vocab_size})")
    S, B, T = tokens.shape[0], tokens.shape[1], tokens.shape[2] - 1

    ours, _ = load_safetensors(os.path.join(d, "ours.safetensors"))
    for n, want in (("logits", (B, T, cfg.vocab_size)), ("loss", None)):
        if n not in ours:
            raise Malformed(f"ours.safetensors: missing tensor {n!r}")
        if want and tuple(ours[n].shape) != want:
            raise Malformed(f"ours.safetensors: {n} has shape {list(ours[n].shape)}, want {list(want)}")
    if ours["loss"].numel() != 1:
        raise Malformed("ours.safetensors: loss must hold exactly one value")
    for n, (shape, trainable) in shapes.items():
        if not trainable:
            continue
        g = ours.get("grad." + n)
        if g is None:
            raise Malformed(f"ours.safetensors: missing gradient grad.{n}")
        if tuple(g.shape) != shape:
            raise Malformed(f"ours.safetensors: grad.{n} has shape {list(g.shape)}, want {list(shape)}")

    steps = read_json("ours_steps.json")
    if not isinstance(steps, dict):
        raise Malformed("ours_steps.json is not a JSON object")
    for k in ("losses", "lrs", "train"):
        if k not in steps:
            raise Malformed(f"ours_steps.json: missing key {k!r}")
    if len(steps["losses"]) != S or len(steps["lrs"]) != S:
        raise Malformed(f"ours_steps.json: losses/lrs need {S} entries (batch has S={S}), got "
                        f"{len(steps['losses'])}/{len(steps['lrs'])}")
    if not isinstance(steps["train"], dict):
        raise Malformed("ours_steps.json: train is not a JSON object")
    hp = {}
    try:
        for k in TRAIN_KEYS_REQUIRED:
            if k not in steps["train"]:
                raise Malformed(f"ours_steps.json: train.{k} missing")
            hp[k] = float(steps["train"][k])
        for k in TRAIN_KEYS_DEFAULT0:  # absent means the feature is off
            hp[k] = float(steps["train"].get(k, 0.0))
        our_losses = [float(x) for x in steps["losses"]]
        lrs = [float(x) for x in steps["lrs"]]
    except (TypeError, ValueError) as e:
        raise Malformed(f"ours_steps.json: non-numeric value: {e}")
    loads = steps.get("loads")
    if loads is not None:
        nmoe, E = len(cfg.moe_layers()), cfg.num_experts
        try:
            arr = np.asarray(loads, dtype=np.float64)
        except (TypeError, ValueError):
            raise Malformed("ours_steps.json: loads is not a (nested) list of numbers")
        if arr.size != S * nmoe * E:
            raise Malformed(f"ours_steps.json: loads must be [S={S}][moe layers={nmoe}][E={E}], "
                            f"got {arr.size} numbers")
        loads = arr.reshape(S, nmoe, E)
    return cfg, model, tokens, ours, our_losses, lrs, hp, loads


def rel(a, b):
    return abs(a - b) / max(abs(a), 1e-30)


def run_checks(d, tol):
    cfg, model, tokens, ours, our_losses, lrs, hp, our_loads = load_dir(d)
    S, B, T = tokens.shape[0], tokens.shape[1], tokens.shape[2] - 1
    print(f"# torch_ref: L={cfg.num_hidden_layers} C={cfg.hidden_size} H={cfg.num_attention_heads} "
          f"KV={cfg.num_key_value_heads} hd={cfg.head_dim} V={cfg.vocab_size} E={cfg.num_experts} "
          f"K={cfg.num_experts_per_tok} moe_layers={cfg.moe_layers()} S={S} B={B} T={T}")
    results = []

    def report(name, worst, limit, detail=""):
        ok = worst <= limit  # NaN compares False -> FAIL
        if ok:
            print(f"ok {name} (worst rel err {worst:.3g})")
        else:
            print(f"FAIL {name} (worst rel err {worst:.3g} > {limit:.3g}{detail})")
        results.append(ok)

    # (a)-(c): batch 0 at the initial weights.
    shapes = param_shapes(cfg)
    P = {n: model[n].clone().requires_grad_(shapes[n][1]) for n in shapes}
    out = forward(cfg, P, tokens[0, :, :-1], tokens[0, :, 1:], hp["aux_loss_coef"], hp["z_loss_coef"])
    out.loss.backward()
    lt, lo = out.logits.detach().double(), ours["logits"].double()
    report("logits", ((lt - lo).abs().max() / lt.abs().max().clamp_min(1e-30)).item(), tol.logits)
    report("loss", rel(out.loss.item(), ours["loss"].double().item()), tol.loss)

    errs = {}
    for n, (_, trainable) in shapes.items():
        if trainable:
            gt = P[n].grad.double() if P[n].grad is not None else torch.zeros(P[n].shape, dtype=torch.float64)
            go = ours["grad." + n].double()
            errs[n] = ((gt - go).norm() / gt.norm().clamp_min(1e-8)).item()
    bad = [n for n, e in errs.items() if not e <= tol.grad]
    worst_name = max(errs, key=lambda n: errs[n] if errs[n] == errs[n] else float("inf"))
    report("grads", errs[worst_name], tol.grad, f"; {len(bad)} of {len(errs)} tensors over")
    for n in (bad if bad else [worst_name])[:10]:
        print(f"  grad {n}: rel err {errs[n]:.3g}")

    # (d): S training steps from the initial weights.
    losses, step_loads = train(cfg, model, tokens, lrs, hp)
    errs = [rel(a, b) for a, b in zip(losses, our_losses)]
    worst = max(errs, key=lambda e: e if e == e else float("inf"))
    report("train", worst, tol.train, f" at step {errs.index(worst)}")
    if not results[-1]:
        for s, (a, b) in enumerate(zip(losses, our_losses)):
            print(f"  step {s}: torch {a:.7g} ours {b:.7g}")

    # optional: expert loads per step, exact except where the reference has near ties: a swap at
    # a token whose K-th and (K+1)-th scores are within TIE_TOL moves 2 counts; more than twice
    # the near ties of a step and layer fails
    if our_loads is not None:
        ref = np.array([[sl[i] for i in cfg.moe_layers()] for sl in step_loads], dtype=np.float64)
        ref = ref.reshape(our_loads.shape)
        diff = np.abs(ref - our_loads)
        ties = np.array([[st[i] for i in cfg.moe_layers()] for st in train.near_ties], dtype=np.float64)
        ties = ties.reshape(our_loads.shape[:2])
        moved = diff.sum(-1)
        bad = moved > 2 * ties
        nbad = int(bad.sum())
        where = f"; {nbad} (step, layer) pairs differ beyond their near ties, first at step {int(np.argwhere(bad)[0][0])}" if nbad else ""
        swaps = int(np.minimum(moved, 2 * ties).sum() // 2)
        note = f" ({swaps} swap(s) at near ties, margin < {TIE_TOL:g})" if swaps else ""
        report("loads", float(nbad), 0.0, where + note)
        if note and not nbad:
            print(f"  loads:{note}")

    npass = sum(results)
    print(f"parity: {npass} passed, {len(results) - npass} failed")
    return 0 if npass == len(results) else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch parity reference for upcycle")
    ap.add_argument("dir")
    ap.add_argument("--tol-logits", type=float, default=1e-4)
    ap.add_argument("--tol-loss", type=float, default=1e-4)
    ap.add_argument("--tol-grad", type=float, default=1e-4)
    ap.add_argument("--tol-train", type=float, default=1e-4)
    a = ap.parse_args(argv)

    class Tol:
        logits, loss, grad, train = a.tol_logits, a.tol_loss, a.tol_grad, a.tol_train

    torch.manual_seed(0)
    try:
        return run_checks(a.dir, Tol)
    except Malformed as e:
        print(f"torch_ref: malformed {a.dir}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
