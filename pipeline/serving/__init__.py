"""Serving: the Ollama client, the model lifecycle (deploy / promote / rollback), the Modelfile and
the scorers (Ollama or llama.cpp) that validation runs."""
