#!/usr/bin/python3
"""Writes the seed corpus of each fuzz harness into fuzz/corpus/NAME (docs/fuzzing.md).

Run with Debian's python3 (python3-torch for the .pt seeds): /usr/bin/python3 fuzz/make_seeds.py
The seeds are small valid (and a few edge-case) inputs; the files are committed so CI needs no
Python to replay them. Image seeds come from OpenCV-free byte strings written here by hand.
"""
import io
import json
import os
import struct
import tarfile
import zipfile
import zlib
from collections import OrderedDict

import torch

C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(harness, name, data):
    os.makedirs(os.path.join(C, harness), exist_ok=True)
    with open(os.path.join(C, harness, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# safetensors: 8-byte little-endian header length, JSON header, data buffer.
def safetensors(tensors, meta=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "two_tensors", safetensors(
    {"w": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), "b": ("I64", [1], struct.pack("<q", 7))},
    {"florence.model": "{}"}))
put("safetensors", "bf16_bool_empty", safetensors(
    {"h": ("BF16", [3], b"\x80\x3f" * 3), "m": ("BOOL", [2], b"\x01\x00"), "e": ("F16", [0], b"")}))
put("safetensors", "scalar", safetensors({"s": ("F64", [], struct.pack("<d", 0.5))}))


# torch_pickle: real torch.save files (first byte 'P' is even: whole-file mode) and their data.pkl
# behind an odd first byte (pickle mode: the harness zips it with three storages).
def torch_save(name, obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    raw = buf.getvalue()
    put("torch_pickle", name, raw)
    z = zipfile.ZipFile(io.BytesIO(raw))
    pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
    put("torch_pickle", name + ".pkl", b"\x01" + z.read(pkl))


torch.manual_seed(0)
torch_save("linear_state_dict", torch.nn.Linear(3, 2).state_dict())
x = torch.arange(12.0).reshape(3, 4)
torch_save("wrapped_views", {"model": {"a": x, "a_view": x[1:, ::2], "half": torch.ones(2, dtype=torch.float16)},
                             "epoch": 3, "args": [1, 2.5, "s", None, True]})
torch_save("nested_bn", {"state_dict": OrderedDict(bn=torch.nn.BatchNorm1d(2).state_dict())})

# tokenizer: first byte 0 text, 1 merges file, 2 trainer document.
put("tokenizer", "text", b"\x00a photo of a red car, &amp; 2 dogs! caf\xc3\xa9 \xf0\x9f\x98\x80 <|endoftext|>")
put("tokenizer", "merges", b"\x01#version: 0.2\n\xc4\xa0 t\nt h\nth e</w>\na n\n")
put("tokenizer", "trainer", b"\x02the cat sat on the mat the cat the mat a photo of the cat")
put("tokenizer", "invalid_utf8", b"\x00ab\xff\xfe cd")


# tar: WebDataset shards, including the hostile member names of issue 23.
def shard(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def png(w, h, rgb=(200, 30, 30)):
    rows = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


img = png(4, 3)
put("tar", "two_samples", shard([("a/0001.png", img), ("a/0001.txt", b"a red square"),
                                 ("a/0001.json", b'{"label": 2}'), ("b.png", img), ("b.cls", b"5")]))
put("tar", "hostile_keys", shard([("../../escape.png", img), ("../../escape.txt", b"x"), ("/abs/key.png", img),
                                  ("ok.png", img), ("ok.txt", b"fine"), ("bad\x01ctl.png", img),
                                  ("only.gif", b"GIF89a"), ("notext.txt", b"no image")]))
put("tar", "bad_meta_and_text", shard([("k.png", img), ("k.json", b"[1,2"), ("k.txt", b"\xff\xfe"),
                                       ("m.jpg", img), ("m.cls", b"99999999999999999999999")]))

# idx: a 2x2x3 image array and a label vector.
put("idx", "images", bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 2, 3) + bytes(range(12)))
put("idx", "labels", bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes([1, 2, 3, 9]))

# model_config: the seeds are the printed configs of registered models, written by the CLI:
#   for m in florence-nano swin-t coswin-t clip-text-b; do
#     build/florence info --model $m --print-config > fuzz/corpus/model_config/$m.json; done

# coco: an instances file and a results list.
put("coco", "instances.json", json.dumps({
    "images": [{"id": 1, "width": 64, "height": 48, "file_name": "a.png"}],
    "categories": [{"id": 1, "name": "cat", "supercategory": "animal"}],
    "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1.5, 2, 10, 20], "area": 200, "iscrowd": 0}]}))
put("coco", "results.json", json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9},
                                        {"image_id": 7, "category_id": 3, "bbox": [1, 1, 2, 2], "score": 0.1}]))

# svg: OpenClipArt-style metadata, and an internal entity (must not be expanded).
put("svg", "openclipart.svg", """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     xmlns:cc="http://creativecommons.org/ns#" xmlns:dc="http://purl.org/dc/elements/1.1/">
<metadata><rdf:RDF><cc:Work rdf:about=""><dc:title>Red  car</dc:title><dc:description>A small red car.</dc:description>
<dc:subject><rdf:Bag><rdf:li>car</rdf:li><rdf:li>vehicle</rdf:li></rdf:Bag></dc:subject></cc:Work></rdf:RDF></metadata>
<rect width="10" height="10" fill="red"/></svg>""")
put("svg", "entity.svg", '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x "boom">]>'
                         '<svg xmlns="http://www.w3.org/2000/svg"><title>&x;</title></svg>')

# image: first byte 0 raw bytes, 1 base64 text, 2 raw bytes to composite.
import base64
put("image", "png", b"\x00" + img)
put("image", "png_base64", b"\x01data:image/png;base64," + base64.b64encode(img))
put("image", "png_composite", b"\x02" + png(5, 2, (0, 0, 255)))
put("image", "ppm", b"\x00P6\n2 1\n255\n" + bytes([255, 0, 0, 0, 255, 0]))
put("image", "bmp_header_only", b"\x00BM" + b"\x00" * 50)

# http: raw requests to `florence serve` (the harness's index is named "pics"; the model's
# embeddings have 128 numbers).
def request(method, path, body=b"", headers=(("Content-Type", "application/json"),), close=True):
    body = body if isinstance(body, bytes) else body.encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


img64 = base64.b64encode(img).decode()
for name, path in [("health", "/health"), ("indices", "/indices"), ("metrics", "/metrics"), ("page", "/"),
                   ("image_named", "/images/pics/0"), ("image_default", "/images/3"),
                   ("image_tricks", "/images/..%2f..%2fetc%2fpasswd"), ("unknown", "/nowhere?x=1")]:
    put("http", "get_" + name, request("GET", path, headers=()))
put("http", "knn_text", request("POST", "/knn", json.dumps({"text": "a red disc", "k": 3, "index": "pics"})))
put("http", "knn_id", request("POST", "/knn", json.dumps({"id": 2, "k": 2, "dedup": 0.5})))
put("http", "knn_embedding", request("POST", "/knn", json.dumps({"embedding": [0.1] * 128, "k": 4})))
put("http", "knn_image", request("POST", "/knn", json.dumps({"image": img64, "k": 1})))
put("http", "embed", request("POST", "/embed", json.dumps({"texts": ["a", "a green square"], "images": [img64]})))
put("http", "classify", request("POST", "/classify", json.dumps({"image": img64, "labels": ["disc", "square"],
                                                                  "templates": ["a photo of a {}."]})))
put("http", "bad_json", request("POST", "/knn", '{"text": "a", "k": '))
put("http", "form_body", request("POST", "/embed", "texts=a&images=b",
                                 headers=(("Content-Type", "application/x-www-form-urlencoded"),)))
put("http", "chunked", b"POST /knn HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                       b"b\r\n{\"text\": \"a\r\n2\r\n\"}\r\n0\r\n\r\n")
put("http", "pipelined", request("GET", "/health", headers=(), close=False) +
    request("POST", "/knn", json.dumps({"text": "x", "k": 1}), close=False) + request("DELETE", "/knn", headers=()))
put("http", "put_method", request("PUT", "/knn", "{}"))
put("http", "short_body", b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"texts\": [\"a\"]}")
put("http", "not_http", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")  # a TLS ClientHello's start
