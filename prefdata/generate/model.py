"""Model directories: validation, content hash, tokenizer and chat template.

A generate run is keyed by *what the model is*, not where it lives: the
`model_hash` covers the files that change outputs (config, generation config,
tokenizer files, weights), so moving a model directory keeps its cache and
re-training it in place invalidates it.

>>> model_hash("prefdata/toy/weights/policy")  # doctest: +SKIP
'3f0c2a9d41b7e6c8'
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from prefdata.errors import PrefdataError
from prefdata.modelcheck import check_model_config

# Files that change what a model generates. generation_config.json is here
# because vLLM adds its eos_token_id list to the stop tokens.
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")
_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
_PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth")

# (absolute path, mtime_ns, size, inode) -> sha256 hex of the file's bytes
_FILE_HASHES: dict[tuple, str] = {}


def weight_files(path: Path, allow_pickle: bool = False) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if allow_pickle and not files:
        files = sorted(p for pattern in _PICKLE_WEIGHTS for p in path.glob(pattern))
    return files


def validate_model_dir(path: str | Path, *, need_weights: bool = True, allow_pickle: bool = False,
                       trust_remote_code: bool = False) -> Path:
    """Check `path` holds a loadable model; raise a one-line PrefdataError naming what is missing
    or wrong (config, custom code, sizes, weights: `prefdata.modelcheck`) before anything loads it."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise PrefdataError(f"model directory {path} does not exist",
                            "pass a local Hugging Face model directory (hub downloads are not done here)")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in _VOCAB_FILES):
        missing.append("a tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    if need_weights and not weight_files(path, allow_pickle):
        if not allow_pickle and any(any(path.glob(p)) for p in _PICKLE_WEIGHTS):
            raise PrefdataError(f"model directory {path} has only pickle weights (*.bin/*.pt)",
                                "convert them to safetensors, or set allow_pickle = true if you trust the files")
        missing.append("weights (*.safetensors)")
    if missing:
        raise PrefdataError(f"model directory {path} is missing {', '.join(missing)}",
                            "point to a complete Hugging Face model directory")
    check_model_config(path, trust_remote_code=trust_remote_code)
    return path


def _cache_file() -> Path:
    root = os.environ.get("PREFDATA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "prefdata")
    return Path(root) / "file-hashes.json"


def _load_disk_cache() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_disk_cache(entries: dict) -> None:
    # Best effort: a read-only home only costs re-hashing next time.
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, path)
    except OSError:
        pass


def file_sha256(path: Path, disk_cache: dict | None = None) -> str:
    """sha256 of a file, cached by (path, mtime, size, inode): multi-GB weights are read once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if key in _FILE_HASHES:
        return _FILE_HASHES[key]
    text_key = "|".join(map(str, key))
    if disk_cache is not None and text_key in disk_cache:
        _FILE_HASHES[key] = disk_cache[text_key]
        return _FILE_HASHES[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    _FILE_HASHES[key] = digest.hexdigest()
    if disk_cache is not None:
        disk_cache[text_key] = _FILE_HASHES[key]
    return _FILE_HASHES[key]


def model_hash(path: str | Path, allow_pickle: bool = False) -> str:
    """Content hash (16 hex) of config.json, tokenizer files and weights of a model directory.

    File names (not directory names) enter the hash, so a copy of a model in
    another place hashes the same.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise PrefdataError(f"model directory {path} does not exist", "pass a local model directory")
    files = [path / n for n in CONFIG_FILES + TOKENIZER_FILES if (path / n).is_file()]
    files += weight_files(path, allow_pickle)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files.append(index)
    disk = _load_disk_cache()
    before = len(disk)
    digest = hashlib.sha256()
    for file in sorted(set(files), key=lambda p: p.name):
        digest.update(f"{file.name}\0{file_sha256(file, disk)}\n".encode())
    if len(disk) != before:
        _save_disk_cache(disk)
    return digest.hexdigest()[:16]


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """The model's own tokenizer; it must carry a chat template."""
    from transformers import AutoTokenizer

    path = Path(path).expanduser()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PrefdataError(f"cannot load the tokenizer of {path}: {first}",
                            "check the tokenizer files, or set trust_remote_code if the model needs custom code"
                            ) from None
    if not chat_template(tokenizer):
        raise PrefdataError(f"the tokenizer of {path} has no chat template",
                            "use a chat/instruct model, or add a chat_template (chat_template.jinja) to it")
    return tokenizer


def chat_template(tokenizer) -> str | None:
    """The default chat template string of a tokenizer (None when it has none)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one renders prompts
        template = template.get("default")
    return template or None


def template_hash(tokenizer) -> str:
    """sha256 (16 hex) of the chat template string."""
    return hashlib.sha256(chat_template(tokenizer).encode()).hexdigest()[:16]


def render(tokenizer, messages: list[dict]) -> str:
    """Apply the tokenizer's own chat template, ending with the assistant's turn opening."""
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as err:  # jinja errors (e.g. "roles must alternate") are the user's data
        raise PrefdataError(f"the chat template could not render a prompt: {err}",
                            "check the prompt's messages (roles, order) against the model's template") from None


# config.json keys that hold a model's context length, in the order architectures use them
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def _config(path: str | Path) -> dict:
    try:
        config = json.loads((Path(path).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def context_length(path: str | Path, override: int | None = None) -> int | None:
    """Tokens the model can attend over (prompt + completion): `override` (a backend's
    max_model_len) when given, else config.json's position limit; None when unknown."""
    if override:
        return int(override)
    config = _config(path)
    for scope in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if isinstance(scope.get(key), int) and scope[key] > 0:
                return scope[key]
    return None


def checkpoint_dtype(path: str | Path) -> str:
    """The dtype the weights are stored in (config.json `dtype` / `torch_dtype`), float32 if unset.

    Both backends run a model in this dtype unless the pipeline names another, so vLLM and
    transformers sample from the same numbers (vLLM's own "auto" turns float32 into bfloat16).
    """
    config = _config(path)
    value = config.get("dtype") or config.get("torch_dtype") or "float32"
    return {"float": "float32", "half": "float16", "fp16": "float16", "bf16": "bfloat16",
            "fp32": "float32"}.get(str(value), str(value))


def resolve_dtype(path: str | Path, dtype: str) -> str:
    """A pipeline's `dtype`: "auto" means the checkpoint's own dtype."""
    return checkpoint_dtype(path) if dtype == "auto" else dtype
