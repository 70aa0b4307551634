"""Real-data benchmarks: Image COCO captions (MLE, SeqGAN, RelGAN's loss on an LSTM, MLE continued) and
Chinese poems (MLE), scored with BLEU-2..5 against held-out text, Self-BLEU-2..4, test NLL and nll_gen,
next to the published figures; a temperature sweep of the COCO runs; and the BLEU speed benchmark.
Writes the sections "real-coco", "real-poems" and "bleu-speed" of docs/benchmarks.md (with --write).

Every run uses a preset (configs/mle_coco.yaml, seqgan_coco.yaml, relgan_coco.yaml, mle_poems.yaml);
the defaults cut the schedules to about 35 minutes on one CPU thread, and the section says exactly what
ran. With a GPU, the presets' full schedules are one command:

    python benchmarks/real_data.py --full --device cuda --write

Skips (exit 0) when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATA = os.path.join(ROOT, "..", "shared", "data")
COCO_TRAIN = os.path.join(DATA, "image_coco.txt")
COCO_TEST = os.path.join(DATA, "testdata", "image_coco_test.txt")
POEMS = os.path.join(DATA, "chinese_poems.txt")

# RelGAN paper (Nie et al., ICLR 2019), Table 2, Image COCO. NLL_gen there is the generator's NLL on
# real data (see the notes written into the section for how their code computes it).
PUBLISHED = {
    "MLE (RelGAN paper)": {"bleu_2": 0.731, "bleu_3": 0.497, "bleu_4": 0.305, "bleu_5": 0.189, "nll": 0.718},
    "RelGAN(100) (RelGAN paper)": {"bleu_2": 0.849, "bleu_3": 0.687, "bleu_4": 0.502, "bleu_5": 0.331,
                                   "nll": 0.756},
}

# CPU cuts of the presets' adversarial schedules (dropped by --full).
SEQGAN_CPU_SETS = ["adversarial.params.rollouts=8", "adversarial.d_samples=1000", "adversarial.d_steps=1",
                   "adversarial.d_epochs=1", "adversarial.d_pretrain_steps=3"]
RELGAN_CPU_SETS = ["adversarial.d_steps=1"]


def log(msg: str) -> None:
    print(msg, flush=True)


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def train(config: str, out: str, sets: list[str], a, budget_min: float | None = None) -> dict:
    """``llmgan train`` in a subprocess; returns {wall_s, capped, cmd}. ``--reuse`` keeps a finished run."""
    info_path = os.path.join(out, "bench_train.json")
    if a.reuse and os.path.isfile(info_path):
        log(f"reusing {rel(out)}")
        return json.load(open(info_path, encoding="utf-8"))
    if os.path.isdir(out):
        shutil.rmtree(out)
    sets = [*sets, "train.progress=false", f"threads={a.threads}", f"device={a.device}"]
    cmd = [sys.executable, "-m", "llmgan.cli", "train", os.path.join("configs", config), "--out", rel(out)]
    for s in sets:
        cmd += ["--set", s]
    shown = "llmgan train " + " ".join(f"'{c}'" if " " in c or "{" in c else c for c in cmd[4:])
    log("$ " + shown)
    t = time.perf_counter()
    capped = False
    try:
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=None if budget_min is None else budget_min * 60)
    except subprocess.TimeoutExpired:
        capped = True
        log(f"{rel(out)}: stopped at the {budget_min} min cap; its latest checkpoint is evaluated")
    info = {"wall_s": time.perf_counter() - t, "capped": capped, "cmd": shown}
    with open(info_path, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return info


def rounds_done(run_dir: str) -> tuple[int, int]:
    """(MLE epochs, adversarial rounds) recorded by the run's latest checkpoint."""
    from llmgan.training.checkpoint import Checkpointer

    latest = Checkpointer(run_dir).latest()
    if latest is None:
        return 0, 0
    st = json.load(open(os.path.join(latest, "state.json"), encoding="utf-8"))
    st = st.get("state", st)
    return int(st.get("epoch", 0)), int(st.get("round", 0))


def evaluate(run_dir: str, a, data: str | None = None) -> dict:
    import torch

    from llmgan.run import load_run
    from llmgan.training.evaluation import evaluate_run

    run = load_run(run_dir, device=a.device)
    metrics = ["test_nll", "bleu", "self_bleu", "distinct"] + (["nll_gen"] if a.nll_gen_epochs > 0 else [])
    t = time.perf_counter()
    out = evaluate_run(run, data=data, metrics=metrics, n_samples=a.n_samples, rng=torch.Generator().manual_seed(0),
                       nll_gen_kwargs={"epochs": a.nll_gen_epochs, "max_steps": None})
    out["eval_s"] = time.perf_counter() - t
    log(f"{rel(run_dir)}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in out.items()))
    return out


def real_reference(gen_file: str, ref_file: str, n: int) -> dict:
    """BLEU / Self-BLEU of n real lines as if they were samples: what a perfect generator would score."""
    from llmgan.cli_eval import score_texts

    gen = [line.split() for line in open(gen_file, encoding="utf-8").read().splitlines() if line.strip()][:n]
    refs = [line.split() for line in open(ref_file, encoding="utf-8").read().splitlines() if line.strip()]
    return score_texts(gen, refs, ["bleu", "self_bleu"])


def valid_curve(run_dir: str) -> str:
    pts = []
    for line in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8"):
        r = json.loads(line)
        if r.get("phase") == "eval" and "valid_nll" in r:
            pts.append(f"{r.get('epoch', 0)}: {r['valid_nll']:.3f}")
    return ", ".join(pts)


def fmt(v, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def metrics_table(rows: list[tuple[str, str, dict | None, dict]], bleu_orders=(2, 3, 4, 5)) -> list[str]:
    """rows: (label, schedule, train info or None, metrics)."""
    head = ["run", "schedule run", "wall"] + [f"BLEU-{n}" for n in bleu_orders] + \
        ["Self-BLEU-2", "Self-BLEU-3", "Self-BLEU-4", "test NLL/token", "nll_gen"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for label, sched, info, m in rows:
        wall = "" if info is None else f"{info['wall_s'] / 60:.1f} min" + (" (capped)" if info.get("capped") else "")
        cells = [label, sched, wall] + [fmt(m.get(f"bleu_{n}")) for n in bleu_orders] + \
            [fmt(m.get(f"self_bleu_{n}")) for n in (2, 3, 4)] + [fmt(m.get("test_nll")), fmt(m.get("nll_gen"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_sweep(run_dirs: list[str], out: str, a) -> tuple[str, str, float]:
    cmd = [sys.executable, "-m", "llmgan.cli", "sweep", *[rel(d) for d in run_dirs], "--temperatures",
           a.temperatures, "--n-samples", str(a.sweep_samples), "--out", rel(out), "--threads", str(a.threads),
           "--device", a.device]
    shown = "llmgan " + " ".join(cmd[3:])
    log("$ " + shown)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return shown, open(os.path.join(out, "sweep.md"), encoding="utf-8").read().strip(), time.perf_counter() - t


# ------------------------------------------------------------------------------------------ parts
def coco(a, command: str, machine: str) -> str:
    out = os.path.join(a.out, "coco")
    os.makedirs(out, exist_ok=True)
    gen = f"generator.kwargs={{embed_dim: {a.embed_dim}, hidden_dim: {a.hidden_dim}}}"
    mle_dir = os.path.join(out, "mle")
    runs: dict[str, tuple[str, dict]] = {}
    runs["mle"] = (mle_dir, train("mle_coco.yaml", mle_dir, [gen, f"train.epochs={a.mle_epochs}",
                                                             "train.eval_every=5", "train.checkpoint_every=5"], a))
    init = [f"train.init_from={rel(mle_dir)}", "train.epochs=0"]
    sg_sets = [] if a.full else list(SEQGAN_CPU_SETS)
    sg_sets += [f"adversarial.rounds={a.seqgan_rounds}"] if a.seqgan_rounds else []
    sg_sets += a.seqgan_set
    sg_dir = os.path.join(out, "seqgan")
    runs["seqgan"] = (sg_dir, train("seqgan_coco.yaml", sg_dir, [gen, *init, "adversarial.checkpoint_every=1",
                                                                 "adversarial.eval_every=1000000", *sg_sets],
                                    a, a.budget_min))
    rg_sets = [] if a.full else list(RELGAN_CPU_SETS)
    rg_sets += [f"adversarial.rounds={a.relgan_rounds}"] if a.relgan_rounds else []
    rg_sets += a.relgan_set
    rg_dir = os.path.join(out, "relgan_lstm")
    runs["relgan_lstm"] = (rg_dir, train("relgan_coco.yaml", rg_dir,
                                         ["generator.name=lstm", gen, *init, "adversarial.checkpoint_every=1",
                                          "adversarial.eval_every=1000000", *rg_sets], a, a.budget_min))
    more_dir = os.path.join(out, "mle_more")
    runs["mle_more"] = (more_dir, train("mle_coco.yaml", more_dir,
                                        [gen, f"train.init_from={rel(mle_dir)}", f"train.epochs={a.mle_more_epochs}",
                                         f"train.eval_every={a.mle_more_epochs}",
                                         f"train.checkpoint_every={a.mle_more_epochs}"], a))
    results = {}
    for name, (d, _) in runs.items():
        results[name] = evaluate(d, a)
    sweep_dir = os.path.join(out, "sweep")
    sweep_cmd, sweep_md, sweep_s = run_sweep([d for d, _ in runs.values()], sweep_dir, a)
    png = os.path.join(ROOT, "docs", "img", "real_coco_sweep.png")
    os.makedirs(os.path.dirname(png), exist_ok=True)
    shutil.copyfile(os.path.join(sweep_dir, "sweep.png"), png)

    def sched(name: str) -> str:
        d, info = runs[name]
        ep, rd = rounds_done(d)
        if name == "mle":
            return f"{ep} MLE epochs"
        if name == "mle_more":
            return f"+{ep} MLE epochs"
        return f"{rd} rounds" + (" (cap)" if info.get("capped") else "")

    labels = {"mle": "MLE (LSTM)", "seqgan": "SeqGAN from MLE", "relgan_lstm": "RelGAN loss/Gumbel on LSTM, from MLE",
              "mle_more": "MLE continued"}
    rows = [(labels[n], sched(n), runs[n][1], results[n]) for n in runs]
    rows.append((f"real captions (first {a.n_samples:,} training lines)", "reference", None,
                 real_reference(COCO_TRAIN, COCO_TEST, a.n_samples)))
    table = metrics_table(rows)
    for label, p in PUBLISHED.items():
        table.append(f"| {label} | see notes |  | {p['bleu_2']:.3f} | {p['bleu_3']:.3f} | {p['bleu_4']:.3f} | "
                     f"{p['bleu_5']:.3f} |  |  |  | {p['nll']:.3f} (their NLL_gen) |  |")
    n = a.n_samples
    sg_cut = ", ".join(s.split(".", 1)[1] for s in sg_sets) or "none"
    rg_cut = ", ".join(s.split(".", 1)[1] for s in rg_sets) or "none"
    body = [
        "## Image COCO captions (word level)", "",
        f"Command: `{command}`; machine: {machine}. Data: `../shared/data/image_coco.txt` (10,000 captions; "
        "5% split off for validation) and `testdata/image_coco_test.txt` (10,000), whitespace tokens with case and "
        f"attached punctuation kept (vocabulary 6,094 + specials; 5.7% of test tokens are `<unk>`). Generator: "
        f"LSTM {a.embed_dim}/{a.hidden_dim} (the SeqGAN/TextGAN-PyTorch size) for every run, so all of them "
        f"start from the same MLE model `{rel(mle_dir)}`.", "",
        "Metrics: each run evaluated by `evaluate_run` (the code behind `llmgan evaluate RUN --metrics "
        f"bleu,self_bleu,test_nll --n-samples {n}`) on **{n:,} samples** at temperature 1, seed 0: BLEU-n of each "
        "sample against the whole test file (nltk `sentence_bleu`, smoothing method1, averaged), Self-BLEU-n of "
        "each sample against the other samples, test NLL = mean per-token NLL of the generator on the real test "
        "file (EOS counted, padding not), and nll_gen = NLL of the real test file under a fresh LSTM of the same "
        f"size trained {a.nll_gen_epochs} epochs by MLE on the {n:,} samples (lower is better for both NLLs).", "",
        *table, "",
        "What ran (each row's exact command is below):", "",
        f"* MLE: `configs/mle_coco.yaml` with {a.mle_epochs} epochs (preset 50; SeqGAN/TextGAN-PyTorch pre-train "
        f"120, RelGAN 150 epochs). Validation NLL by epoch: {valid_curve(mle_dir)}.",
        f"* SeqGAN: `configs/seqgan_coco.yaml` (TextGAN-PyTorch's COCO settings: 200 rounds, rollouts 32, "
        f"D pre-trained 5 refreshes, 4 refreshes x 2 epochs of 10,000 samples per round); changed here: {sg_cut}"
        + (f"; wall-clock cap {a.budget_min} min" if a.budget_min else "") + ".",
        "* RelGAN loss/Gumbel on LSTM: `configs/relgan_coco.yaml` (RSGAN, Adam 1e-4 both players, beta_max 100, "
        "exp schedule with N = 5000, RelGAN multi-representation CNN D with 64 representations) with "
        "`generator.name=lstm` so it starts from the same MLE model: this is RelGAN's training objective on an "
        "LSTM, not RelGAN's relational-memory generator (no COCO MLE run of the RMC generator here). "
        f"Changed here: {rg_cut}"
        + (f"; wall-clock cap {a.budget_min} min" if a.budget_min else "")
        + ". After so few of the 2000 rounds the inverse temperature has barely moved from 1.",
        f"* MLE continued: {a.mle_more_epochs} more MLE epochs from the same start (fresh Adam). That is more "
        "generator updates than the GAN runs made but less wall time; more MLE epochs would only overfit further "
        "(validation NLL was lowest at epoch 10 above).", "",
        "Reading: one seed, short schedules. Relative to its MLE start, SeqGAN trades diversity and test NLL for "
        "BLEU (higher BLEU, higher Self-BLEU, worse test NLL and nll_gen), the usual effect of a colder model; "
        "the sweep below is the fairer comparison. The real-captions row is what a perfect generator would score "
        "under this tokenization: the paper's MLE BLEU-2/3 are above even that, so part of the gap to the "
        "published figures is tokenization and the small number of sentences scored, not the model.", "",
        "Published figures and why they are not directly comparable:", "",
        "* RelGAN Table 2 (COCO): RelGAN's RMC generator trained 150 MLE epochs (+ 2000 adversarial steps), "
        "text lower-cased and nltk-tokenized (4,682 words), sequences padded to a fixed length.",
        "* Their BLEU (weilinie/RelGAN `utils/metrics/Bleu.py`): the reference code generates 10,000 sentences but "
        "scores only the first `sample_size` of them (100 or 200, depending on the version of the file) against "
        "the whole test set, nltk word_tokenize, method1 smoothing. Ours scores every one of the samples above.",
        "* Their NLL_gen (`utils/metrics/Nll.py` + `models/rmc_vanilla.py`): the MLE loss of the generator on "
        "the *training* file, averaged over all `seq_len` positions including the padding after the sentence "
        "(easy to predict), hence values below 1. Our test NLL is on the test file, EOS in and padding out, with "
        "`<unk>` for unseen words: same idea (the generator's NLL on real data), different normalisation, "
        "not comparable in value.",
        "* Test NLL here is dominated by unseen words: the vocabulary comes from the training file with "
        "`min_freq: 1`, so `<unk>` never occurs in training and gets almost no probability, yet it is 5.7% of the "
        "test tokens. That is why test NLL sits about 1 nat above validation NLL; it still ranks runs, since every "
        "run shares the tokenizer.", "",
        f"### Temperature sweep ({a.sweep_samples:,} samples per point, {sweep_s / 60:.1f} min)", "",
        f"Command: `{sweep_cmd}`. Quality = BLEU-4 against the test set (higher is better), diversity = "
        "Self-BLEU-4 (lower is more diverse); every temperature uses the same sampling seed.", "",
        "![COCO quality-diversity sweep](img/real_coco_sweep.png)", "",
        sweep_md, "",
        "Commands of the runs:", "",
        *[f"* `{info['cmd']}`" for _, info in runs.values()], "",
        f"Full schedules (the presets' own rounds and settings, {10000:,} evaluation samples), e.g. on a GPU:"
        " `python benchmarks/real_data.py --full --device cuda --write`.",
    ]
    text = "\n".join(body)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({k: {**v, "train": runs[k][1]} for k, v in results.items()}, f, indent=1)
    return text


def poems(a, command: str, machine: str) -> str:
    out = os.path.join(a.out, "poems")
    os.makedirs(out, exist_ok=True)
    mle_dir = os.path.join(out, "mle")
    runs = {"mle": (mle_dir, train("mle_poems.yaml", mle_dir, [f"train.epochs={a.poems_epochs}",
                                                               "train.eval_every=5", "train.checkpoint_every=5"], a))}
    if a.poems_seqgan_rounds:
        sg_dir = os.path.join(out, "seqgan")
        sets = [f"train.init_from={rel(mle_dir)}", "train.epochs=0", "data.test=null",
                "adversarial.checkpoint_every=1", "adversarial.eval_every=1000000",
                f"adversarial.rounds={a.poems_seqgan_rounds}"] + ([] if a.full else list(SEQGAN_CPU_SETS))
        sets += ["data.train=../shared/data/chinese_poems.txt", "data.split=[0.9, 0.05, 0.05]",
                 "data.max_len=26"]
        runs["seqgan"] = (sg_dir, train("seqgan_coco.yaml", sg_dir, sets, a, a.budget_min))
    results = {name: evaluate(d, a) for name, (d, _) in runs.items()}
    rows = []
    for name, (d, info) in runs.items():
        ep, rd = rounds_done(d)
        rows.append(("MLE (LSTM 32/32)" if name == "mle" else "SeqGAN from MLE",
                     f"{ep} MLE epochs" if name == "mle" else f"{rd} rounds", info, results[name]))
    from llmgan.cli_eval import score_texts
    from llmgan.data import load_texts, split_texts

    train_texts, _, test_texts = split_texts(list(load_texts(POEMS)), [0.9, 0.05, 0.05], seed=0)
    rows.append((f"real poems (first {a.n_samples:,} of the training split)", "reference", None,
                 score_texts([t.split() for t in train_texts[: a.n_samples]], [t.split() for t in test_texts],
                             ["bleu", "self_bleu"])))
    table = metrics_table(rows, bleu_orders=(2, 3, 4, 5))
    n = a.n_samples
    body = [
        "## Chinese poems (character level)", "",
        f"Command: `{command}`; machine: {machine}. Data: `../shared/data/chinese_poems.txt` (16,394 "
        "five-character quatrains, Texygen's `shi.txt`), split 90/5/5 with seed 0 (the held-out 5% is the BLEU "
        "reference set and the test NLL set). The file separates characters by spaces, so the preset "
        "`configs/mle_poems.yaml` uses the whitespace (`word`) tokenizer: one token per character, punctuation "
        "included (the `char` tokenizer would also make each space a token, and character BLEU would then count "
        "spaces as matches).", "",
        f"Metrics as for COCO, at the character level: {n:,} samples at temperature 1, BLEU-n against the held-out "
        "poems, Self-BLEU-n, test NLL per character (EOS in), nll_gen with a fresh LSTM 32/32 trained "
        f"{a.nll_gen_epochs} epochs on the samples.", "",
        *table, "",
        "SeqGAN (Yu et al. 2017) reports BLEU-2 on a Chinese quatrain corpus of this size, with its own split and "
        "set-up; its figures are not quoted here because they could not be checked against the paper offline. The "
        "real-poems row above is the like-for-like reference.", "",
        "Commands:", "",
        *[f"* `{info['cmd']}`" for _, info in runs.values()],
    ]
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return "\n".join(body)


def bleu_speed(a, machine: str) -> str:
    cmd = [sys.executable, os.path.join("benchmarks", "bench_bleu.py"), "--n", str(a.bleu_n), "--threads", "1"]
    shown = f"python benchmarks/bench_bleu.py --n {a.bleu_n} --threads 1"
    log("$ " + shown)
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    output = res.stdout.strip()
    log(output)
    if res.returncode not in (0, 1):
        raise RuntimeError(f"bench_bleu.py failed:\n{res.stderr}")
    times = {}
    for line in output.splitlines():
        if line.startswith("llmgan BLEU-2..5"):
            times["bleu"] = float(line.split(":", 1)[1].split("s")[0])
        elif line.startswith("llmgan Self-BLEU-2..5"):
            times["self_bleu"] = float(line.split(":", 1)[1].split("s")[0])
        elif line.startswith("nltk BLEU"):
            times["nltk"] = float(line.split(":", 1)[1].split("s")[0])

    def verdict(t: float | None) -> str:
        if t is None:
            return "?"
        return "meets the goal (< 10 s)" if t < 10 else ("meets the bar (< 60 s)" if t < 60 else "misses the bar")

    body = [
        "## BLEU speed", "",
        f"Command: `{shown}`; machine: {machine}. {a.bleu_n:,} generated vs {a.bleu_n:,} reference sentences "
        "(COCO captions from ../shared/data), BLEU-2..5 and Self-BLEU-2..5 with nltk's method1 smoothing. "
        "Bar: 10k vs 10k in under 60 s; goal: under 10 s.", "",
        "| computation | time | vs bar |",
        "|---|---:|---|",
        f"| llmgan BLEU-2..5, 10k vs 10k | {times.get('bleu', float('nan')):.2f} s | {verdict(times.get('bleu'))} |",
        f"| llmgan Self-BLEU-2..5, 10k | {times.get('self_bleu', float('nan')):.2f} s | "
        f"{verdict(times.get('self_bleu'))} |",
        f"| nltk `sentence_bleu` BLEU-2..5, extrapolated from a 200-sentence subset | "
        f"{times.get('nltk', float('nan')):.0f} s (~{times.get('nltk', 0) / 60:.0f} min) | |", "",
        "Output:", "", "```", output, "```",
    ]
    return "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="bleu,coco,poems", help="comma list of bleu, coco, poems")
    p.add_argument("--full", action="store_true",
                   help="the presets' full schedules: MLE 120 epochs, SeqGAN 200 rounds, RelGAN 2000 rounds, "
                        "poems 50 epochs, 10,000 evaluation samples, no CPU cuts, no cap")
    p.add_argument("--mle-epochs", type=int, default=None, help="COCO MLE epochs (default 20; --full 120)")
    p.add_argument("--mle-more-epochs", type=int, default=None, help="MLE continued epochs (default 6; --full 20)")
    p.add_argument("--seqgan-rounds", type=int, default=None, help="0: the preset's 200 (default 6)")
    p.add_argument("--relgan-rounds", type=int, default=None, help="0: the preset's 2000 (default 20)")
    p.add_argument("--seqgan-set", action="append", default=[], metavar="KEY=VALUE", help="extra SeqGAN override")
    p.add_argument("--relgan-set", action="append", default=[], metavar="KEY=VALUE", help="extra RelGAN override")
    p.add_argument("--budget-min", type=float, default=None,
                   help="wall-clock cap per adversarial run (default 6; --full none)")
    p.add_argument("--embed-dim", type=int, default=32)
    p.add_argument("--hidden-dim", type=int, default=32)
    p.add_argument("--poems-epochs", type=int, default=None, help="default 8; --full 50")
    p.add_argument("--poems-seqgan-rounds", type=int, default=0, help="SeqGAN on poems (0: skip)")
    p.add_argument("--n-samples", type=int, default=None, help="evaluation samples (default 2000; --full 10000)")
    p.add_argument("--nll-gen-epochs", type=int, default=None, help="nll_gen's fresh-model MLE epochs (default 3; "
                   "--full 10; 0: skip nll_gen)")
    p.add_argument("--sweep-samples", type=int, default=None, help="samples per sweep point (default 1000)")
    p.add_argument("--temperatures", default="0.5:1.5:6")
    p.add_argument("--bleu-n", type=int, default=10000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_real"))
    p.add_argument("--reuse", action="store_true", help="keep runs that an earlier invocation finished")
    p.add_argument("--write", action="store_true", help="write the sections of docs/benchmarks.md")
    a = p.parse_args(argv)
    full = a.full
    defaults = {"mle_epochs": (20, 120), "mle_more_epochs": (6, 20), "seqgan_rounds": (6, 0), "relgan_rounds": (20, 0),
                "budget_min": (6.0, None), "poems_epochs": (8, 50), "n_samples": (2000, 10000),
                "nll_gen_epochs": (3, 10), "sweep_samples": (1000, 5000)}
    for k, (cpu, gpu) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, gpu if full else cpu)
    if not os.path.isdir(DATA) or not all(os.path.isfile(f) for f in (COCO_TRAIN, COCO_TEST, POEMS)):
        print(f"skipped: the benchmark data is not in {os.path.normpath(DATA)} (see README.md, Data)")
        return 0
    import torch

    torch.set_num_threads(a.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    from _doc import command, machine, update_section

    cmd, mach = command(), machine()
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    t0 = time.perf_counter()
    for part in parts:
        t = time.perf_counter()
        if part == "bleu":
            name, text = "bleu-speed", bleu_speed(a, mach)
        elif part == "coco":
            name, text = "real-coco", coco(a, cmd, mach)
        elif part == "poems":
            name, text = "real-poems", poems(a, cmd, mach)
        else:
            p.error(f"--parts: unknown part {part!r}")
        took = (time.perf_counter() - t) / 60
        text += (f"\n\n(This part took {took:.1f} min" + (", reusing runs trained by an earlier invocation of the "
                 "same command without --reuse; their training walls are in the table" if a.reuse and part != "bleu"
                 else "") + ".)")
        print(text, flush=True)
        if a.write:
            update_section(name, text)
    log(f"total {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
