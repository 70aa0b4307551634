"""``make demo``: the field's synthetic benchmark, end to end, on a laptop CPU in a few minutes.

1. write 10,000 training and 10,000 test samples of the exact SeqGAN oracle (``llmgan oracle``);
2. MLE pre-training of SeqGAN's LSTM generator (a short budget of the paper's 120 epochs);
3. SeqGAN adversarial training from that generator (a short schedule, a lighter discriminator);
4. MLE continued from the same generator, as the honest baseline;
5. a table of oracle NLL (10,000 samples each) next to the published figures, and an HTML report.

Every stage is an ordinary CLI command on an ordinary config, printed as it runs, so a user can
re-run or extend any of them. ``--quick`` shrinks every budget (used by the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

PUBLISHED = {"MLE (SeqGAN paper)": 9.038, "SeqGAN (paper)": 8.736, "oracle's own samples (RelGAN paper)": 5.750}


def _run(argv: list[str]) -> None:
    from llmgan.cli import main

    print("$ llmgan " + " ".join(argv), flush=True)
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"demo: 'llmgan {' '.join(argv)}' failed with exit code {rc}")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def _evaluate(run_dir: str, n: int) -> dict:
    import torch

    from llmgan.run import load_run
    from llmgan.training.evaluation import evaluate_run

    run = load_run(run_dir)
    return evaluate_run(run, metrics=["oracle_nll", "test_nll"], n_samples=n, rng=torch.Generator().manual_seed(1))


def free_threads() -> tuple[int, str]:
    """Torch threads for the cores free now: usable cores minus the 1-minute load average (>= 1).

    Why: two threads on two cores that another job keeps busy made the demo ten times slower (54 min
    instead of 2.5); small LSTM ops gain little from a second thread and lose a lot when it waits
    for a busy core. Returns (threads, the reason in words).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, cores - round(load)), f"{cores} usable core(s), 1-minute load average {load:.1f}"


def _thread_count(cli_value: int | None) -> tuple[int, str]:
    """An explicit setting wins: --threads, then TORCH_NUM_THREADS; else what is free now."""
    if cli_value:
        return cli_value, "--threads"
    env = os.environ.get("TORCH_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise SystemExit(f"demo: TORCH_NUM_THREADS={env!r} is not an integer") from None
        if n >= 1:
            return n, "TORCH_NUM_THREADS"
    n, why = free_threads()
    return n, f"chosen from what is free: {why}"


def _measure_blocks() -> dict[str, float]:
    """Seconds of the demo's two building blocks on this machine now (well under a second when idle): one
    MLE step of SeqGAN's LSTM (batch 64 x 20 tokens, vocabulary 5000) and drawing 1000 x 20 tokens."""
    import torch

    from llmgan.models.generators import build_generator

    g = build_generator("lstm", vocab_size=5000, embed_dim=32, hidden_dim=32, bos_id=0, eos_id=None, pad_id=None)
    opt = torch.optim.Adam(g.parameters(), lr=0.01)
    x = torch.randint(5000, (64, 20), generator=torch.Generator().manual_seed(0))

    def train_step() -> None:
        opt.zero_grad()
        g.nll(x).backward()
        opt.step()

    def timed(fn, reps: int) -> float:
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps

    train_step()  # warm-up: first calls allocate
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        g.sample(8, 2, generator=rng)
        sample = 4 * timed(lambda: g.sample(250, 20, generator=rng), 1)  # sampling cost is linear in rows
    return {"train_step": timed(train_step, 3), "sample_1000": sample}


def estimate_seconds(blocks: dict[str, float], n_data: int, n_eval: int, mle_epochs: int, cont_epochs: int,
                     rounds: int, rollouts: int, d_pretrain: int, d_samples: int, eval_every: int,
                     report_samples: int) -> float:
    """The demo's wall time from the measured blocks times its step counts: a rough figure (the
    discriminator's steps are counted as LSTM steps, rollouts as plain sampling)."""
    step, draw = blocks["train_step"], blocks["sample_1000"]
    score = step / 3  # scoring 64 sequences (oracle, valid, test NLL) is a forward pass: ~1/3 of a step
    per_epoch = -(-n_data // 64) * step
    evaluation = n_eval / 1000 * draw + 2 * n_eval / 64 * score  # samples + oracle NLL, then valid NLL
    n_evals = (mle_epochs + 1) + (cont_epochs + 1) + (rounds // eval_every + 2) + 3  # + the demo's table
    refresh = d_samples / 1000 * draw + 2 * d_samples / 64 * step  # D: fresh fakes, one epoch on real + fake
    # one G step: 64 samples, then `rollouts` continuations of every prefix (64 x rollouts rows, 190 steps)
    g_step = 64 * rollouts * 190 / (1000 * 20) * draw + step
    # the report: per run, one evaluation and 5 sweep temperatures, each scoring the whole test set
    report = 3 * 6 * (report_samples / 1000 * draw + (n_data + report_samples) / 64 * score)
    return ((mle_epochs + cont_epochs) * per_epoch + n_evals * evaluation + d_pretrain * refresh
            + rounds * (g_step + refresh) + report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_runs", help="output directory (replaced)")
    p.add_argument("--quick", action="store_true", help="tiny budgets, for tests")
    p.add_argument("--mle-epochs", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: TORCH_NUM_THREADS, else the cores free now)")
    args = p.parse_args(argv)

    import torch

    args.threads, why = _thread_count(args.threads)
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads} ({why})", flush=True)
    quick = args.quick
    n_data = 1000 if quick else 10000
    n_eval = 1000 if quick else 10000
    mle_epochs = args.mle_epochs or (2 if quick else 20)
    rounds = args.rounds or (2 if quick else 20)
    cont_epochs = 1 if quick else 3
    out = args.out
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    blocks = _measure_blocks()
    estimate = estimate_seconds(blocks, n_data, n_eval, mle_epochs, cont_epochs, rounds, 4 if quick else 16,
                                1 if quick else 10, 500 if quick else 5000, 1 if quick else 10,
                                500 if quick else 1000)
    print(f"estimated time: about {_minutes(estimate)} (rough, within a factor of 2 or so: an MLE step measured "
          f"now at {blocks['train_step'] * 1e3:.1f} ms and 1000 samples at {blocks['sample_1000'] * 1e3:.0f} ms, "
          "times the demo's step counts; a busier machine is slower)", flush=True)
    t_start = time.time()
    here = os.path.dirname(os.path.abspath(__file__))
    configs = os.path.join(here, "..", "..", "configs")
    if not os.path.isdir(configs):  # installed without the repository: use the packaged copies
        configs = os.path.join(here, "configs")

    oracle_dir = os.path.join(out, "oracle")
    _run(["oracle", "--out", oracle_dir, "--n", str(n_data), "--seed", "0"])
    # no data.valid: each run validates on its own oracle sample (same seed, so the same set), never on test
    data = [f"data.train={oracle_dir}/train.txt", f"data.oracle_valid_samples={n_data}",
            f"data.test={oracle_dir}/test.txt", f"eval.n_samples={n_eval}"]
    common = ["--no-progress", "--threads", str(args.threads)]

    t0 = time.time()
    mle = os.path.join(out, "mle")
    _run(["train", os.path.join(configs, "mle_oracle.yaml"), "--out", mle, *common,
          *_sets([*data, f"train.epochs={mle_epochs}"])])
    t_mle = time.time() - t0

    t0 = time.time()
    gan = os.path.join(out, "seqgan")
    # The paper's CNN discriminator costs ~15 MFLOP per sequence; the demo uses a lighter one and a
    # shorter D schedule so it fits a laptop budget. configs/seqgan_oracle.yaml has the full setup.
    gan_set = [*data, f"train.init_from={mle}", "train.epochs=0", f"adversarial.rounds={rounds}",
               "adversarial.d_pretrain_steps=" + ("1" if quick else "10"), "adversarial.d_steps=1",
               "adversarial.d_epochs=1", "adversarial.d_samples=" + ("500" if quick else "5000"),
               "adversarial.eval_every=" + ("1" if quick else "10"), "adversarial.checkpoint_every=10",
               "discriminator.kwargs={filter_sizes: [2, 3, 4, 5], num_filters: [50, 50, 50, 50]}",
               "adversarial.params={rollouts: " + ("4" if quick else "16") + ", rollout_update_rate: 0.8}"]
    _run(["train", os.path.join(configs, "seqgan_oracle.yaml"), "--out", gan, *common, *_sets(gan_set)])
    t_gan = time.time() - t0

    t0 = time.time()
    cont = os.path.join(out, "mle_continued")
    _run(["train", os.path.join(configs, "mle_oracle.yaml"), "--out", cont, *common,
          *_sets([*data, f"train.init_from={mle}", f"train.epochs={cont_epochs}"])])
    t_cont = time.time() - t0

    results = {
        f"MLE, {mle_epochs} epochs (ours)": _evaluate(mle, n_eval),
        f"MLE, +{cont_epochs} epochs (ours)": _evaluate(cont, n_eval),
        f"SeqGAN, +{rounds} rounds (ours)": _evaluate(gan, n_eval),
    }
    report_dir = os.path.join(out, "report")
    report_ok = False
    try:
        from llmgan.cli import _load_extras

        _load_extras()
        import llmgan.report  # noqa: F401

        _run(["report", mle, cont, gan, "--out", report_dir, "--n-samples", "500" if quick else "1000"])
        report_ok = True
    except ImportError:
        pass

    width = 44
    print()
    print(f"Oracle NLL on the exact SeqGAN oracle (lower is better; {n_eval} samples each)")
    print(f"{'model':<{width}} {'oracle NLL':>10} {'test NLL':>9}")
    for name, m in results.items():
        print(f"{name:<{width}} {m['oracle_nll']:>10.3f} {m['test_nll']:>9.3f}")
    for name, v in PUBLISHED.items():
        print(f"{name:<{width}} {v:>10.3f} {'':>9}")
    print("A lower oracle NLL (quality) with a higher test NLL (coverage of the real distribution) means sharper,")
    print("less diverse samples: the report's temperature sweep compares the runs over the whole trade-off.")
    print()
    print(f"time: MLE {t_mle:.0f} s, SeqGAN {t_gan:.0f} s, MLE continued {t_cont:.0f} s, "
          f"total {time.time() - t_start:.0f} s ({args.threads} torch threads; estimated {_minutes(estimate)})")
    print(f"runs: {mle}, {gan}, {cont}  (llmgan generate RUN_DIR / llmgan evaluate RUN_DIR)")
    if report_ok:
        print(f"report: {os.path.join(report_dir, 'index.html')}")
    from llmgan.fileio import atomic_write_text  # a demo killed here leaves the old summary or the new one

    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(dict(results), indent=1))
    return 0


if __name__ == "__main__":
    from llmgan.cli import exit_after

    exit_after(main)
