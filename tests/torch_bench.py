#!/usr/bin/python3
"""PyTorch baseline for `upcycle bench train --compare-torch`.

Usage:
    /usr/bin/python3 tests/torch_bench.py CONFIG_JSON --batch B --seq T --steps S --threads N
        [--lr X --weight-decay X --grad-clip X --bias-rate X --seed S]

Trains the independent reference model of tests/torch_ref.py (plain fp32 eager PyTorch,
Hugging Face Qwen3-MoE semantics: per-expert loop with index_add as in the HF modeling code,
torch.optim.AdamW, clip_grad_norm_, the loss-free balancing-bias update) on random tokens with
the same config, batch and thread count as our trainer, and prints one line:
    torch: S steps, X s/step, Y tokens/s, peak RSS Z MB
Timing covers S steps after one untimed warm-up step (the same protocol as bench train).
"""
import argparse
import json
import resource
import sys
import time

import torch

import torch_ref


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
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
    try:
        with open(a.config) as f:
            cfg = torch_ref.Config(json.load(f))
    except (OSError, ValueError, torch_ref.Malformed) as e:
        print(f"torch_bench: {a.config}: {e}", file=sys.stderr)
        return 2
    std = 0.02
    init = {}
    for name, (shape, trainable) in torch_ref.param_shapes(cfg).items():
        if len(shape) == 1:  # norms 1, balancing bias 0
            init[name] = torch.zeros(shape) if not trainable else torch.ones(shape)
        else:
            init[name] = torch.randn(shape) * std
    hp = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": a.weight_decay, "grad_clip": a.grad_clip,
          "bias_update_rate": a.bias_rate, "aux_loss_coef": 0.0, "z_loss_coef": 0.0}
    tokens = torch.randint(0, cfg.vocab_size, (a.steps + 1, a.batch, a.seq + 1))
    # warm-up step (allocator, thread pool), then the timed steps
    torch_ref.train(cfg, init, tokens[:1], [a.lr], hp)
    t0 = time.perf_counter()
    losses, _ = torch_ref.train(cfg, init, tokens[1:], [a.lr] * a.steps, hp)
    dt = (time.perf_counter() - t0) / a.steps
    if not all(l == l for l in losses):
        print("torch_bench: non-finite loss", file=sys.stderr)
        return 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch {torch.__version__}: {a.steps} steps, {dt:.4f} s/step, {a.batch * a.seq / dt:.1f} tokens/s, peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
