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
  bad_dense           llama (dense only)
  bad_qwen3_dense     qwen3_moe config whose layers are all dense (mlp_only_layers)
  bad_unknown         unknown MoE model_type
  bad_unequal_shape   qwen3_moe with one expert of a different shape
  bad_unequal_dtype   qwen3_moe with one expert of a different dtype
  bad_no_config       weights without config.json
"""
import json
import os
import struct
import sys

import torch

H, V, E, I, HEADS, HD, KV = 16, 32, 4, 8, 2, 8, 1

DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def tensor_bytes(t):
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
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
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


def make_qwen2_moe(d):
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
    write_safetensors(os.path.join(d, "model.safetensors"), ts, {"format": "pt"})
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


def make_qwen3_moe(d, odd_expert=None):
    dt = torch.bfloat16
    a0, e0 = qwen3_layer("model.layers.0.", dt, torch.zeros(E), odd_expert=None)
    a1, e1 = qwen3_layer("model.layers.1.", dt, torch.randn(E) * 0.05, odd_expert=odd_expert)
    s1 = [("model.embed_tokens.weight", rnd(V, H, dtype=dt))] + a0 + e0 + a1
    s2 = e1 + [("model.norm.weight", torch.ones(H).to(dt)), ("lm_head.weight", rnd(V, H, dtype=dt))]
    shard(d, [s1, s2])
    write_json(os.path.join(d, "config.json"), qwen3_config())
    write_json(os.path.join(d, "generation_config.json"), {"do_sample": True, "temperature": 0.6})


def make_olmoe(d):
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
    write_safetensors(os.path.join(d, "model.safetensors"), ts, {"format": "pt"})
    write_json(os.path.join(d, "config.json"), cfg)


def make_mixtral(d):
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
    shard(d, [s1, s2, s3])
    write_json(os.path.join(d, "config.json"), cfg)


def make_deepseek_v3(d):
    dt = torch.float32
    cfg = base_config("deepseek_v3", "DeepseekV3ForCausalLM", "float32", 3)
    cfg.update({"n_routed_experts": E, "n_shared_experts": 1, "moe_intermediate_size": I, "intermediate_size": 24,
                "first_k_dense_replace": 1, "moe_layer_freq": 1, "n_group": 2, "topk_group": 1,
                "topk_method": "noaux_tc", "scoring_func": "sigmoid", "routed_scaling_factor": 2.5,
                "norm_topk_prob": True, "q_lora_rank": 12, "kv_lora_rank": 8, "qk_nope_head_dim": 4,
                "qk_rope_head_dim": 4, "v_head_dim": 8, "num_nextn_predict_layers": 0,
                "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"}})
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
    write_safetensors(os.path.join(d, "model.safetensors"), ts, {"format": "pt"})
    write_json(os.path.join(d, "config.json"), cfg)
    with open(os.path.join(d, "configuration_deepseek.py"), "w") as f:
        f.write("# remote code placeholder\n")


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


FIXTURES = {
    "qwen2_moe": make_qwen2_moe, "qwen3_moe": make_qwen3_moe, "olmoe": make_olmoe, "mixtral": make_mixtral,
    "deepseek_v3": make_deepseek_v3, "bad_dense": make_bad_dense, "bad_qwen3_dense": make_bad_qwen3_dense,
    "bad_unknown": make_bad_unknown, "bad_unequal_shape": make_bad_unequal_shape,
    "bad_unequal_dtype": make_bad_unequal_dtype, "bad_no_config": make_bad_no_config,
}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    names = sys.argv[2:] or list(FIXTURES)
    for name in names:
        if name not in FIXTURES:
            sys.exit(f"make_hf_fixtures.py: unknown fixture {name}; expected one of {', '.join(FIXTURES)}")
        torch.manual_seed(sum(map(ord, name)))
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        FIXTURES[name](d)
    print(f"made {len(names)} fixtures in {out}")


if __name__ == "__main__":
    main()
