"""Parity with Hugging Face transformers itself (one release per run; tests/hf_transformers_test.sh
runs it under transformers 4.57 and 5 from the pinned PyPI environment, scripts/pyenv.sh).

For qwen3_moe, qwen2_moe, olmoe and mixtral, fp32, eager attention:
  A. checkpoints made by transformers (from_config, seeded random weights scaled so that routing
     is decisive, save_pretrained in the release's default layout): `upcycle eval --ids` gives
     transformers' loss and logits on the same ids (1e-5 relative) and the same top-K expert set
     per token and MoE layer (output_router_logits);
  B. checkpoints written by upcycle after training with a nonzero balancing bias, converted to
     bf16 and to the packed layout (transformers 5 only: 4.57 keeps experts per expert), after
     `grow` through the engine and streamed: transformers' load report has no missing,
     unexpected or mismatched key, and its logits equal `upcycle eval` of the same directory;
     the top level of every directory holds no *.safetensors but the model's (vLLM loads them
     all); `eval --json` reports loss_with_balance_bias and topk_agreement;
  C. transformers save (fp32 and bf16) -> `upcycle convert` -> transformers load: every tensor
     identical, in the files and in the loaded model.
Prints one line per check and closes with "N passed, N failed". Usage:
  python tests/hf_transformers_test.py --upcycle ./upcycle --work DIR [--data DATA_DIR]
"""
import argparse, glob, json, math, os, subprocess, sys, warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
MAJOR = int(transformers.__version__.split(".")[0])
TAG = f"transformers {transformers.__version__}"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

passed = failed = 0


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   [{TAG}] {name}")
    else:
        failed += 1
        print(f"FAIL [{TAG}] {name}: {detail}")
    sys.stdout.flush()
    return cond


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


# ---- the four families, small but with every structural feature the engine maps ----

BASE = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
FAMILIES = {
    # a dense first layer (mlp_only_layers) and renormalized top-K
    "qwen3_moe": dict(BASE, head_dim=16, intermediate_size=96, moe_intermediate_size=32, num_experts=8,
                      num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[0]),
    # q/k/v biases, a gated shared expert, top-K not renormalized
    "qwen2_moe": dict(BASE, head_dim=16, intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                      num_experts=8, num_experts_per_tok=2, norm_topk_prob=False, qkv_bias=True),
    # q/k norm over the whole projection and clip_qkv
    "olmoe": dict(BASE, intermediate_size=32, num_experts=8, num_experts_per_tok=2, clip_qkv=2.0, norm_topk_prob=False),
    "mixtral": dict(BASE, head_dim=16, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2),
    # a model without MoE layers: the dense Qwen3 that a qwen3_moe model without experts is written as
    "qwen3": dict(BASE, head_dim=16, intermediate_size=96),
}
MOE = [f for f in FAMILIES if f != "qwen3"]


def hf_config(family):
    return transformers.AutoConfig.for_model(family, **FAMILIES[family])


def n_experts(cfg):
    return getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", 0)


def scale_weights(model, seed):
    """Seeded weights large enough that the routing is decisive (router logits of a few units)."""
    g = torch.Generator().manual_seed(seed)
    E = n_experts(model.config)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1 + 0.2 * r)
            elif name.endswith(".bias"):
                p.copy_(0.2 * r)
            elif name.endswith("gate.weight") and E and p.shape[0] == E:  # the router
                p.copy_(r * 3 / math.sqrt(p.shape[-1]))
            elif "embed" in name:
                p.copy_(r)
            else:
                p.copy_(r / math.sqrt(p.shape[-1]))


def load(d):
    m, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True, dtype=torch.float32,
                                                   attn_implementation="eager")
    m.eval()
    return m, {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}


def hf_forward(m, ids):
    """the loss (cross-entropy alone: with output_router_logits transformers adds the aux loss),
    the logits and each MoE layer's top-K experts"""
    with torch.no_grad():
        plain = m(torch.tensor(ids), labels=torch.tensor(ids))
        out = m(torch.tensor(ids), output_router_logits=True) if hasattr(m.config, "num_experts_per_tok") else None
    K = getattr(m.config, "num_experts_per_tok", 0)
    topk = [torch.topk(torch.softmax(r.float(), dim=-1), K, dim=-1).indices for r in (out.router_logits or ())] if out else []
    return plain.loss.item(), plain.logits.float(), topk


def up_eval(up, d, ids, work, name):
    ids_path = os.path.join(work, f"{name}.ids.json")
    json.dump(ids, open(ids_path, "w"))
    lp, tp = os.path.join(work, f"{name}.logits"), os.path.join(work, f"{name}.topk")
    r = run([up, "eval", "--ckpt", d, "--ids", ids_path, "--logits", lp, "--router-topk", tp, "--json", "--threads", "2"])
    if r.returncode:
        return None, r.stderr.strip().splitlines()[-1:] or ["(no message)"]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    B, L = len(ids), len(ids[0])
    logits = torch.frombuffer(bytearray(open(lp, "rb").read()), dtype=torch.float32)
    res["logits"] = logits.reshape(B, L - 1, -1)
    raw = bytearray(open(tp, "rb").read())
    res["topk"] = torch.frombuffer(raw, dtype=torch.int32) if raw else torch.zeros(0, dtype=torch.int32)
    return res, None


def same_sets(a, b):
    """rows of a and b (N, K) that select the same set"""
    return int((a.sort(dim=-1).values == b.sort(dim=-1).values).all(dim=-1).sum())


def compare(label, up, d, ids, work, name, want_topk=True, loaded=None):
    """transformers' loss, logits and top-K of directory d (loaded: its load(d) when the caller has it)
    against `upcycle eval` of it"""
    m, info = loaded or load(d)
    loss, logits, topk = hf_forward(m, ids)
    res, err = up_eval(up, d, ids, work, name)
    if not check(res is not None, f"{label}: upcycle eval reads it", err):
        return None
    rel = abs(res["loss"] - loss) / abs(loss)
    check(rel <= 1e-5, f"{label}: loss {res['loss']:.7f} = transformers' {loss:.7f}", f"relative difference {rel:.2e}")
    ref = logits[:, :-1]
    diff = (res["logits"] - ref).abs().max().item() / ref.abs().max().item()
    check(res["logits"].shape == ref.shape and diff <= 1e-5, f"{label}: logits equal (max difference {diff:.1e} of the largest)",
          f"shape {tuple(res['logits'].shape)} vs {tuple(ref.shape)}, relative {diff:.2e}")
    if want_topk and topk:
        K = m.config.num_experts_per_tok
        ours = res["topk"].reshape(len(topk), len(ids), len(ids[0]) - 1, K)
        total = same = 0
        for layer, t in enumerate(topk):
            t = t.reshape(len(ids), len(ids[0]), K)[:, :-1].reshape(-1, K)
            same += same_sets(ours[layer].reshape(-1, K).long(), t)
            total += t.shape[0]
        check(same == total, f"{label}: the same top-{K} experts for all {total} (token, MoE layer) pairs", f"{total - same} differ")
    return m, info, res


def check_loads_clean(label, info):
    bad = {k: v[:4] for k, v in info.items() if v}
    return check(not bad, f"{label}: load report lists no missing, unexpected or mismatched key", str(bad))


def check_top_level(label, d):
    """vLLM loads every top-level *.safetensors of a directory without an index"""
    files = sorted(os.path.basename(f) for f in glob.glob(os.path.join(d, "*.safetensors")))
    index = os.path.join(d, "model.safetensors.index.json")
    want = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    check(files == want, f"{label}: the top level holds only the model's safetensors ({', '.join(files)})", f"{files} vs {want}")


def rng_ids(seed, rows, length, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (rows, length), generator=g).tolist()


def hf_made(family, work, dtype=torch.float32):
    """transformers' own checkpoint, saved by this release in its default layout"""
    d = os.path.join(work, f"hf-{family}-{str(dtype).split('.')[-1]}")
    if os.path.exists(os.path.join(d, "config.json")):
        return d
    torch.manual_seed(1)
    m = AutoModelForCausalLM.from_config(hf_config(family), attn_implementation="eager")
    scale_weights(m, seed=sum(map(ord, family)))
    m.to(dtype).save_pretrained(d)
    return d


def part_a(up, work):
    ids = rng_ids(7, 2, 33)
    for family in FAMILIES:
        d = hf_made(family, work)
        compare(f"A {family} made by transformers", up, d, ids, work, f"a-{family}")


def train_config(family):
    model = {k: v for k, v in FAMILIES[family].items() if k != "qkv_bias"}
    model["model_type"] = family
    return {"model": model, "train": {"batch_size": 8, "seq_len": 32, "steps": 40, "lr": 0.003, "warmup_steps": 4,
                                      "bias_update_rate": 0.02, "eval_every": 0, "seed": 3}}


def part_b(up, work, shared, data):
    ids = rng_ids(11, 2, 33)
    for family in FAMILIES:
        # upcycle's own training, once for both releases (shared dir; the same bytes each time)
        run_dir = os.path.join(shared, f"train-{family}")
        final = os.path.join(run_dir, "final")
        if not os.path.exists(os.path.join(final, "config.json")):
            cfg = os.path.join(shared, f"{family}.json")
            json.dump(train_config(family), open(cfg, "w"))
            r = run([up, "train", "--config", cfg, "--data", data, "--out", run_dir, "--force", "--quiet", "--threads", "2"])
            if not check(r.returncode == 0, f"B {family}: upcycle trains it", r.stderr[-300:]):
                continue
        moe = family in MOE
        if moe:
            bias = load_file(os.path.join(final, "training", "balance_bias.safetensors"))
            span = max(float(t.max() - t.min()) for t in bias.values())
            check(span > 0.01, f"B {family}: the trained balancing biases are nonzero (span {span:.3f})", f"span {span}")
        else:
            arch = json.load(open(os.path.join(final, "config.json")))["architectures"]
            check(arch == ["Qwen3ForCausalLM"], f"B {family}: a model without MoE layers is written as Qwen3ForCausalLM", str(arch))
        variants = [("per-expert fp32", final)]
        conversions = (("per-expert bf16", ["--save-dtype", "bf16"]), ("packed fp32", ["--layout", "packed"]),
                       ("packed bf16", ["--layout", "packed", "--save-dtype", "bf16"]))
        for name, extra in conversions if moe else conversions[:1]:
            d = os.path.join(shared, f"conv-{family}-{name.replace(' ', '-')}")
            if not os.path.exists(os.path.join(d, "config.json")):
                r = run([up, "convert", "--in", final, "--out", d] + extra)
                if not check(r.returncode == 0, f"B {family}: upcycle convert to {name}", r.stderr[-300:]):
                    continue
            variants.append((name, d))
        grown = os.path.join(shared, f"grown-{family}")
        if not moe:
            pass
        elif not os.path.exists(os.path.join(grown, "config.json")):
            r = run([up, "grow", "--ckpt", final, "--out", grown, "--factor", "2", "--force"])
            check(r.returncode == 0, f"B {family}: upcycle grow through the engine", r.stderr[-300:])
        streamed = os.path.join(work, f"streamed-{family}")
        if moe and not os.path.exists(os.path.join(streamed, "config.json")):
            r = run([up, "grow", "--ckpt", hf_made(family, work), "--out", streamed, "--factor", "2", "--force"])
            check(r.returncode == 0, f"B {family}: upcycle grow streamed (a transformers checkpoint)", r.stderr[-300:])
        if moe:
            variants += [("grown through the engine (x2)", grown), ("transformers' checkpoint grown streamed (x2)", streamed)]
        for name, d in variants:
            label = f"B {family} {name}"
            check_top_level(label, d)
            if "packed" in name and MAJOR < 5:
                # 4.57 keeps experts per expert: a packed checkpoint loads with the experts missing
                _, info = load(d)
                check(bool(info["missing_keys"]), f"{label}: 4.57 reports the packed experts missing (documented: packed "
                      "is for transformers 5)", str(info))
                continue
            loaded = load(d)
            check_loads_clean(label, loaded[1])
            out = compare(label, up, d, ids, work, f"b-{family}-{name.replace(' ', '-')}", want_topk=False, loaded=loaded)
            if out and moe and name.startswith("per-expert fp32"):
                res = out[2]
                check("loss_with_balance_bias" in res and "topk_agreement" in res and res["topk_agreement"] < 1,
                      f"{label}: eval --json reports loss_with_balance_bias {res.get('loss_with_balance_bias', 0):.5f} "
                      f"and topk_agreement {res.get('topk_agreement', 1):.3f}", str({k: v for k, v in res.items()
                                                                                   if k not in ('logits', 'topk')}))


def part_c(up, work):
    for family in FAMILIES:
        for dtype in (torch.float32, torch.bfloat16):
            label = f"C {family} {str(dtype).split('.')[-1]}"
            d = hf_made(family, work, dtype)
            rt = os.path.join(work, f"rt-{family}-{str(dtype).split('.')[-1]}")
            r = run([up, "convert", "--in", d, "--out", rt])
            if not check(r.returncode == 0, f"{label}: upcycle loads and saves transformers' checkpoint", r.stderr[-300:]):
                continue
            a, b = {}, {}
            for f in glob.glob(os.path.join(d, "*.safetensors")):
                a.update(load_file(f))
            for f in glob.glob(os.path.join(rt, "*.safetensors")):
                b.update(load_file(f))
            diff = [k for k in sorted(set(a) | set(b)) if k not in a or k not in b or a[k].dtype != b[k].dtype
                    or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
            check(not diff, f"{label}: every tensor of the files identical ({len(a)} tensors)", str(diff[:4]))
            ma, _ = load(d)
            mb, info = load(rt)
            check_loads_clean(label, info)
            sa, sb = ma.state_dict(), mb.state_dict()
            diff = [k for k in sa if k not in sb or not torch.equal(sa[k], sb[k])]
            check(not diff and len(sa) == len(sb), f"{label}: every tensor of the loaded model identical ({len(sa)})", str(diff[:4]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upcycle", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", required=True, help="a byte-tokenized data directory (upcycle tokenize)")
    ap.add_argument("--parts", default="abc")
    a = ap.parse_args()
    up = os.path.abspath(a.upcycle)
    work = os.path.join(a.work, f"transformers{MAJOR}")  # what this release writes
    shared = os.path.join(a.work, "upcycle")             # what upcycle writes, read by both releases
    os.makedirs(work, exist_ok=True)
    os.makedirs(shared, exist_ok=True)
    for part, fn, args in (("a", part_a, (up, work)), ("b", part_b, (up, work, shared, a.data)), ("c", part_c, (up, work))):
        if part not in a.parts:
            continue
        try:
            fn(*args)
        except Exception as e:  # a crash of the harness is a failure, and the other parts still run
            import traceback
            traceback.print_exc()
            check(False, f"part {part.upper()} ran to the end", f"{type(e).__name__}: {e}")
    print(f"{TAG}: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
