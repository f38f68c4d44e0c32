"""One stored block, decoded by hand: the bytes at an offset of a checkpoint file → the fields the format
stores there (scale, minimum, codes) → the floats they stand for.

GGUF's block formats are decoded here in plain Python, one block at a time, so each step can be shown (and
checked against the `gguf` package's own `dequantize`, which the tests do); safetensors' float formats are
read as raw little-endian words. Formats without a hand decoder here still get their hex and floats (from
the `gguf` package) with an empty `fields`.
"""

from __future__ import annotations

import struct
from typing import Any

# safetensors / GGUF plain floats: bytes per value and how to read one little-endian word
FLOATS = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
SHOW_FLOATS = 16  # plain-float tensors: how many values make the "block" shown
MAX_VALUES = 32  # K-quant super-blocks hold 256 values: the first 32 are shown


def _f16(raw: bytes) -> float:
    return struct.unpack("<e", raw)[0]


def _float(dtype: str, raw: bytes) -> float:
    if dtype == "BF16":  # the top half of a float32
        return struct.unpack("<f", b"\x00\x00" + raw)[0]
    return struct.unpack({"F32": "<f", "F16": "<e", "F64": "<d"}[dtype], raw)[0]


def _nibbles(qs: bytes) -> list[int]:
    """ggml's 4-bit packing: the low nibbles of the 16 bytes are values 0..15, the high nibbles 16..31."""
    return [b & 0x0F for b in qs] + [b >> 4 for b in qs]


def _q4_0(b: bytes) -> tuple[dict[str, Any], list[float]]:
    d, q = _f16(b[:2]), _nibbles(b[2:18])
    return {"scale": d, "codes": q, "rule": "x = scale · (code − 8)"}, [d * (c - 8) for c in q]


def _q4_1(b: bytes) -> tuple[dict[str, Any], list[float]]:
    d, m, q = _f16(b[:2]), _f16(b[2:4]), _nibbles(b[4:20])
    return {"scale": d, "min": m, "codes": q, "rule": "x = scale · code + min"}, [d * c + m for c in q]


def _high_bits(qh: bytes) -> list[int]:
    bits = int.from_bytes(qh, "little")
    return [(bits >> i) & 1 for i in range(32)]


def _q5_0(b: bytes) -> tuple[dict[str, Any], list[float]]:
    d, hi, lo = _f16(b[:2]), _high_bits(b[2:6]), _nibbles(b[6:22])
    q = [lo[i] | (hi[i] << 4) for i in range(32)]
    return {"scale": d, "codes": q, "rule": "x = scale · (code − 16), code = 4 low bits + 1 high bit"}, \
        [d * (c - 16) for c in q]


def _q5_1(b: bytes) -> tuple[dict[str, Any], list[float]]:
    d, m, hi, lo = _f16(b[:2]), _f16(b[2:4]), _high_bits(b[4:8]), _nibbles(b[8:24])
    q = [lo[i] | (hi[i] << 4) for i in range(32)]
    return {"scale": d, "min": m, "codes": q, "rule": "x = scale · code + min, code = 4 low bits + 1 high bit"}, \
        [d * c + m for c in q]


def _q8_0(b: bytes) -> tuple[dict[str, Any], list[float]]:
    d, q = _f16(b[:2]), list(struct.unpack("<32b", b[2:34]))
    return {"scale": d, "codes": q, "rule": "x = scale · code (code a signed byte)"}, [d * c for c in q]


def _k4_scales(s: bytes) -> tuple[list[int], list[int]]:
    """Q4_K/Q5_K's 12 bytes → 8 six-bit sub-block scales and 8 six-bit minimums."""
    sc = [s[j] & 63 if j < 4 else (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4) for j in range(8)]
    mn = [s[j + 4] & 63 if j < 4 else (s[j + 4] >> 4) | ((s[j] >> 6) << 4) for j in range(8)]
    return sc, mn


def _q4_k(b: bytes) -> tuple[dict[str, Any], list[float]]:
    d, dmin = _f16(b[:2]), _f16(b[2:4])
    sc, mn = _k4_scales(b[4:16])
    qs, values, codes = b[16:144], [], []
    for chunk in range(4):  # 64 values per chunk: low nibbles (sub-block 2c), then high nibbles (2c+1)
        part = qs[32 * chunk:32 * chunk + 32]
        for half, shift in ((2 * chunk, 0), (2 * chunk + 1, 4)):
            q = [(x >> shift) & 0x0F for x in part]
            codes += q
            values += [d * sc[half] * c - dmin * mn[half] for c in q]
    return {"scale": d, "min": dmin, "sub_scales": sc, "sub_mins": mn, "codes": codes[:MAX_VALUES],
            "rule": "x = scale · sub_scale[j] · code − min · sub_min[j] (sub-block j of 32)"}, values


def _q6_k(b: bytes) -> tuple[dict[str, Any], list[float]]:
    ql, qh, scales, d = b[:128], b[128:192], struct.unpack("<16b", b[192:208]), _f16(b[208:210])
    values, codes = [0.0] * 256, [0] * 256
    for half in range(2):  # 128 values each, as ggml's dequantize_row_q6_K walks them
        l_, h_ = ql[64 * half:64 * half + 64], qh[32 * half:32 * half + 32]
        for i in range(32):
            qs = (((l_[i] & 0xF) | ((h_[i] >> 0 & 3) << 4)) - 32, ((l_[i + 32] & 0xF) | ((h_[i] >> 2 & 3) << 4)) - 32,
                  ((l_[i] >> 4) | ((h_[i] >> 4 & 3) << 4)) - 32, ((l_[i + 32] >> 4) | ((h_[i] >> 6 & 3) << 4)) - 32)
            for k, q in enumerate(qs):
                n = 128 * half + 32 * k + i
                codes[n] = q
                values[n] = d * scales[n // 16] * q
    return {"scale": d, "sub_scales": list(scales), "codes": codes[:MAX_VALUES],
            "rule": "x = scale · sub_scale[j] · code (6-bit code − 32; sub-block j of 16)"}, values


DECODERS = {"Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "Q4_K": _q4_k, "Q6_K": _q6_k}


def block_size(fmt: str) -> tuple[int, int]:
    """(values, bytes) of one stored block of this format (plain floats: SHOW_FLOATS values)."""
    if fmt in FLOATS:
        return SHOW_FLOATS, SHOW_FLOATS * FLOATS[fmt]
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]


def decode(buf: Any, offset: int, fmt: str, count: int | None = None) -> dict[str, Any]:
    """The block of format `fmt` starting at byte `offset` of `buf` (a file map) →
    {"format", "offset", "nbytes", "hex", "fields", "values"}. Plain floats: `count` values (default
    SHOW_FLOATS), so a block never runs past the head's own bytes."""
    _, size = block_size(fmt)
    if fmt in FLOATS and count is not None:
        size = count * FLOATS[fmt]
    raw = bytes(buf[offset:offset + size])
    if fmt in FLOATS:
        w = FLOATS[fmt]
        fields: dict[str, Any] = {"words": [raw[i:i + w].hex() for i in range(0, size, w)],
                                  "rule": {"BF16": "x = the word's 16 bits as the top half of a float32",
                                           "F16": "x = IEEE half (1 sign, 5 exponent, 10 mantissa bits)",
                                           "F32": "x = IEEE single", "F64": "x = IEEE double"}[fmt]}
        values = [_float(fmt, raw[i:i + w]) for i in range(0, size, w)]
    elif fmt in DECODERS:
        fields, values = DECODERS[fmt](raw)
    else:
        fields, values = {}, [float(v) for v in reference(raw, fmt)]
    return {"format": fmt, "offset": offset, "nbytes": size, "hex": raw.hex(" "), "fields": fields,
            "values": [float(v) for v in values[:MAX_VALUES]]}


def reference(raw: bytes, fmt: str) -> list[float]:
    """The `gguf` package's own dequantization of one block (what the hand decoding must equal)."""
    import numpy as np
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    data = np.frombuffer(raw, dtype=np.uint8)
    return dequantize(data, GGMLQuantizationType[fmt]).reshape(-1).astype(float).tolist()
