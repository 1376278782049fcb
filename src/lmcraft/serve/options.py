"""The options of ``lmcraft serve``: where it listens, how it batches, and the limits of a request."""

from __future__ import annotations

from dataclasses import dataclass

from lmcraft.config import opt


@dataclass
class ServeConfig:
    models: list[str] = opt([], "model directories to serve; each is addressed by its directory name, or give "
                                "NAME=DIR")
    host: str = opt("127.0.0.1", "address to listen on (127.0.0.1: this machine only)")
    port: int = opt(8000, "port to listen on")
    max_batch_size: int = opt(64, "inputs run together at most in one batch (dynamic batching)")
    max_batch_tokens: int = opt(8192, "tokens (inputs × longest input) in one batch at most")
    max_wait_ms: float = opt(0.0, "how long the first request of a batch waits for others to join it (0: not at "
                                  "all; the requests that arrive while a batch runs form the next one)")
    max_queue: int = opt(1024, "inputs waiting at most; more are answered 429 with Retry-After")
    max_body_bytes: int = opt(1_000_000, "largest request body; larger ones are answered 413")
    max_input_tokens: int = opt(0, "longest input in tokens; longer ones are answered 422 (0: the model's own "
                                   "input length)")
    truncate: bool = opt(False, "cut inputs longer than --max-input-tokens instead of refusing them")
    max_new_tokens: int = opt(256, "the most tokens a completion may ask for")
    timeout: float = opt(60.0, "seconds a request may take; then it is answered 504")
    int8: bool = opt(False, "int8 dynamic quantization of the linear layers (CPU)")
    bf16: str = opt("off", "encoders in bf16: auto (where the CPU or GPU computes bf16 natively: AMX, AVX512-BF16, "
                           "Arm BF16), on or off. Several times faster there; probabilities move by about 1e-2, "
                           "so off by default keeps answers equal to `lmcraft predict`. Decoders stay fp32")
    compiled: bool = opt(False, "use the packages of `lmcraft compile` for classifiers even when this user did not "
                                "build them here (native code: trust the directory first)")
    threads: int = opt(0, "torch threads for inference (0: torch's default)")

    def __post_init__(self) -> None:
        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError(f"--bf16 must be auto, on or off, not {self.bf16!r}")
