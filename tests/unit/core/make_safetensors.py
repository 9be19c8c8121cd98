#!/usr/bin/env python3
"""Independent safetensors writer/checker for tests/unit/core/test_safetensors.cpp.

Written from the format description only (huggingface/safetensors README: u64 little-endian
header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
then the data buffer), with `struct` and `json` - no safetensors package, no project code.

    make_safetensors.py write OUT   write the EXPECTED tensors to OUT
    make_safetensors.py check IN    verify that IN holds exactly the EXPECTED tensors, laid out
                                    as the reference writer lays them out (sorted keys,
                                    contiguous offsets in key order, header padded to 8 bytes)

The same values are spelled out independently in the C++ test.
"""
import json
import struct
import sys

# name -> (dtype, shape, values); every float is exactly representable in its dtype.
EXPECTED = {
    "f32": ("F32", [2, 3], [-1.5, 0.0, 0.25, 3.0, 1024.5, -7.125]),
    "f16": ("F16", [4], [1.0, -2.5, 65504.0, 0.5]),
    "bf16": ("BF16", [2, 2], [1.0, -3.0, 0.15625, 256.0]),
    "f64": ("F64", [3], [3.141592653589793, -1e300, 5e-324]),
    "i64": ("I64", [2], [-(2 ** 40) - 3, 2 ** 62]),
    "i32": ("I32", [3], [-7, 0, 2 ** 31 - 1]),
    "i16": ("I16", [2], [-32768, 12345]),
    "i8": ("I8", [2], [-128, 127]),
    "u8": ("U8", [4], [0, 1, 128, 255]),
    "bool": ("BOOL", [3], [True, False, True]),
    "scalar": ("F32", [], [42.5]),
    "empty": ("F32", [0, 3], []),
}
METADATA = {"format": "pt", "source": "hand-written"}

# struct codes, little-endian; BF16 is handled as the top 16 bits of a float32.
CODES = {"F64": "d", "F32": "f", "F16": "e", "I64": "q", "I32": "i", "I16": "h", "I8": "b",
         "U8": "B", "BOOL": "?"}
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U8": 1, "BOOL": 1}


def encode(dtype, values):
    if dtype == "BF16":
        return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:]
                        for v in values)
    return struct.pack("<%d%s" % (len(values), CODES[dtype]), *values)


def decode(dtype, raw):
    n = len(raw) // SIZES[dtype]
    if dtype == "BF16":
        return [struct.unpack("<f", b"\0\0" + raw[2 * i:2 * i + 2])[0] for i in range(n)]
    return list(struct.unpack("<%d%s" % (n, CODES[dtype]), raw))


def write(path):
    # Data laid out in REVERSE name order and header keys in insertion order (metadata last),
    # so a reader that assumes sorted keys or key-ordered data would fail.
    header, chunks, offset = {}, [], 0
    for name in sorted(EXPECTED, reverse=True):
        dtype, shape, values = EXPECTED[name]
        raw = encode(dtype, values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = METADATA
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(b"".join(chunks))


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if n % 8 != 0:
        fail("header length %d is not a multiple of 8" % n)
    if 8 + n > len(blob):
        fail("header length %d beyond file size %d" % (n, len(blob)))

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            fail("duplicate keys in header: %r" % keys)
        return dict(pairs)

    header = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    if metadata != METADATA:
        fail("metadata %r != %r" % (metadata, METADATA))
    names = list(header)
    if names != sorted(names):
        fail("header keys not sorted: %r" % names)
    if sorted(names) != sorted(EXPECTED):
        fail("names %r != %r" % (sorted(names), sorted(EXPECTED)))
    offset = 0
    for name in names:
        entry = header[name]
        dtype, shape, values = EXPECTED[name]
        if entry["dtype"] != dtype or entry["shape"] != shape:
            fail("%s: dtype/shape %s %s != %s %s" % (name, entry["dtype"], entry["shape"], dtype, shape))
        begin, end = entry["data_offsets"]
        if begin != offset:
            fail("%s: offsets %r not contiguous in key order (expected begin %d)" % (name, entry["data_offsets"], offset))
        if end - begin != SIZES[dtype] * len(values):
            fail("%s: %d bytes, expected %d" % (name, end - begin, SIZES[dtype] * len(values)))
        got = decode(dtype, data[begin:end])
        if got != values:
            fail("%s: values %r != %r" % (name, got, values))
        offset = end
    if offset != len(data):
        fail("data buffer has %d bytes, tensors cover %d" % (len(data), offset))
    # Cross-check two dtypes with torch's own buffer decoding when torch is available.
    try:
        import torch
        f32 = header["f32"]["data_offsets"]
        t = torch.frombuffer(bytearray(data[f32[0]:f32[1]]), dtype=torch.float32).reshape(2, 3)
        if t.flatten().tolist() != EXPECTED["f32"][2]:
            fail("torch.frombuffer f32 mismatch: %r" % t.tolist())
        bf = header["bf16"]["data_offsets"]
        t = torch.frombuffer(bytearray(data[bf[0]:bf[1]]), dtype=torch.bfloat16).float()
        if t.tolist() != EXPECTED["bf16"][2]:
            fail("torch.frombuffer bf16 mismatch: %r" % t.tolist())
    except ImportError:
        pass
    print("ok %d tensors, header %d bytes" % (len(names), n))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__)
        sys.exit(2)
    (write if sys.argv[1] == "write" else check)(sys.argv[2])
