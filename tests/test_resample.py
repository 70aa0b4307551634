"""Density-ratio sampling on runs (llmgan.resample, `llmgan generate --resample`) and the residual EBM
(`adversarial.algorithm: residual_ebm`): NCE recovers a known log-ratio, G stays frozen, `--ratio-from
ebm` and `llmgan evaluate`'s importance-sampled NLL work end to end."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

from llmgan.cli import main
from llmgan.errors import ConfigError
from test_detect import _run_with_d


@pytest.fixture(scope="module")
def run_d(tmp_path_factory):
    return _run_with_d(tmp_path_factory.mktemp("resample"), "vanilla")[0]


def _realness_of(run, tokens):
    from llmgan.detect import discriminator_kind, score_tokens
    from llmgan.losses import realness_logits

    return realness_logits(torch.from_numpy(score_tokens(run.discriminator(), tokens)).double(),
                           discriminator_kind(run.cfg))


def _plain(run, n, seed=5):
    from llmgan.training.evaluation import sample_tokens

    return sample_tokens(run.generator, n, run.max_len, rng=torch.Generator().manual_seed(seed))[0]


def test_sir_on_a_run_keeps_the_samples_d_finds_real(run_d):
    from llmgan.resample import CALIBRATION_FILE, resample_run
    from llmgan.run import load_run

    run = load_run(run_d)
    res = resample_run(run, 64, method="sir", candidates=8, n_calibration=64, rng=torch.Generator().manual_seed(3))
    st = res.stats
    assert res.tokens.shape == (64, run.max_len) and st["n_out"] == 64
    assert st["generator_samples"] == 64 * 8 and st["cost_per_output"] == 8.0
    assert 1.0 <= st["ess_min"] <= st["ess_mean"] <= 8.0
    cal = json.loads(open(os.path.join(run_d, CALIBRATION_FILE)).read())
    assert cal["method"] == "platt" and cal["a"] > 0  # a D that ranks the right way keeps its sign
    assert st["calibration"]["a"] == cal["a"]
    # the kept samples are the ones D reads as more real than G's plain samples
    assert float(_realness_of(run, res.tokens).mean()) > float(_realness_of(run, _plain(run, 256)).mean()) + 0.1
    # the stored calibration is reused for the same checkpoint and settings
    again = resample_run(run, 4, candidates=2, n_calibration=64)
    assert again.stats["calibration"] == cal


def test_rejection_on_a_run_reports_its_acceptance_and_stays_in_budget(run_d):
    from llmgan.resample import resample_run
    from llmgan.run import load_run

    run = load_run(run_d)
    res = resample_run(run, 32, method="rejection", candidates=16, n_calibration=64)
    st = res.stats
    assert st["n_out"] <= 32 and st["generator_samples"] <= 32 * 16
    assert 0.0 < st["acceptance_rate"] <= 1.0 and st["bound_log_m"] >= st["bound_log_m_start"]
    assert float(res.log_r.max()) <= st["bound_log_m"] + 1e-9
    if st["n_out"] == 32:  # it stopped as soon as it had enough
        assert st["generator_samples"] < 32 * 16 or st["acceptance_rate"] <= 32 / (32 * 16) + 1e-9
    assert float(_realness_of(run, res.tokens).mean()) > float(_realness_of(run, _plain(run, 256)).mean())


def test_a_wgan_critic_is_read_as_realness_not_fakeness(tmp_path):
    # a wgan critic scores FAKENESS: read raw, SIR would keep the samples that look most generated
    from llmgan.resample import resample_run
    from llmgan.run import load_run

    run = load_run(_run_with_d(tmp_path, "wgan")[0])
    res = resample_run(run, 64, candidates=8, calibration="none", n_calibration=64)
    assert float(_realness_of(run, res.tokens).mean()) > float(_realness_of(run, _plain(run, 256)).mean()) + 0.1
    platt = resample_run(run, 4, candidates=2, calibration="platt", n_calibration=64, recalibrate=True)
    assert platt.stats["calibration"]["a"] > 0


def test_generate_cli_resample(run_d, capsys):
    assert main(["generate", run_d, "-n", "5", "--resample", "sir", "--candidates", "4", "--device", "cpu",
                 "--calibration-n", "64"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.strip().splitlines()) == 5
    stats = json.loads(next(line for line in cap.err.splitlines() if line.startswith("resample: "))[10:])
    assert stats["method"] == "sir" and stats["candidates"] == 4 and 1.0 <= stats["ess_mean"] <= 4.0
    assert main(["generate", run_d, "-n", "3", "--resample", "rejection", "--candidates", "50", "--device", "cpu",
                 "--calibration-n", "64"]) == 0
    cap = capsys.readouterr()
    assert '"acceptance_rate"' in cap.err
    # an MLE-style run's D is no EBM; one line, exit 2
    assert main(["generate", run_d, "--resample", "sir", "--ratio-from", "ebm", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ratio-from ebm" in err[0] and "residual_ebm" in err[0]
    assert main(["generate", run_d, "--resample", "sir", "--interpolate", "--device", "cpu"]) == 2
    assert "--interpolate" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--candidates"):
        from llmgan.resample import resample_run
        from llmgan.run import load_run

        resample_run(load_run(run_d), 2, candidates=0)


# ----------------------------------------------------------------------------------------- residual EBM
class _Categorical(torch.nn.Module):
    """A 'generator' of one-token sequences from a fixed categorical (the frozen NCE noise)."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.probs = probs
        self.w = torch.nn.Parameter(torch.zeros(1))  # something an optimizer could move (it must not)

    def sample(self, n, max_len, generator=None, **_):
        t = torch.multinomial(self.probs, n, replacement=True, generator=generator)[:, None]
        return SimpleNamespace(tokens=t, lengths=torch.ones(n, dtype=torch.long))


class _TableD(torch.nn.Module):
    def __init__(self, v: int):
        super().__init__()
        self.table = torch.nn.Embedding(v, 1)
        torch.nn.init.zeros_(self.table.weight)

    def forward(self, x, prompt=None):
        return self.table(x[:, 0]).squeeze(-1)


def test_nce_with_g_as_noise_recovers_the_true_log_ratio():
    from contextlib import nullcontext

    from llmgan.algorithms import build_algorithm
    from llmgan.algorithms.base import GANContext
    from llmgan.config import AdversarialConfig

    V = 20
    gen = torch.Generator().manual_seed(0)
    p_g = torch.softmax(torch.randn(V, generator=gen), 0)
    p_data = torch.softmax(torch.randn(V, generator=gen) * 1.5, 0)
    true_log_r = torch.log(p_data) - torch.log(p_g)
    real = torch.multinomial(p_data, 20000, replacement=True, generator=gen)[:, None]
    G, D = _Categorical(p_g), _TableD(V)
    d_opt = torch.optim.Adam(D.parameters(), lr=0.05)

    def step(loss, opt, module, clip, what):
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    train = type("Train", (), {"tokens": real, "lengths": torch.ones(len(real), dtype=torch.long),
                               "__len__": lambda self: len(real)})()
    data = SimpleNamespace(train=train, tokenizer=SimpleNamespace(pad_id=0), train_prompts=None)
    cfg = AdversarialConfig(algorithm="residual_ebm", d_samples=4000, d_epochs=1, d_batch_size=500, loss="vanilla")
    ctx = GANContext(generator=G, discriminator=D, g_opt=torch.optim.SGD(G.parameters(), lr=1.0), d_opt=d_opt,
                     cfg=cfg, device=torch.device("cpu"), max_len=1, rng=torch.Generator().manual_seed(1),
                     data_rng=torch.Generator().manual_seed(2), data=data, progress={}, step_fn=step,
                     autocast=nullcontext)
    algo = build_algorithm("residual_ebm", {})
    algo.setup(ctx)
    for _ in range(40):
        algo.d_step(ctx)
        assert algo.g_step(ctx) == {"g_loss": 0.0}
    assert float(G.w.detach()) == 0.0  # the noise distribution never moved
    learned = D.table.weight.detach().squeeze(-1).double()  # -E(x) = D's logit
    corr = float(torch.corrcoef(torch.stack([learned, true_log_r]))[0, 1])
    assert corr > 0.9, corr
    # NCE is self-normalising at its optimum: Z = E_G[exp(-E)] ~ 1
    assert float((p_g * learned.exp()).sum()) == pytest.approx(1.0, abs=0.2)
    with pytest.raises(ConfigError, match="residual_ebm trains E by noise-contrastive"):
        cfg.loss = "wgan"
        algo.setup(ctx)


@pytest.fixture(scope="module")
def ebm_run(tmp_path_factory):
    """A tiny residual_ebm oracle run; also returns whether G stayed exactly as MLE left it."""
    from llmgan.config import load_config
    from llmgan.training.engine import Trainer

    tmp = tmp_path_factory.mktemp("ebm")
    preset = os.path.join(os.path.dirname(__file__), "..", "configs", "residual_ebm_oracle.yaml")
    sets = ["data.oracle_samples=256", "data.oracle_test_samples=64", "eval.n_samples=64", "eval.batch_size=64",
            "adversarial.rounds=2", "adversarial.eval_every=2", "adversarial.checkpoint_every=2",
            "adversarial.d_pretrain_steps=2", "adversarial.d_samples=128", "adversarial.d_batch_size=32",
            "discriminator.kwargs.filter_sizes=[2, 3]", "discriminator.kwargs.num_filters=[8, 8]",
            "train.epochs=1", "train.progress=false", "threads=1", "seed=0"]
    tr = Trainer(load_config(preset, sets), str(tmp / "run"))
    before = {}
    original = tr.save

    def remember_g_after_mle(*a, **k):
        if tr.state.get("phase") == "d_pretrain" and not before:
            before.update({k2: v.clone() for k2, v in tr.generator.state_dict().items()})
        return original(*a, **k)

    tr.save = remember_g_after_mle
    tr.run()
    after = tr.generator.state_dict()
    frozen = bool(before) and all(torch.equal(before[k], after[k]) for k in before)
    return str(tmp / "run"), frozen


def test_residual_ebm_run_end_to_end(ebm_run, capsys):
    run_dir, frozen = ebm_run
    assert frozen  # G never moved through D pre-training and every round: it is NCE's noise
    capsys.readouterr()
    assert main(["evaluate", run_dir, "--json", "--n-samples", "64", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["ebm_test_nll_se"] > 0 and res["ebm_log_z_se"] > 0 and res["ebm_n_proposal"] == 64
    # same held-out sequences: the EBM's value differs from G's by mean(E) + log Z per token
    assert abs(res["ebm_g_test_nll"] - res["test_nll"]) < 1e-4
    assert main(["generate", run_dir, "-n", "4", "--resample", "sir", "--candidates", "4", "--ratio-from", "ebm",
                 "--device", "cpu", "--calibration-n", "32"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.strip().splitlines()) == 4
    stats = json.loads(next(line for line in cap.err.splitlines() if line.startswith("resample: "))[10:])
    assert stats["ratio_from"] == "ebm" and stats["calibration"]["method"] == "none"


def test_residual_ebm_nll_on_a_run_equals_the_exact_value_when_e_is_the_true_log_ratio():
    # a run-shaped toy: G a categorical over one-token sequences, E = -log(p_data / p_G) exactly, so the
    # residual model IS p_data: its importance-sampled NLL must match p_data's exact NLL of the test set
    from llmgan.metrics.density_ratio import residual_ebm_nll_for_run

    V = 12
    gen = torch.Generator().manual_seed(4)
    p_g = torch.softmax(torch.randn(V, generator=gen), 0)
    p_data = torch.softmax(torch.randn(V, generator=gen), 0)

    class G(_Categorical):
        device = torch.device("cpu")

        def log_probs(self, tokens):
            return torch.log(self.probs)[tokens]

    D = _TableD(V)
    with torch.no_grad():
        D.table.weight[:, 0] = (torch.log(p_data) - torch.log(p_g)).float()
    run = SimpleNamespace(discriminator=lambda: D, generator=G(p_g), max_len=1,
                          tokenizer=SimpleNamespace(pad_id=0), cfg=SimpleNamespace(adversarial=SimpleNamespace(
                              loss="vanilla")))
    test_tokens = torch.multinomial(p_data, 3000, replacement=True, generator=gen)[:, None]
    corpus = SimpleNamespace(tokens=test_tokens, lengths=torch.ones(3000, dtype=torch.long))
    res = residual_ebm_nll_for_run(run, corpus, n_proposal=20000, rng=torch.Generator().manual_seed(5))
    exact = float(-torch.log(p_data)[test_tokens[:, 0]].double().mean())
    assert abs(res["ebm_test_nll"] - exact) < 3 * res["ebm_log_z_se"] + 0.01
    assert res["ebm_log_z"] == pytest.approx(0.0, abs=3 * res["ebm_log_z_se"] + 0.01)  # E_G[p_data/p_G] = 1
    assert res["ebm_test_nll"] < res["ebm_g_test_nll"] - 0.05  # the correction helps


def test_conditional_run_resamples_per_prompt_with_d_reading_the_prompt(tmp_path, capsys):
    # a GAD run: D scores (prompt, response) pairs; each prompt gets its own n outputs from its own candidates
    from llmgan.apps import translation as tr_app
    from llmgan.detect import _left_pad
    from llmgan.resample import RatioModel, resample_run
    from llmgan.run import load_run
    from llmgan.training.engine import Trainer
    from test_gad_conditional import _cfg

    run_dir = str(tmp_path / "run")
    Trainer(_cfg(tmp_path, rounds=1), run_dir).run()
    prompts = [r["prompt"] for r in tr_app.make_records(2, seed=7)]
    pf = tmp_path / "prompts.jsonl"
    pf.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    assert main(["generate", run_dir, "--prompts", str(pf), "-n", "3", "--json", "--resample", "sir",
                 "--candidates", "4", "--calibration-n", "16", "--device", "cpu"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["prompt"] for x in lines] == [prompts[0]] * 3 + [prompts[1]] * 3
    run = load_run(run_dir)
    rows = _left_pad([run.encode_prompt(p) for p in prompts], run.tokenizer.pad_id or 0)
    res = resample_run(run, 3, candidates=4, prompts=rows, n_calibration=16)
    assert res.group.tolist() == [0, 0, 0, 1, 1, 1]
    ratio = RatioModel(run)
    ratio.calibrate(n=16)
    with_prompts = ratio.log_ratio(res.tokens, rows[res.group])
    assert torch.allclose(res.log_r, with_prompts)  # the kept samples were scored given their own prompt
    assert not torch.allclose(with_prompts, ratio.log_ratio(res.tokens, rows.flip(0)[res.group]))
    rej = resample_run(run, 3, method="rejection", candidates=20, prompts=rows, n_calibration=16)
    groups = rej.group.tolist()
    assert groups == sorted(groups) and all(groups.count(g) <= 3 for g in (0, 1))
    assert rej.stats["requested"] == 6 and rej.stats["generator_samples"] <= 2 * 3 * 20


def test_density_ratio_benchmark_rows_on_a_tiny_ebm_run(ebm_run):
    # benchmarks/density_ratio.py at toy size: the frontier's columns, SIR cost K, and the corrected
    # model's temperature-T NLL built on the same tempered NLL as `llmgan sweep`
    import sys

    from llmgan.metrics.density_ratio import sequence_nll
    from llmgan.run import load_run
    from llmgan.sweep import temperature_nll
    from llmgan.training.evaluation import held_out_corpus

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from density_ratio import COLUMNS, frontier_rows

    run_dir = ebm_run[0]
    run = load_run(run_dir)
    test = held_out_corpus(run)
    per_seq = sequence_nll(run.generator, test.tokens, test.lengths, temperature=0.7)
    assert float(per_seq.sum() / test.lengths.sum()) == pytest.approx(temperature_nll(run.generator, test, 0.7),
                                                                       rel=1e-5)
    rows = frontier_rows(run_dir, [0.8, 1.0], [1, 2, 4], rejection=8, ratio_from="ebm", n_samples=16,
                         n_proposal=32, n_calibration=16)
    assert [(r["temperature"], r["algorithm"], r["candidates"]) for r in rows] == [
        (t, a, k) for t in (0.8, 1.0) for a, k in (("mle", 1), ("mle+sir", 2), ("mle+sir", 4), ("mle+rejection", 8))]
    assert all(set(COLUMNS[:6]) <= set(r) for r in rows)
    assert [r["cost"] for r in rows if r["method"] == "sir"] == [2.0, 4.0, 2.0, 4.0]
    assert all(r["test_nll_se"] > 0 for r in rows if r["method"] != "plain")


def test_distill_resumes_a_run_killed_after_its_first_checkpoint(tmp_path):
    # distill.py skips a phase that is done; "done" is the run's final record, not its first checkpoint
    # (written after epoch 1): a teacher killed in epoch 2 used to be taken as trained
    import json
    import random
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from distill import STUDENTS, _cfg, _finished, _train

    rng = random.Random(0)
    data = tmp_path / "data.txt"
    data.write_text("\n".join(" ".join(rng.choice("a b c d".split()) for _ in range(4)) for _ in range(40)))
    run = str(tmp_path / "run")
    _train(_cfg("t", str(data), None, STUDENTS["lstm"], 1, 0, "cpu", 8), run)
    metrics = os.path.join(run, "metrics.jsonl")
    lines = [json.loads(x) for x in open(metrics)]
    assert _finished(run)
    with open(metrics, "w") as f:  # as if killed after epoch 1's checkpoint: no final record yet
        f.writelines(json.dumps(x) + "\n" for x in lines if x["phase"] != "final")
    assert not _finished(run) and os.path.isfile(os.path.join(run, "checkpoints", "latest"))
    _train(_cfg("t", str(data), None, STUDENTS["lstm"], 2, 0, "cpu", 8), run)
    epochs = [json.loads(x).get("epoch") for x in open(metrics) if json.loads(x)["phase"] == "eval"]
    assert epochs == [1, 2] and _finished(run)  # resumed at epoch 2, epoch 1 not redone


def test_density_ratio_gaps_are_against_the_mle_the_ebm_corrected(tmp_path):
    # oracle_frontier.csv holds two MLE curves (mle_s*: 120 epochs, mle10_s*: the 10-epoch G every E was
    # trained on); the gaps and the seed band must come from the named one, and mle10_scratchgan (an
    # algorithm run) is not an MLE seed
    import sys

    from llmgan import frontier

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from density_ratio import write_frontier

    def curve(run, algorithm, shift):
        return [{"run": run, "algorithm": algorithm, "seed": 0, "temperature": t, "oracle_nll": 9.0 - t + shift,
                 "test_nll": 7.0 + t} for t in (0.7, 0.85, 1.0, 1.15)]

    path = str(tmp_path / "frontier.csv")
    frontier.write_csv(curve("mle_s0", "mle", -1.0) + curve("mle_s1", "mle", -1.5) + curve("mle10_s0", "mle", 0.0)
                       + curve("mle10_s1", "mle", 0.01) + curve("mle10_scratchgan", "scratchgan", 0.5), path)
    point = {"run": "ebm_s0", "algorithm": "mle+sir", "seed": 0, "temperature": 1.0, "oracle_nll": 8.1,
             "test_nll": 8.0, "method": "sir", "candidates": 4}
    ref, points, noise, gaps = write_frontier([point], path)
    assert {r["run"] for r in ref} == {"mle10_s0"}
    assert noise == pytest.approx(0.01, abs=1e-3)  # mle10_s1 only: not mle_s1 (0.5), not mle10_scratchgan
    assert "| ebm_s0+sir_k4 | mle+sir | 0 | +0.100 |" in gaps  # 8.1 against mle10_s0's 8.0 at test NLL 8.0
    assert "| ebm_s0+sir_k4 | mle+sir | 0 | +1.100 |" in write_frontier([point], path, reference="mle")[3]


@pytest.mark.slow
def test_distillation_benchmark_runs_every_arm_at_toy_size(tmp_path):
    # benchmarks/distill.py end to end at toy size: teacher, its samples, SeqKD, GAD (online / frozen D),
    # SeqKD + residual-EBM SIR; every arm scored on both axes, GAD's training signals carried along
    import math
    import random
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from distill import run_distillation

    rng = random.Random(0)
    words = "the a cat dog sat ran on in mat park big small red".split()
    data = tmp_path / "data.txt"
    data.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) for _ in range(200)))
    rows = run_distillation(str(data), str(tmp_path / "out"), teacher_layers=1, teacher_epochs=1, n_teacher=64,
                            students=["gpt1"], seqkd_epochs=1, gad_rounds=1, ebm_rounds=1, candidates=2,
                            temperatures=[1.0], n_samples=16, n_proposal=16, max_len=10, d_samples=16,
                            teacher_dim=16)
    assert [r["arm"] for r in rows] == ["seqkd", "seqkd+gad", "seqkd+gad_frozen_d", "seqkd+sir"]
    assert all(math.isfinite(r["teacher_nll"]) and math.isfinite(r["coverage_nll"]) for r in rows)
    assert "reward_mean" in rows[1] and "d_pair_acc" in rows[1] and "d_pair_acc" not in rows[2]
    assert rows[3]["coverage_se"] > 0
    from distill import signal_trace, trace_markdown

    trace = signal_trace(str(tmp_path / "out"), ["gpt1"])
    assert [(r["arm"], r["round"]) for r in trace] == [("seqkd+gad", 0), ("seqkd+gad", 1),
                                                       ("seqkd+gad_frozen_d", 0), ("seqkd+gad_frozen_d", 1)]
    assert trace[1]["d_pair_acc"] is not None and trace[3]["d_pair_acc"] is None  # frozen D: no D step logged
    assert "(D warm-up end)" in trace_markdown(trace)
    from distill import probe, separability
    from llmgan.run import load_run

    sep = probe(str(tmp_path / "out"), ["gpt1"], n=64)[0]
    # E over teacher samples of log pT - log pS is KL(T||S) >= 0, over student samples -KL(S||T) <= 0
    assert sep["lr_real"] > 0 > sep["lr_fake"] and sep["pair_acc"] > 0.5
    teacher = load_run(str(tmp_path / "out" / "teacher"))
    real = open(tmp_path / "out" / "teacher_test.txt").read().splitlines()[:8]
    same = separability(teacher, teacher, real, real[::-1])
    assert same["pair_acc"] == 0.5 and same["lr_real"] == 0.0  # one model: every log-ratio 0, every pair a tie
    import json

    import distill_d_warmup

    argv = sys.argv
    sys.argv = ["distill_d_warmup.py", "--distill-out", str(tmp_path / "out"), "--refreshes", "2", "--d-samples",
                "16", "--d-epochs", "1", "--max-len", "10", "--out", str(tmp_path / "warm")]
    try:
        distill_d_warmup.main()
    finally:
        sys.argv = argv
    recs = [json.loads(x) for x in open(tmp_path / "warm" / "gpt1" / "metrics.jsonl")]
    assert [r["refresh"] for r in recs if r["phase"] == "d_pretrain"] == [1, 2]  # the longer warm-up, logged


@pytest.mark.slow
def test_density_ratio_benchmark_coco_part_at_toy_size(tmp_path):
    # benchmarks/density_ratio.py --coco at toy size: MLE + residual EBM trained, BLEU-4 / Self-BLEU-4 /
    # test NLL of plain vs resampled samples
    import math
    import random
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from density_ratio import text_rows, train_coco

    rng = random.Random(0)
    words = "the a cat dog sat ran on in mat park big small red".split()
    (tmp_path / "testdata").mkdir()
    for name in ("image_coco.txt", "testdata/image_coco_test.txt"):
        (tmp_path / name).write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 7)))
                                               for _ in range(120)))
    ebm = train_coco(str(tmp_path / "image_coco.txt"), str(tmp_path / "coco"), mle_epochs=1, ebm_rounds=1,
                     d_samples=32, seed=0, device="cpu")
    rows = text_rows(ebm, [1.0], [1, 4], rejection=4, n_samples=8, n_proposal=16, n_calibration=16)
    assert [(r["method"], r["candidates"]) for r in rows] == [("plain", 1), ("sir", 4), ("rejection", 4)]
    assert all(0 <= r["bleu_4"] <= 1 and 0 <= r["self_bleu_4"] <= 1 for r in rows if r["n_samples"] >= 2)
    assert rows[1]["cost"] == 4.0 and rows[1]["test_nll_se"] > 0 and math.isfinite(rows[1]["test_nll"])
    assert all(r["wall_s"] >= 0 for r in rows)


def test_density_ratio_points_merge_into_the_frontier_csv(tmp_path):
    # the oracle rows merged into a frontier CSV: same-named rows replaced, every other row kept, plain rows
    # left out (they are the MLE run's own), gaps against mle_s0's curve with MLE seed 1 as the noise band
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from density_ratio import frontier_name, write_frontier

    path = tmp_path / "frontier.csv"
    mle = [{"run": f"mle_s{s}", "algorithm": "mle", "seed": s, "temperature": t, "oracle_nll": 9.0 + t + 0.01 * s,
            "test_nll": 9.0 - t} for s in (0, 1) for t in (0.8, 1.0, 1.2)]
    from llmgan import frontier

    frontier.write_csv(mle + [{"run": "other", "algorithm": "x", "seed": 0, "temperature": 1.0, "oracle_nll": 1.0,
                               "test_nll": 8.0}], str(path))
    pts = [{"run": "ebm_s0", "algorithm": "mle+sir", "seed": 0, "temperature": 1.0, "method": m, "candidates": k,
            "oracle_nll": 9.5, "test_nll": 8.1} for m, k in (("sir", 8), ("rejection", 64), ("plain", 1))]
    for oracle in (9.5, 9.4):  # the second call replaces the first call's rows
        _, points, noise, table = write_frontier([{**p, "oracle_nll": oracle} for p in pts], str(path), reference="mle")
    back = frontier.read_csv(str(path))
    assert sorted(r["run"] for r in back if r["run"].startswith("ebm")) == ["ebm_s0+rejection", "ebm_s0+sir_k8"]
    assert [r["oracle_nll"] for r in back if r["run"] == "ebm_s0+sir_k8"] == [9.4]
    assert sum(r["run"] == "other" for r in back) == 1 and sum(r["run"].startswith("mle") for r in back) == 6
    assert frontier_name(pts[0]) == "ebm_s0+sir_k8" and noise == pytest.approx(0.01)
    # MLE's curve at test_nll 8.1 is 9.0 + 0.9 = 9.9: the point is 0.5 below it
    assert "| ebm_s0+sir_k8 | mle+sir | 0 | -0.500 |" in table
