"""Pydantic models of every request and response of ``llmgan serve``.

Requests forbid unknown fields (a typo such as ``nn`` is a 422 naming it, never silently ignored) and
refuse NaN/inf numbers. Per-model caps (``n``, ``max_tokens``, text counts) depend on the model asked
for, so they are checked by the service after parsing (one 422 of the same shape).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=100_000)


class Sampling(Strict):
    """The sampling options shared by every generating endpoint."""

    model: str | None = Field(None, description="a loaded model id (GET /v1/models); optional when one is loaded")
    n: int = Field(1, ge=1, description="samples to draw (capped per model)")
    max_tokens: int | None = Field(None, ge=1, description="tokens per sample (default: the run's max length)")
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="0 is greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed, same samples")
    ban: list[str] | None = Field(None, max_length=1024, description="tokens never to sample, as the run's "
                                  "tokenizer spells them (e.g. \"<unk>\"), as llmgan generate --ban")
    stream: bool = False
    user: str | None = Field(None, max_length=256, description="accepted for OpenAI compatibility; unused")


class Filtered(BaseModel):
    dropped: int = Field(description="samples the model's output filter dropped (never altered)")
    by_reason: dict[str, int] = Field(description="dropped samples per reason: blocklist, regex, classifier:NAME")


class Provenance(BaseModel):
    """Where the samples came from: the fields of ``llmgan generate``'s sidecar, without server paths."""

    format: Literal["llmgan-provenance"] = "llmgan-provenance"
    version: int
    run_id: str
    checkpoint: str
    checkpoint_sha256: str = Field(description="SHA-256 of the checkpoint's generator weights")
    sampling: dict
    seed: int | None
    watermark_key_id: str | None = Field(description="the id of the server's watermark key (never the key)")
    watermark: dict | None
    filter_config_sha256: str | None
    filter: Filtered | None
    time: str
    llmgan_version: str


class StreamOptions(Strict):
    include_usage: bool = False


# ----------------------------------------------------------------------------------------- OpenAI subset
class CompletionRequest(Sampling):
    prompt: str | list[str] | None = Field(
        None, description="conditional runs: the prompt (one string, or a one-element list); unconditional "
                          "runs take no prompt (or an empty string)")
    stream_options: StreamOptions | None = None


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=256)
    stream_options: StreamOptions | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    filtered: Filtered | None = Field(None, description="set when the model has an output filter")
    provenance: Provenance


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    filtered: Filtered | None = None
    provenance: Provenance


# ----------------------------------------------------------------------------------------- our own API
class GenerateRequest(Sampling):
    prompt: str | None = Field(None, description="conditional runs only: the prompt (or class label)")
    top_k: int | None = Field(None, ge=1)
    z: list[list[float]] | None = Field(
        None, description="G(z) runs only: one latent code per sample, n rows of the run's latent size")
    score: bool = Field(True, description="add the run's discriminator score of each sample")
    resample: Literal["sir", "rejection"] | None = Field(
        None, description="correct G by its discriminator read as a density ratio (llmgan generate --resample): "
                          "sampling-importance-resampling or rejection sampling among `candidates` per output")
    candidates: int = Field(8, ge=1, description="resample: candidates per output (capped per model)")
    ratio_from: Literal["d", "ebm"] = Field("d", description="resample: the run's discriminator (d) or its "
                                                             "residual energy-based model (ebm)")


class GeneratedSample(BaseModel):
    text: str
    tokens: int = Field(description="sampled tokens, the end token included")
    finish_reason: Literal["stop", "length"]
    log_prob: float | None = Field(description="sum of the sampled tokens' log-probabilities under the sampling "
                                               "distribution (temperature/top-k/top-p applied); null when resampled")
    log_ratio: float | None = Field(None, description="resample: the calibrated log density ratio of the sample")
    realness: float | None = Field(None, description="the discriminator's realness of the text, in [0, 1]")


class GenerateResponse(BaseModel):
    model: str
    samples: list[GeneratedSample]
    filtered: Filtered | None = Field(None, description="set when the model has an output filter")
    resample: dict | None = Field(None, description="resample: acceptance rate or effective sample size, and the "
                                                    "sampling cost (generator samples, ratio evaluations)")
    provenance: Provenance


class TextsRequest(Strict):
    model: str | None = None
    texts: list[str] = Field(..., min_length=1)
    prompts: list[str] | None = Field(None, description="conditional runs: one prompt per text")


class Score(BaseModel):
    realness: float


class ScoreResponse(BaseModel):
    model: str
    scores: list[Score]


class Detection(BaseModel):
    p_human: float
    label: Literal["human", "generated"]


class DetectResponse(BaseModel):
    model: str
    threshold: float
    results: list[Detection]


class Limits(BaseModel):
    max_n: int
    max_tokens: int
    max_texts: int
    max_candidates: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmgan"
    algorithm: str
    generator: str
    data: str = Field(description="the training data's file name (no directories)")
    conditional: bool
    chat: bool = Field(description="POST /v1/chat/completions works (a conditional run with a chat template)")
    discriminator: bool
    detector: dict | None = Field(None, description="the detector's calibration (threshold, AUROC, ...)")
    latent_dim: int
    limits: Limits
    resample: list[str] = Field(description="ratio sources /v1/generate's resample can use (d, ebm)")
    watermark_key_id: str | None = Field(description="samples carry the server's watermark with this key id")
    filter_config_sha256: str | None = Field(description="samples pass this output filter config")
    metrics: dict[str, float] = Field(description="the last evaluation's numbers in metrics.jsonl")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    models: list[str]


class RunMetrics(BaseModel):
    model: str
    series: dict[str, list[list[float]]] = Field(description="metric -> [[step, value], ...] per phase:metric")
    sweep: list[dict] = Field(description="quality-diversity sweep rows of this run (empty without a sweep)")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
