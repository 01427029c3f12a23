#!/usr/bin/python3
"""PyTorch baselines for `upcycle bench train --compare-torch`, run with PyTorch 2 from PyPI
(the pinned environment of scripts/pyenv.sh: torch 2.15, transformers 5).

Usage:
    python tests/torch_bench.py CONFIG_DIR --impl IMPL --batch B --seq T --steps S --threads N
        [--lr X --weight-decay X --grad-clip X --bias-rate X --seed S]

CONFIG_DIR holds the config.json that upcycle writes for the preset. IMPL:
    hf            transformers' own model for that config (Qwen3MoeForCausalLM, or Qwen3ForCausalLM
                  without MoE layers; its default attention, sdpa), the training step a user runs:
                  forward with labels, backward, clip_grad_norm_, torch.optim.AdamW
    ref           the independent reference of tests/torch_ref.py (plain fp32 eager PyTorch,
                  per-expert loop with index_add as in the HF modeling code, AdamW, clipping,
                  the loss-free balancing-bias update)
    ref-compiled  the same under torch.compile (inductor), compiled in 3 untimed warm-up steps
The same config, batch (B sequences of T tokens) and thread count as our trainer, random
tokens; prints one line:
    torch VERSION (IMPL): S steps, X s/step, Y tokens/s, peak RSS Z MB
Timing covers S steps after one untimed warm-up step (the same protocol as bench train).
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

import torch_ref


def hf_steps(a, tokens):
    """transformers' model: (untimed warm-up, timed steps) seconds"""
    import transformers
    transformers.logging.set_verbosity_error()
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(a.config)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        return loss.item()

    step(tokens[0, :, :-1])  # warm-up
    t0 = time.perf_counter()
    losses = [step(tokens[s, :, :-1]) for s in range(1, a.steps + 1)]
    return time.perf_counter() - t0, losses


def ref_steps(a, tokens, compiled):
    try:
        with open(os.path.join(a.config, "config.json")) as f:
            cfg = torch_ref.Config(json.load(f))
    except (OSError, ValueError, torch_ref.Malformed) as e:
        raise SystemExit(f"torch_bench: {a.config}: {e}")
    if compiled:
        torch_ref.forward = torch.compile(torch_ref.forward)
    std = 0.02
    init = {}
    for name, (shape, trainable) in torch_ref.param_shapes(cfg).items():
        if len(shape) == 1:  # norms 1, balancing bias 0
            init[name] = torch.zeros(shape) if not trainable else torch.ones(shape)
        else:
            init[name] = torch.randn(shape) * std
    hp = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": a.weight_decay, "grad_clip": a.grad_clip,
          "bias_update_rate": a.bias_rate, "aux_loss_coef": 0.0, "z_loss_coef": 0.0}
    # warm-up (allocator, thread pool), then the timed steps. Compiled: 3 warm-up steps, as the
    # experts' varying token counts make dynamo recompile with dynamic shapes on the second step
    # (that compilation, 1-7 s, had landed in the timed steps of some rounds)
    for s in range(3 if compiled else 1):
        torch_ref.train(cfg, init, tokens[:1], [a.lr], hp)
    t0 = time.perf_counter()
    losses, _ = torch_ref.train(cfg, init, tokens[1:], [a.lr] * a.steps, hp)
    return time.perf_counter() - t0, losses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="directory of the config.json")
    ap.add_argument("--impl", choices=("hf", "ref", "ref-compiled"), default="ref")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--bias-rate", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    with open(os.path.join(a.config, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    tokens = torch.randint(0, vocab, (a.steps + 1, a.batch, a.seq + 1))
    if a.impl == "hf":
        seconds, losses = hf_steps(a, tokens)
    else:
        seconds, losses = ref_steps(a, tokens, a.impl == "ref-compiled")
    dt = seconds / a.steps
    if not all(l == l for l in losses):
        print("torch_bench: non-finite loss", file=sys.stderr)
        return 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch {torch.__version__} ({a.impl}): {a.steps} steps, {dt:.4f} s/step, {a.batch * a.seq / dt:.1f} tokens/s, "
          f"peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
