"""Where the gzip bytes of a .tflite go: weights, biases, and everything else in the file.

    python tools/gzip_breakdown.py runs/x/pruned_int8.tflite [--float runs/x/student_float32.tflite]

Each constant tensor's bytes are deflated on their own (level 9, as gzip -9); "the rest"
is the file with every constant tensor's bytes cut out: the flatbuffer itself, i.e.
tensor names, per-channel quantization scales (float32) and zero points (int64), operator
options and metadata. Deflating parts separately differs from deflating the file by a
few percent, so the parts are shown beside the whole file's gzip, not summed into it.
With --float, every figure is also given as a fraction of the float32 file's size (the
"pruned int8 + gzip <= 0.20x the float32 file" target of issue 18).
"""

from __future__ import annotations

import argparse
import gzip
import zlib
from pathlib import Path

import numpy as np


def breakdown(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    data = path.read_bytes()
    interpreter = Interpreter(model_path=str(path))
    covered = np.zeros(len(data), bool)
    parts: dict[str, list[int]] = {}
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:  # an activation: no data until invoked
            continue
        raw = value.tobytes()
        if len(raw) < 64:  # shapes, tiny vectors: part of "the rest"
            continue
        at = data.find(raw)
        if at < 0:
            continue
        covered[at:at + len(raw)] = True
        kind = "weights " + value.dtype.name if value.dtype != np.int32 else "biases int32"
        entry = parts.setdefault(kind, [0, 0, 0])
        entry[0] += len(raw)
        entry[1] += len(zlib.compress(raw, 9))
        entry[2] += int(np.count_nonzero(value == 0))
    # Per-channel quantization parameters live in the flatbuffer ("the rest"): a float32
    # scale and an int64 zero point per output channel, for weights and biases alike.
    scales = [d["quantization_parameters"]["scales"] for d in interpreter.get_tensor_details()]
    quant_bytes = sum(len(s) * (4 + 8) for s in scales if len(s) > 1)
    scale_bytes = b"".join(np.asarray(s, np.float32).tobytes() for s in scales if len(s) > 1)
    rest = bytes(np.frombuffer(data, np.uint8)[~covered])
    parts["rest of the file (names, quantization parameters, options)"] = [len(rest), len(zlib.compress(rest, 9)), 0]
    return {"bytes": len(data), "gzip": len(gzip.compress(data, 9)), "parts": parts,
            "per_channel_quantization": [quant_bytes, len(zlib.compress(scale_bytes, 9))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--float", dest="float_file", type=Path, help="the float32 file to compare with")
    args = parser.parse_args()
    result = breakdown(args.model)
    base = args.float_file.stat().st_size if args.float_file else None

    def frac(n: int) -> str:
        return f"  ({n / base:.3f}x float32)" if base else ""

    print(f"{args.model}: {result['bytes']:,} bytes, gzip -9 {result['gzip']:,}{frac(result['gzip'])}")
    for name, (raw, packed, zeros) in result["parts"].items():
        zero_text = f", {zeros / raw:.1%} zero bytes" if zeros and name.startswith("weights int8") else ""
        print(f"  {name}: {raw:,} bytes -> deflate {packed:,}{frac(packed)}{zero_text}")
    raw, packed = result["per_channel_quantization"]
    print(f"    of the rest, per-channel quantization parameters: {raw:,} bytes; their float32 scales alone "
          f"deflate to {packed:,}{frac(packed)} (zero points are all 0)")
    if base:
        print(f"float32 file: {base:,} bytes; 0.20x = {int(base * 0.2):,}")


if __name__ == "__main__":
    main()
