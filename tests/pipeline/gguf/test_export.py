"""Real llama.cpp reads what the exporter writes; llama.cpp's own tools are the references."""

import json
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader

from pipeline import contracts, prompt, storage
from pipeline.gguf import convert, quant
from tests.pipeline.gguf.conftest import run_converter

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

ADAPTED = ("attn_q", "attn_k", "attn_v", "attn_output")
TEXT = "Score this profile.\nhandle: neuro_jane\nbio: Associate Professor of neuroscience 🧠 at MIT"


def tensors(path: Path) -> dict:
    return {t.name: t for t in GGUFReader(str(path)).tensors}


def raw(tensor) -> np.ndarray:
    return np.asarray(tensor.data).view(np.uint8).ravel()


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    return {
        kind: Path(
            convert.export_gguf(str(models.base), str(models.adapter), str(out / f"{kind.value}.gguf"), kind, threads=2, progress=False)[
                "out_uri"
            ]
        )
        for kind in quant.OutputType
    }


def hf_prompt_ids(models) -> list[int]:
    from transformers import AutoTokenizer

    return prompt.prompt_token_ids(AutoTokenizer.from_pretrained(str(models.base)), TEXT)


def llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), logits_all=True, n_ctx=256, n_threads=2, verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def reference_logits(models, ids: list[int]) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(models.merged))
    with torch.no_grad():
        return merged(torch.tensor([ids])).logits[0].double().numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_tokenization_is_identical_with_one_bos(models, exports):
    from llama_cpp import Llama

    llm = Llama(model_path=str(exports[quant.OutputType.F32]), vocab_only=True, verbose=False)
    text = prompt.prompt_text(__import__("transformers").AutoTokenizer.from_pretrained(str(models.base)), TEXT)
    assert text.startswith("<s>") and text.count("<s>") == 1
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    assert ids == hf_prompt_ids(models)
    assert ids.count(llm.token_bos()) == 1


def test_the_tokenizer_metadata_is_llama_cpps_own_but_for_the_space_prefix(models, exports, llama_cpp_converter, tmp_path):
    """convert_hf_to_gguf.py assumes a dummy prefix for every llama vocabulary; the tiny tokenizer has
    none, so ours says add_space_prefix false (with Mistral's tokenizer the metadata is identical:
    test_mistral_gguf.py). Everything else - tokens, scores, types, special ids - is llama.cpp's."""
    from tests.pipeline.gguf.test_mistral_gguf import tokenizer_metadata

    theirs = tokenizer_metadata(run_converter(llama_cpp_converter, models.merged, tmp_path / "theirs.gguf"))
    ours = tokenizer_metadata(exports[quant.OutputType.F16])
    assert ours.pop("tokenizer.ggml.add_space_prefix") is False
    assert ours == theirs


def test_f32_logits_match_transformers_on_the_peft_merged_model(models, exports):
    ids = hf_prompt_ids(models)
    ours, reference = llama_logits(exports[quant.OutputType.F32], ids), reference_logits(models, ids)
    assert cosine(ours, reference).min() >= 0.99999
    assert (ours.argmax(-1) == reference.argmax(-1)).all()


def test_f16_logits_are_as_good_as_llama_cpps_own_converter(models, exports, llama_cpp_converter, tmp_path):
    ids = hf_prompt_ids(models)
    reference = reference_logits(models, ids)
    theirs = llama_logits(run_converter(llama_cpp_converter, models.merged, tmp_path / "theirs.gguf"), ids)
    ours = llama_logits(exports[quant.OutputType.F16], ids)
    assert cosine(ours, reference).min() >= cosine(theirs, reference).min() - 1e-6


def f16_ulps_apart(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """How many representable f16 values lie between two f16 arrays, element by element."""

    def ordered(values: np.ndarray) -> np.ndarray:
        bits = values.view(np.int16).astype(np.int32)
        return np.where(bits < 0, -(bits & 0x7FFF), bits)  # sign-magnitude -> a monotonic integer line

    return np.abs(ordered(ours) - ordered(theirs))


def test_f16_tensors_match_llama_cpps_converter_on_the_merged_model(models, exports, llama_cpp_converter, tmp_path):
    """Tensors the adapter does not touch are byte-identical to convert_hf_to_gguf.py's. Adapted ones
    hold W + (B @ A) * scaling, a float32 product computed twice: by peft with torch's matmul and by
    the exporter with numpy's. Each BLAS may round that product's last f32 bit differently (it varies
    with the CPU's kernels), which can move an f16 rounding by one step, never more: the exact
    tolerance that holds on any CPU is one f16 ulp, and almost every element is identical."""
    theirs = tensors(run_converter(llama_cpp_converter, models.merged, tmp_path / "theirs.gguf"))
    ours = tensors(exports[quant.OutputType.F16])
    assert set(ours) == set(theirs)
    adapted = {name for name in ours if name.split(".")[-2] in ADAPTED}
    assert len(adapted) == 8 * len(ADAPTED)  # the fixture model's 8 layers
    for name, tensor in ours.items():
        assert tensor.tensor_type == theirs[name].tensor_type, name
        assert list(tensor.shape) == list(theirs[name].shape), name
        if name not in adapted:
            assert np.array_equal(raw(tensor), raw(theirs[name])), name
            continue
        assert tensor.tensor_type == GGMLQuantizationType.F16, name
        apart = f16_ulps_apart(np.asarray(tensor.data).ravel(), np.asarray(theirs[name].data).ravel())
        assert apart.max() <= 1, name
        assert (apart == 0).mean() >= 0.99, name


def test_merge_is_float32_exact_to_peft(models):
    """The merged weights before rounding: ours against peft's merge_and_unload, to f32 precision."""
    from safetensors.numpy import load_file

    merged = {}
    for path in sorted(Path(models.merged).glob("*.safetensors")):
        merged.update(load_file(str(path)))
    base = {}
    for path in sorted(Path(models.base).glob("*.safetensors")):
        base.update(load_file(str(path)))
    adapter = convert._load_adapter(str(models.adapter))
    lora, scaling = adapter[0], adapter[1]
    assert lora, "the fixture's adapter has LoRA pairs"
    for name, (a, b) in lora.items():
        ours = base[name].astype(np.float32) + (b.astype(np.float32) @ a.astype(np.float32)) * np.float32(scaling)
        np.testing.assert_allclose(ours, merged[name].astype(np.float32), rtol=2e-6, atol=1e-7, err_msg=name)


def test_q4_k_m_matches_llama_model_quantize_of_our_f16(exports, tmp_path):
    import ctypes

    import llama_cpp

    reference = tmp_path / "reference-q4_k_m.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(exports[quant.OutputType.F16]).encode(), str(reference).encode(), ctypes.byref(params)) == 0
    theirs, ours = tensors(reference), tensors(exports[quant.OutputType.Q4_K_M])
    assert set(ours) == set(theirs)
    for name, tensor in ours.items():
        assert tensor.tensor_type == theirs[name].tensor_type, name
        assert np.array_equal(raw(tensor), raw(theirs[name])), name
    q6 = sorted(
        int(name.split(".")[1]) for name, t in ours.items() if t.tensor_type == GGMLQuantizationType.Q6_K and name.endswith("attn_v.weight")
    )
    assert q6 == [0, 3, 6, 7]  # use_more_bits for 8 layers
    assert ours["output.weight"].tensor_type == GGMLQuantizationType.Q6_K
    assert ours["blk.1.attn_q.weight"].tensor_type == GGMLQuantizationType.Q4_K
    assert ours["output_norm.weight"].tensor_type == GGMLQuantizationType.F32


def test_quantized_files_load_and_generate(exports):
    from llama_cpp import Llama

    for kind in (quant.OutputType.Q4_K_M, quant.OutputType.Q8_0):
        llm = Llama(model_path=str(exports[kind]), n_ctx=256, n_threads=2, verbose=False)
        completion = llm.create_completion("[INST] Score this profile. [/INST]", max_tokens=8, temperature=0.0)
        assert completion["usage"]["completion_tokens"] >= 1


def test_description_file(exports):
    path = exports[quant.OutputType.Q4_K_M]
    description = json.loads(Path(f"{path}.json").read_text())
    import hashlib

    assert description["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert description["size"] == path.stat().st_size
    assert description["tensor_types"]["Q6_K"] == 2 * 4 + 1 and description["quantization"] == "q4_k_m"


def test_metadata_and_tokenizer_in_the_file(models, exports):
    reader = GGUFReader(str(exports[quant.OutputType.Q4_K_M]))
    fields = reader.fields

    def value(key):
        field = fields[key]
        return field.contents()

    config = json.loads((models.base / "config.json").read_text())
    assert value("general.architecture") == "llama"
    assert value("llama.block_count") == 8 and value("llama.embedding_length") == config["hidden_size"]
    assert value("llama.attention.head_count_kv") == config["num_key_value_heads"]
    assert value("llama.rope.freq_base") == pytest.approx(config["rope_parameters"]["rope_theta"])
    assert value("llama.context_length") == config["max_position_embeddings"]
    assert value("tokenizer.ggml.model") == "llama"
    assert len(value("tokenizer.ggml.tokens")) == config["vocab_size"]
    assert value("tokenizer.ggml.bos_token_id") == 1 and value("tokenizer.ggml.eos_token_id") == 2
    assert value("tokenizer.chat_template") == prompt.MISTRAL_CHAT_TEMPLATE
    assert value("general.file_type") == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M


def _upload_dir(s3, bucket: str, local: Path, prefix: str) -> str:
    for path in local.iterdir():
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return f"s3://{bucket}/{prefix}"


def test_s3_round_trip_reads_ranges_and_writes_the_same_bytes(models, exports, bucket, monkeypatch):
    monkeypatch.setattr(storage, "S3_PART_SIZE_BYTES", 5 * 1024 * 1024)
    s3 = boto3.client("s3")
    base = _upload_dir(s3, bucket, models.base, "models/base")
    adapter = _upload_dir(s3, bucket, models.adapter, "runs/r1/adapter")
    reads = []
    original = storage.read_range
    monkeypatch.setattr(storage, "read_range", lambda uri, start, end: reads.append((uri, start, end)) or original(uri, start, end))
    out = f"s3://{bucket}/runs/r1/model.gguf"
    description = convert.export_gguf(base, adapter, out, quant.OutputType.Q4_K_M, threads=2, progress=False)
    assert storage.read_bytes(out) == exports[quant.OutputType.Q4_K_M].read_bytes()
    weights_size = (models.base / "model.safetensors").stat().st_size
    weight_reads = [end - start for uri, start, end in reads if uri.endswith("base/model.safetensors")]
    assert len(weight_reads) > 60 and max(weight_reads) < weights_size / 4  # one ranged read per tensor
    head = s3.head_object(Bucket=bucket, Key="runs/r1/model.gguf")
    assert "-" in head["ETag"]  # completed as a multipart upload, not one buffered PUT
    assert json.loads(storage.read_bytes(f"{out}.json"))["sha256"] == description["sha256"]


# --- bad input: a named error and nothing at the destination ---------------------------------


def _clone(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _expect_failure(error, base, adapter, tmp_path, match):
    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(error, match=match):
        convert.export_gguf(str(base), str(adapter), str(out), threads=2, progress=False)
    assert not out.exists() and not Path(f"{out}.json").exists()


def test_adapter_of_another_base_names_the_tensor(models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig, MistralForCausalLM

    other = MistralForCausalLM(
        MistralConfig(
            vocab_size=2000, hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2
        )
    )
    get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(str(tmp_path / "adapter"))
    _expect_failure(
        convert.AdapterMismatch, models.base, tmp_path / "adapter", tmp_path, r"model\.layers\.\d+\.self_attn\.q_proj\.weight.*another base"
    )


def test_adapter_targeting_unknown_modules(models, tmp_path):
    from safetensors.numpy import load_file, save_file

    adapter = _clone(models.adapter, tmp_path / "adapter")
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({key.replace("q_proj", "qkv_fused"): value for key, value in weights.items()}, str(adapter / "adapter_model.safetensors"))
    _expect_failure(convert.AdapterMismatch, models.base, adapter, tmp_path, "does not have: .*qkv_fused")


def test_truncated_and_corrupt_safetensors(models, tmp_path):
    from pipeline.gguf.safetensors_reader import SafetensorsError

    truncated = _clone(models.base, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    _expect_failure(SafetensorsError, truncated, models.adapter, tmp_path, "truncated")
    corrupt = _clone(models.base, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 8 + data[8:])
    _expect_failure(SafetensorsError, corrupt, models.adapter, tmp_path, "corrupt")


@pytest.mark.parametrize("name", ["tokenizer.model", "tokenizer.json"])
def test_a_missing_tokenizer_file_is_named(models, tmp_path, name):
    base = _clone(models.base, tmp_path / "base")
    (base / name).unlink()
    _expect_failure(convert.MissingTokenizer, base, models.adapter, tmp_path, name)


def test_other_architectures_are_refused(models, tmp_path):
    base = _clone(models.base, tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    config["model_type"] = "gpt2"
    (base / "config.json").write_text(json.dumps(config))
    _expect_failure(convert.UnsupportedModel, base, models.adapter, tmp_path, "gpt2")


def test_missing_s3_object_is_named(models, bucket, tmp_path):
    _expect_failure(convert.UnsupportedModel, f"s3://{bucket}/models/nothing", models.adapter, tmp_path, "config.json")


def test_type_rules():
    assert [i for i in range(32) if quant.use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    q = quant.OutputType.Q4_K_M
    assert quant.tensor_type("blk.5.attn_v.weight", (1024, 4096), q, 5, 32) is GGMLQuantizationType.Q4_K
    assert quant.tensor_type("blk.6.ffn_down.weight", (4096, 14336), q, 6, 32) is GGMLQuantizationType.Q6_K
    assert quant.tensor_type("blk.0.attn_q.weight", (100, 96), q, 0, 32) is GGMLQuantizationType.Q5_0  # 96 % 256: fallback
    assert quant.tensor_type("output.weight", (32000, 96), q, None, 32) is GGMLQuantizationType.Q8_0
    assert quant.tensor_type("blk.0.attn_q.weight", (100, 40), q, 0, 32) is GGMLQuantizationType.F16
    assert quant.tensor_type("blk.0.attn_norm.weight", (4096,), q, 0, 32) is GGMLQuantizationType.F32


def test_the_budget_accepts_mistral_7b_on_a_lambda_and_refuses_what_cannot_fit():
    from types import SimpleNamespace

    from pipeline.gguf import budget
    from pipeline.gguf.safetensors_reader import TensorRef

    def tensor(rows, cols, kind):
        return SimpleNamespace(source=TensorRef("t", "s3://b/k", "BF16", (rows, cols), 0, rows * cols * 2), kind=kind)

    q4, q6 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K
    layer = [
        tensor(4096, 4096, q4),
        tensor(1024, 4096, q4),
        tensor(1024, 4096, q6),
        tensor(4096, 4096, q4),
        tensor(14336, 4096, q4),
        tensor(14336, 4096, q4),
        tensor(4096, 14336, q6),
    ]
    mistral = [tensor(32000, 4096, q4), tensor(32000, 4096, q6)] + layer * 32
    estimate = budget.estimate(mistral, threads=6, adapter_bytes=30 * 2**20)
    budget.check(estimate, seconds_available=870, memory_mb=10_240)  # fits
    assert 300 < estimate.seconds < 870 and estimate.peak_bytes < 4 * 2**30
    # The least conversionMemoryMb the stack accepts has the vCPUs for it; one vCPU less has not.
    least = contracts.CONVERSION_MIN_MEMORY_MB
    budget.check(budget.estimate(mistral, threads=contracts.lambda_vcpus(least), adapter_bytes=30 * 2**20), 870, least)
    with pytest.raises(budget.ModelTooLargeForLambda, match="estimated"):
        small = least - contracts.LAMBDA_MB_PER_VCPU
        budget.check(budget.estimate(mistral, threads=contracts.lambda_vcpus(small), adapter_bytes=30 * 2**20), 870, small)
    with pytest.raises(budget.ModelTooLargeForLambda, match="estimated"):
        budget.check(budget.estimate(mistral * 3, threads=6, adapter_bytes=0), 870, 10_240)
    with pytest.raises(budget.ModelTooLargeForLambda, match="memory"):
        budget.check(budget.estimate([tensor(256000, 16384, q4)], threads=6, adapter_bytes=0), 870, 10_240)


def test_dora_adapters_and_incomplete_configs_are_refused(models, tmp_path):
    adapter = _clone(models.adapter, tmp_path / "dora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    _expect_failure(convert.AdapterMismatch, models.base, adapter, tmp_path, "DoRA")
    base = _clone(models.base, tmp_path / "base")
    base_config = json.loads((base / "config.json").read_text())
    del base_config["num_hidden_layers"]
    (base / "config.json").write_text(json.dumps(base_config))
    _expect_failure(convert.UnsupportedModel, base, models.adapter, tmp_path, "num_hidden_layers")


def test_sharded_checkpoints_export_the_same_bytes(models, exports, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM

    from pipeline.model_files import TOKENIZER_FILES

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(str(models.base)).save_pretrained(str(sharded), max_shard_size="2MB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("model-*.safetensors"))) > 1
    for name in TOKENIZER_FILES:
        if (models.base / name).is_file():
            shutil.copy2(models.base / name, sharded / name)
    description = convert.export_gguf(
        str(sharded), str(models.adapter), str(tmp_path / "sharded.gguf"), quant.OutputType.Q4_K_M, threads=2, progress=False
    )
    assert description["sha256"] == json.loads(Path(f"{exports[quant.OutputType.Q4_K_M]}.json").read_text())["sha256"]
