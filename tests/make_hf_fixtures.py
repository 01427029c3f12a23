#!/usr/bin/env python3
"""Builds tiny Hugging Face MoE checkpoint directories for tests/test_grow_hf.c.

usage: make_hf_fixtures.py OUTDIR [NAME ...]   (default: every fixture)

Tensors come from torch (fixed seed); the safetensors files are written byte by byte here
(8-byte little-endian header length, JSON header padded with spaces to a multiple of 8, data),
without the safetensors package. Fixtures:
  qwen2_moe     F32, single file, shared expert + shared_expert_gate, extra tokenizer files
  qwen3_moe     BF16, 2 shards + index, F32 e_score_correction_bias (zero in layer 0);
                layer 1's router is in shard 1 and its experts in shard 2
  olmoe         F16, single file
  mixtral       BF16, 3 shards + index, block_sparse_moe w1/w2/w3; layer 1's experts span shards
  deepseek_v3   F32, single file, layer 0 dense (first_k_dense_replace=1), shared_experts,
                e_score_correction_bias, n_group=2
  <family>_packed  the same tensors as <family> (qwen2_moe, qwen3_moe, olmoe, mixtral, deepseek_v3) in
                transformers 5's packed layout: experts.gate_up_proj [E, 2I, H] (gate rows, then up)
                and experts.down_proj [E, H, I] where expert 0's first tensor was; Mixtral's block
                becomes mlp (router mlp.gate.weight)
  deepseek_v3_fp8   deepseek_v3 with F8_E4M3 experts (layer 2: F8_E5M2) and F32 weight_scale_inv
                    per 4 x 6 block (quantization_config.weight_block_size), FP8 attention too
  gpt_oss       BF16, 2 shards, packed experts with biases: gate_up_proj [E, H, 2I] (gate/up
                interleaved), gate_up_proj_bias, down_proj [E, I, H], down_proj_bias; router
                mlp.router.weight + mlp.router.bias
  gpt_oss_mxfp4 gpt_oss with MXFP4 weights (U8 *_blocks [E, rows, cols/32, 16], *_scales)
  bad_dense           llama (dense only)
  bad_qwen3_dense     qwen3_moe config whose layers are all dense (mlp_only_layers)
  bad_unknown         unknown MoE model_type
  bad_unequal_shape   qwen3_moe with one expert of a different shape
  bad_unequal_dtype   qwen3_moe with one expert of a different dtype
  bad_no_config       weights without config.json
  bad_fp8_no_scale    deepseek_v3_fp8 whose layer 1 gate_proj weights have no weight_scale_inv
  bad_packed_dim      qwen3_moe_packed whose layer 0 gate_up_proj is [2I, E, H]
Beside each fixture DIR, DIR.norms.json holds the expected weight-norm utilities
{"layers": [...], "norms": [[||W_e|| per expert] per MoE layer]} computed here in float64 from
the stored values (FP8 dequantized with its block scales; MXFP4 fixtures have none).
"""
import json
import math
import os
import struct
import sys

import torch

H, V, E, I, HEADS, HD, KV = 16, 32, 4, 8, 2, 8, 1

DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.uint8: "U8"}


class Raw:
    """A tensor of a dtype torch lacks here (FP8): its safetensors dtype, shape and bytes."""

    def __init__(self, dtype, shape, data):
        self.dtype, self.shape, self.data = dtype, list(shape), bytes(data)


def tensor_bytes(t):
    if isinstance(t, Raw):
        return t.data
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor) written in this order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    blobs = []
    for name, t in tensors:
        b = tensor_bytes(t)
        dtype = t.dtype if isinstance(t, Raw) else DTYPE_NAMES[t.dtype]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def rnd(*shape, dtype=torch.float32, scale=0.1):
    return (torch.randn(*shape) * scale).to(dtype)


def attention(p, dtype, qk_norm=False, qkv_bias=False):
    out = [
        (p + "input_layernorm.weight", torch.ones(H).to(dtype)),
        (p + "self_attn.q_proj.weight", rnd(HEADS * HD, H, dtype=dtype)),
        (p + "self_attn.k_proj.weight", rnd(KV * HD, H, dtype=dtype)),
        (p + "self_attn.v_proj.weight", rnd(KV * HD, H, dtype=dtype)),
        (p + "self_attn.o_proj.weight", rnd(H, HEADS * HD, dtype=dtype)),
    ]
    if qkv_bias:
        out += [(p + "self_attn.q_proj.bias", rnd(HEADS * HD, dtype=dtype)),
                (p + "self_attn.k_proj.bias", rnd(KV * HD, dtype=dtype)),
                (p + "self_attn.v_proj.bias", rnd(KV * HD, dtype=dtype))]
    if qk_norm:
        out += [(p + "self_attn.q_norm.weight", torch.ones(HD).to(dtype)),
                (p + "self_attn.k_norm.weight", torch.ones(HD).to(dtype))]
    out.append((p + "post_attention_layernorm.weight", torch.ones(H).to(dtype)))
    return out


def experts(p, dtype, names=("gate_proj", "up_proj", "down_proj"), width=I, which=range(E)):
    out = []
    for e in which:
        for n in names:
            shape = (H, width) if n in ("down_proj", "w2") else (width, H)
            out.append((f"{p}experts.{e}.{n}.weight", rnd(*shape, dtype=dtype)))
    return out


def base_config(model_type, arch, dtype_name, layers):
    return {
        "architectures": [arch], "model_type": model_type, "hidden_size": H, "vocab_size": V,
        "num_hidden_layers": layers, "num_attention_heads": HEADS, "num_key_value_heads": KV,
        "head_dim": HD, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 128,
        "tie_word_embeddings": False, "torch_dtype": dtype_name, "num_experts_per_tok": 2,
        "attention_dropout": 0.0, "rope_scaling": None, "use_cache": True, "bos_token_id": 1,
    }


def shard(d, groups, metadata=None):
    """groups: list of tensor lists, one per shard; writes shards + index."""
    n = len(groups)
    weight_map = {}
    total = 0
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        write_safetensors(os.path.join(d, name), group, {"format": "pt"})
        for tname, t in group:
            weight_map[tname] = name
            total += len(tensor_bytes(t))
    write_json(os.path.join(d, "model.safetensors.index.json"),
               {"metadata": {"total_size": total, "format": "pt"}, "weight_map": dict(sorted(weight_map.items()))})


def emit(d, groups, layout, prefix="mlp", projs=("gate_proj", "up_proj", "down_proj")):
    """Writes groups (one per shard; one group: model.safetensors) in the per-expert layout as
    given, or packed; writes d.norms.json from the per-expert weights either way."""
    write_norms(d, norms_of(groups, prefix, projs))
    if layout.startswith("packed"):
        groups = pack(groups, prefix, projs, bad_dim=layout == "packed-bad-dim")
    if len(groups) == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), groups[0], {"format": "pt"})
    else:
        shard(d, groups)


def expert_weights(groups, prefix, projs):
    """{layer: {expert: {proj: tensor}}} of the per-expert weights in groups"""
    found = {}
    for group in groups:
        for name, t in group:
            parts = name.split(".")
            if len(parts) == 8 and parts[3:5] == [prefix, "experts"] and parts[6] in projs and parts[7] == "weight":
                found.setdefault(int(parts[2]), {}).setdefault(int(parts[5]), {})[parts[6]] = t
    return found


def norms_of(groups, prefix, projs):
    weights = expert_weights(groups, prefix, projs)
    return {l: [math.sqrt(sum(float((w.double() ** 2).sum()) for w in experts[e].values()))
                for e in sorted(experts)] for l, experts in weights.items()}


def write_norms(d, norms):
    write_json(d + ".norms.json", {"layers": sorted(norms), "norms": [norms[l] for l in sorted(norms)]})


def pack(groups, prefix, projs, bad_dim=False):
    """transformers 5's packed layout: per layer gate_up_proj [E, 2I, H] = cat(gate, up) per
    expert and down_proj [E, H, I], where the layer's first expert tensor was; Mixtral's
    block_sparse_moe becomes mlp. bad_dim: layer 0's gate_up_proj is stored [2I, E, H]."""
    weights = expert_weights(groups, prefix, projs)
    gate, up, down = projs
    out_prefix = "mlp"
    packed = []
    placed = set()
    for group in groups:
        new = []
        for name, t in group:
            parts = name.split(".")
            if len(parts) >= 5 and parts[3:5] == [prefix, "experts"] and parts[5].isdigit():
                l = int(parts[2])
                if l not in placed:
                    placed.add(l)
                    ex = weights[l]
                    head = f"model.layers.{l}.{out_prefix}.experts."
                    gate_up = torch.stack([torch.cat([ex[e][gate], ex[e][up]], 0) for e in sorted(ex)])
                    if bad_dim and l == 0:
                        gate_up = gate_up.permute(1, 0, 2).contiguous()
                    new.append((head + "gate_up_proj", gate_up))
                    new.append((head + "down_proj", torch.stack([ex[e][down] for e in sorted(ex)])))
                continue
            if len(parts) >= 5 and parts[3] == prefix and prefix != out_prefix:
                name = ".".join(parts[:3] + [out_prefix] + parts[4:])
            new.append((name, t))
        packed.append(new)
    return packed


def make_qwen2_moe(d, layout="per-expert"):
    dt = torch.float32
    cfg = base_config("qwen2_moe", "Qwen2MoeForCausalLM", "float32", 2)
    cfg.update({"num_experts": E, "moe_intermediate_size": I, "shared_expert_intermediate_size": 12,
                "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": False,
                "intermediate_size": 32, "output_router_logits": False, "router_aux_loss_coef": 0.001})
    ts = [("model.embed_tokens.weight", rnd(V, H))]
    for l in range(2):
        p = f"model.layers.{l}."
        ts += attention(p, dt, qkv_bias=True)
        ts.append((p + "mlp.gate.weight", rnd(E, H)))
        ts += experts(p + "mlp.", dt)
        ts += [(p + "mlp.shared_expert.gate_proj.weight", rnd(12, H)),
               (p + "mlp.shared_expert.up_proj.weight", rnd(12, H)),
               (p + "mlp.shared_expert.down_proj.weight", rnd(H, 12)),
               (p + "mlp.shared_expert_gate.weight", rnd(1, H))]
    ts += [("model.norm.weight", torch.ones(H)), ("lm_head.weight", rnd(V, H))]
    emit(d, [ts], layout)
    write_json(os.path.join(d, "config.json"), cfg)
    write_json(os.path.join(d, "generation_config.json"), {"bos_token_id": 1, "eos_token_id": 2})
    write_json(os.path.join(d, "tokenizer.json"), {"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}})
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write("# tiny qwen2_moe fixture\n")


def qwen3_layer(p, dt, bias, expert_dtype=None, odd_expert=None):
    ts = attention(p, dt, qk_norm=True)
    ts.append((p + "mlp.gate.weight", rnd(E, H, dtype=dt)))
    if bias is not None:
        ts.append((p + "mlp.gate.e_score_correction_bias", bias))
    ex = experts(p + "mlp.", dt)
    if odd_expert is not None:  # (expert, projection, new tensor)
        e, proj, t = odd_expert
        ex = [(n, t if n == f"{p}mlp.experts.{e}.{proj}.weight" else x) for n, x in ex]
    return ts, ex


def qwen3_config(layers=2):
    cfg = base_config("qwen3_moe", "Qwen3MoeForCausalLM", "bfloat16", layers)
    cfg.update({"num_experts": E, "moe_intermediate_size": I, "decoder_sparse_step": 1, "mlp_only_layers": [],
                "norm_topk_prob": True, "intermediate_size": 32, "router_aux_loss_coef": 0.001,
                "attention_bias": False, "sliding_window": None})
    return cfg


def make_qwen3_moe(d, odd_expert=None, layout="per-expert"):
    dt = torch.bfloat16
    a0, e0 = qwen3_layer("model.layers.0.", dt, torch.zeros(E), odd_expert=None)
    a1, e1 = qwen3_layer("model.layers.1.", dt, torch.randn(E) * 0.05, odd_expert=odd_expert)
    s1 = [("model.embed_tokens.weight", rnd(V, H, dtype=dt))] + a0 + e0 + a1
    s2 = e1 + [("model.norm.weight", torch.ones(H).to(dt)), ("lm_head.weight", rnd(V, H, dtype=dt))]
    if odd_expert is None:
        emit(d, [s1, s2], layout)
    else:
        shard(d, [s1, s2])
    write_json(os.path.join(d, "config.json"), qwen3_config())
    write_json(os.path.join(d, "generation_config.json"), {"do_sample": True, "temperature": 0.6})


def make_olmoe(d, layout="per-expert"):
    dt = torch.float16
    cfg = base_config("olmoe", "OlmoeForCausalLM", "float16", 2)
    cfg.update({"num_experts": E, "intermediate_size": I, "norm_topk_prob": False, "clip_qkv": None,
                "router_aux_loss_coef": 0.01, "pad_token_id": 1})
    ts = [("model.embed_tokens.weight", rnd(V, H, dtype=dt))]
    for l in range(2):
        p = f"model.layers.{l}."
        ts += attention(p, dt)
        ts += [(p + "self_attn.q_norm.weight", torch.ones(HEADS * HD).to(dt)),
               (p + "self_attn.k_norm.weight", torch.ones(KV * HD).to(dt))]
        ts.append((p + "mlp.gate.weight", rnd(E, H, dtype=dt)))
        ts += experts(p + "mlp.", dt)
    ts += [("model.norm.weight", torch.ones(H).to(dt)), ("lm_head.weight", rnd(V, H, dtype=dt))]
    emit(d, [ts], layout)
    write_json(os.path.join(d, "config.json"), cfg)


def make_mixtral(d, layout="per-expert"):
    dt = torch.bfloat16
    cfg = base_config("mixtral", "MixtralForCausalLM", "bfloat16", 2)
    cfg.update({"num_local_experts": E, "intermediate_size": I, "router_aux_loss_coef": 0.02,
                "sliding_window": None, "output_router_logits": False})
    names = ("w1", "w2", "w3")
    s1 = [("model.embed_tokens.weight", rnd(V, H, dtype=dt))] + attention("model.layers.0.", dt)
    s2 = ([("model.layers.0.block_sparse_moe.gate.weight", rnd(E, H, dtype=dt))] +
          experts("model.layers.0.block_sparse_moe.", dt, names) + attention("model.layers.1.", dt) +
          experts("model.layers.1.block_sparse_moe.", dt, names, which=range(0, 2)))
    s3 = ([("model.layers.1.block_sparse_moe.gate.weight", rnd(E, H, dtype=dt))] +
          experts("model.layers.1.block_sparse_moe.", dt, names, which=range(2, E)) +
          [("model.norm.weight", torch.ones(H).to(dt)), ("lm_head.weight", rnd(V, H, dtype=dt))])
    emit(d, [s1, s2, s3], layout, "block_sparse_moe", ("w1", "w3", "w2"))
    write_json(os.path.join(d, "config.json"), cfg)


def deepseek_v3_config(dtype_name):
    cfg = base_config("deepseek_v3", "DeepseekV3ForCausalLM", dtype_name, 3)
    cfg.update({"n_routed_experts": E, "n_shared_experts": 1, "moe_intermediate_size": I, "intermediate_size": 24,
                "first_k_dense_replace": 1, "moe_layer_freq": 1, "n_group": 2, "topk_group": 1,
                "topk_method": "noaux_tc", "scoring_func": "sigmoid", "routed_scaling_factor": 2.5,
                "norm_topk_prob": True, "q_lora_rank": 12, "kv_lora_rank": 8, "qk_nope_head_dim": 4,
                "qk_rope_head_dim": 4, "v_head_dim": 8, "num_nextn_predict_layers": 0})
    return cfg


def make_deepseek_v3(d, layout="per-expert"):
    dt = torch.float32
    cfg = deepseek_v3_config("float32")
    cfg["auto_map"] = {"AutoConfig": "configuration_deepseek.DeepseekV3Config"}
    ts = [("model.embed_tokens.weight", rnd(V, H))]
    for l in range(3):
        p = f"model.layers.{l}."
        ts += [(p + "input_layernorm.weight", torch.ones(H)),
               (p + "self_attn.q_a_proj.weight", rnd(12, H)),
               (p + "self_attn.q_a_layernorm.weight", torch.ones(12)),
               (p + "self_attn.q_b_proj.weight", rnd(HEADS * 8, 12)),
               (p + "self_attn.kv_a_proj_with_mqa.weight", rnd(8 + 4, H)),
               (p + "self_attn.kv_a_layernorm.weight", torch.ones(8)),
               (p + "self_attn.kv_b_proj.weight", rnd(HEADS * 12, 8)),
               (p + "self_attn.o_proj.weight", rnd(H, HEADS * 8)),
               (p + "post_attention_layernorm.weight", torch.ones(H))]
        if l == 0:
            ts += [(p + "mlp.gate_proj.weight", rnd(24, H)), (p + "mlp.up_proj.weight", rnd(24, H)),
                   (p + "mlp.down_proj.weight", rnd(H, 24))]
        else:
            ts += [(p + "mlp.gate.weight", rnd(E, H)), (p + "mlp.gate.e_score_correction_bias", torch.randn(E) * 0.1)]
            ts += experts(p + "mlp.", dt)
            ts += [(p + "mlp.shared_experts.gate_proj.weight", rnd(I, H)),
                   (p + "mlp.shared_experts.up_proj.weight", rnd(I, H)),
                   (p + "mlp.shared_experts.down_proj.weight", rnd(H, I))]
    ts += [("model.norm.weight", torch.ones(H)), ("lm_head.weight", rnd(V, H))]
    emit(d, [ts], layout)
    write_json(os.path.join(d, "config.json"), cfg)
    with open(os.path.join(d, "configuration_deepseek.py"), "w") as f:
        f.write("# remote code placeholder\n")


# ---- FP8 (DeepSeek-V3's block-quantized weights): codes drawn here, decoded by their definition


def fp8_value(code, e_bits, m_bits):
    bias = (1 << (e_bits - 1)) - 1
    e, m = (code >> m_bits) & ((1 << e_bits) - 1), code & ((1 << m_bits) - 1)
    sign = -1.0 if code & 0x80 else 1.0
    if e == 0:
        return sign * (m / (1 << m_bits)) * 2.0 ** (1 - bias)
    return sign * (1 + m / (1 << m_bits)) * 2.0 ** (e - bias)


FP8 = {"F8_E4M3": (4, 3), "F8_E5M2": (5, 2)}
FP8_BLOCK = (4, 6)


def fp8_weight(out, inp, dtype):
    """(Raw weight, F32 scale_inv [ceil(out/b0), ceil(in/b1)], dequantized float64 values)"""
    codes = torch.randint(0, 256, (out, inp), dtype=torch.int32)
    if dtype == "F8_E4M3":
        codes = torch.where((codes & 0x7F) == 0x7F, codes ^ 1, codes)  # 0x7f/0xff are NaN
    else:
        codes = torch.where(((codes >> 2) & 0x1F) == 0x1F, codes & 0xBF, codes)  # exponent 31: inf/NaN
    b0, b1 = FP8_BLOCK
    scale = torch.rand((out + b0 - 1) // b0, (inp + b1 - 1) // b1) * 0.02 + 0.005
    e_bits, m_bits = FP8[dtype]
    values = [[fp8_value(int(codes[o, i]), e_bits, m_bits) * float(scale[o // b0, i // b1]) for i in range(inp)]
              for o in range(out)]
    raw = Raw(dtype, (out, inp), codes.to(torch.uint8).numpy().tobytes())
    return raw, scale, values


def make_deepseek_v3_fp8(d, drop_scale=False):
    dt = torch.bfloat16
    cfg = deepseek_v3_config("bfloat16")
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                  "weight_block_size": list(FP8_BLOCK)}
    ts = [("model.embed_tokens.weight", rnd(V, H, dtype=dt))]
    norms = {}
    for l in range(3):
        p = f"model.layers.{l}."
        q, q_scale, _ = fp8_weight(12, H, "F8_E4M3")  # attention is FP8 too: an ordinary tensor pair
        ts += [(p + "input_layernorm.weight", torch.ones(H).to(dt)),
               (p + "self_attn.q_a_proj.weight", q), (p + "self_attn.q_a_proj.weight_scale_inv", q_scale),
               (p + "self_attn.o_proj.weight", rnd(H, HEADS * 8, dtype=dt)),
               (p + "post_attention_layernorm.weight", torch.ones(H).to(dt))]
        if l == 0:
            ts += [(p + "mlp.gate_proj.weight", rnd(24, H, dtype=dt)), (p + "mlp.up_proj.weight", rnd(24, H, dtype=dt)),
                   (p + "mlp.down_proj.weight", rnd(H, 24, dtype=dt))]
            continue
        ts += [(p + "mlp.gate.weight", rnd(E, H, dtype=dt)), (p + "mlp.gate.e_score_correction_bias", torch.randn(E) * 0.1)]
        fp8 = "F8_E4M3" if l == 1 else "F8_E5M2"
        norms[l] = []
        for e in range(E):
            sq = 0.0
            for n in ("gate_proj", "up_proj", "down_proj"):
                w, scale, values = fp8_weight(*((H, I) if n == "down_proj" else (I, H)), fp8)
                sq += sum(v * v for row in values for v in row)
                ts.append((f"{p}mlp.experts.{e}.{n}.weight", w))
                if not (drop_scale and l == 1 and n == "gate_proj"):
                    ts.append((f"{p}mlp.experts.{e}.{n}.weight_scale_inv", scale))
            norms[l].append(math.sqrt(sq))
        ts += [(p + "mlp.shared_experts.gate_proj.weight", rnd(I, H, dtype=dt)),
               (p + "mlp.shared_experts.up_proj.weight", rnd(I, H, dtype=dt)),
               (p + "mlp.shared_experts.down_proj.weight", rnd(H, I, dtype=dt))]
    ts += [("model.norm.weight", torch.ones(H).to(dt)), ("lm_head.weight", rnd(V, H, dtype=dt))]
    write_safetensors(os.path.join(d, "model.safetensors"), ts, {"format": "pt"})
    write_json(os.path.join(d, "config.json"), cfg)
    write_norms(d, norms)


# ---- GPT-OSS: packed experts with biases; hidden 32, expert width 64 (MXFP4 needs multiples of 32)

HO, IO = 32, 64


def make_gpt_oss(d, mxfp4=False):
    dt = torch.bfloat16
    cfg = base_config("gpt_oss", "GptOssForCausalLM", "bfloat16", 2)
    cfg.update({"hidden_size": HO, "intermediate_size": IO, "num_local_experts": E, "experts_per_token": 2,
                "num_attention_heads": 4, "head_dim": 8, "attention_bias": True, "sliding_window": 8,
                "layer_types": ["sliding_attention", "full_attention"], "swiglu_limit": 7.0,
                "router_aux_loss_coef": 0.9, "initial_context_length": 64})
    if mxfp4:
        cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    shards = [[("model.embed_tokens.weight", rnd(V, HO, dtype=dt))], []]
    norms = {}
    for l in range(2):
        p = f"model.layers.{l}."
        attn = [(p + "input_layernorm.weight", torch.ones(HO).to(dt))]
        for n, rows in (("q_proj", 4 * 8), ("k_proj", 8), ("v_proj", 8)):
            attn += [(p + f"self_attn.{n}.weight", rnd(rows, HO, dtype=dt)), (p + f"self_attn.{n}.bias", rnd(rows, dtype=dt))]
        attn += [(p + "self_attn.o_proj.weight", rnd(HO, 4 * 8, dtype=dt)), (p + "self_attn.o_proj.bias", rnd(HO, dtype=dt)),
                 (p + "self_attn.sinks", rnd(4, dtype=dt)), (p + "post_attention_layernorm.weight", torch.ones(HO).to(dt)),
                 (p + "mlp.router.weight", rnd(E, HO, dtype=dt)), (p + "mlp.router.bias", rnd(E, dtype=dt))]
        x = p + "mlp.experts."
        if mxfp4:
            experts = [(x + "gate_up_proj_blocks", torch.randint(0, 256, (E, 2 * IO, HO // 32, 16), dtype=torch.uint8)),
                       (x + "gate_up_proj_scales", torch.randint(120, 131, (E, 2 * IO, HO // 32), dtype=torch.uint8)),
                       (x + "gate_up_proj_bias", rnd(E, 2 * IO, dtype=dt)),
                       (x + "down_proj_blocks", torch.randint(0, 256, (E, HO, IO // 32, 16), dtype=torch.uint8)),
                       (x + "down_proj_scales", torch.randint(120, 131, (E, HO, IO // 32), dtype=torch.uint8)),
                       (x + "down_proj_bias", rnd(E, HO, dtype=dt))]
        else:
            gate_up, down = rnd(E, HO, 2 * IO, dtype=dt), rnd(E, IO, HO, dtype=dt)
            experts = [(x + "gate_up_proj", gate_up), (x + "gate_up_proj_bias", rnd(E, 2 * IO, dtype=dt)),
                       (x + "down_proj", down), (x + "down_proj_bias", rnd(E, HO, dtype=dt))]
            norms[l] = [math.sqrt(float((gate_up[e].double() ** 2).sum() + (down[e].double() ** 2).sum()))
                        for e in range(E)]
        shards[0] += attn  # layer 1's experts go to the second shard, away from its router
        shards[l] += experts
    shards[1] += [("model.norm.weight", torch.ones(HO).to(dt)), ("lm_head.weight", rnd(V, HO, dtype=dt))]
    shard(d, shards)
    write_json(os.path.join(d, "config.json"), cfg)
    if norms:
        write_norms(d, norms)


def make_bad_dense(d):
    cfg = base_config("llama", "LlamaForCausalLM", "float32", 1)
    cfg.update({"intermediate_size": 24})
    del cfg["num_experts_per_tok"]
    p = "model.layers.0."
    ts = [("model.embed_tokens.weight", rnd(V, H))] + attention(p, torch.float32)
    ts += [(p + "mlp.gate_proj.weight", rnd(24, H)), (p + "mlp.up_proj.weight", rnd(24, H)),
           (p + "mlp.down_proj.weight", rnd(H, 24)), ("model.norm.weight", torch.ones(H))]
    write_safetensors(os.path.join(d, "model.safetensors"), ts)
    write_json(os.path.join(d, "config.json"), cfg)


def make_bad_qwen3_dense(d):
    cfg = qwen3_config(1)
    cfg["mlp_only_layers"] = [0]
    p = "model.layers.0."
    dt = torch.bfloat16
    ts = [("model.embed_tokens.weight", rnd(V, H, dtype=dt))] + attention(p, dt, qk_norm=True)
    ts += [(p + "mlp.gate_proj.weight", rnd(32, H, dtype=dt)), (p + "mlp.up_proj.weight", rnd(32, H, dtype=dt)),
           (p + "mlp.down_proj.weight", rnd(H, 32, dtype=dt))]
    write_safetensors(os.path.join(d, "model.safetensors"), ts, {"format": "pt"})
    write_json(os.path.join(d, "config.json"), cfg)


def make_bad_unknown(d):
    cfg = base_config("fancy_moe", "FancyMoeForCausalLM", "float32", 1)
    cfg.update({"num_experts": E, "expert_width": I})
    p = "model.layers.0."
    ts = [("model.embed_tokens.weight", rnd(V, H)), (p + "moe.router.weight", rnd(E, H))]
    ts += [(f"{p}moe.experts.{e}.w_in.weight", rnd(I, H)) for e in range(E)]
    write_safetensors(os.path.join(d, "model.safetensors"), ts)
    write_json(os.path.join(d, "config.json"), cfg)


def make_bad_unequal_shape(d):
    make_qwen3_moe(d, odd_expert=(2, "up_proj", rnd(I + 2, H, dtype=torch.bfloat16)))


def make_bad_unequal_dtype(d):
    make_qwen3_moe(d, odd_expert=(3, "down_proj", rnd(H, I, dtype=torch.float32)))


def make_bad_no_config(d):
    write_safetensors(os.path.join(d, "model.safetensors"), [("model.embed_tokens.weight", rnd(V, H))])


def packed(make):
    return lambda d: make(d, layout="packed")


FIXTURES = {
    "qwen2_moe": make_qwen2_moe, "qwen3_moe": make_qwen3_moe, "olmoe": make_olmoe, "mixtral": make_mixtral,
    "deepseek_v3": make_deepseek_v3, "bad_dense": make_bad_dense, "bad_qwen3_dense": make_bad_qwen3_dense,
    "bad_unknown": make_bad_unknown, "bad_unequal_shape": make_bad_unequal_shape,
    "bad_unequal_dtype": make_bad_unequal_dtype, "bad_no_config": make_bad_no_config,
    "qwen2_moe_packed": packed(make_qwen2_moe), "qwen3_moe_packed": packed(make_qwen3_moe),
    "olmoe_packed": packed(make_olmoe), "mixtral_packed": packed(make_mixtral),
    "deepseek_v3_packed": packed(make_deepseek_v3), "deepseek_v3_fp8": make_deepseek_v3_fp8,
    "gpt_oss": make_gpt_oss, "gpt_oss_mxfp4": lambda d: make_gpt_oss(d, mxfp4=True),
    "bad_fp8_no_scale": lambda d: make_deepseek_v3_fp8(d, drop_scale=True),
    "bad_packed_dim": lambda d: make_qwen3_moe(d, layout="packed-bad-dim"),
}
# a packed fixture holds the same values as its per-expert one: same seed
SEED_OF = {name: name[:-len("_packed")] for name in FIXTURES if name.endswith("_packed")}
SEED_OF["bad_packed_dim"] = "qwen3_moe"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    names = sys.argv[2:] or list(FIXTURES)
    for name in names:
        if name not in FIXTURES:
            sys.exit(f"make_hf_fixtures.py: unknown fixture {name}; expected one of {', '.join(FIXTURES)}")
        torch.manual_seed(sum(map(ord, SEED_OF.get(name, name))))
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        FIXTURES[name](d)
    print(f"made {len(names)} fixtures in {out}")


if __name__ == "__main__":
    main()
