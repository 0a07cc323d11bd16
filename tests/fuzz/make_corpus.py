#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Each corpus holds a few small valid files, built here from the format
descriptions in the headers (token files: tokens.h, vocabularies: vocab.h,
safetensors: safetensors.h; configurations: configs/ci.ini without its
comments), and a few invalid ones that stop at different checks. The output is
deterministic; rerun this after a format change and commit the result. The
fuzzers never write here: scripts/fuzz runs them on a scratch copy.

Usage: tests/fuzz/make_corpus.py
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")

FNV_INIT = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def fnv1a64(data, h=FNV_INIT):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


# ---- config ---------------------------------------------------------------

def config_corpus():
    with open(os.path.join(ROOT, "configs", "ci.ini"), encoding="utf-8") as f:
        lines = [l for l in f.read().splitlines() if l.strip() and not l.lstrip().startswith(";")]
    ci = "".join(("\n" if l.startswith("[") and i else "") + l + "\n" for i, l in enumerate(lines))
    write("config", "ci.ini", ci)
    write("config", "small.ini",
          "[model]\nn_layer = 3\nn_head = 4\nn_embd = 64 ; inline comment\n\n"
          "[quantize]\ngranularity = group\ngroup_size = 16\nvariants = naive:8:channel,\n"
          "    gptq:4:g16, gptq:3:channel\n[sample]\nprompt = Once upon a time\ntemperature = 0\n")
    write("config", "override_int", "model.n_layer=4")
    write("config", "override_list", "quantize.variants=naive:8:channel, gptq:4:g64")
    write("config", "override_bool", "quantize.act_order=off")
    # invalid, each stopping at a different check
    write("config", "bad_typo_key", "[model]\nn_layers = 2\n")
    write("config", "bad_section", "[modle]\nn_layer = 2\n")
    write("config", "bad_range", "[train]\nbeta2 = 1.5\n")
    write("config", "bad_cross_key", "[model]\nn_embd = 30\nn_head = 4\n")
    write("config", "bad_fractions", "[data]\nval_fraction = 0.45\ntest_fraction = 0.45\n")
    write("config", "bad_stride", "[model]\nblock_size = 16\n[eval]\nstride = 17\n")
    write("config", "bad_int8_compat", "[quantize]\nmethod = naive\nbits = 4\nint8_compat = yes\n")
    write("config", "bad_duplicate", "[run]\nseed = 1\nseed = 2\n")
    write("config", "bad_syntax", "[run]\nseed\n")
    write("config", "bad_long_line", "[sample]\nprompt = " + "x" * 220 + "\n")
    write("config", "bad_override", "model.n_head=abc")


# ---- tokens ---------------------------------------------------------------

def token_file(tokens, vocab_size, vocab_hash=0x1234, version=1, dtype=1, reserved=0, count=None,
               checksum=None):
    body = struct.pack("<%dH" % len(tokens), *tokens)
    header = b"NGQTOKS\0" + struct.pack("<IIII", version, dtype, vocab_size, reserved)
    header += struct.pack("<QQQ", len(tokens) if count is None else count, vocab_hash,
                          fnv1a64(body) if checksum is None else checksum)
    return header + body


def tokens_corpus():
    write("tokens", "valid.tok", token_file([0, 1, 2, 3, 4, 3, 2, 1, 0, 5, 5, 1], 6))
    write("tokens", "empty.tok", token_file([], 2))
    write("tokens", "wide_vocab.tok", token_file([65534, 0, 30000, 7], 65535, vocab_hash=0xFEDCBA9876543210))
    write("tokens", "bad_id.tok", token_file([0, 1, 6], 6))
    write("tokens", "bad_version.tok", token_file([1, 2], 6, version=2))
    write("tokens", "bad_count.tok", token_file([1, 2, 3], 6, count=4))
    write("tokens", "bad_checksum.tok", token_file([1, 2, 3], 6, checksum=1))
    write("tokens", "truncated.tok", token_file([1, 2, 3, 4], 6)[:52])


# ---- vocab ----------------------------------------------------------------

def vocab_text(codepoints, counts=None, hash_value=None, size=None):
    h = FNV_INIT
    for cp in codepoints:
        h = fnv1a64(struct.pack("<I", cp), h)
    if hash_value is not None:
        h = hash_value
    n = len(codepoints)
    counts = counts or [1] * n
    text = "nanogptq-vocab 1\nsize %d\nunknown_id %d\nhash %016x\nid codepoint count\n" % (
        n + 1 if size is None else size, n if size is None else size - 1, h)
    for i, cp in enumerate(codepoints):
        text += "%d U+%04X %d\n" % (i, cp, counts[i])
    return text


def vocab_corpus():
    ascii_cps = [0x0A, 0x20] + list(range(0x61, 0x7B))
    write("vocab", "ascii.vocab", vocab_text(ascii_cps, counts=list(range(100, 100 + len(ascii_cps)))))
    # every character a vocabulary file uses, so encoding the file itself
    # has no unknown characters and must decode back to the same bytes
    write("vocab", "printable.vocab", vocab_text([0x0A] + list(range(0x20, 0x7F)) + [0xE9, 0x20AC, 0x1F600]))
    write("vocab", "one.vocab", vocab_text([0x41]))
    write("vocab", "utf8_mixed.txt", "plain \u00e9 \u20ac \U0001F600 ".encode("utf-8") + b"\xc3\x28\xed\xa0\x80\xf4\x90\x80\x80")
    write("vocab", "bad_hash.vocab", vocab_text([0x61, 0x62], hash_value=0))
    write("vocab", "bad_order.vocab", vocab_text([0x62, 0x61]))
    write("vocab", "bad_surrogate.vocab", vocab_text([0x61, 0xD800]))
    write("vocab", "truncated.vocab", vocab_text([0x61, 0x62, 0x63], size=5))


# ---- safetensors ------------------------------------------------------------

def st_file(tensors, metadata=None, checksum=True, pad=True, header_override=None):
    """tensors: list of (name, dtype, shape, data bytes), laid out in order."""
    header = {}
    meta = dict(metadata or {})
    data = b"".join(t[3] for t in tensors)
    if checksum:
        meta["nanogptq.checksum"] = "fnv1a64:%016x" % fnv1a64(data)
    if meta:
        header["__metadata__"] = meta
    offset = 0
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    text = header_override if header_override is not None else json.dumps(header, separators=(",", ":"))
    text = text.encode("utf-8")
    if pad:
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_corpus():
    f32 = struct.pack("<6f", 0.5, -1.0, 2.0, 0.0, 1e-3, -7.25)
    i8 = bytes([1, 255, 7, 128])
    write("safetensors", "valid.safetensors",
          st_file([("wte", "F32", [2, 3], f32), ("codes", "I8", [4], i8)], {"format": "pt", "bits": "4"}))
    # no checksum and an unpadded header: the data section starts misaligned
    write("safetensors", "misaligned.safetensors",
          st_file([("a", "I8", [3], b"\x01\x02\x03"), ("b", "F32", [2], struct.pack("<2f", 1.0, 2.0)),
                   ("c", "F64", [], struct.pack("<d", 3.5))], checksum=False, pad=False))
    write("safetensors", "empty_tensor.safetensors",
          st_file([("z", "BF16", [0, 4], b""), ("s", "U16", [], b"\x01\x00")], checksum=False))
    write("safetensors", "empty.safetensors", st_file([], checksum=False))
    write("safetensors", "bad_overlap.safetensors", st_file([], checksum=False, header_override=json.dumps(
        {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
         "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}})) + b"\x00\x01\x02")
    write("safetensors", "bad_shape.safetensors", st_file([], checksum=False, header_override=json.dumps(
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})) + b"\x00" * 8)
    write("safetensors", "bad_huge_shape.safetensors", st_file([], checksum=False, header_override=json.dumps(
        {"a": {"dtype": "F64", "shape": [2 ** 53, 2 ** 53], "data_offsets": [0, 0]}})))
    write("safetensors", "bad_many_dims.safetensors", st_file([], checksum=False, header_override=json.dumps(
        {"a": {"dtype": "U8", "shape": [1] * 9, "data_offsets": [0, 1]}})) + b"\x00")
    write("safetensors", "bad_metadata.safetensors", st_file([], checksum=False, header_override=json.dumps(
        {"__metadata__": ["not", "an", "object"]})))
    write("safetensors", "bad_json.safetensors", st_file([], checksum=False, header_override='{"a": {"dtype": '))
    write("safetensors", "bad_checksum.safetensors",
          st_file([("x", "U8", [2], b"\x05\x06")], {"nanogptq.checksum": "fnv1a64:0000000000000000"},
                  checksum=False))


def main():
    for target, make in (("config", config_corpus), ("tokens", tokens_corpus), ("vocab", vocab_corpus),
                         ("safetensors", safetensors_corpus)):
        path = os.path.join(CORPUS, target)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        make()


if __name__ == "__main__":
    main()
