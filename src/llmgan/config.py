"""Run configuration: typed dataclasses, loaded from YAML, overridden by ``--set key=value``,
validated once, and saved in the run directory with every default written out.

Every field is documented where it is declared; ``docs/configuration.md`` lists them all.
Stable override keys used by scripts and benchmarks: ``data.train``, ``data.valid``,
``data.test``, ``train.epochs``, ``train.max_steps``, ``seed``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from llmgan.errors import ConfigError


@dataclass
class DataConfig:
    train: str | None = None  # training file (.txt one sample per line, or .jsonl); None with `oracle` set: sampled
    valid: str | None = None  # validation file; None: split off the training file by `split` (oracle runs: sampled)
    test: str | None = None  # test file; None: split off the training file by `split` (oracle runs: sampled)
    field: str = "text"  # JSONL field holding the text
    split: list[float] = dc_field(default_factory=lambda: [0.9, 0.05, 0.05])  # train/valid/test fractions
    tokenizer: str = "word"  # word | char | bpe | ids (integer ids, the oracle's format) | hf (the hf: model's own)
    vocab_size: int | None = None  # cap on the vocabulary (incl. specials); ids: the vocabulary size
    min_freq: int = 1  # word/char tokens rarer than this become <unk>
    max_len: int = 64  # maximum tokens per sample (incl. EOS)
    overflow: str = "truncate"  # truncate | drop | error: what to do with longer samples
    normalize: bool = False  # Unicode NFKC + whitespace normalisation before tokenising
    dedup: bool = False  # drop exact duplicate training samples (after normalisation)
    oracle: str | None = None  # "seqgan" (the exact SeqGAN oracle), or a path to a random oracle's .safetensors
    oracle_samples: int = 10000  # with `oracle` and no `train`: training samples drawn from the oracle
    oracle_test_samples: int = 10000  # ... and held-out samples drawn for the test set
    oracle_valid_samples: int | None = None  # validation drawn apart from test (own seed); None: oracle_test_samples
    seq_len: int = 20  # with `oracle`: sequence length
    # Conditional runs (docs/llm.md). prompt_field set: JSONL {prompt_field, response_field} pairs, MLE = SFT
    # on the responses only; label_field set: class-conditional {field, label_field}, the label is the prompt.
    prompt_field: str | None = None  # JSONL field holding the prompt (None: unconditional unless label_field)
    response_field: str = "response"  # JSONL field holding the response (with prompt_field)
    label_field: str | None = None  # class-conditional: JSONL field of the class label (prompt "<label=x>")
    max_prompt_len: int = 64  # maximum prompt tokens (longer prompts keep their last tokens)
    chat_template: bool = True  # hf tokenizers: wrap prompts in the model's chat template when it has one


@dataclass
class ModelConfig:
    name: str = "lstm"  # registry name: generators lstm | gpt | rmc | leakgan | hf:<path>; discriminators cnn | ...
    kwargs: dict[str, Any] = dc_field(default_factory=dict)  # passed to the model's config dataclass


@dataclass
class TrainConfig:
    epochs: int = 120  # MLE epochs over the training set (SeqGAN: 120)
    max_steps: int | None = None  # stop MLE after this many optimizer steps (None: run all epochs)
    batch_size: int = 64  # sequences per batch (SeqGAN: 64)
    lr: float = 0.01  # generator learning rate for MLE (SeqGAN: Adam 0.01)
    optimizer: str = "adam"  # adam | adamw | sgd
    weight_decay: float = 0.0  # AdamW weight decay
    betas: list[float] = dc_field(default_factory=lambda: [0.9, 0.999])  # Adam betas
    grad_clip: float | None = 5.0  # clip the global gradient norm (SeqGAN: 5.0); None: off
    lr_schedule: str = "constant"  # constant | cosine | linear (decay to 0 over the run, after warmup)
    warmup_steps: int = 0  # linear warmup steps
    eval_every: int = 1  # evaluate (valid NLL, oracle NLL) every this many epochs
    early_stopping: int | None = None  # stop after this many evaluations without validation improvement
    log_every: int = 50  # log training loss every this many steps
    checkpoint_every: int = 1  # write a checkpoint every this many epochs (and at the end)
    keep_checkpoints: int = 2  # how many checkpoints to keep on disk
    precision: str = "fp32"  # fp32 | bf16 autocast (fp32 + a warning if the device lacks bf16) | fp16 (CUDA, scaled)
    progress: bool = True  # a progress bar with live loss and tokens/second
    init_from: str | None = None  # a run directory whose latest generator (and tokenizer) start this run
    fsdp: bool = False  # torchrun, hf: generator, MLE/SFT: shard G's weights, grads, Adam state (FSDP2) over ranks


@dataclass
class EvalConfig:
    n_samples: int = 10000  # samples drawn to evaluate the generator (oracle NLL uses 10,000 by convention)
    batch_size: int = 1000  # sampling/scoring batch size
    max_len: int | None = None  # sample length (None: data.max_len, or data.seq_len for oracle runs)
    temperature: float = 1.0  # sampling temperature for evaluation
    # BLEU's definition: docs/configuration.md, section "BLEU"
    bleu_references: str = "raw"  # raw (held-out texts as written, = `llmgan metrics`) | vocab (OOV -> <unk>)
    bleu_tokenizer: str = "auto"  # auto (char runs: char, ids: whitespace, else nltk) | nltk | whitespace | char
    ban_tokens: list[str] = dc_field(default_factory=list)  # tokens never sampled for evaluation, e.g. ["<unk>"]


@dataclass
class AdversarialConfig:
    algorithm: str | None = None  # None: MLE only; seqgan | maligan | rankgan | leakgan | relgan | gsgan | ...
    rounds: int = 0  # adversarial rounds (each: g_steps generator updates, then discriminator updates)
    g_steps: int = 1  # generator updates per round
    d_steps: int = 5  # discriminator refreshes per round (fresh samples each; SeqGAN: 5)
    d_epochs: int = 3  # epochs over each refresh's real+fake data (SeqGAN: 3)
    d_pretrain_steps: int = 50  # discriminator pre-training refreshes (SeqGAN: 50 x 3 epochs)
    d_samples: int = 10000  # generated (and real) sequences per discriminator refresh (SeqGAN: 10,000)
    d_batch_size: int = 64  # discriminator batch size
    g_batch_size: int = 64  # generator batch size in adversarial updates
    g_lr: float = 0.01  # generator learning rate during adversarial training
    d_lr: float = 1e-4  # discriminator learning rate (SeqGAN: Adam 1e-4)
    loss: str = "vanilla"  # GAN loss: vanilla | nonsaturating | wgan | wgan_gp | hinge | lsgan | rsgan | ragan
    eval_every: int = 5  # evaluate every this many rounds
    checkpoint_every: int = 5  # checkpoint every this many rounds (and D pre-training refreshes)
    mle_steps_per_round: int = 0  # teacher-forcing MLE updates interleaved each round (0: none)
    params: dict[str, Any] = dc_field(default_factory=dict)  # the algorithm's own config (see algorithms/<name>.py)


@dataclass
class RunConfig:
    name: str = "run"  # run name (the default output directory is runs/<name>)
    seed: int = 0  # fixes data splits, initialisation, sampling and data order
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads (None: torch's default)
    data: DataConfig = dc_field(default_factory=DataConfig)
    generator: ModelConfig = dc_field(default_factory=ModelConfig)
    discriminator: ModelConfig = dc_field(default_factory=lambda: ModelConfig(name="cnn"))
    train: TrainConfig = dc_field(default_factory=TrainConfig)
    adversarial: AdversarialConfig = dc_field(default_factory=AdversarialConfig)
    eval: EvalConfig = dc_field(default_factory=EvalConfig)


# ------------------------------------------------------------------------------------------------
def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/override value to the declared field type, or raise ConfigError."""
    origin = get_origin(tp)
    args = get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is type(None) or tp is type(None):
        return None
    if args and type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        import difflib

        prefix = f"{where}." if where else ""
        close = difflib.get_close_matches(str(unknown[0]), sorted(names), n=1)
        hint = f"did you mean {prefix}{close[0]}? " if close else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!r} ({hint}valid: {', '.join(sorted(names))})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        tp, f = hints[k], fields[k]
        if dataclasses.is_dataclass(tp) and isinstance(v, dict) and f.default_factory is not dataclasses.MISSING:
            # a partial section overlays the field's own default (discriminator: {kwargs: ...} keeps
            # the discriminator's default name "cnn" instead of the section class's "lstm")
            v = {**{d.name: getattr(f.default_factory(), d.name) for d in dataclasses.fields(tp)}, **v}
        kwargs[k] = _coerce(v, tp, f"{where}.{k}" if where else k)
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings to a raw config mapping (values parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = _parse_scalar(value)
    return raw


def config_from_dict(raw: dict) -> RunConfig:
    cfg = _from_dict(RunConfig, raw or {})
    validate(cfg)
    return cfg


def load_config(path: str | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file (or start from defaults when path is None), apply overrides, validate."""
    raw: dict = {}
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: config file not found")
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}:{line} is not valid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw)


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: RunConfig, path: str) -> None:
    from llmgan.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: RunConfig) -> None:
    """Reject impossible configurations with a one-line message naming the field."""
    d, t, a = cfg.data, cfg.train, cfg.adversarial
    _require(
        d.tokenizer in ("word", "char", "bpe", "ids", "hf"),
        f"data.tokenizer: expected word|char|bpe|ids|hf, got {d.tokenizer!r}",
    )
    hf_gen = cfg.generator.name.startswith("hf:")
    _require(
        hf_gen == (d.tokenizer == "hf"),
        "data.tokenizer: an hf:<model> generator needs data.tokenizer: hf (the model's own tokenizer)"
        if hf_gen
        else "data.tokenizer: hf means the hf:<model> generator's tokenizer; the generator is not an hf: model",
    )
    _require(
        d.prompt_field is None or d.label_field is None,
        "data.prompt_field / data.label_field: set one of them (prompt/response SFT or class-conditional)",
    )
    _require(d.max_prompt_len >= 1, f"data.max_prompt_len: expected >= 1, got {d.max_prompt_len}")
    _require(
        d.overflow in ("truncate", "drop", "error"), f"data.overflow: expected truncate|drop|error, got {d.overflow!r}"
    )
    _require(d.max_len >= 1, f"data.max_len: expected >= 1, got {d.max_len}")
    _require(d.seq_len >= 1, f"data.seq_len: expected >= 1, got {d.seq_len}")
    _require(
        d.oracle_valid_samples is None or d.oracle_valid_samples >= 1,
        f"data.oracle_valid_samples: expected >= 1 or null, got {d.oracle_valid_samples}",
    )
    _require(d.min_freq >= 1, f"data.min_freq: expected >= 1, got {d.min_freq}")
    _require(
        len(d.split) == 3 and all(x >= 0 for x in d.split) and sum(d.split) > 0,
        f"data.split: expected three non-negative fractions, got {d.split}",
    )
    _require(  # a sum off 1 was silently renormalised: [0.5, 0.6, 0.1] trained on 42%, not 50%
        abs(sum(d.split) - 1.0) <= 1e-6,
        f"data.split: the train/valid/test fractions must sum to 1, got {d.split} (sum {sum(d.split):g})",
    )
    _require(
        d.train is not None or d.oracle is not None, "data.train: a training file is required (or set data.oracle)"
    )
    _require(t.epochs >= 0, f"train.epochs: expected >= 0, got {t.epochs}")
    _require(t.max_steps is None or t.max_steps >= 0, f"train.max_steps: expected >= 0, got {t.max_steps}")
    _require(t.batch_size >= 1, f"train.batch_size: expected >= 1, got {t.batch_size}")
    _require(t.lr > 0, f"train.lr: expected > 0, got {t.lr}")
    _require(t.optimizer in ("adam", "adamw", "sgd"), f"train.optimizer: expected adam|adamw|sgd, got {t.optimizer!r}")
    _require(
        t.lr_schedule in ("constant", "cosine", "linear"),
        f"train.lr_schedule: expected constant|cosine|linear, got {t.lr_schedule!r}",
    )
    if t.fsdp:
        _require(cfg.generator.name.startswith("hf:"),
                 f"train.fsdp: shards Hugging Face generators (generator.name: hf:...), got {cfg.generator.name!r}; "
                 "smaller models train with plain data parallelism (DDP)")
        _require(not cfg.adversarial.algorithm,
                 "train.fsdp: MLE/SFT runs only; adversarial training keeps full copies of G (reference, rollout "
                 "policy) that a sharded generator cannot provide yet -- train with DDP (train.fsdp: false)")
    _require(t.precision in ("fp32", "bf16", "fp16"), f"train.precision: expected fp32|bf16|fp16, got {t.precision!r}")
    _require(t.eval_every >= 1, f"train.eval_every: expected >= 1, got {t.eval_every}")
    _require(t.checkpoint_every >= 1, f"train.checkpoint_every: expected >= 1, got {t.checkpoint_every}")
    _require(t.keep_checkpoints >= 1, f"train.keep_checkpoints: expected >= 1, got {t.keep_checkpoints}")
    _require(cfg.eval.n_samples >= 1, f"eval.n_samples: expected >= 1, got {cfg.eval.n_samples}")
    _require(cfg.eval.bleu_references in ("raw", "vocab"),
             f"eval.bleu_references: expected raw|vocab, got {cfg.eval.bleu_references!r}")
    _require(cfg.eval.bleu_tokenizer in ("auto", "nltk", "whitespace", "char"),
             f"eval.bleu_tokenizer: expected auto|nltk|whitespace|char, got {cfg.eval.bleu_tokenizer!r}")
    _require(
        a.rounds >= 0 and a.g_steps >= 0 and a.d_steps >= 0 and a.d_epochs >= 0,
        "adversarial.rounds/g_steps/d_steps/d_epochs: expected >= 0",
    )
    _require(a.eval_every >= 1, f"adversarial.eval_every: expected >= 1, got {a.eval_every}")
    _require(a.checkpoint_every >= 1, f"adversarial.checkpoint_every: expected >= 1, got {a.checkpoint_every}")
    _require(
        cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"),
        f"device: expected auto|cpu|cuda[:N], got {cfg.device!r}",
    )
