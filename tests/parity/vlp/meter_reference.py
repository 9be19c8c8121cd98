#!/usr/bin/env python3
"""Independent reference for the METER-style fusion (tests/parity/vlp/test_meter_parity.cpp).

Built from PyTorch's own blocks, not from our code or METER's:
  * a co-attention layer = nn.MultiheadAttention (self) + residual + nn.LayerNorm,
    nn.MultiheadAttention (queries from this stream, keys/values from the other) + residual +
    nn.LayerNorm, Linear -> exact GELU -> Linear + residual + nn.LayerNorm (post-LN), with
    key_padding_mask for padded keys;
  * the bidirectional text tower = token + positional embedding, nn.TransformerEncoderLayer
    (norm_first, QuickGELU, no causal mask, src_key_padding_mask), final nn.LayerNorm;
  * the model = Linear projections + token-type embedding, M_co parallel layer pairs, tanh poolers
    (text: first token; image: mean of tokens), ITM Linear, MLM (Linear, GELU, LayerNorm,
    Linear without bias + bias), VQA Sequential(Linear, LayerNorm, GELU, Linear).
Every parameter is random (seeded), LayerNorm affine terms included, so a mis-mapped name or a
transposed matrix shows. Weights are rounded to float32 (what the C++ side loads); expected
outputs are computed in float64 from those float32 values.

Writes to --out:
  layer_weights.pt, layer_io.pt   one co-attention layer: x, y, x_mask, y_mask (bool, True = real
                                  token) and out
  weights.pt, io.pt               the model without the image tower: ids, image_tokens and
                                  text_feats, image_feats, cls_feats, itm, mlm, vqa
"""
import argparse
import os

import torch
import torch.nn.functional as F
from torch import nn


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class CoLayer(nn.Module):
    def __init__(self, hidden, heads, ffn, eps):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ln_self = nn.LayerNorm(hidden, eps=eps)
        self.cross_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ln_cross = nn.LayerNorm(hidden, eps=eps)
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)
        self.ln_ffn = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, y, x_pad, y_pad):
        h = self.ln_self(x + self.self_attn(x, x, x, key_padding_mask=x_pad, need_weights=False)[0])
        h = self.ln_cross(h + self.cross_attn(h, y, y, key_padding_mask=y_pad, need_weights=False)[0])
        return self.ln_ffn(h + self.fc2(F.gelu(self.fc1(h))))

    def our_names(self, prefix):
        out = {}
        H = self.fc2.out_features
        for ref, ours in ((self.self_attn, "attention"), (self.cross_attn, "crossattention")):
            for part, (w, b) in zip(("query", "key", "value"),
                                    zip(ref.in_proj_weight.split(H), ref.in_proj_bias.split(H))):
                out[f"{prefix}{ours}.self.{part}.weight"] = w
                out[f"{prefix}{ours}.self.{part}.bias"] = b
            out[f"{prefix}{ours}.output.dense.weight"] = ref.out_proj.weight
            out[f"{prefix}{ours}.output.dense.bias"] = ref.out_proj.bias
        for ln, ours in ((self.ln_self, "attention.output.LayerNorm"),
                         (self.ln_cross, "crossattention.output.LayerNorm"),
                         (self.ln_ffn, "output.LayerNorm")):
            out[f"{prefix}{ours}.weight"] = ln.weight
            out[f"{prefix}{ours}.bias"] = ln.bias
        for lin, ours in ((self.fc1, "intermediate.dense"), (self.fc2, "output.dense")):
            out[f"{prefix}{ours}.weight"] = lin.weight
            out[f"{prefix}{ours}.bias"] = lin.bias
        return out


class TextTower(nn.Module):
    def __init__(self, vocab, context, width, heads, layers):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                       activation=quick_gelu, batch_first=True, norm_first=True)
            for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)

    def forward(self, ids, pad):
        x = self.token_embedding(ids) + self.positional_embedding[:ids.shape[1]]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
        return self.ln_final(x)

    def our_names(self, prefix):
        out = {f"{prefix}token_embedding.weight": self.token_embedding.weight,
               f"{prefix}positional_embedding": self.positional_embedding,
               f"{prefix}ln_final.weight": self.ln_final.weight,
               f"{prefix}ln_final.bias": self.ln_final.bias}
        for k, layer in enumerate(self.layers):
            p = f"{prefix}resblocks.{k}."
            out[p + "attn.in_proj_weight"] = layer.self_attn.in_proj_weight
            out[p + "attn.in_proj_bias"] = layer.self_attn.in_proj_bias
            out[p + "attn.out_proj.weight"] = layer.self_attn.out_proj.weight
            out[p + "attn.out_proj.bias"] = layer.self_attn.out_proj.bias
            for ref, ours in ((layer.linear1, "mlp.c_fc"), (layer.linear2, "mlp.c_proj"),
                              (layer.norm1, "ln_1"), (layer.norm2, "ln_2")):
                out[p + ours + ".weight"] = ref.weight
                out[p + ours + ".bias"] = ref.bias
        return out


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        H = a.hidden
        self.text = TextTower(a.vocab + 1, a.context, a.text_width, a.text_heads, a.text_layers)
        self.text_proj = nn.Linear(a.text_width, H)
        self.image_proj = nn.Linear(a.image_width, H)
        self.types = nn.Embedding(2, H)
        self.text_layers = nn.ModuleList([CoLayer(H, a.heads, a.ffn, 1e-12) for _ in range(a.layers)])
        self.image_layers = nn.ModuleList([CoLayer(H, a.heads, a.ffn, 1e-12) for _ in range(a.layers)])
        self.text_pool = nn.Linear(H, H)
        self.image_pool = nn.Linear(H, H)
        self.itm = nn.Linear(2 * H, 2)
        self.mlm_dense = nn.Linear(H, H)
        self.mlm_norm = nn.LayerNorm(H, eps=1e-12)
        self.mlm_decoder = nn.Linear(H, a.vocab, bias=False)
        self.mlm_bias = nn.Parameter(torch.empty(a.vocab))
        self.vqa = nn.Sequential(nn.Linear(2 * H, 2 * H), nn.LayerNorm(2 * H), nn.GELU(),
                                 nn.Linear(2 * H, a.answers))

    def forward(self, ids, pad, image_tokens):
        x = self.text_proj(self.text(ids, pad)) + self.types.weight[0]
        y = self.image_proj(image_tokens) + self.types.weight[1]
        for tl, il in zip(self.text_layers, self.image_layers):
            x, y = tl(x, y, pad, None), il(y, x, None, pad)
        cls = torch.cat([torch.tanh(self.text_pool(x[:, 0])), torch.tanh(self.image_pool(y.mean(1)))], -1)
        mlm = self.mlm_decoder(self.mlm_norm(F.gelu(self.mlm_dense(x)))) + self.mlm_bias
        return {"text_feats": x, "image_feats": y, "cls_feats": cls, "itm": self.itm(cls), "mlm": mlm,
                "vqa": self.vqa(cls)}

    def our_names(self):
        out = self.text.our_names("text_transformer.")
        for k, (tl, il) in enumerate(zip(self.text_layers, self.image_layers)):
            out.update(tl.our_names(f"cross_modal_text_layers.{k}."))
            out.update(il.our_names(f"cross_modal_image_layers.{k}."))
        pairs = {"cross_modal_text_transform": self.text_proj, "cross_modal_image_transform": self.image_proj,
                 "cross_modal_text_pooler.dense": self.text_pool, "cross_modal_image_pooler.dense": self.image_pool,
                 "itm_score.fc": self.itm, "mlm_score.transform.dense": self.mlm_dense,
                 "mlm_score.transform.LayerNorm": self.mlm_norm, "vqa_classifier.0": self.vqa[0],
                 "vqa_classifier.1": self.vqa[1], "vqa_classifier.3": self.vqa[3]}
        for name, m in pairs.items():
            out[name + ".weight"] = m.weight
            out[name + ".bias"] = m.bias
        out["token_type_embeddings.weight"] = self.types.weight
        out["mlm_score.decoder.weight"] = self.mlm_decoder.weight
        out["mlm_score.bias"] = self.mlm_bias
        return out


def randomize(module, gen):
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if p.dim() == 1 and ("norm" in name or "ln" in name or name.startswith("vqa.1")):
                p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            else:
                p.copy_(0.15 * noise)
            p.copy_(p.float().double())  # exactly representable in float32


def f32(d):
    return {k: v.detach().float().contiguous() for k, v in d.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=100)
    ap.add_argument("--context", type=int, default=16)
    ap.add_argument("--text-width", type=int, default=32)
    ap.add_argument("--text-heads", type=int, default=4)
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--image-width", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=96)
    ap.add_argument("--answers", type=int, default=7)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    gen = torch.Generator().manual_seed(a.seed)
    # Gradients stay enabled on purpose: nn.MultiheadAttention's inference fast path (torch 1.13)
    # is then never taken, so the reference is the plain composite computation.

    # One co-attention layer.
    layer = CoLayer(a.hidden, a.heads, a.ffn, 1e-12).double().eval()
    randomize(layer, gen)
    B, Lx, Ly = 3, 7, 5
    x = torch.randn(B, Lx, a.hidden, generator=gen, dtype=torch.float64).float().double()
    y = torch.randn(B, Ly, a.hidden, generator=gen, dtype=torch.float64).float().double()
    x_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)
    y_mask = torch.tensor([[1] * 5, [1] * 5, [1] * 3 + [0] * 2], dtype=torch.bool)
    out = layer(x, y, ~x_mask, ~y_mask)
    torch.save(f32(layer.our_names("")), os.path.join(a.out, "layer_weights.pt"))
    torch.save({"x": x.float(), "y": y.float(), "x_mask": x_mask, "y_mask": y_mask, "out": out.detach()},
               os.path.join(a.out, "layer_io.pt"))

    # The model from ids and image tokens.
    model = Model(a).double().eval()
    randomize(model, gen)
    sot, eot, mask = a.vocab - 2, a.vocab - 1, a.vocab
    L, Li = 12, 5
    lengths = [12, 7, 3, 9]
    ids = torch.randint(0, a.vocab - 2, (len(lengths), L), generator=gen)
    for b, n in enumerate(lengths):
        ids[b, 0] = sot
        ids[b, n - 1] = eot
    ids[0, 3] = mask
    ids[1, 2] = mask
    ids[3, 11] = eot  # a second EOT in the padding: the first one ends the text
    pad = torch.arange(L).unsqueeze(0) >= torch.tensor(lengths).unsqueeze(1)
    image_tokens = torch.randn(len(lengths), Li, a.image_width, generator=gen, dtype=torch.float64).float().double()
    res = model(ids, pad, image_tokens)
    torch.save(f32(model.our_names()), os.path.join(a.out, "weights.pt"))
    io = {"ids": ids, "image_tokens": image_tokens.float()}
    io.update({k: v.detach() for k, v in res.items()})
    torch.save(io, os.path.join(a.out, "io.pt"))


if __name__ == "__main__":
    main()
