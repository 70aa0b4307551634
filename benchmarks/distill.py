"""GAD in its own setting (issue 11): black-box distillation of a larger teacher into small students.

    python benchmarks/distill.py [--data ../shared/data/image_coco.txt] [--data-lines N] [--teacher-layers 4]
        [--teacher-dim 128] [--teacher-epochs 20] [--n-teacher 10000] [--students gpt1,lstm] [--seqkd-epochs 20]
        [--gad-rounds 200] [--ebm-rounds 10] [--candidates 8] [--temperatures 0.7,0.85,1.0,1.15]
        [--n-samples 1000] [--n-proposal 2000] [--d-samples 512] [--max-len 32]
        [--seed 0] [--out runs/distill] [--device cpu] [--write]

``--data-lines N`` trains the teacher on the first N lines of ``--data`` only (a cut for slow machines;
the section says so). The data file missing: one line, nothing run.

1. Teacher: a GPT (``--teacher-layers`` layers, d_model 128) trained by MLE on ``--data``.
2. Its samples (temperature 1): ``--n-teacher`` to train on, as many held out.
3. Per student (``gpt1``: a 1-layer GPT, d_model 64; ``lstm``: LSTM 32/32), four arms:
   ``seqkd`` (MLE on the teacher's samples), ``seqkd+gad`` (then GAD: online Bradley-Terry D, group
   size 8, KL to the SeqKD model, ``--gad-rounds`` rounds), ``seqkd+gad_frozen_d`` (D trained in the
   warm-up only, ``d_steps: 0``), ``seqkd+sir`` (the SeqKD student, frozen, corrected at inference by a
   residual EBM trained by NCE; SIR with ``--candidates``). GAD arms start from the SeqKD run
   (``train.init_from``); the compute each arm adds (generator updates, samples, D passes) is listed
   beside its numbers -- the arms are not equal in compute, they are reported with it.
4. Over the temperature sweep: quality = the teacher's per-token NLL of the student's samples
   (decoded, re-encoded with the teacher's tokenizer: the "oracle NLL" of this setting); coverage =
   the student's per-token NLL of the held-out teacher samples at that temperature (for ``+sir``: the
   corrected model's importance-sampled estimate, with its SE). Training signals of the GAD arms
   (last round's reward mean/std, D pair accuracy, KL, response length) are in the table too.

``--write`` puts the table and the trace of GAD's training signals over its rounds into docs/benchmarks.md
(section ``distill``); rows also go to ``OUT/distill.csv``. ``--report [--note TEXT] [--write]`` trains
nothing: it re-renders the section from ``OUT/distill.csv`` and OUT's run directories (e.g. to add the
reading to a finished run; the note then names the run's own command and wall); ``--probe N`` adds how
well the exact log-ratio log p_teacher - log p_student separates N teacher from N SeqKD samples (the
ceiling of GAD's ``d_pair_acc``; kept in ``OUT/probe_N_sSEED.json``). Each phase prints one
timestamped line; a phase is skipped when its run wrote its final record, and resumed when it was killed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "..", "shared", "data", "image_coco.txt")
STUDENTS = {"gpt1": {"name": "gpt", "kwargs": {"d_model": 64, "n_layers": 1, "n_heads": 2, "max_len": 48}},
            "lstm": {"name": "lstm", "kwargs": {"embed_dim": 32, "hidden_dim": 32}}}
SIGNALS = ("reward_mean", "reward_std", "d_pair_acc", "kl", "response_len")


def _cfg(name: str, train: str, test: str | None, generator: dict, epochs: int, seed: int, device: str,
         max_len: int, adversarial: dict | None = None, init_from: str | None = None,
         discriminator: dict | None = None, batch_size: int = 64, eval_samples: int = 200) -> object:
    from llmgan.config import config_from_dict

    return config_from_dict({
        "name": name, "seed": seed, "device": device,
        "data": {"train": train, "test": test, "tokenizer": "word", "max_len": max_len, "split": [0.95, 0.05, 0.0]},
        "generator": generator,
        "discriminator": discriminator or {"name": "cnn", "kwargs": {"emb_dim": 32, "filter_sizes": [2, 3, 4],
                                                                    "num_filters": [32, 32, 32]}},
        "train": {"epochs": epochs, "batch_size": batch_size, "optimizer": "adam", "lr": 3e-3, "grad_clip": 5.0,
                  "progress": False, "init_from": init_from, "log_every": 1000},
        "adversarial": adversarial or {},
        "eval": {"n_samples": eval_samples, "batch_size": 256},
    })


_T0 = time.perf_counter()


def _log(msg: str) -> None:
    # one line per phase with the wall so far: a long CPU run can be sized from its first phases
    print(f"[distill {time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def _finished(run_dir: str) -> bool:
    """Whether the run wrote its ``final`` record: a checkpoint alone is written after the first epoch, so a
    run killed later has one too and must be resumed, not taken as done."""
    path = os.path.join(run_dir, "metrics.jsonl")
    return os.path.isfile(path) and any(json.loads(line).get("phase") == "final"
                                        for line in open(path, encoding="utf-8") if line.strip())


def _train(cfg, run_dir: str) -> str:
    from llmgan.training.engine import Trainer

    if not _finished(run_dir):
        t = time.perf_counter()
        Trainer(cfg, run_dir, resume=os.path.isfile(os.path.join(run_dir, "checkpoints", "latest"))).run()
        _log(f"trained {run_dir} in {time.perf_counter() - t:.1f}s")
    return run_dir


def _texts(run, tokens: torch.Tensor) -> list[str]:
    return [run.tokenizer.decode(r) for r in tokens.tolist()]


@torch.no_grad()
def teacher_nll(teacher, texts: list[str]) -> float:
    """Per-token NLL (EOS in) of texts under the teacher, encoded with the teacher's tokenizer."""
    from llmgan.data import encode_corpus
    from llmgan.metrics.nll import corpus_nll

    texts = [t for t in texts if t.strip()] or ["."]
    return corpus_nll(teacher.generator, encode_corpus(texts, teacher.tokenizer, teacher.max_len,
                                                       overflow="truncate", source="<student samples>"))


def _last_signals(run_dir: str) -> dict:
    last: dict = {}
    path = os.path.join(run_dir, "metrics.jsonl")
    for line in open(path, encoding="utf-8") if os.path.isfile(path) else []:
        rec = json.loads(line)
        if rec.get("phase") == "adversarial":
            last.update({k: rec[k] for k in SIGNALS if k in rec})
    return last


def run_distillation(data: str, out: str, *, teacher_layers: int = 4, teacher_epochs: int = 20,
                     n_teacher: int = 10000, students: list[str] | tuple[str, ...] = ("gpt1", "lstm"),
                     seqkd_epochs: int = 20, gad_rounds: int = 200, ebm_rounds: int = 10, candidates: int = 8,
                     temperatures: list[float] | tuple[float, ...] = (0.7, 0.85, 1.0, 1.15), n_samples: int = 1000,
                     n_proposal: int = 2000, seed: int = 0, device: str = "cpu", max_len: int = 32,
                     d_samples: int = 512, teacher_dim: int = 128) -> list[dict]:
    from llmgan.data import encode_corpus
    from llmgan.metrics.density_ratio import residual_nll, sequence_nll
    from llmgan.metrics.detection import _pad_to
    from llmgan.resample import RatioModel, resample_run
    from llmgan.run import load_run
    from llmgan.sweep import temperature_nll
    from llmgan.training.evaluation import sample_tokens

    os.makedirs(out, exist_ok=True)
    t_gen = {"name": "gpt", "kwargs": {"d_model": teacher_dim, "n_layers": teacher_layers, "n_heads": 4,
                                       "max_len": max_len + 8}}
    teacher_dir = _train(_cfg("teacher", data, None, t_gen, teacher_epochs, seed, device, max_len),
                         os.path.join(out, "teacher"))
    teacher = load_run(teacher_dir, device=device)
    train_txt, test_txt = os.path.join(out, "teacher_train.txt"), os.path.join(out, "teacher_test.txt")
    if not os.path.isfile(test_txt):
        rng = torch.Generator(device=teacher.generator.device).manual_seed(seed + 101)
        for path in (train_txt, test_txt):
            toks, _ = sample_tokens(teacher.generator, n_teacher, teacher.max_len, rng=rng)
            lines = [t if t.strip() else "." for t in _texts(teacher, toks)]  # an empty sample is still a line
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    gad = {"algorithm": "gad", "rounds": gad_rounds, "g_steps": 1, "g_batch_size": 64, "g_lr": 5e-4, "d_lr": 5e-4,
           "d_pretrain_steps": 10, "d_samples": d_samples, "d_steps": 1, "d_epochs": 1, "d_batch_size": 64,
           "eval_every": max(gad_rounds, 1), "checkpoint_every": max(gad_rounds, 1), "loss": "rsgan",
           "params": {"group_size": 8, "reward": "logodds", "d_loss": "bradley_terry", "kl_coef": 0.001}}
    ebm = {"algorithm": "residual_ebm", "rounds": ebm_rounds, "d_pretrain_steps": 5, "d_samples": d_samples,
           "d_steps": 1, "d_epochs": 3, "d_batch_size": 64, "d_lr": 1e-3, "loss": "vanilla",
           "eval_every": max(ebm_rounds, 1), "checkpoint_every": max(ebm_rounds, 1)}
    rows: list[dict] = []
    for sname in students:
        gen = STUDENTS[sname]
        sdir = os.path.join(out, sname)
        seqkd = _train(_cfg("seqkd", train_txt, test_txt, gen, seqkd_epochs, seed, device, max_len),
                       os.path.join(sdir, "seqkd"))
        arms = {"seqkd": (seqkd, f"{seqkd_epochs} MLE epochs on {n_teacher} teacher samples")}
        for arm, d_steps in (("seqkd+gad", 1), ("seqkd+gad_frozen_d", 0)):
            cfg = _cfg(arm, train_txt, test_txt, gen, 0, seed, device, max_len, {**gad, "d_steps": d_steps},
                       init_from=seqkd)
            arms[arm] = (_train(cfg, os.path.join(sdir, arm.replace("+", "_"))),
                         f"+ {gad_rounds} GAD steps x 64 samples" + ("" if d_steps else ", D frozen after warm-up"))
        edir = _train(_cfg("ebm", train_txt, test_txt, gen, 0, seed, device, max_len, ebm, init_from=seqkd),
                      os.path.join(sdir, "seqkd_ebm"))
        arms["seqkd+sir"] = (edir, f"G frozen; E: {ebm_rounds + 5} NCE refreshes x {d_samples}; "
                                   f"{candidates} samples + D passes per output")
        for arm, (rdir, compute) in arms.items():
            run = load_run(rdir, device=device)
            test = encode_corpus(open(test_txt, encoding="utf-8").read().splitlines(), run.tokenizer, run.max_len,
                                 overflow="truncate", source=test_txt)
            _log(f"scoring {sname} {arm}")
            signals = _last_signals(rdir) if "gad" in arm else {}
            ratio = None
            if arm == "seqkd+sir":
                ratio = RatioModel(run, "ebm")
                ratio.calibrate(n=200, seed=seed)
                pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
                tt, tl = _pad_to(test.tokens, run.max_len, pad), test.lengths.clamp(max=run.max_len)
                energy = -ratio.log_ratio(tt)
            for temp in temperatures:
                rng = torch.Generator(device=run.generator.device).manual_seed(seed)
                row = {"student": sname, "arm": arm, "temperature": temp, "compute": compute, **signals}
                if ratio is None:
                    toks, _ = sample_tokens(run.generator, n_samples, run.max_len, temperature=temp, rng=rng)
                    row.update(coverage_nll=temperature_nll(run.generator, test, temp), coverage_se=0.0)
                else:
                    toks = resample_run(run, n_samples, candidates=candidates, temperature=temp, ratio=ratio,
                                        rng=rng).tokens
                    prop, _ = sample_tokens(run.generator, n_proposal, run.max_len, temperature=temp,
                                            rng=torch.Generator(device=run.generator.device).manual_seed(seed + 1))
                    est = residual_nll(sequence_nll(run.generator, tt, tl, temperature=temp), energy,
                                       ratio.log_ratio(prop), n_tokens=tl)
                    row.update(coverage_nll=est["nll_per_token"], coverage_se=est["nll_per_token_se"])
                row["teacher_nll"] = teacher_nll(teacher, _texts(run, toks))
                rows.append(row)
    _log("done")
    return rows


COLUMNS = ["student", "arm", "temperature", "teacher_nll", "coverage_nll", "coverage_se", *SIGNALS, "compute"]


def markdown(rows: list[dict]) -> str:
    out = ["| student | arm | T | teacher NLL of samples (quality) | student NLL of held-out teacher samples "
           "(coverage, ± SE) | reward mean / std | D pair acc | KL | length | compute |", "|" + "---|" * 10]

    def f(v):
        return "" if v is None else f"{v:.3f}"

    for r in rows:
        out.append(f"| {r['student']} | {r['arm']} | {r['temperature']:g} | {f(r['teacher_nll'])} | "
                   f"{f(r['coverage_nll'])} ± {f(r['coverage_se'])} | {f(r.get('reward_mean'))} / "
                   f"{f(r.get('reward_std'))} | {f(r.get('d_pair_acc'))} | {f(r.get('kl'))} | "
                   f"{f(r.get('response_len'))} | {r['compute']} |")
    return "\n".join(out)


@torch.no_grad()
def separability(teacher, student, real: list[str], fake: list[str]) -> dict:
    """How well the exact log-ratio log p_teacher(x) - log p_student(x) separates teacher samples (``real``)
    from student samples (``fake``): its pair accuracy P(lr(real) > lr(fake)) (ties 1/2) -- the quantity
    GAD's ``d_pair_acc`` measures for the trained D, here with the true densities, i.e. the ceiling a
    D could reach -- and its mean on each side (nats per sequence). Each model reads the texts with its
    own tokenizer (a word unknown to the student's vocabulary is its UNK: a small bias in its favour)."""
    from llmgan.data import encode_corpus
    from llmgan.metrics.density_ratio import sequence_nll
    from llmgan.metrics.detection import _pad_to

    def nll(run, texts: list[str]) -> torch.Tensor:
        c = encode_corpus(texts, run.tokenizer, run.max_len, overflow="truncate", source="<separability>")
        pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
        return sequence_nll(run.generator, _pad_to(c.tokens, run.max_len, pad), c.lengths.clamp(max=run.max_len))

    real = [t if t.strip() else "." for t in real]
    fake = [t if t.strip() else "." for t in fake]
    lr_real = nll(student, real) - nll(teacher, real)
    lr_fake = nll(student, fake) - nll(teacher, fake)
    diff = lr_real[:, None] - lr_fake[None, :]
    acc = float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())
    return {"pair_acc": acc, "lr_real": float(lr_real.mean()), "lr_fake": float(lr_fake.mean()),
            "n_real": len(real), "n_fake": len(fake)}


def probe(out: str, students: list[str] | tuple[str, ...], n: int = 1000, seed: int = 0, device: str = "cpu"
          ) -> list[dict]:
    """:func:`separability` of each student's SeqKD model (samples at T = 1) against ``n`` held-out teacher
    samples: what a perfect D would score where GAD's D starts."""
    from llmgan.run import load_run
    from llmgan.training.evaluation import sample_tokens

    teacher = load_run(os.path.join(out, "teacher"), device=device)
    real = open(os.path.join(out, "teacher_test.txt"), encoding="utf-8").read().splitlines()[:n]
    rows = []
    for sname in students:
        run = load_run(os.path.join(out, sname, "seqkd"), device=device)
        toks, _ = sample_tokens(run.generator, n, run.max_len,
                                rng=torch.Generator(device=run.generator.device).manual_seed(seed + 7))
        rows.append({"student": sname, **separability(teacher, run, real, _texts(run, toks))})
    return rows


def probe_markdown(rows: list[dict]) -> str:
    out = ["| student (SeqKD model, T = 1) | pair accuracy of the exact log-ratio | mean log p_T - log p_S on teacher "
           "samples / on student samples (nats per sequence) | samples |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['student']} | {r['pair_acc']:.3f} | {r['lr_real']:+.2f} / {r['lr_fake']:+.2f} | "
                   f"{r['n_real']} + {r['n_fake']} |")
    return "\n".join(out)


TRACE = ("reward_mean", "reward_std", "d_pair_acc", "d_acc_real", "d_acc_fake", "kl", "response_len", "distinct_2")


def signal_trace(out: str, students: list[str] | tuple[str, ...], points: int = 5) -> list[dict]:
    """GAD's training signals over its rounds, per student and GAD arm: the warm-up's last D record
    (round 0) and ``points`` rounds spread from the first to the last (from each run's metrics.jsonl)."""
    rows = []
    for sname in students:
        for arm in ("seqkd+gad", "seqkd+gad_frozen_d"):
            path = os.path.join(out, sname, arm.replace("+", "_"), "metrics.jsonl")
            if not os.path.isfile(path):
                continue
            recs = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
            warm = [r for r in recs if r.get("phase") == "d_pretrain"]
            adv = [r for r in recs if r.get("phase") == "adversarial"]
            picked = [] if not adv else sorted({round(i * (len(adv) - 1) / max(points - 1, 1)) for i in range(points)})
            for rnd, rec in ([(0, warm[-1])] if warm else []) + [(adv[i].get("round", i + 1), adv[i]) for i in picked]:
                rows.append({"student": sname, "arm": arm, "round": rnd, **{k: rec.get(k) for k in TRACE}})
    return rows


def trace_markdown(rows: list[dict]) -> str:
    out = ["| student | arm | round | reward mean / std | D pair acc | D acc real / generated | KL | length | "
           "distinct-2 |", "|" + "---|" * 9]

    def f(v):
        return "" if v is None else f"{v:.3f}"

    for r in rows:
        out.append(f"| {r['student']} | {r['arm']} | {r['round']}{' (D warm-up end)' if r['round'] == 0 else ''} | "
                   f"{f(r['reward_mean'])} / {f(r['reward_std'])} | {f(r['d_pair_acc'])} | {f(r['d_acc_real'])} / "
                   f"{f(r['d_acc_fake'])} | {f(r['kl'])} | {f(r['response_len'])} | {f(r['distinct_2'])} |")
    return "\n".join(out)


def read_rows(path: str) -> list[dict]:
    """The rows of an earlier run's ``distill.csv``, numbers as numbers (empty cells as None)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (v if k in ("student", "arm", "compute") else (None if v == "" else float(v)))
                 for k, v in r.items()} for r in csv.DictReader(f)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA)
    p.add_argument("--data-lines", type=int, default=0, help="only the first N lines of --data (0: all)")
    p.add_argument("--teacher-layers", type=int, default=4)
    p.add_argument("--teacher-dim", type=int, default=128)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--n-teacher", type=int, default=10000)
    p.add_argument("--students", default="gpt1,lstm")
    p.add_argument("--seqkd-epochs", type=int, default=20)
    p.add_argument("--gad-rounds", type=int, default=200)
    p.add_argument("--ebm-rounds", type=int, default=10)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--temperatures", default="0.7,0.85,1.0,1.15")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--n-proposal", type=int, default=2000)
    p.add_argument("--d-samples", type=int, default=512)
    p.add_argument("--max-len", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "distill"))
    p.add_argument("--write", action="store_true")
    p.add_argument("--report", action="store_true", help="no training: the table of OUT/distill.csv and the "
                   "signal trace of OUT's GAD runs (with --write: the section, --note saying which run it was)")
    p.add_argument("--probe", type=int, default=0, help="with --report: the separability of teacher and SeqKD "
                   "samples by the exact log-ratio, on N samples each (what a perfect D would reach)")
    p.add_argument("--note", default="", help="text for the section (the run's command and wall, the reading)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.report:
        if not os.path.isfile(os.path.join(a.out, "distill.csv")):
            sys.exit(f"distill --report: {os.path.join(a.out, 'distill.csv')} not found (run without --report first)")
        rows = read_rows(os.path.join(a.out, "distill.csv"))
        sep: list[dict] = []
        if a.probe:  # kept in OUT: re-rendering the section with a new note does not redo it
            cache = os.path.join(a.out, f"probe_{a.probe}_s{a.seed}.json")
            if os.path.isfile(cache):
                sep = json.load(open(cache, encoding="utf-8"))
            else:
                sep = probe(a.out, a.students.split(","), a.probe, a.seed, a.device)
                with open(cache, "w", encoding="utf-8") as f:
                    json.dump(sep, f, indent=1)
        body = _section(rows, signal_trace(a.out, a.students.split(",")), a.note, sep)
        print(body)
        if a.write:
            from _doc import update_section

            update_section("distill", body)
        return
    if not os.path.isfile(a.data):
        print(f"distill: {a.data} not found (see ../shared/data/SOURCES.md); nothing run")
        return
    t0 = time.perf_counter()
    data = a.data
    if a.data_lines > 0:
        os.makedirs(a.out, exist_ok=True)
        data = os.path.join(a.out, "data.txt")
        with open(a.data, encoding="utf-8") as f:
            lines = f.read().splitlines()[: a.data_lines]
        with open(data, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    rows = run_distillation(data, a.out, teacher_layers=a.teacher_layers, teacher_epochs=a.teacher_epochs,
                            n_teacher=a.n_teacher, students=a.students.split(","), seqkd_epochs=a.seqkd_epochs,
                            gad_rounds=a.gad_rounds, ebm_rounds=a.ebm_rounds, candidates=a.candidates,
                            temperatures=[float(x) for x in a.temperatures.split(",")], n_samples=a.n_samples,
                            seed=a.seed, device=a.device, n_proposal=a.n_proposal, d_samples=a.d_samples,
                            max_len=a.max_len, teacher_dim=a.teacher_dim)
    with open(os.path.join(a.out, "distill.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    from _doc import command, machine

    note = (f"Command: `{command()}`; machine: {machine()}, **machine shared** with other "
            f"jobs; {(time.perf_counter() - t0) / 60:.1f} min in all." + (f"\n\n{a.note}" if a.note else ""))
    body = _section(rows, signal_trace(a.out, a.students.split(",")), note)
    print(body)
    if a.write:
        from _doc import update_section

        update_section("distill", body)


def _section(rows: list[dict], trace: list[dict], note: str, sep: list[dict] | None = None) -> str:
    return ("## GAD distillation: teacher -> small students\n\n" + (note + "\n\n" if note else "")
            + markdown(rows) + "\n\nGAD's training signals over its rounds (from each run's metrics.jsonl; "
            "round 0 = the D warm-up's last refresh; the frozen-D arm logs no D accuracy after it):\n\n"
            + trace_markdown(trace)
            + ("\n\nHow separable GAD's two sides are with the true densities (`--probe`): the exact log-ratio "
               "of teacher and SeqKD student as a discriminator, scored like `d_pair_acc`:\n\n"
               + probe_markdown(sep) if sep else ""))


if __name__ == "__main__":
    main()
