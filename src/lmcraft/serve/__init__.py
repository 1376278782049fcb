"""``lmcraft serve``: an HTTP server for every model directory — task predictions, OpenAI-compatible chat
and completions, embeddings, health and Prometheus metrics, a playground page — with dynamic batching."""
