"""The files of a Hugging Face model directory that travel with a model, whatever stage moves it."""

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
CONFIG_FILE = "config.json"
# The weights: one safetensors file, or shards named by an index. (.bin checkpoints are not read.)
WEIGHTS_SUFFIX = ".safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
