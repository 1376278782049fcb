"""Request bodies (pydantic models: FastAPI checks them and names a wrong field) and the error shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "code"}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, kind: str, code: str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.headers = status, message, kind, code, headers


def error_body(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(Strict):
    model: str | None = Field(None, description="which served model (default: the first that predicts)")
    inputs: list[str | dict[str, Any]] = Field(..., min_length=1, description="texts, or objects in the task's "
                                                                               "file format (QA, relations)")


class EmbeddingRequest(BaseModel):
    model: str | None = None
    input: str | list[str] = Field(..., min_length=1)
    encoding_format: Literal["float"] = "float"
    user: str | None = None


class Sampling(BaseModel):
    """The decoding settings both OpenAI routes take (others, such as ``user``, are accepted and ignored)."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0: greedy, as `lmcraft generate` by default
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    n: Literal[1] = 1
    seed: int | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str] = Field(..., min_length=1)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(..., min_length=1)
