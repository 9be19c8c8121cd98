#!/usr/bin/env python3
"""Writes PyTorch checkpoints for tests/unit/core/test_torch_import.cpp (run with the reference
Python: torch 1.13, torchvision 0.14).

    make_torch_checkpoints.py OUT_DIR small   (1)-(4) and the bad files, expected.json
    make_torch_checkpoints.py OUT_DIR swin    (5): swin_t.pt, swin_t_plain.pt, swin_expected.json

Good files (what real training scripts write) and, in expected.json, what each must load as:
for every flattened key its dtype, shape, stride, storage offset and the exact bytes of the
contiguous values (hex). swin_t.pt is too large for hex: swin_expected.json lists its keys, dtypes
and shapes, and swin_t_plain.pt holds the same tensors as a plain dict, which LibTorch's own
torch::pickle_load can read, as an independent second reader.

  module_sd.pt     torch.save(model.state_dict()): an OrderedDict with _metadata
  wrapped.pt       {"model": state_dict, "epoch": 3, "optimizer": AdamW state after one step,
                    "args": argparse.Namespace, "best_acc1": numpy.float64, "seed": 2**64 - 1}
  dtypes.pt        OrderedDict with float16/bfloat16/int64/bool tensors, an nn.Parameter, and a
                   transposed strided slice sharing its storage with another entry
  plain.pt         a plain dict with a nested dict (flattened with '.')
  swin_t.pt        torchvision swin_t().state_dict()
  swin_t_plain.pt  dict(swin_t().state_dict())

Bad files (each must give florence::Error):
  legacy.pt        torch.save(..., _use_new_zipfile_serialization=False)
  no_pkl.pt        a zip laid out like torch.save but without data.pkl
  garbage_pkl.pt   data.pkl of random bytes
  trunc_pkl.pt     module_sd.pt's data.pkl cut in half
  underflow.pt     a pickle that pops from an empty stack
  view_oob.pt      a tensor view reaching past the end of its storage
  numel_lie.pt     a storage whose numel says more bytes than its record holds
  no_record.pt     a storage whose data record is missing
  neg_stride.pt    a tensor with a negative stride
  cyclic.pt        a dict that contains itself
  quantized.pt     a quantized tensor inside the state dict
  whole_module.pt  torch.save(model): a pickled nn.Module, not a state dict
  hand_cuda.pt     (good) hand-made, storage location 'cuda:0': loads onto the CPU
  hand_ok.pt       (good) the hand-made writer's layout with correct numbers, so the bad
                   hand-made files above fail for the reason they were made for
"""
import argparse
import collections
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import zipfile

import numpy as np
import torch
import torchvision


def tensor_entry(t):
    c = t.detach().contiguous()
    raw = c.view(torch.int16).numpy().tobytes() if c.dtype == torch.bfloat16 else c.numpy().tobytes()
    return {
        "dtype": str(t.dtype).replace("torch.", ""),
        "shape": list(t.shape),
        "stride": list(t.stride()),
        "offset": t.storage_offset(),
        "hex": raw.hex(),
    }


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        name = prefix + k
        if isinstance(v, torch.Tensor):
            out[name] = v
        elif isinstance(v, dict):
            out.update(flat(v, name + "."))
    return out


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.GELU(), torch.nn.Linear(5, 2))
        self.register_buffer("index", torch.arange(6, dtype=torch.int64).reshape(2, 3) * 7 - 3)

    def forward(self, x):
        x = self.conv(x).mean((2, 3))
        return self.head(self.norm(x))


# --- a hand-made writer, for files torch.save would never produce -------------------------------
class FakeStorage:
    def __init__(self, key, numel, cls="FloatStorage", location="cpu"):
        self.key, self.numel, self.cls, self.location = key, numel, cls, location


class FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class FakePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", getattr(torch, obj.cls), obj.key, obj.location, obj.numel)
        return None


def write_zip(path, pkl, records):
    """torch.save's layout: <name>/data.pkl, <name>/data/<key>, <name>/version."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        if pkl is not None:
            z.writestr("archive/data.pkl", pkl)
        for key, raw in records.items():
            z.writestr("archive/data/" + key, raw)
        z.writestr("archive/version", "3\n")


def fake_pickle(obj):
    buf = io.BytesIO()
    FakePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_swin(out):
    """(5) a real torchvision model."""
    torch.manual_seed(0)
    swin = torchvision.models.swin_t().state_dict()
    assert isinstance(swin, collections.OrderedDict)
    torch.save(swin, os.path.join(out, "swin_t.pt"))
    torch.save(dict(swin), os.path.join(out, "swin_t_plain.pt"))
    expected = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in swin.items()}
    with open(os.path.join(out, "swin_expected.json"), "w") as f:
        json.dump(expected, f)


def write_small(out):
    """(1)-(4) and the bad files; expected.json last."""
    torch.manual_seed(0)
    expected = {}

    # (1) the most common file: torch.save(model.state_dict())
    model = Small()
    sd = model.state_dict()
    assert isinstance(sd, collections.OrderedDict) and hasattr(sd, "_metadata")
    torch.save(sd, os.path.join(out, "module_sd.pt"))
    expected["module_sd.pt"] = {k: tensor_entry(v) for k, v in sd.items()}

    # (2) a training-script checkpoint, AdamW after one step
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    sd2 = model.state_dict()
    torch.save({"model": sd2, "epoch": 3, "optimizer": opt.state_dict(),
                "args": argparse.Namespace(lr=1e-3, name="small"), "best_acc1": np.float64(71.5),
                "seed": 2 ** 64 - 1},
               os.path.join(out, "wrapped.pt"))
    expected["wrapped.pt"] = {k: tensor_entry(v) for k, v in sd2.items()}

    # (3) dtypes, a Parameter, and a non-contiguous view sharing storage with another entry
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8) * 0.5 - 3
    view = base[1:5, 1::3].t()  # shape (3, 4), stride (3, 8), storage offset 9
    assert not view.is_contiguous() and view.storage_offset() == 9
    sd3 = collections.OrderedDict()
    sd3["half"] = (torch.randn(3, 5) * 100).half()
    sd3["bf16"] = torch.randn(2, 7).bfloat16()
    sd3["long"] = torch.tensor([[-(2 ** 40) - 3, 2 ** 62], [0, -1]], dtype=torch.int64)
    sd3["mask"] = torch.tensor([True, False, True])
    sd3["base"] = base
    sd3["view"] = view
    sd3["param"] = torch.nn.Parameter(torch.randn(4))
    sd3["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    sd3["empty"] = torch.zeros(0, 3)
    sd3._metadata = collections.OrderedDict({"": {"version": 1}})
    torch.save(sd3, os.path.join(out, "dtypes.pt"))
    expected["dtypes.pt"] = {k: tensor_entry(v) for k, v in sd3.items()}

    # (4) a plain dict, nested
    # (every dict has two or more items: LibTorch 1.13's unpickler, the test's second reader, has
    # no SETITEM opcode, which pickle uses for one-item dicts)
    plain = {"enc": {"w": torch.randn(2, 2), "deep": {"b": torch.arange(3), "n": 1}}, "top": torch.ones(1),
             "note": "x"}
    torch.save(plain, os.path.join(out, "plain.pt"))
    expected["plain.pt"] = {k: tensor_entry(v) for k, v in flat(plain).items()}

    # --- bad files
    torch.save(sd, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
    four = np.arange(4, dtype=np.float32).tobytes()
    write_zip(os.path.join(out, "no_pkl.pt"), None, {"0": four})
    write_zip(os.path.join(out, "garbage_pkl.pt"), bytes(np.random.RandomState(1).randint(0, 256, 300, dtype=np.uint8)),
              {"0": four})
    with zipfile.ZipFile(os.path.join(out, "module_sd.pt")) as z:
        names = z.namelist()
        pkl = z.read([n for n in names if n.endswith("/data.pkl")][0])
        storages = {n.split("/data/")[1]: z.read(n) for n in names if "/data/" in n}
    write_zip(os.path.join(out, "trunc_pkl.pt"), pkl[: len(pkl) // 2], storages)
    write_zip(os.path.join(out, "underflow.pt"), b"\x80\x02}q\x00s.", {})

    def hand(name, storage, offset, size, stride, records):
        write_zip(os.path.join(out, name),
                  fake_pickle(collections.OrderedDict(w=FakeTensor(storage, offset, size, stride))), records)

    hand("hand_ok.pt", FakeStorage("0", 4), 1, (3,), (1,), {"0": four})
    loaded = torch.load(os.path.join(out, "hand_ok.pt"))
    assert loaded["w"].tolist() == [1.0, 2.0, 3.0], loaded
    hand("hand_cuda.pt", FakeStorage("0", 4, location="cuda:0"), 1, (3,), (1,), {"0": four})
    hand("view_oob.pt", FakeStorage("0", 4), 2, (3,), (1,), {"0": four})
    hand("numel_lie.pt", FakeStorage("0", 1000), 0, (3,), (1,), {"0": four})
    hand("no_record.pt", FakeStorage("7", 4), 0, (3,), (1,), {"0": four})
    hand("neg_stride.pt", FakeStorage("0", 4), 3, (3,), (-1,), {"0": four})
    cyc = {"w": torch.ones(2)}
    cyc["self"] = cyc
    torch.save(cyc, os.path.join(out, "cyclic.pt"))
    torch.save(model, os.path.join(out, "whole_module.pt"))
    torch.save({"model": {"q": torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.quint8)}},
               os.path.join(out, "quantized.pt"))

    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)


def main():
    out, what = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    # Write into a private folder, then move each file into place atomically (expected.json
    # last), so test processes running in parallel never read a half-written file.
    tmp = tempfile.mkdtemp(dir=out)
    try:
        {"small": write_small, "swin": write_swin}[what](tmp)
        names = sorted(os.listdir(tmp), key=lambda n: n.endswith("expected.json"))
        for name in names:
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
