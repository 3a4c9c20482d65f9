"""Model directories checked before anything loads them: config, custom code, sizes, weights.

`check_model_config` reads config.json (and tokenizer_config.json) as plain JSON and the
safetensors headers (a few KB each; no tensor is read), and refuses with one line:

* a config.json that is not a JSON object;
* custom code (`auto_map` in either file) unless the caller trusts remote code, so the
  refusal is prefdata's own rather than transformers' traceback;
* sizes no model has (vocab_size, layer count, hidden size, ...), which would otherwise
  allocate for minutes or exhaust memory before failing;
* a config that disagrees with its weights: more layers than the weights hold (transformers
  would initialise the missing ones at random, slowly and silently), or an embedding whose
  row count is not vocab_size.

>>> check_model_config("prefdata/toy/weights/policy")["model_type"]  # doctest: +SKIP
'llama'
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from prefdata.errors import PrefdataError

# Generous upper bounds: the largest published models are 10-100x below each.
SIZE_LIMITS = {
    "vocab_size": 1 << 22,
    "num_hidden_layers": 1024, "n_layer": 1024, "num_layers": 1024,
    "hidden_size": 1 << 17, "n_embd": 1 << 17, "d_model": 1 << 17,
    "intermediate_size": 1 << 20, "n_inner": 1 << 20,
    "num_attention_heads": 4096, "n_head": 4096, "num_key_value_heads": 4096,
    "max_position_embeddings": 1 << 25, "n_positions": 1 << 25,
}
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_LAYER_INDEX = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:embed_tokens|wte|word_embeddings)\.weight$")
_MAX_HEADER = 100 << 20  # the safetensors format's own cap on a header


def check_model_config(path: str | Path, *, trust_remote_code: bool = False) -> dict:
    """Check `path`/config.json against its weights; returns the parsed config."""
    path = Path(path)
    config = _json_object(path / "config.json", path)
    if not trust_remote_code:
        for name in ("config.json", "tokenizer_config.json"):
            data = config if name == "config.json" else _json_object(path / name, path, optional=True)
            if data and data.get("auto_map"):
                raise PrefdataError(f"model directory {path} needs custom code (auto_map in {name}), "
                                    "which prefdata does not run by default",
                                    "use a model that transformers supports natively, or set trust_remote_code = true "
                                    "for that model (e.g. --set judge.trust_remote_code=true) if you trust its code")
    for section in (config, config.get("text_config")):
        if isinstance(section, dict):
            _check_sizes(section, path)
    _check_against_weights(config.get("text_config") if isinstance(config.get("text_config"), dict) else config,
                           path)
    return config


def _json_object(file: Path, model: Path, optional: bool = False) -> dict | None:
    if optional and not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise PrefdataError(f"{file.name} of model directory {model} is not valid JSON ({_first_line(err)})",
                            "restore the file from the model's original release") from None
    if not isinstance(data, dict):
        raise PrefdataError(f"{file.name} of model directory {model} holds a JSON {type(data).__name__}, not an object",
                            "restore the file from the model's original release")
    return data


def _check_sizes(config: dict, path: Path) -> None:
    for key, limit in SIZE_LIMITS.items():
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise PrefdataError(f"config.json of model directory {path} has {key} = {value!r}, "
                                f"outside any real model's range (1 to {limit:,})",
                                "fix config.json; it must describe the weights beside it")


def _check_against_weights(config: dict, path: Path) -> None:
    shapes = _weight_shapes(path)
    if not shapes:
        return
    layers = {int(m.group(1)) for name in shapes for m in [_LAYER_INDEX.search(name)] if m}
    declared = next((config[k] for k in _LAYER_KEYS if isinstance(config.get(k), int)), None)
    if layers and declared is not None and declared > max(layers) + 1:
        raise PrefdataError(f"config.json of model directory {path} says {declared} layers but its weights hold "
                            f"{max(layers) + 1}", "fix num_hidden_layers in config.json, or point at the full model")
    vocab = config.get("vocab_size")
    rows = {shape[0] for name, shape in shapes.items() if _EMBEDDING.search(name) and shape}
    if isinstance(vocab, int) and rows and vocab not in rows:
        raise PrefdataError(f"config.json of model directory {path} says vocab_size = {vocab} but its embedding "
                            f"has {min(rows)} rows", "fix vocab_size in config.json, or point at the full model")


def _weight_shapes(path: Path) -> dict[str, list[int]]:
    """tensor name -> shape, from the JSON headers of the directory's safetensors files."""
    shapes: dict[str, list[int]] = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            with open(file, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > _MAX_HEADER:
                    raise ValueError(f"header of {size} bytes")
                header = json.loads(fh.read(size))
        except (OSError, struct.error, ValueError) as err:
            raise PrefdataError(f"{file} is not a readable safetensors file ({_first_line(err)})",
                                "re-download or re-save the weights") from None
        if not isinstance(header, dict):
            raise PrefdataError(f"{file} is not a readable safetensors file (bad header)",
                                "re-download or re-save the weights")
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict) and isinstance(info.get("shape"), list):
                shapes[name] = info["shape"]
    return shapes


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]
