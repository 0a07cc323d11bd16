#!/usr/bin/python3
"""safetensors_check.py: an independent safetensors reader (Python + numpy
only, no safetensors package) used to cross-check the C writer.

Usage: /usr/bin/python3 scripts/safetensors_check.py FILE

Parses the 8-byte length and the JSON header itself, checks that the tensors
tile the data section without holes or overlap, recomputes the
"nanogptq.checksum" (FNV-1a 64 over the data section) when present, and
prints one JSON object on stdout:
  {"header_length": N, "data_start": 8+N, "metadata": {...}, "checksum_ok": true|false|null,
   "tensors": [{"name", "dtype", "shape", "nbytes", "sum"}, ...]}   (tensors in data order)
"sum" is the float64 sum of all elements (BOOL counts True values).
It exits with status 1 and a message on stderr for an invalid file. It does
not modify anything and is not used by the toolkit itself.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
    "F16": np.float16, "BF16": None, "U32": np.uint32, "I32": np.int32, "F32": np.float32,
    "U64": np.uint64, "I64": np.int64, "F64": np.float64,
}
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
         "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def fail(msg):
    sys.stderr.write("safetensors_check: %s\n" % msg)
    sys.exit(1)


def tensor_sum(dtype, raw, count):
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2", count=count).astype(np.uint32) << 16
        values = bits.view(np.float32)
    else:
        values = np.frombuffer(raw, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"), count=count)
    return float(np.sum(values, dtype=np.float64))


def main():
    if len(sys.argv) != 2:
        fail("usage: safetensors_check.py FILE")
    with open(sys.argv[1], "rb") as fh:
        blob = fh.read()
    if len(blob) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        fail("header length %d larger than the file" % n)
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        fail("header is not an object")
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    if not all(isinstance(v, str) for v in metadata.values()):
        fail("metadata value that is not a string")

    tensors = []
    for name, info in header.items():
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SIZES:
            fail("tensor %r: unknown dtype %r" % (name, dtype))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * SIZES[dtype] != end - begin or end > len(data):
            fail("tensor %r: inconsistent offsets" % name)
        tensors.append({"name": name, "dtype": dtype, "shape": shape, "begin": begin, "end": end,
                        "nbytes": end - begin,
                        "sum": tensor_sum(dtype, data[begin:end], count)})
    tensors.sort(key=lambda t: (t["begin"], t["end"]))
    pos = 0
    for t in tensors:
        if t["begin"] != pos:
            fail("hole or overlap before tensor %r" % t["name"])
        pos = t["end"]
    if pos != len(data):
        fail("data section is %d bytes, tensors cover %d" % (len(data), pos))

    checksum_ok = None
    if "nanogptq.checksum" in metadata:
        checksum_ok = metadata["nanogptq.checksum"] == "fnv1a64:%016x" % fnv1a64(data)
    for t in tensors:
        del t["begin"], t["end"]
    json.dump({"header_length": n, "data_start": 8 + n, "metadata": metadata,
               "checksum_ok": checksum_ok, "tensors": tensors}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
