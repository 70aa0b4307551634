"""Tokenizers: ``word``, ``char``, ``bpe`` (Hugging Face ``tokenizers``) and ``ids`` (synthetic oracle data).

All kinds share the :class:`Tokenizer` interface. The text kinds (word, char, bpe) reserve the special
tokens ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2 and ``<unk>`` = 3. The ``ids`` kind has no special
tokens except ``bos_id = 0``, the SeqGAN oracle's start token, which is an ordinary vocabulary entry.

A tokenizer is saved as one JSON file (written atomically) and read back with :func:`load_tokenizer`,
which dispatches on the saved ``kind``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from llmgan.errors import ConfigError, DataError
from llmgan.fileio import atomic_write_text  # noqa: F401 - re-exported

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

FORMAT_NAME = "llmgan-tokenizer"
FORMAT_VERSION = 1
KINDS: tuple[str, ...] = ("word", "char", "bpe", "ids")
DEFAULT_BPE_VOCAB = 8000


class Tokenizer:
    """Common interface of every tokenizer kind.

    Attributes:
        kind: one of ``"word"``, ``"char"``, ``"bpe"``, ``"ids"``.
        vocab_size: number of token ids; every id produced by :meth:`encode` is in ``[0, vocab_size)``.
        pad_id, bos_id, eos_id, unk_id: special token ids, or ``None`` where the kind has no such token.
    """

    kind: ClassVar[str] = ""
    vocab_size: int
    pad_id: int | None = PAD_ID
    bos_id: int | None = BOS_ID
    eos_id: int | None = EOS_ID
    unk_id: int | None = UNK_ID

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (length L, no BOS/EOS added)."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of a sequence of ids; with ``skip_special`` the pad/bos/eos ids are left out."""
        raise NotImplementedError

    @property
    def special_ids(self) -> set[int]:
        """Ids of pad/bos/eos (the ones ``decode(skip_special=True)`` leaves out)."""
        return {i for i in (self.pad_id, self.bos_id, self.eos_id) if i is not None}

    def kept_ids(self, ids: Sequence[int], skip_special: bool = True) -> list[int]:
        """``ids`` as ints, without the special ids when ``skip_special`` (what ``decode`` renders)."""
        ids = [int(i) for i in ids]
        if not skip_special:
            return ids
        special = self.special_ids
        return [i for i in ids if i not in special]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (what :meth:`save` writes, without the format header)."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Tokenizer:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer as one JSON file (atomically: temp file + ``os.replace``)."""
        doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": self.kind, **self.to_dict()}
        atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.kind == other.kind and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size})"


class _VocabTokenizer(Tokenizer):
    """Shared code of the ``word`` and ``char`` kinds: an explicit id -> token list."""

    joiner: ClassVar[str] = ""

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ConfigError(f"{self.kind} tokenizer vocabulary must start with {list(SPECIAL_TOKENS)}")
        if len(set(vocab)) != len(vocab):
            raise ConfigError(f"{self.kind} tokenizer vocabulary has duplicate entries")
        self.vocab = vocab
        self.token_to_id = {t: i for i, t in enumerate(vocab)}
        # Literal special strings in the text are not specials: only "<unk>" keeps its meaning.
        for t in (PAD, BOS, EOS):
            del self.token_to_id[t]
        self.vocab_size = len(vocab)

    def encode(self, text: str) -> list[int]:
        get = self.token_to_id.get
        return [get(t, UNK_ID) for t in self._split_static(text)]

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Join the tokens (``word``: single spaces; ``char``: nothing). Unknown ids decode as ``<unk>``."""
        special = self.special_ids if skip_special else set()
        out = []
        for i in ids:
            i = int(i)
            if i in special:
                continue
            out.append(self.vocab[i] if 0 <= i < self.vocab_size else UNK)
        return self.joiner.join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Tokenizer:
        return cls(state["vocab"])

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None, min_freq: int = 1) -> _VocabTokenizer:
        """Vocabulary = specials + tokens with count >= min_freq, by count desc then token, capped."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(cls._split_static(text))
        for t in SPECIAL_TOKENS:
            counts.pop(t, None)
        if not counts:
            raise DataError(f"no tokens to build a {cls.kind} vocabulary from (expected non-empty texts)")
        tokens = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if vocab_size is not None:
            tokens = tokens[: vocab_size - len(SPECIAL_TOKENS)]
        return cls(list(SPECIAL_TOKENS) + tokens)

    @staticmethod
    def _split_static(text: str) -> list[str]:
        raise NotImplementedError


class WordTokenizer(_VocabTokenizer):
    """Whitespace-split words; decode joins with one space."""

    kind = "word"
    joiner = " "

    @staticmethod
    def _split_static(text: str) -> list[str]:
        return text.split()


class CharTokenizer(_VocabTokenizer):
    """One token per Unicode code point, whitespace included, so ``decode(encode(s)) == s`` in vocabulary."""

    kind = "char"
    joiner = ""

    @staticmethod
    def _split_static(text: str) -> list[str]:
        return list(text)


class BPETokenizer(Tokenizer):
    """Byte-level BPE trained with Hugging Face ``tokenizers``.

    ByteLevel pre-tokenizer and decoder (no prefix space), so any text round-trips exactly, Chinese
    included, and ``<unk>`` never occurs in practice. The HF tokenizer JSON is stored inside our JSON.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer
        for tok, i in zip(SPECIAL_TOKENS, (PAD_ID, BOS_ID, EOS_ID, UNK_ID)):
            if hf_tokenizer.token_to_id(tok) != i:
                raise ConfigError(f"bpe tokenizer: special token {tok} must have id {i}")
        self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        # Our skipping is explicit; HF's skip flag would also drop <unk>.
        return self.hf.decode(self.kept_ids(ids, skip_special), skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "hf_tokenizer": json.loads(self.hf.to_str())}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(json.dumps(state["hf_tokenizer"])))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None, min_freq: int = 1) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        texts = [t for t in texts if t]
        if not texts:
            raise DataError("no texts to train a bpe tokenizer on (expected non-empty texts)")
        hf = HFTokenizer(models.BPE(unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size or DEFAULT_BPE_VOCAB,
            min_frequency=min_freq,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)


class IdsTokenizer(Tokenizer):
    """Lines of space-separated integer ids (SeqGAN synthetic oracle data).

    No pad/eos/unk; ``bos_id = 0`` is the oracle's start token, an ordinary vocabulary entry.
    """

    kind = "ids"
    pad_id = None
    bos_id = 0
    eos_id = None
    unk_id = None

    def __init__(self, vocab_size: int):
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
            raise ConfigError(f"ids tokenizer: vocab_size must be a positive integer, got {vocab_size!r}")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        """Parse the ids; DataError for a non-integer or an id outside ``[0, vocab_size)``."""
        out = []
        for tok in text.split():
            try:
                i = int(tok)
            except ValueError:
                raise DataError(
                    f"token {tok!r} is not an integer "
                    f"(expected space-separated ids in [0, {self.vocab_size}))"
                ) from None
            if not 0 <= i < self.vocab_size:
                raise DataError(f"token id {i} is out of range (expected ids in [0, {self.vocab_size}))")
            out.append(i)
        return out

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Ids written space-separated (there are no special ids to skip)."""
        return " ".join(str(int(i)) for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Tokenizer:
        return cls(int(state["vocab_size"]))


_CLASSES: dict[str, type[Tokenizer]] = {
    "word": WordTokenizer,
    "char": CharTokenizer,
    "bpe": BPETokenizer,
    "ids": IdsTokenizer,
}


def build_tokenizer(
    kind: str, texts: Iterable[str], vocab_size: int | None = None, min_freq: int = 1
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``texts``.

    ``vocab_size`` caps the vocabulary (specials included) for word/char/bpe (``None``: no cap for
    word/char, 8000 for bpe) and is required for ``ids``. ``min_freq`` drops rarer tokens (word/char/bpe).
    """
    if kind not in _CLASSES:
        raise ConfigError(f"unknown tokenizer kind {kind!r} (expected one of {', '.join(KINDS)})")
    if min_freq < 1:
        raise ConfigError(f"min_freq must be >= 1, got {min_freq}")
    if kind == "ids":
        if vocab_size is None:
            raise ConfigError("tokenizer kind 'ids' needs an explicit vocab_size")
        return IdsTokenizer(vocab_size)
    if vocab_size is not None and vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(
            f"vocab_size {vocab_size} is too small "
            f"(expected more than {len(SPECIAL_TOKENS)}, the special tokens)"
        )
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size, min_freq)
    return _CLASSES[kind].train(texts, vocab_size, min_freq)  # type: ignore[attr-defined]


def token_ids(tokenizer: Tokenizer) -> dict:
    """vocab_size/bos/eos/pad for a generator from a tokenizer (the oracle's 'ids' has BOS=0 only)."""
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else 0
    return {"vocab_size": tokenizer.vocab_size, "bos_id": bos, "eos_id": tokenizer.eos_id, "pad_id": tokenizer.pad_id}
