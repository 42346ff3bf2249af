"""Model providers behind ``ModelClient``: openai (and OpenAI-compatible), anthropic, scripted,
and a user-supplied callable. Provider SDKs are imported only when a provider is built."""
