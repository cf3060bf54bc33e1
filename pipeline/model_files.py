"""The files of a Hugging Face model directory that travel with a model, whatever stage moves it."""

from __future__ import annotations

import shutil
from pathlib import Path

# The tokenizer: the SentencePiece model (what the GGUF vocabulary is built from), the fast
# tokenizer, its config (special tokens, chat template) and the optional extras.
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
# Required of a base model: tokenizer.model is what the GGUF vocabulary (llama.cpp, Ollama) is built
# from; tokenizer.json is what training tokenizes with. Without tokenizer.json, transformers builds
# its own from tokenizer.model, and whether its ids then equal serving's depends on the transformers
# version and on tokenizer_config.json: a directory without it is refused by name instead.
REQUIRED_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
CONFIG_FILE = "config.json"
# The weights: one safetensors file, or shards named by an index. (.bin checkpoints are not read.)
WEIGHTS_SUFFIX = ".safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"


def copy_tokenizer(source_dir: Path, destination_dir: Path) -> list[str]:
    """The tokenizer files of a local model directory copied beside another (the trainer's adapter),
    byte for byte: re-saving through transformers 5 would drop tokenizer.model. No storage layer:
    the training image has no AWS libraries (the conversion reads S3 with storage.copy_named)."""
    copied = [name for name in TOKENIZER_FILES if (source_dir / name).is_file()]
    for name in copied:
        shutil.copy2(source_dir / name, destination_dir / name)
    return copied
