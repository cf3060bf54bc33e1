"""convert._StreamWriter sets gguf-py's GGUFWriter internals (``fout``, ``state``) so that the
header, metadata and tensor infos go to a stream of ours (an S3 multipart upload). This pins what
it relies on: with the same content, its bytes are exactly what gguf-py writes to a file itself."""

from __future__ import annotations

import io

import gguf
import numpy as np

from pipeline.gguf.convert import _StreamWriter

ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]


def fill(writer: gguf.GGUFWriter) -> None:
    writer.add_name("mistral-researcher")
    writer.add_context_length(4096)
    writer.add_tensor_info("blk.0.attn_q.weight", (8, 16), np.dtype(np.float32), 8 * 16 * 4, raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()


def test_the_stream_writer_writes_what_gguf_py_writes_to_a_file(tmp_path):
    stream = io.BytesIO()
    fill(_StreamWriter(stream, ARCH))
    reference = gguf.GGUFWriter(str(tmp_path / "reference.gguf"), ARCH)
    fill(reference)
    reference.close()
    ours = stream.getvalue()
    assert ours and (tmp_path / "reference.gguf").read_bytes().startswith(ours)
    assert hasattr(gguf.gguf_writer, "WriterState") and gguf.gguf_writer.WriterState.EMPTY is not None
