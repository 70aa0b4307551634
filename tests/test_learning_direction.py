"""Learning direction of every policy-gradient algorithm: against a FIXED discriminator that prefers one
token, a few generator steps make that token more frequent in fresh samples.

The other tests check each algorithm's arithmetic on hand-made numbers and that it runs end to end; none
of them notices a reward with the wrong sign (the generator then learns to avoid what D likes, and every
loss stays finite). Here the discriminator is a fixed function -- its logit rises with the number of
``TARGET`` tokens in a sequence -- so the only way the target's frequency can rise is that the generator
follows the reward. RankGAN ranks against real references and SPIN plays against real data, so the real
data is rich in the target token. The generator starts untrained (``train.epochs: 0``): about 1 / V of
its tokens are the target.

Each test compares the target's frequency in fresh samples before and after the steps with a margin many
standard errors wide, so sampling noise cannot fake a rise. Flipping the sign of an algorithm's reward or
advantage in its source makes its test fail (the frequency falls instead). The same holds under the
``wgan`` convention, where the critic scores fakeness (``losses.realness``).

Last, GAD and SPIN update the policy that sampled: with a dropout generator, GAD's first-epoch ratio is
exactly 1 and SPIN's margin against an identical opponent exactly 0.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import Tensor, nn

from llmgan.config import config_from_dict
from llmgan.training.engine import Trainer

V, T, TARGET = 20, 8, 7
N_MEASURE = 1000  # sequences per frequency measurement (8,000 tokens)


class TargetTokenCritic(nn.Module):
    """A fixed "discriminator": logit = scale * (number of TARGET tokens) - offset (per prefix with
    ``per_step``); features (for RankGAN's ranker and LeakGAN's leak) = (count of TARGET, count of the
    rest) + 0.1, so a sequence's cosine with target-rich real text rises with its share of TARGET.

    It has no trainable parameters, so nothing an algorithm does can change it."""

    feature_dim = 2

    def __init__(self, scale: float = 1.0, offset: float = 1.0):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, tokens: Tensor, prompt: Tensor | None = None, per_step: bool = False) -> Tensor:
        hit = (tokens == TARGET).float()
        count = hit.cumsum(1) if per_step else hit.sum(1)
        return self.scale * count - self.offset

    def features(self, tokens: Tensor) -> Tensor:
        hit = (tokens == TARGET).float()
        return torch.stack([hit.sum(1), (1.0 - hit).sum(1)], 1) + 0.1


def _write_data(path, share: float, n: int = 256, seed: int = 0) -> None:
    """Lines of T ids; each is TARGET with probability ``share``, else uniform over the other ids."""
    rnd = random.Random(seed)
    others = [i for i in range(V) if i != TARGET]
    with open(path, "w") as f:
        for _ in range(n):
            f.write(" ".join(str(TARGET if rnd.random() < share else rnd.choice(others)) for _ in range(T)) + "\n")


# the algorithms' own knobs, shrunk so a step takes milliseconds (rollouts) and the signal is not tiny
CASES: dict[str, dict] = {
    "seqgan": {"params": {"rollouts": 4}},
    "maligan": {"params": {}},
    "rankgan": {"params": {"rollouts": 4, "ref_size": 8}},
    # LeakGAN's worker sees the reward through extrinsic_weight. The paper's worker (intrinsic reward only)
    # follows the manager's goals, which point along the Q-weighted MEAN feature change (Q > 0 after the rank
    # rescale, no baseline): here that is the direction of the common, non-target tokens, and the target's
    # share falls -- where goals point depends on D's feature geometry, not on the reward's sign alone.
    "leakgan": {"params": {"rollouts": 2, "reward_every": 2, "mle_every": 0, "pretrain_mle_every": 0,
                           "extrinsic_weight": 1.0, "intrinsic_weight": 0.0},
                "generator": {"name": "leakgan", "kwargs": {"embed_dim": 16, "hidden_dim": 16, "goal_size": 8,
                                                            "step_size": 2, "feature_dim": 2}}},
    "scratchgan": {"params": {}},
    "gad": {"params": {"group_size": 4, "ppo_epochs": 2, "kl_coef": 0.0}},
    "spin": {"params": {"beta": 0.1}},
}


LSTM = {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 16}}


def build(tmp_path, algo: str, lr: float = 0.03, generator: dict | None = None, params: dict | None = None,
          loss: str = "vanilla", fixed_critic: bool = True) -> Trainer:
    """A Trainer set up (data, models, algorithm, GANContext; no training) with the fixed critic as D.

    ``loss``: the run's adversarial.loss; with ``wgan`` (the critic scores FAKENESS) the critic is negated.
    ``fixed_critic=False`` keeps the run's (untrained) CNN."""
    case = CASES[algo]
    data = tmp_path / "train.txt"
    _write_data(data, share=0.8)  # real text rich in TARGET (what RankGAN and SPIN learn towards)
    cfg = config_from_dict({
        "name": f"direction_{algo}", "device": "cpu", "seed": 0,
        "data": {"train": str(data), "tokenizer": "ids", "vocab_size": V, "max_len": T, "split": [0.9, 0.05, 0.05]},
        "generator": generator or case.get("generator", LSTM),
        # a placeholder the fixed critic replaces (2 filters: LeakGAN checks its feature size at setup)
        "discriminator": {"name": "cnn", "kwargs": {"emb_dim": 8, "filter_sizes": [2], "num_filters": [2]}},
        "train": {"epochs": 0, "batch_size": 32, "progress": False},
        "adversarial": {"algorithm": algo, "g_batch_size": 64, "g_lr": lr, "loss": loss,
                        "params": {**case["params"], **(params or {})}},
    })
    tr = Trainer(cfg, str(tmp_path / "run"))
    tr.setup()
    ctx, algorithm = tr.adversarial.ctx, tr.adversarial.algorithm
    if algorithm.uses_discriminator and fixed_critic:
        critic = TargetTokenCritic(-1.0, -1.0) if loss in ("wgan", "wgan_gp") else TargetTokenCritic()
        tr.adversarial.discriminator = ctx.discriminator = critic
    algorithm.start(ctx)  # as the engine does before the first round (LeakGAN attaches D's features here)
    return tr


@torch.no_grad()
def target_share(generator, seed: int) -> tuple[float, float]:
    """(mean share of TARGET among sampled tokens, its standard error over N_MEASURE fresh sequences)."""
    was = generator.training
    generator.eval()
    s = generator.sample(N_MEASURE, T, generator=torch.Generator().manual_seed(seed))
    generator.train(was)
    per_seq = (s.tokens == TARGET).float().mean(1)
    return float(per_seq.mean()), float(per_seq.std() / math.sqrt(N_MEASURE))


STEPS = 10


@pytest.mark.parametrize("algo", list(CASES))
def test_target_token_frequency_rises_under_a_fixed_critic(algo, tmp_path):
    tr = build(tmp_path, algo)
    ctx, algorithm, G = tr.adversarial.ctx, tr.adversarial.algorithm, tr.generator
    before, se_before = target_share(G, seed=1)
    assert before < 0.15  # untrained: about 1 / V
    for _ in range(STEPS):
        algorithm.g_step(ctx)
    after, se_after = target_share(G, seed=2)
    se = math.sqrt(se_before**2 + se_after**2)
    # a rise of 6 standard errors (and at least 3 points) cannot come from sampling noise
    assert after - before > max(6 * se, 0.03), f"{algo}: TARGET share {before:.3f} -> {after:.3f} (se {se:.4f})"


# the algorithms that read D's output as a reward: under the wgan convention (the critic scores fakeness) they
# must still move towards what D considers real (RankGAN reads features, SPIN has no D)
WGAN_CASES = {"seqgan": {}, "maligan": {}, "leakgan": {}, "scratchgan": {}, "gad": {"d_loss": "wgan"},
              "maligan_rollouts": {"rollouts": 2}, "gad_bradley_terry": {"d_loss": "wgan", "reward": "bradley_terry"}}


@pytest.mark.parametrize("case", list(WGAN_CASES))
def test_direction_under_the_wgan_convention(case, tmp_path):
    algo = case.split("_")[0]
    tr = build(tmp_path, algo, params=WGAN_CASES[case], loss="wgan")
    G = tr.generator
    before, se_before = target_share(G, seed=1)
    for _ in range(STEPS):
        tr.adversarial.algorithm.g_step(tr.adversarial.ctx)
    after, se_after = target_share(G, seed=2)
    se = math.sqrt(se_before**2 + se_after**2)
    assert after - before > max(6 * se, 0.03), f"{case}: TARGET share {before:.3f} -> {after:.3f} (se {se:.4f})"


@pytest.mark.parametrize("loss", ["vanilla", "wgan"])
def test_seqgan_cnn_shortcut_reads_realness_like_the_plain_reward(loss, tmp_path):
    # SeqGAN scores rollouts through the CNN's shared-window shortcut, not reward_fn: same convention there
    from llmgan.losses import realness
    from llmgan.rewards import rollout_completions

    tr = build(tmp_path, "seqgan", loss=loss, fixed_critic=False)
    ctx, algo, G, D = tr.adversarial.ctx, tr.adversarial.algorithm, tr.generator, tr.adversarial.discriminator
    tokens = G.sample(4, T, generator=torch.Generator().manual_seed(0)).tokens
    comps = rollout_completions(G, tokens, 2, torch.Generator().manual_seed(1))  # (T-1, 4, 2, T)
    fast = algo.completion_scores(ctx)(tokens, comps)
    with torch.no_grad():
        expected = realness(D.eval()(comps.reshape(-1, T)).float(), loss).view(T - 1, 4, 2)
        plain = algo.reward_fn(ctx)(comps.reshape(-1, T)).view(T - 1, 4, 2)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)


def test_gad_d_statistics_read_realness_under_wgan(tmp_path, monkeypatch):
    # the fakeness critic separates target-rich real text from the untrained G's samples: its logged
    # accuracies must say so (read as "logit > 0 = real" they would be near 0)
    tr = build(tmp_path, "gad", params={"d_loss": "wgan"}, loss="wgan")
    ctx = tr.adversarial.ctx
    monkeypatch.setattr(ctx, "update_discriminator", lambda loss, clip=None: float(loss))  # the critic is fixed
    stats = tr.adversarial.algorithm.d_step(ctx)
    assert stats["d_acc_real"] > 0.85 and stats["d_acc_fake"] > 0.85 and stats["d_pair_acc"] > 0.85, stats


# ------------------------------------------------------------------------ dropout: update the policy that sampled
DROPOUT_GPT = {"name": "gpt", "kwargs": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 16, "dropout": 0.3}}


def test_gad_first_epoch_ratio_is_exactly_one_with_a_dropout_generator(tmp_path):
    # samples are drawn without dropout; old, reference and current log-probs must be too, or the ratio of an
    # unchanged policy is dropout noise and clipping fires (here it would on most tokens: dropout 0.3, eps 0.05)
    tr = build(tmp_path, "gad", generator=DROPOUT_GPT, params={"ppo_epochs": 1, "clip_eps": 0.05, "kl_coef": 0.1})
    G = tr.generator
    G.train()
    stats = tr.adversarial.algorithm.g_step(tr.adversarial.ctx)
    assert stats["ratio_mean"] == 1.0 and stats["clip_frac"] == 0.0
    assert stats["kl"] == 0.0  # the reference equals G before the step: k3 is exactly 0 too
    assert G.training  # the engine's mode is restored


def test_spin_margin_is_exactly_zero_against_itself_with_a_dropout_generator(tmp_path):
    tr = build(tmp_path, "spin", generator=DROPOUT_GPT)
    G = tr.generator
    G.train()
    stats = tr.adversarial.algorithm.g_step(tr.adversarial.ctx)  # G == opponent: every log-ratio is 0, the loss log 2
    assert stats["margin"] == 0.0 and stats["reward_real"] == 0.0 and stats["reward_gen"] == 0.0
    assert stats["g_loss"] == pytest.approx(math.log(2.0), abs=1e-6)
    assert G.training
