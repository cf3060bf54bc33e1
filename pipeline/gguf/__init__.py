"""GGUF export: one pass over the base model, LoRA merged and quantized tensor by tensor."""
