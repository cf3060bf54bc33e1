"""Scoring profiles with a served model: the backends (Ollama, llama.cpp), prompt rendering and
answer parsing from their one home (pipeline/prompt.py), concurrency and failure accounting."""
