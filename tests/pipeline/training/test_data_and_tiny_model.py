import json

import pytest
from transformers import LlamaTokenizer

from pipeline import prompt
from pipeline.dataset.rows import DatasetRow
from pipeline.training import data


def test_tiny_model_is_a_small_mistral_with_its_own_sentencepiece_tokenizer(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "mistral"
    assert config["hidden_size"] >= 256 and config["intermediate_size"] >= 512
    assert config["hidden_size"] % 256 == 0 and config["intermediate_size"] % 256 == 0  # K-quant rows
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # grouped-query attention
    assert (tiny_model_dir / "tokenizer.model").is_file() and (tiny_model_dir / "model.safetensors").is_file()
    tokenizer_config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == prompt.MISTRAL_CHAT_TEMPLATE
    tokenizer = LlamaTokenizer.from_pretrained(str(tiny_model_dir))
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    text = "Profesora de neurociencia 🧠 東京大学"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text  # byte fallback


def test_prompt_has_one_bos_the_system_prompt_and_ends_at_inst(tiny_model_dir):
    tokenizer = LlamaTokenizer.from_pretrained(str(tiny_model_dir))
    text = prompt.prompt_text(tokenizer, "Score this profile.")
    assert text == f"<s>[INST] {prompt.SYSTEM_PROMPT}\n\nScore this profile. [/INST]"
    ids = prompt.prompt_token_ids(tokenizer, "Score this profile.")
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_labels_cover_the_answer_and_eos_only(tiny_model_dir):
    tokenizer = LlamaTokenizer.from_pretrained(str(tiny_model_dir))
    example = DatasetRow("Score this profile.", prompt.format_answer("jane", 0.9, "PhD."), "jane", 0.9)
    split = data.tokenize(tokenizer, [example], max_seq_length=1024)
    ids, labels = split.input_ids[0], split.labels[0]
    prompt_length = len(prompt.prompt_token_ids(tokenizer, example.instruction))
    assert ids[:prompt_length] == prompt.prompt_token_ids(tokenizer, example.instruction)
    assert labels[:prompt_length] == [data.IGNORE_INDEX] * prompt_length
    assert labels[prompt_length:] == ids[prompt_length:] and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[prompt_length:-1]).strip() == example.output
    # The answer's pieces spell it exactly, from its "{": no leading "▁" token, which serving's JSON
    # grammar would forbid right after [/INST] (transformers alone encodes the answer with one).
    answer_pieces = tokenizer.convert_ids_to_tokens(ids[prompt_length:-1])
    assert answer_pieces[0].startswith("{") and "".join(answer_pieces).replace("\u2581", " ") == example.output
    assert tokenizer.convert_ids_to_tokens(tokenizer(example.output, add_special_tokens=False)["input_ids"])[0].startswith("\u2581")


def test_too_long_examples_are_skipped_and_counted(tiny_model_dir):
    tokenizer = LlamaTokenizer.from_pretrained(str(tiny_model_dir))
    split = data.tokenize(tokenizer, [DatasetRow("x " * 500, "{}", "x", 0.0), DatasetRow("short", "{}", "s", 0.0)], max_seq_length=200)
    assert split.skipped_too_long == 1 and len(split.input_ids) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "train.jsonl is empty"),
        ("{good}\nnot json\n", "train.jsonl line 2: not JSON"),
        ('{good}\n{"instruction": "a"}\n', "train.jsonl line 2: keys are not exactly instruction, output"),
        ('{"instruction": "a", "output": "b"}\n', "train.jsonl line 1: instruction does not follow the template"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, small_dataset, content, message):
    """The trainer reads rows through the dataset's one row reader: refused as ValidateData refuses them."""
    good = (small_dataset / "train.jsonl").read_text().splitlines()[0]
    (tmp_path / "train.jsonl").write_text(content.replace("{good}", good))
    with pytest.raises(data.TrainingDataError, match=message):
        data.read_jsonl(tmp_path / "train.jsonl")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(data.TrainingDataError, match="missing"):
        data.read_jsonl(tmp_path / "train.jsonl")
