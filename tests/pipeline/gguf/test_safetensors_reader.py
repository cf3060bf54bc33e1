import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.gguf.safetensors_reader import SafetensorsError, load_f32, read_header


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_every_source_dtype_widens_exactly_to_f32(tmp_path, dtype):
    tensors = {"a": torch.randn(64, 48).to(dtype), "b": torch.randn(7).to(dtype)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    refs = read_header(str(tmp_path / "m.safetensors"))
    for name, tensor in tensors.items():
        assert np.array_equal(load_f32(refs[name]), tensor.float().numpy())


def test_unsupported_dtype_and_bad_offsets_are_named(tmp_path):
    save_file({"i": torch.arange(10, dtype=torch.int64)}, str(tmp_path / "int.safetensors"))
    with pytest.raises(SafetensorsError, match="dtype I64"):
        read_header(str(tmp_path / "int.safetensors"))
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}}'
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 32)
    with pytest.raises(SafetensorsError, match="truncated or corrupt at tensor w"):
        read_header(str(tmp_path / "bad.safetensors"))
