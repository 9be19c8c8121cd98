#!/usr/bin/env python3
"""Python peer of the florence model for side-by-side benchmarks (never run by ctest).

Runs the SAME two-tower Florence model as the C++ library (src/florence/model/florence.h) with the
SAME weights, assembled from PyTorch's / torchvision's own building blocks (the parity references):
  * image tower (CoSwin, or plain Swin): nn.Conv2d + nn.LayerNorm convolutional embeddings (stem and
    between stages, CvT style, as swin_layers.h ConvEmbed), torchvision 0.14's
    `SwinTransformerBlock` (v1, shifted windows on odd blocks, relative position bias; its
    shifted_window_attention pads to the window and drops the shift where one window covers a
    dimension, as ours), final LayerNorm, mean over tokens;
  * text tower: token nn.Embedding + learned positional embedding, nn.TransformerEncoderLayer
    (norm_first, batch_first, QuickGELU, dropout 0) with an additive causal mask, final LayerNorm,
    feature at each row's first EOT (tests/parity/text/text_reference.py);
  * projections without bias (x @ W), L2 normalisation, tau = exp(logit_scale) clamped at
    logit_scale_max, UniCL loss = i2t + t2i with equal labels as positives
    (tests/unit/loss/unicl_reference.py).

Usage: florence_peer.py MODE WORKDIR --threads N --iters K [--warmup 1]
  MODE text | image | train. WORKDIR holds config.json (FlorenceConfig JSON), weights.safetensors
  (our state-dict names, strict both ways) and inputs.safetensors (text: ids [M,L] int64; image:
  images [N,3,H,W] float32; train: images, ids [N,L], labels [N] int64, hparams [4] float64 =
  lr, weight_decay, beta1, beta2; AdamW eps 1e-8).
  Writes WORKDIR/peer_out.safetensors (text_embeds / image_embeds of the first call, or losses
  float64 [warmup+iters] of every train step before its update) and prints one JSON line.
  Errors: a message on stderr, exit status 1.
Needs Debian's python3-torch 1.13 + python3-torchvision 0.14 (/usr/bin/python3).
"""
import argparse
import json
import math
import os
import resource
import statistics
import struct
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


class PeerError(Exception):
    pass


# ------------------------------------------------------------------------------------ safetensors

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64,
           "F16": torch.float16, "BF16": torch.bfloat16, "I32": torch.int32}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsFile:
    """Reads the header at open; tensors are read one by one (load), so a big file never sits in
    memory whole. Checks header length, dtypes, shapes, offsets and byte counts."""

    def __init__(self, path):
        if sys.byteorder != "little":
            raise PeerError("safetensors: only little-endian hosts are supported")
        self.path = path
        try:
            self.size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) != 8:
                    raise PeerError(f"{path}: shorter than the 8-byte header length")
                (n,) = struct.unpack("<Q", head)
                if n > self.size - 8:
                    raise PeerError(f"{path}: header length {n} exceeds the file ({self.size} bytes)")
                header = json.loads(f.read(n).decode("utf-8"))
        except OSError as e:
            raise PeerError(f"cannot read {path}: {e}") from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PeerError(f"{path}: bad JSON header: {e}") from e
        if not isinstance(header, dict):
            raise PeerError(f"{path}: header is not a JSON object")
        self.base = 8 + n
        self.entries = {}
        for name, e in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = _DTYPES[e["dtype"]]
                shape = [int(s) for s in e["shape"]]
                begin, end = (int(o) for o in e["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise PeerError(f"{path}: tensor '{name}' has a bad entry {e!r} ({err})") from err
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if begin < 0 or end - begin != nbytes or self.base + end > self.size:
                raise PeerError(f"{path}: tensor '{name}' {e['dtype']}{shape} has offsets [{begin}, {end}) "
                                f"for {nbytes} bytes in a data section of {self.size - self.base}")
            self.entries[name] = (dtype, shape, begin, end)

    def load(self, name):
        dtype, shape, begin, end = self.entries[name]
        buf = bytearray(end - begin)
        with open(self.path, "rb") as f:
            f.seek(self.base + begin)
            if f.readinto(buf) != len(buf):
                raise PeerError(f"{self.path}: short read of '{name}'")
        if not buf:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(shape)

    def tensor(self, name, dtype=None, ndim=None):
        if name not in self.entries:
            raise PeerError(f"{self.path}: missing tensor '{name}' (has: {', '.join(sorted(self.entries))})")
        t = self.load(name)
        if dtype is not None and t.dtype != dtype:
            raise PeerError(f"{self.path}: '{name}' must be {_NAMES[dtype]}, got {_NAMES[t.dtype]}")
        if ndim is not None and t.dim() != ndim:
            raise PeerError(f"{self.path}: '{name}' must be {ndim}-D, got shape {list(t.shape)}")
        return t


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        data = t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)  # data section 8-byte aligned, as the reference writer does
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ config

_VISION = {"variant": "coswin", "in_chans": 3, "embed_dim": 96, "depths": [2, 2, 6, 2],
           "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0, "qkv_bias": True,
           "drop_rate": 0.0, "attn_drop_rate": 0.0, "drop_path_rate": 0.2, "layer_scale_init": 0.0,
           "norm_eps": 1e-5, "patch_norm": True,
           "patch_embed": {"kernel": 7, "stride": 4, "padding": 2},
           "downsample": {"kernel": 3, "stride": 2, "padding": 1},
           "num_classes": 0, "image_size": 224}
_TEXT = {"vocab_size": 49408, "context_length": 77, "width": 512, "heads": 8, "layers": 12,
         "mlp_ratio": 4.0, "norm_eps": 1e-5, "sot_token": 49406, "eot_token": 49407, "causal": True}
_MODEL = {"name": "custom", "embed_dim": 512, "logit_scale_init": 2.6592600369644165,
          "logit_scale_max": 100.0}


def _merge(defaults, given, where):
    if not isinstance(given, dict):
        raise PeerError(f"config: {where} must be a JSON object")
    out = json.loads(json.dumps(defaults))
    for k, v in given.items():
        if k not in defaults:
            raise PeerError(f"config: unknown field '{where}.{k}'")
        out[k] = _merge(defaults[k], v, f"{where}.{k}") if isinstance(defaults[k], dict) else v
    return out


def load_config(path):
    try:
        with open(path) as f:
            j = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise PeerError(f"cannot read config {path}: {e}") from e
    if isinstance(j, dict) and isinstance(j.get("model"), dict):
        j = j["model"]  # a checkpoint sidecar / run config.json: the model config is under "model"
    if not isinstance(j, dict):
        raise PeerError(f"config {path}: not a JSON object")
    j = dict(j)
    if j.pop("type", "florence") != "florence":
        raise PeerError(f"config {path}: type is not 'florence'")
    vision, text = j.pop("vision", {}), j.pop("text", {})
    cfg = _merge(_MODEL, j, "model")
    cfg["vision"] = _merge(_VISION, vision, "vision")
    cfg["text"] = _merge(_TEXT, text, "text")
    v, t = cfg["vision"], cfg["text"]
    if v["variant"] not in ("coswin", "swin"):
        raise PeerError(f"config: vision.variant must be coswin or swin, got {v['variant']!r}")
    if len(v["depths"]) != len(v["num_heads"]) or not v["depths"]:
        raise PeerError("config: vision.depths and vision.num_heads differ in length (or are empty)")
    if v["layer_scale_init"] > 0:
        raise PeerError("config: vision.layer_scale_init > 0 is not supported by the peer "
                        "(torchvision's SwinTransformerBlock has no layer scale)")
    if t["width"] % t["heads"]:
        raise PeerError("config: text.width is not divisible by text.heads")
    return cfg


# ------------------------------------------------------------------------------------ image tower

class ConvEmbed(nn.Module):
    """CvT convolutional embedding as our C++ ConvEmbed: Conv2d(k, s, p, bias) then LayerNorm over
    channels; [B, C, H, W] (nchw=True) or [B, H, W, C] in, [B, H', W', C'] out."""

    def __init__(self, cin, cout, kernel, stride, padding, with_norm, eps):
        super().__init__()
        self.kernel, self.padding = kernel, padding
        self.proj = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=True)
        self.norm = nn.LayerNorm(cout, eps=eps) if with_norm else None

    def forward(self, x, nchw=False):
        if not nchw:
            x = x.permute(0, 3, 1, 2)
        if x.shape[2] + 2 * self.padding < self.kernel or x.shape[3] + 2 * self.padding < self.kernel:
            raise PeerError(f"ConvEmbed: map {x.shape[2]}x{x.shape[3]} is smaller than kernel "
                            f"{self.kernel} with padding {self.padding}")
        y = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(y) if self.norm is not None else y.contiguous()


class Stage(nn.Module):
    def __init__(self, blocks, downsample):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample


class SwinTower(nn.Module):
    """Swin / CoSwin tower; parameter names as our C++ except the torchvision block internals."""

    def __init__(self, c):
        super().__init__()
        from torchvision.models.swin_transformer import PatchMerging, SwinTransformerBlock

        eps, ws = c["norm_eps"], c["window_size"]
        norm_layer = partial(nn.LayerNorm, eps=eps)
        pe, ds = c["patch_embed"], c["downsample"]
        self.patch_embed = ConvEmbed(c["in_chans"], c["embed_dim"], pe["kernel"], pe["stride"],
                                     pe["padding"], c["patch_norm"], eps)
        self.pos_drop = nn.Dropout(c["drop_rate"])
        self.attn_drop_rate, self.drop_rate = c["attn_drop_rate"], c["drop_rate"]
        total, block_id = sum(c["depths"]), 0
        stages = []
        for i, (depth, heads) in enumerate(zip(c["depths"], c["num_heads"])):
            dim = c["embed_dim"] * 2 ** i
            blocks = []
            for j in range(depth):
                sd = c["drop_path_rate"] * block_id / (total - 1) if total > 1 else 0.0
                b = SwinTransformerBlock(dim, heads, window_size=[ws, ws],
                                         shift_size=[0, 0] if j % 2 == 0 else [ws // 2, ws // 2],
                                         mlp_ratio=c["mlp_ratio"], dropout=c["drop_rate"],
                                         attention_dropout=c["attn_drop_rate"], stochastic_depth_prob=sd,
                                         norm_layer=norm_layer)
                if not c["qkv_bias"]:
                    b.attn.qkv = nn.Linear(dim, 3 * dim, bias=False)
                blocks.append(b)
                block_id += 1
            down = None
            if i + 1 < len(c["depths"]):
                if c["variant"] == "coswin":
                    down = ConvEmbed(dim, 2 * dim, ds["kernel"], ds["stride"], ds["padding"], True, eps)
                else:
                    down = PatchMerging(dim, norm_layer)
            stages.append(Stage(blocks, down))
        self.layers = nn.ModuleList(stages)
        nf = c["embed_dim"] * 2 ** (len(c["depths"]) - 1)
        self.norm = nn.LayerNorm(nf, eps=eps)
        self.head = nn.Linear(nf, c["num_classes"]) if c["num_classes"] > 0 else None
        self.train(False)

    def train(self, mode=True):
        # torchvision 0.14's shifted_window_attention calls F.dropout with its default
        # training=True: give the attention its rates only in training, as our C++ does.
        super().train(mode)
        for m in self.modules():
            if hasattr(m, "attention_dropout") and hasattr(m, "qkv"):
                m.attention_dropout = self.attn_drop_rate if mode else 0.0
                m.dropout = self.drop_rate if mode else 0.0
        return self

    def forward_features(self, x):
        t = self.pos_drop(self.patch_embed(x, nchw=True))  # [B, H, W, C]
        for i, stage in enumerate(self.layers):
            t = stage.blocks(t)
            if i + 1 == len(self.layers):
                t = self.norm(t)
            else:
                t = stage.downsample(t)
        return t.mean(dim=(1, 2))


# ------------------------------------------------------------------------------------ text tower

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class TextTower(nn.Module):
    def __init__(self, c):
        super().__init__()
        w = c["width"]
        self.c = c
        self.token_embedding = nn.Embedding(c["vocab_size"], w)
        self.positional_embedding = nn.Parameter(torch.empty(c["context_length"], w))
        hidden = int(math.floor(c["mlp_ratio"] * w + 0.5))  # std::llround
        self.resblocks = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model=w, nhead=c["heads"], dim_feedforward=hidden, dropout=0.0,
                                       activation=QuickGELU(), layer_norm_eps=c["norm_eps"],
                                       batch_first=True, norm_first=True)
            for _ in range(c["layers"])])
        self.ln_final = nn.LayerNorm(w, eps=c["norm_eps"])
        mask = torch.full((c["context_length"],) * 2, float("-inf")).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, ids):
        c = self.c
        if ids.dim() != 2 or ids.dtype != torch.int64:
            raise PeerError(f"text: ids must be int64 [B, L], got {ids.dtype} {list(ids.shape)}")
        B, L = ids.shape
        if L < 1 or L > c["context_length"]:
            raise PeerError(f"text: sequence length {L} outside [1, {c['context_length']}]")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c["vocab_size"]):
            raise PeerError(f"text: a token id is outside the vocabulary [0, {c['vocab_size']})")
        pos = torch.arange(L).expand(B, L)
        first = torch.where(ids == c["eot_token"], pos, torch.full_like(pos, L)).amin(1)
        if B and bool((first == L).any()):
            raise PeerError(f"text: rows without EOT ({c['eot_token']}): "
                            f"{(first == L).nonzero().flatten().tolist()[:10]}")
        x = self.token_embedding(ids) + self.positional_embedding[:L]
        mask = self.causal_mask[:L, :L] if c["causal"] else None
        for layer in self.resblocks:
            x = layer(x, src_mask=mask)
        x = self.ln_final(x)
        return x[torch.arange(B), first]


# ------------------------------------------------------------------------------------ model

class Florence(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = SwinTower(cfg["vision"])
        self.text_encoder = TextTower(cfg["text"])
        nf = cfg["vision"]["embed_dim"] * 2 ** (len(cfg["vision"]["depths"]) - 1)
        self.image_projection = nn.Parameter(torch.zeros(nf, cfg["embed_dim"]))
        self.text_projection = nn.Parameter(torch.zeros(cfg["text"]["width"], cfg["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg["logit_scale_init"])))

    def encode_image(self, images):
        v = self.cfg["vision"]
        if images.dim() != 4 or images.shape[1] != v["in_chans"] or images.dtype not in (torch.float32, torch.bfloat16):
            raise PeerError(f"image: images must be float32 or bfloat16 [N, {v['in_chans']}, H, W], "
                            f"got {images.dtype} {list(images.shape)}")
        return F.normalize(self.image_encoder.forward_features(images) @ self.image_projection, dim=-1)

    def encode_text(self, ids):
        return F.normalize(self.text_encoder(ids) @ self.text_projection, dim=-1)

    def temperature(self):
        return self.logit_scale.exp().clamp(max=self.cfg["logit_scale_max"])


_BLOCK_RENAMES = [("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.3.")]
_TEXT_RENAMES = [("attn.in_proj_", "self_attn.in_proj_"), ("attn.out_proj.", "self_attn.out_proj."),
                 ("mlp.c_fc.", "linear1."), ("mlp.c_proj.", "linear2."),
                 ("ln_1.", "norm1."), ("ln_2.", "norm2.")]


def to_python_name(ours):
    """Our state-dict name -> this module's name (torchvision block / nn.TransformerEncoderLayer)."""
    parts = ours.split(".")
    if ours.startswith("image_encoder.layers.") and len(parts) > 5 and parts[3] == "blocks":
        head, rest = ".".join(parts[:5]) + ".", ".".join(parts[5:])
        for a, b in _BLOCK_RENAMES:
            if rest.startswith(a):
                rest = b + rest[len(a):]
        return head + rest
    if ours.startswith("text_encoder.resblocks.") and len(parts) > 3:
        head, rest = ".".join(parts[:3]) + ".", ".".join(parts[3:])
        for a, b in _TEXT_RENAMES:
            if rest.startswith(a):
                rest = b + rest[len(a):]
        return head + rest
    return ours


def load_weights(model, path):
    st = SafetensorsFile(path)
    targets = {n: t for n, t in model.state_dict(keep_vars=True).items()
               if not n.endswith("attn.relative_position_index")}  # derived buffers, never stored
    mapping = {to_python_name(n): n for n in st.entries}
    missing = sorted(n for n in targets if n not in mapping)
    unexpected = sorted(mapping[p] for p in mapping if p not in targets)
    bad = []
    for p, ours in mapping.items():
        if p in targets and list(targets[p].shape) != st.entries[ours][1]:
            bad.append(f"{ours}: file {st.entries[ours][1]} vs model {list(targets[p].shape)}")
    if missing or unexpected or bad:
        msg = [f"weights {path} do not match the model:"]
        if missing:
            msg.append(f"  missing in the file ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            msg.append(f"  not in the model ({len(unexpected)}): " + ", ".join(unexpected))
        if bad:
            msg.append(f"  shape mismatch ({len(bad)}): " + "; ".join(bad))
        raise PeerError("\n".join(msg))
    with torch.no_grad():
        for p, ours in mapping.items():
            targets[p].copy_(st.load(ours))
    return {p: ours for p, ours in mapping.items()}


def uses_weight_decay(name, ndim):
    """src/florence/train/schedule.cpp uses_weight_decay, on OUR parameter names."""
    if ndim < 2:
        return False
    return not any(name.endswith(s) for s in ("token_embedding.weight", "positional_embedding",
                                              "relative_position_bias_table", "absolute_pos_embed",
                                              "logit_scale"))


def unicl_loss(u, v, labels, tau):
    logits = tau * (u @ v.t())
    targets = (labels[:, None] == labels[None, :]).to(u.dtype)

    def direction(lg):
        return -((targets * F.log_softmax(lg, dim=1)).sum(1) / targets.sum(1)).mean()

    return direction(logits) + direction(logits.t())


# ------------------------------------------------------------------------------------ main

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"florence_peer: error: {message}", file=sys.stderr)
        sys.exit(1)


def run(a):
    torch.set_num_threads(a.threads)
    if a.iters < 1 or a.warmup < 0:
        raise PeerError("--iters must be >= 1 and --warmup >= 0")
    cfg = load_config(os.path.join(a.workdir, "config.json"))
    model = Florence(cfg)
    names = load_weights(model, os.path.join(a.workdir, "weights.safetensors"))
    inp = SafetensorsFile(os.path.join(a.workdir, "inputs.safetensors"))
    times, out = [], {}

    # --precision: bf16 = weights and inputs bfloat16 (inference); amp_bf16 = torch.autocast("cpu").
    if a.precision == "bf16" and a.mode == "train":
        raise PeerError("--precision bf16 is for inference; train with amp_bf16")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "amp_bf16")
    if a.mode in ("text", "image"):
        model.eval()
        if a.precision == "bf16":
            model.to(torch.bfloat16)
        if a.mode == "text":
            x = inp.tensor("ids", torch.int64, 2)
            fn, key = model.encode_text, "text_embeds"
        else:
            x = inp.tensor("images", torch.float32, 4)
            if a.precision == "bf16":
                x = x.to(torch.bfloat16)
            fn, key = model.encode_image, "image_embeds"
        batch = x.shape[0]
        with torch.inference_mode(), autocast:
            for i in range(a.warmup + a.iters):
                t0 = time.perf_counter()
                y = fn(x)
                dt = time.perf_counter() - t0
                if i == 0:
                    out[key] = y.float().clone()
                if i >= a.warmup:
                    times.append(dt)
    else:
        images = inp.tensor("images", torch.float32, 4)
        ids = inp.tensor("ids", torch.int64, 2)
        labels = inp.tensor("labels", torch.int64, 1)
        hp = inp.tensor("hparams", torch.float64).reshape(-1)
        if hp.numel() != 4:
            raise PeerError(f"inputs: hparams must have 4 values (lr, weight_decay, beta1, beta2), got {hp.numel()}")
        batch = images.shape[0]
        if ids.shape[0] != batch or labels.shape[0] != batch:
            raise PeerError(f"inputs: images ({batch}), ids ({ids.shape[0]}) and labels ({labels.shape[0]}) "
                            "must have the same number of rows")
        lr, wd, b1, b2 = (float(v) for v in hp)
        decay, no_decay = [], []
        for p_name, p in model.named_parameters():
            if p.requires_grad:
                (decay if uses_weight_decay(names[p_name], p.dim()) else no_decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=lr, betas=(b1, b2), eps=1e-8)
        model.train()
        losses = []
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with autocast:
                u = model.encode_image(images)
                v = model.encode_text(ids)
            loss = unicl_loss(u.float(), v.float(), labels, model.temperature())
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            losses.append(loss.item())
            if i >= a.warmup:
                times.append(dt)
            if not math.isfinite(losses[-1]):
                raise PeerError(f"train: loss is {losses[-1]} at step {i + 1}")
        out["losses"] = torch.tensor(losses, dtype=torch.float64)

    write_safetensors(os.path.join(a.workdir, "peer_out.safetensors"), out)
    sec = statistics.median(times)
    print(json.dumps({"peer": "florence_peer.py (PyTorch eager: torchvision SwinTransformerBlock, "
                              "nn.TransformerEncoderLayer)",
                      "mode": a.mode, "precision": a.precision, "torch": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "sec_per_call": sec, "items_per_s": batch / sec,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def main():
    p = _Parser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["text", "image", "train"])
    p.add_argument("workdir")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--precision", choices=["fp32", "bf16", "amp_bf16"], default="fp32")
    a = p.parse_args()
    try:
        run(a)
    except PeerError as e:
        print(f"florence_peer: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        print(f"florence_peer: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
