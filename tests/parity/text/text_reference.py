#!/usr/bin/env python3
"""Independent reference for the CLIP-style text tower (tests/parity/text/test_text_parity.cpp).

The network is assembled from PyTorch's own building blocks, not from our code:
token nn.Embedding + learned positional embedding, `layers` x nn.TransformerEncoderLayer
(pre-LN via norm_first=True, batch_first=True, dim_feedforward=mlp_ratio*W, dropout 0,
QuickGELU x*sigmoid(1.702x) as in openai/CLIP clip/model.py), an additive causal mask
(-inf above the diagonal), a final nn.LayerNorm, and pooling at each row's first EOT.

All parameters are random (seeded), including LayerNorm affine terms and biases, so a
mis-mapped name or transposed matrix shows up. Weights are rounded to float32 (what the C++
side loads); the expected outputs are computed in float64 from those same float32 values.

Writes to --out:
  weights.pt  plain dict {our parameter name: float32 tensor}
  io.pt       {"ids": int64 [B, 77], "pooled": [B, W], "tokens": [B, 77, W],
               "ids_short": int64 [B2, 20], "pooled_short": [B2, W], "tokens_short": [B2, 20, W]}
"""
import argparse
import os

import torch
from torch import nn

SOT, EOT = 49406, 49407


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Reference(nn.Module):
    def __init__(self, vocab, context, width, heads, layers, mlp_ratio, eps):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model=width, nhead=heads,
                                       dim_feedforward=int(round(mlp_ratio * width)),
                                       dropout=0.0, activation=quick_gelu, batch_first=True,
                                       norm_first=True, layer_norm_eps=eps)
            for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width, eps=eps)

    def tokens(self, ids):
        L = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:L]
        mask = torch.full((L, L), float("-inf"), dtype=x.dtype).triu(1)
        for layer in self.layers:
            x = layer(x, src_mask=mask)
        return self.ln_final(x)

    def pooled(self, ids):
        x = self.tokens(ids)
        rows = []
        for b in range(ids.shape[0]):
            hits = (ids[b] == EOT).nonzero().flatten()
            assert hits.numel() > 0, f"row {b} has no EOT"
            rows.append(x[b, int(hits[0])])
        return torch.stack(rows), x


def our_names(ref):
    """Renames the reference's parameters onto the project's (CLIP/UniCL) names."""
    table = [("self_attn.in_proj_weight", "attn.in_proj_weight"),
             ("self_attn.in_proj_bias", "attn.in_proj_bias"),
             ("self_attn.out_proj.", "attn.out_proj."),
             ("linear1.", "mlp.c_fc."), ("linear2.", "mlp.c_proj."),
             ("norm1.", "ln_1."), ("norm2.", "ln_2.")]
    out = {}
    for name, t in ref.state_dict().items():
        new = name
        if new.startswith("layers."):
            new = "resblocks." + new[len("layers."):]
            for a, b in table:
                new = new.replace(a, b)
        out[new] = t.detach().to(torch.float32).clone()
    return out


def make_ids(gen, context):
    rows = []
    def body(n):
        return torch.randint(1, SOT, (n,), generator=gen)  # ordinary BPE ids < SOT
    # EOT at varying positions, zero padding after it.
    for eot_pos in (1, 5, 17, 40, 63):
        r = torch.zeros(context, dtype=torch.long)
        r[0] = SOT
        r[1:eot_pos] = body(eot_pos - 1)
        r[eot_pos] = EOT
        rows.append(r)
    # Non-zero ids after the EOT, including a second EOT: must pool at the first one.
    r = torch.cat([torch.tensor([SOT]), body(context - 1)])
    r[9] = EOT
    r[30] = EOT
    rows.append(r)
    # EOT at the last position (a full-length caption).
    r = torch.cat([torch.tensor([SOT]), body(context - 2), torch.tensor([EOT])])
    rows.append(r)
    return torch.stack(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=49408)
    ap.add_argument("--context", type=int, default=77)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--eps", type=float, default=1e-12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    ref = Reference(a.vocab, a.context, a.width, a.heads, a.layers, a.mlp_ratio, a.eps)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.05)
            elif "norm" in name or name.startswith("ln_final"):
                p.normal_(1.0, 0.2)  # LayerNorm gains
            elif name.startswith("token_embedding"):
                p.normal_(0.0, 0.02)
            elif name == "positional_embedding":
                p.normal_(0.0, 0.01)
            else:
                p.normal_(0.0, a.width ** -0.5)
    weights = our_names(ref)

    gen = torch.Generator().manual_seed(a.seed + 1)
    ids = make_ids(gen, a.context)
    # Shorter inputs (L = 20) exercise the sliced positional embedding and mask.
    ids_short = ids[[1, 2], :20].clone()

    ref = ref.double().eval()  # from the float32-rounded weights above
    with torch.no_grad():
        pooled, tokens = ref.pooled(ids)
        pooled_s, tokens_s = ref.pooled(ids_short)

    os.makedirs(a.out, exist_ok=True)
    torch.save(weights, os.path.join(a.out, "weights.pt"))
    torch.save({"ids": ids, "pooled": pooled, "tokens": tokens,
                "ids_short": ids_short, "pooled_short": pooled_s, "tokens_short": tokens_s},
               os.path.join(a.out, "io.pt"))
    print(f"wrote {len(weights)} tensors, ids {tuple(ids.shape)}, eps {a.eps} to {a.out}")


if __name__ == "__main__":
    main()
