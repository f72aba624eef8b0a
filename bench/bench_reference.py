"""Side by side with the reference implementation (VICO-UoE/DatasetCondensation), same machine, same torch,
same thread count, alternating the two programs (issue 18):

    git clone https://github.com/VICO-UoE/DatasetCondensation /tmp/dc_ref     # the user's own checkout
    python bench/bench_reference.py --reference /tmp/dc_ref --threads 2 --rounds 2 \
        [--cases dm1 dm10 dsa1 dc1 eval1] [--iterations 5 dsa1=2 dc1=2] [--eval-epochs 1000] [--json out.json]

The reference is never vendored: at run time its checkout is copied to a fresh temporary folder and only
the compatibility edits listed in EDITS below are applied there, each a named, exact text substitution
with its reason, that fails loudly when its pattern is not found the expected number of times (a
different version of the reference: read the edit and adapt it, do not loosen it). The reference reads
Fashion-MNIST through torchvision (`datasets.FashionMNIST(data_path, download=True)`, which looks for
`DATA/FashionMNIST/raw/<name>` uncompressed); the harness lays those four files out in the temporary
folder from the Debian package's idx .gz files (--fashion-root), so nothing is downloaded.

Cases (per iteration at equal work: 256 real images per class, ConvNet-3 width 128 with instance norm,
DSA strategy color_crop_cutout_flip_scale_rotate where the method augments, fresh random network each
iteration, initialised from real images):
  dm1, dm10  reference main_DM.py --ipc K        ours: distill --method pixel --objective dm --ipc K
  dsa1       reference main.py --method DSA      ours: --objective dsa (1 update, no inner training at IPC 1)
  dc1        reference main.py --method DC       ours: --objective dc
  eval1      one network trained --eval-epochs epochs on an IPC 1 set plus its test pass: the reference's
             evaluate_synset (main_DM.py's evaluation at iteration 0) vs ours `evaluate --protocol dc
             --repeats 1` (lr 0.01 x0.1 at half, momentum 0.9, wd 5e-4, batch 256, DSA: the same recipe)

`--ours-precision bf16` runs our distillation with `--precision bf16` (the real side under bf16 autocast;
the reference has float32 only, so the images and steps are equal work, the arithmetic is not);
`--ours-compile` adds `--compile` to our DM cases (the first iteration, which compiles, is the warm-up).
Ours runs without the CAM distance and previews (`--no-distance --preview-every` large): the reference
measures nothing between iterations either. Each program runs `--iterations` + 1 iterations; the first
(warm-up, and for ours the space's set-up) is dropped on both sides. The reference's per-iteration time
comes from the injected timer (around its "Train synthetic data" block), ours from events.jsonl's
cumulative `elapsed_s` per step (run.json's `elapsed_s / steps_done` as a fallback). Within a round the
order alternates (reference first in even rounds, ours first in odd ones) so drifting load hits both.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ITER_TAG = "BENCH_REF_ITER"
EVAL_TAG = "BENCH_REF_EVAL"


# ----------------------------------------------------------------------------- compatibility edits
@dataclass(frozen=True)
class Edit:
    """Replace `old` by `new` in `file`, which must hold `old` exactly `count` times. `{nl}` in either
    stands for the file's own line ending (the reference's files are CRLF)."""
    name: str
    file: str
    old: str
    new: str
    count: int
    reason: str


class EditError(RuntimeError):
    """A compatibility edit's pattern is not in the reference checkout as expected."""


_SIAMESE = ("torch 2.14 refuses an in-place copy whose source overlaps its destination "
            "(`x[:] = x[0]`: 'some elements of the input tensor and the written-to tensor refer to a single "
            "memory location'); cloning the first row first gives the same values")
_VIEW = ("DiffAugment's crop returns a permuted (channels-last) tensor that `.contiguous()` leaves as it is "
         "for 1-channel images, so the convolutions' outputs are channels-last and `.view(n, -1)` raises "
         "'view size is not compatible with input tensor's size and stride'; `.reshape` gives the same "
         "values (copying where needed), only ConvNet's two flattenings are touched")
_TIMER = ("per-iteration timer: wall time of one training iteration (fresh network, matching loss over all "
          "classes, update), printed as a tagged line the harness parses; no other code changes")
_EVAL_TIMER = ("evaluation timer: wall time of one evaluate_synset call (training for epoch_eval_train "
               "epochs and the test pass), printed as a tagged line")

EDITS: tuple[Edit, ...] = (
    *(Edit(f"siamese-clone:{var}", "utils.py", f"{var}[:] = {var}[0]{{nl}}", f"{var}[:] = {var}[0].clone(){{nl}}",
           n, _SIAMESE)
      for var, n in (("theta", 2), ("randf", 1), ("randb", 1), ("rands", 1), ("randc", 1),
                     ("translation_x", 1), ("translation_y", 1), ("offset_x", 1), ("offset_y", 1))),
    Edit("convnet-reshape", "networks.py",
         "        out = self.features(x){nl}        out = out.view(out.size(0), -1){nl}",
         "        out = self.features(x){nl}        out = out.reshape(out.size(0), -1){nl}", 2, _VIEW),
    *(Edit(f"iteration-timer-start:{f}", f, "{nl}            ''' Train synthetic data '''{nl}",
           "{nl}            _bench_t0 = time.perf_counter()  # bench_reference timer"
           "{nl}            ''' Train synthetic data '''{nl}", 1, _TIMER)
      for f in ("main.py", "main_DM.py")),
    *(Edit(f"iteration-timer-end:{f}", f, f"            {line}{{nl}}",
           f"            {line}{{nl}}            print('{ITER_TAG} %d %.6f' % (it, time.perf_counter() - _bench_t0), "
           "flush=True)  # bench_reference timer{nl}", 1, _TIMER)
      for f, line in (("main.py", "loss_avg /= (num_classes*args.outer_loop)"),
                      ("main_DM.py", "loss_avg /= (num_classes)"))),
    Edit("evaluation-timer:main_DM.py", "main_DM.py",
         "                        _, acc_train, acc_test = evaluate_synset(it_eval, net_eval, image_syn_eval, "
         "label_syn_eval, testloader, args){nl}",
         "                        _bench_e0 = time.perf_counter()  # bench_reference timer{nl}"
         "                        _, acc_train, acc_test = evaluate_synset(it_eval, net_eval, image_syn_eval, "
         "label_syn_eval, testloader, args){nl}"
         f"                        print('{EVAL_TAG} %.6f' % (time.perf_counter() - _bench_e0), flush=True)"
         "  # bench_reference timer{nl}", 1, _EVAL_TIMER),
)


def apply_edits(tree: Path, edits=EDITS) -> list[str]:
    """Apply `edits` to the copy in `tree`; raises EditError (naming the edit, its file and the pattern)
    unless every pattern occurs exactly as often as the edit expects. Returns one line per edit."""
    done = []
    texts: dict[str, tuple[str, str]] = {}
    for e in edits:
        path = tree / e.file
        if e.file not in texts:
            if not path.is_file():
                raise EditError(f"edit {e.name}: {e.file} is not in the reference checkout {tree}")
            with open(path, encoding="utf-8", newline="") as fh:
                text = fh.read()
            texts[e.file] = (text, "\r\n" if "\r\n" in text else "\n")
        text, nl = texts[e.file]
        old, new = e.old.replace("{nl}", nl), e.new.replace("{nl}", nl)
        found = text.count(old)
        if found != e.count:
            raise EditError(f"edit {e.name}: expected {e.count} occurrence(s) of {old!r} in {e.file}, found {found}; "
                            f"this checkout differs from the reference version the edit was written for. "
                            f"Reason for the edit: {e.reason}")
        texts[e.file] = (text.replace(old, new), nl)
        done.append(f"{e.name} ({e.file}, {e.count}x)")
    for name, (text, _) in texts.items():
        with open(tree / name, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return done


def prepare_reference(reference: Path, dest: Path) -> list[str]:
    """Copy the user's checkout (its top-level Python files and what they import) to `dest` and edit there."""
    if not (reference / "main_DM.py").is_file() or not (reference / "utils.py").is_file():
        raise SystemExit(f"{reference} does not look like a DatasetCondensation checkout (no main_DM.py / utils.py)")
    shutil.copytree(reference, dest, ignore=shutil.ignore_patterns(".git", "docs", "data", "result"))
    return apply_edits(dest)


def fashion_folder(fashion_root: Path, data: Path) -> Path:
    """torchvision's layout, DATA/FashionMNIST/raw/<uncompressed idx>, from the Debian package's files."""
    raw = data / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_FILES:
        plain, packed = fashion_root / name, fashion_root / f"{name}.gz"
        if plain.is_file():
            os.symlink(plain, raw / name)
        elif packed.is_file():
            with gzip.open(packed, "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            raise SystemExit(f"{fashion_root} has neither {name} nor {name}.gz (apt-get install dataset-fashion-mnist)")
    return data


def reference_identity(reference: Path) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(reference), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        return f"git {commit}"
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    h = hashlib.sha256()
    for p in sorted(reference.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return f"sha256 of its *.py files {h.hexdigest()[:16]}"


# ----------------------------------------------------------------------------- the two programs
@dataclass(frozen=True)
class Case:
    key: str
    label: str
    ref_script: str
    ref_args: tuple[str, ...]
    ours_objective: str | None   # None: the evaluation case
    ipc: int


CASES = {
    "dm1": Case("dm1", "DM IPC 1, per iteration", "main_DM.py", (), "dm", 1),
    "dm10": Case("dm10", "DM IPC 10, per iteration", "main_DM.py", (), "dm", 10),
    "dsa1": Case("dsa1", "DSA IPC 1, per iteration", "main.py", ("--method", "DSA", "--dsa_strategy", DSA_STRATEGY), "dsa", 1),
    "dc1": Case("dc1", "DC IPC 1, per iteration", "main.py", ("--method", "DC"), "dc", 1),
    "eval1": Case("eval1", "evaluation, IPC 1, one network (training + test pass)", "main_DM.py", (), None, 1),
}


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    return env


def run_logged(cmd: list[str], cwd: Path, threads: int, log) -> tuple[str, dict]:
    """Run `cmd`; returns (its output, {process wall s, user and system CPU-s of the whole process, load
    average before and after}). Raises if it fails."""
    load0 = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=thread_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load1 = os.getloadavg()[0]
    out = proc.stdout + proc.stderr
    info = {"process_wall_s": wall, "process_user_s": r1.ru_utime - r0.ru_utime,
            "process_sys_s": r1.ru_stime - r0.ru_stime, "load_before": load0, "load_after": load1}
    log(f"$ (cd {cwd} && {' '.join(cmd)})  # rc {proc.returncode}, {wall:.1f} s wall, "
        f"{info['process_user_s']:.1f} s user + {info['process_sys_s']:.1f} s system CPU (whole process), "
        f"load {load0:.2f} -> {load1:.2f}")
    if proc.returncode != 0:
        log(out[-4000:])
        raise RuntimeError(f"command failed with exit status {proc.returncode}: {' '.join(cmd)}")
    return out, info


def reference_command(case: Case, threads: int, iterations: int, eval_epochs: int, data: Path, save: Path) -> list[str]:
    # torch's intra-op threads set before the script runs, without editing it (OMP_NUM_THREADS is set too).
    launcher = (f"import sys, runpy, torch; torch.set_num_threads({threads}); sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    evaluating = case.ours_objective is None
    args = ["--dataset", "FashionMNIST", "--model", "ConvNet", "--ipc", str(case.ipc), "--num_exp", "1",
            "--init", "real", "--batch_real", "256", "--data_path", str(data), "--save_path", str(save),
            *case.ref_args]
    if evaluating:  # main_DM.py evaluates at iteration 0: one network, eval_epochs epochs, then one DM iteration
        args += ["--Iteration", "0", "--num_eval", "1", "--epoch_eval_train", str(eval_epochs), "--eval_mode", "SS"]
    else:  # num_eval 0: the evaluation at iteration 0 trains no network
        args += ["--Iteration", str(iterations), "--num_eval", "0"]
    return [sys.executable, "-c", launcher, case.ref_script, *args]


def parse_reference(out: str, evaluating: bool) -> dict:
    if evaluating:
        found = re.findall(rf"^{EVAL_TAG} ([0-9.]+)", out, re.M)
        if len(found) != 1:
            raise RuntimeError(f"expected one {EVAL_TAG} line in the reference's output, found {len(found)}")
        train = re.search(r"train time = (\d+) s", out)
        acc = re.search(r"test acc = ([0-9.]+)", out)
        return {"value": float(found[0]), "train_s_int": int(train.group(1)) if train else None,
                "test_acc": float(acc.group(1)) if acc else None}
    iters = [(int(i), float(s)) for i, s in re.findall(rf"^{ITER_TAG} (\d+) ([0-9.]+)", out, re.M)]
    if len(iters) < 2:
        raise RuntimeError(f"expected at least 2 {ITER_TAG} lines in the reference's output, found {len(iters)}")
    per = [s for i, s in iters[1:]]  # iteration 0 is the warm-up
    return {"value": statistics.median(per), "per_iteration": per, "first": iters[0][1]}


def ours_distill_command(objective: str, ipc: int, steps: int, threads: int, out: Path,
                         precision: str = "fp32", compile_dm: bool = False) -> list[str]:
    compiled = ["--compile"] if compile_dm and objective == "dm" else []
    return [sys.executable, "-m", "engine", "distill", "--method", "pixel", "--objective", objective,
            "--precision", precision, *compiled,
            "--ipc", str(ipc), "--iterations", str(steps), "--init", "real", "--batch-real", "256",
            "--net", "convnet", "--no-distance", "--preview-every", "1000000", "--dataset", "fashion-mnist",
            "--device", "cpu", "--threads", str(threads), "--seed", "0", "--out", str(out)]


def parse_ours_steps(run_dir: Path) -> dict:
    cumulative = []
    log = run_dir / "events.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            e = json.loads(line)
            if e.get("kind") == "step" and e.get("elapsed_s") is not None:
                cumulative.append(float(e["elapsed_s"]))
    if len(cumulative) >= 2:
        steps = [b - a for a, b in zip([0.0] + cumulative, cumulative)]
        return {"value": statistics.median(steps[1:]), "per_iteration": steps[1:], "first": steps[0],
                "source": "events.jsonl"}
    summary = json.loads((run_dir / "run.json").read_text())  # fallback: includes the first step's set-up
    return {"value": summary["elapsed_s"] / summary["steps_done"], "per_iteration": [], "first": None,
            "source": "run.json elapsed_s / steps_done"}


def ours_eval_command(run_dir: Path, threads: int, eval_epochs: int, precision: str = "fp32") -> list[str]:
    """`precision`: our evaluation's training and test passes (`--train-precision`, `--test-precision`)."""
    return [sys.executable, "-m", "engine", "evaluate", str(run_dir), "--model", "convnet", "--repeats", "1",
            "--protocol", "dc", "--epochs", str(eval_epochs), "--device", "cpu",
            "--threads", str(threads), "--train-precision", precision, "--test-precision", precision]


def parse_ours_eval(run_dir: Path) -> dict:
    result = json.loads((run_dir / "eval.json").read_text())["models"]["convnet"]
    return {"value": float(result["wall_s"]), "test_s": result.get("test_s"), "test_acc": result["accuracies"][0]}


# ----------------------------------------------------------------------------- one case, one program
def run_reference(case: Case, ref_tree: Path, data: Path, work: Path, args, log) -> dict:
    save = Path(tempfile.mkdtemp(prefix="ref-save-", dir=work))
    cmd = reference_command(case, args.threads, args.iterations[case.key], args.eval_epochs, data, save)
    out, info = run_logged(cmd, ref_tree, args.threads, log)
    shutil.rmtree(save, ignore_errors=True)
    return parse_reference(out, case.ours_objective is None) | info


def run_ours(case: Case, eval_set: Path | None, work: Path, args, log) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="ours-", dir=work)) / "run"
    if case.ours_objective is None:
        shutil.copytree(eval_set, folder)  # a fresh copy: eval.json would otherwise resume the finished model
        _, info = run_logged(ours_eval_command(folder, args.threads, args.eval_epochs, args.ours_eval_precision), ROOT, args.threads, log)
        result = parse_ours_eval(folder)
    else:
        cmd = ours_distill_command(case.ours_objective, case.ipc, args.iterations[case.key] + 1, args.threads, folder,
                                   args.ours_precision, args.ours_compile)
        _, info = run_logged(cmd, ROOT, args.threads, log)
        result = parse_ours_steps(folder)
    shutil.rmtree(folder.parent, ignore_errors=True)
    return result | info


def make_eval_set(work: Path, threads: int, log) -> Path:
    """An IPC 1 set (one DM iteration from real images) for our evaluation case; not timed."""
    folder = work / "eval-set"
    run_logged(ours_distill_command("dm", 1, 1, threads, folder), ROOT, threads, log)
    for name in ("eval.json", "eval.partial.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


# ----------------------------------------------------------------------------- report
def summarise(key: str, runs: dict, args) -> dict:
    case = CASES[key]
    med = {side: statistics.median(r["value"] for r in runs[side]) for side in ("reference", "ours")}
    loads = [r[k] for side in runs.values() for r in side for k in ("load_before", "load_after")]
    return {"case": key, "label": case.label, "unit": "s per run" if case.ours_objective is None else "s per iteration",
            "reference_median_s": med["reference"], "ours_median_s": med["ours"],
            "ratio_reference_over_ours": med["reference"] / med["ours"],
            "reference_per_round_s": [r["value"] for r in runs["reference"]],
            "ours_per_round_s": [r["value"] for r in runs["ours"]],
            "load_before": [round(r["load_before"], 2) for side in runs.values() for r in side],
            "load_after": [round(r["load_after"], 2) for side in runs.values() for r in side],
            "load_min": min(loads), "load_max": max(loads),
            "threads": args.threads, "rounds": len(runs["ours"]),
            "iterations_timed": None if case.ours_objective is None else args.iterations[key],
            "eval_epochs": args.eval_epochs if case.ours_objective is None else None,
            "runs": runs}


def table(rows: list[dict]) -> list[str]:
    lines = ["| case | reference (median) | ours (median) | ratio reference / ours | per round: reference; ours | "
             "threads | rounds | load 1 min, before -> after each program |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "s" if r["iterations_timed"] is None else "s/it"
        per = (", ".join(f"{v:.2f}" for v in r["reference_per_round_s"]) + "; "
               + ", ".join(f"{v:.2f}" for v in r["ours_per_round_s"]))
        load = ", ".join(f"{a:.1f}->{b:.1f}" for a, b in zip(r["load_before"], r["load_after"]))
        lines.append(f"| {r['label']} | {r['reference_median_s']:.2f} {unit} | {r['ours_median_s']:.2f} {unit} | "
                     f"**{r['ratio_reference_over_ours']:.2f}x** | {per} | {r['threads']} | {r['rounds']} | {load} |")
    return lines


def parse_iterations(items: list[str]) -> dict[str, int]:
    """["4", "dsa1=2"] -> {every case: 4, but dsa1: 2}."""
    default, per = 5, {}
    for item in items:
        key, _, value = item.rpartition("=")
        if key and key not in CASES:
            raise ValueError(f"--iterations: unknown case {key!r}; choose among {', '.join(CASES)}")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"--iterations: {item!r} is not a positive count")
        if key:
            per[key] = int(value)
        else:
            default = int(value)
    return {k: per.get(k, default) for k in CASES}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True,
                   help="your checkout of VICO-UoE/DatasetCondensation (copied to a temporary folder, edited there)")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iterations", nargs="+", default=["5"], metavar="N|CASE=N",
                   help="timed iterations per program (+1 warm-up dropped): N for every case, CASE=N for one "
                        "(e.g. 4 dsa1=2 dc1=2)")
    p.add_argument("--eval-epochs", type=int, default=1000)
    p.add_argument("--ours-precision", choices=("fp32", "bf16"), default="fp32",
                   help="our distillation's --precision (the reference has only float32: bf16 is not equal work "
                        "in arithmetic, only in images and steps)")
    p.add_argument("--ours-eval-precision", choices=("fp32", "bf16"), default="fp32",
                   help="our eval1 case's training and test passes (evaluate --train-precision/--test-precision; "
                        "ConvNet-3 kept its accuracy under both, BENCHMARKS.md); the reference's are float32")
    p.add_argument("--ours-compile", action="store_true",
                   help="our DM cases with --compile (the first, compiling iteration is the dropped warm-up)")
    p.add_argument("--fashion-root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = p.parse_args()
    try:
        args.iterations = parse_iterations(args.iterations)
    except ValueError as exc:
        p.error(str(exc))
    if args.rounds < 1 or args.threads < 1 or args.eval_epochs < 1:
        p.error("--rounds, --threads and --eval-epochs must be at least 1")

    def log(line: str) -> None:
        print(line, flush=True)

    # kill PID (SIGTERM) still removes the temporary folder: the finally below runs on SystemExit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bench-reference-"))
    try:
        ref_tree = work / "reference"
        edits = prepare_reference(args.reference.resolve(), ref_tree)
        data = fashion_folder(args.fashion_root, work / "data")
        import torch  # only for the header: the programs run in their own processes
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True).stdout.strip()
        header = {"reference": str(args.reference), "reference_version": reference_identity(args.reference),
                  "edits": edits, "torch": torch.__version__, "python": sys.version.split()[0],
                  "ours": f"H-PD Studio {commit}", "threads": args.threads, "rounds": args.rounds,
                  "iterations": args.iterations, "eval_epochs": args.eval_epochs,
                  "ours_precision": args.ours_precision, "ours_eval_precision": args.ours_eval_precision,
                  "ours_compile": args.ours_compile, "cases": args.cases,
                  "cpu_count": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "load_at_start": os.getloadavg()}
        log(json.dumps(header, indent=1))
        eval_set = make_eval_set(work, args.threads, log) if "eval1" in args.cases else None
        runs = {key: {"reference": [], "ours": []} for key in args.cases}
        for rnd in range(args.rounds):
            for key in args.cases:
                case = CASES[key]
                order = ("reference", "ours") if rnd % 2 == 0 else ("ours", "reference")
                for side in order:
                    r = (run_reference(case, ref_tree, data, work, args, log) if side == "reference"
                         else run_ours(case, eval_set, work, args, log))
                    runs[key][side].append(r)
                    log(f"round {rnd + 1} {key} {side}: {r['value']:.3f} s "
                        f"{'(per iteration: ' + ', '.join(f'{v:.2f}' for v in r.get('per_iteration', [])) + ')' if r.get('per_iteration') else ''}"
                        f" load {r['load_before']:.2f} -> {r['load_after']:.2f}")
        rows = [summarise(key, runs[key], args) for key in args.cases]
        log("")
        for line in table(rows):
            log(line)
        if args.json:
            args.json.write_text(json.dumps({"header": header, "cases": rows,
                                             "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
            log(f"wrote {args.json}")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
