#!/usr/bin/python3
"""Writes a tiny Hugging Face Llama checkpoint directory for pp3d's --init-from
test (tests/unit/hf_llama_test.cpp), with nothing from pp3d:

usage: /usr/bin/python3 tools/make_hf_llama_fixture.py tests/fixtures/hf_llama

  config.json                       LlamaForCausalLM keys (untied head, GQA)
  model-00001-of-00002.safetensors  embedding + layers 0..1, matrices in BF16, norms in F32
  model-00002-of-00002.safetensors  the rest (layer 2, model.norm, lm_head), F32
  model.safetensors.index.json      {"weight_map": {tensor name: file}}
  expected.json                     tokens, and the loss of the float64 PyTorch Llama
                                    (tools/make_llama_fixture.py's) on them with exactly
                                    the stored weights (BF16 ones rounded)

The safetensors files are written here from the format's specification (an
8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}}, then the raw little-endian bytes), independently of pp3d's
writer. The weights are tools/make_llama_fixture.py's fixture_value.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_llama_fixture as ref  # noqa: E402


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype 'F32'|'BF16', float64 array)."""
    header, blobs, offset = {}, [], 0
    for name, dtype, arr in tensors:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        raw = t.float().numpy().astype("<f4").tobytes() if dtype == "F32" else \
            t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hs = json.dumps(header).encode()
    hs += b" " * ((8 - len(hs) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hs)))
        f.write(hs)
        for b in blobs:
            f.write(b)


def stored(arr, dtype):
    """The float64 value of what the file holds."""
    t = torch.from_numpy(arr)
    return (t.to(torch.bfloat16) if dtype == "BF16" else t.float()).double()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    parts, weight_map, p = [[], []], {}, {}
    for name, shape in ref.param_shapes():
        arr = ref.fixture_value(name, shape)
        second = name.startswith("model.layers.2.") or name in ("model.norm.weight", "lm_head.weight")
        dtype = "BF16" if len(shape) == 2 and not second else "F32"
        parts[int(second)].append((name, dtype, arr))
        weight_map[name] = files[int(second)]
        p[name] = stored(arr, dtype)
    for f, tensors in zip(files, parts):
        write_safetensors(os.path.join(out, f), tensors)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": ref.C,
              "intermediate_size": ref.FF, "num_attention_heads": ref.H, "num_key_value_heads": ref.HKV,
              "num_hidden_layers": ref.L, "vocab_size": ref.V, "rms_norm_eps": ref.EPS, "rope_theta": ref.THETA,
              "max_position_embeddings": 64, "tie_word_embeddings": False, "hidden_act": "silu",
              "torch_dtype": "bfloat16", "attention_bias": False, "mlp_bias": False}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    g = np.random.default_rng(5)
    tokens = g.integers(0, ref.V, size=(ref.B, ref.T + 1))
    tok = torch.from_numpy(tokens)
    with torch.no_grad():
        loss, _ = ref.llama_loss(p, tok[:, :ref.T], tok[:, 1:])
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"B": ref.B, "T": ref.T, "tokens": tokens.tolist(), "loss": loss.item()}, f)
    print(f"wrote {out}: loss {loss.item():.10f}")


if __name__ == "__main__":
    main()
