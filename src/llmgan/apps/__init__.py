"""Conditional generation on top of the engine: supervised fine-tuning data (``sft``) and offline
applications whose datasets the project writes itself (``translation``, ``code``, ``text``).

``llmgan data make translation|code|summarization|dialogue --out DIR`` writes train/valid/test JSONL of
``{"prompt", "response"}`` records; ``llmgan apps eval RUN --app ...`` scores a trained run with the
application's metric (BLEU / exact match, sandboxed pass rate, ROUGE-L). See docs/llm.md.
"""

APPS: tuple[str, ...] = ("translation", "code", "summarization", "dialogue")
