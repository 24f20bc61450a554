"""The inference engine behind one small interface (in-process vLLM, or a remote vLLM server)."""
