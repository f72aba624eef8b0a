"""Evaluating a run's exported set from the page: the engine's suite (engine/suite.py), queued for the
device like a run, in a child process of its own (as runs are, engine/run/remote.py: its training never
competes with the server's handlers for the GIL, and a crash or an out-of-memory kill of it fails this
evaluation, not the server); its progress and result are an immutable EvalStatus.

The result is the folder's eval.json, so a reopened folder shows it again, and an evaluation of an earlier
export (a different synthetic.pt) is reported as stale rather than shown as this set's.
"""
from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from engine.classifiers.assets import file_sha256
from engine.evaluate import get_protocol
from engine.nets import list_networks
from engine.suite import EVAL_FILE, SuiteSpec, evaluate_run, resolve_models

from .errors import log

JOIN_S = 10.0  # how long a child that has answered gets to exit


@dataclass(frozen=True)
class EvalSettings:
    """The page's suite (launch.py's --eval-* flags): every network that takes the dataset's resolution
    (or `models`), the engine's default protocol at 300 epochs (RESULTS.md's budget; the protocol's own
    1000 take ~3x longer), two networks per model, so a verdict has a spread to weigh a difference against
    (`python -m engine evaluate` trains five; `compare` over seeds is what a claim needs)."""
    models: tuple[str, ...] = ()     # empty: all that take the resolution
    repeats: int = 2
    protocol: str = "glad"
    epochs: int | None = 300         # None: the protocol's

    def __post_init__(self):
        unknown = [m for m in self.models if m not in list_networks()]
        if unknown:
            raise ValueError(f"unknown evaluation model {unknown[0]!r}; choose among: {', '.join(list_networks())}")
        get_protocol(self.protocol, self.epochs)  # an unknown protocol is refused here, not at the first Evaluate

    def suite(self, resolution: int) -> SuiteSpec:
        return SuiteSpec(resolve_models(list(self.models), resolution), get_protocol(self.protocol, self.epochs),
                         self.repeats)


@dataclass(frozen=True)
class EvalStatus:
    state: str                    # queued | running | done | failed
    done: int = 0                 # network epochs trained so far
    total: int = 0
    result: dict | None = None    # eval.json's content, once done
    message: str = ""


def read_result(folder: Path) -> EvalStatus | None:
    """The evaluation in `folder`'s eval.json, if it is of the synthetic.pt there now."""
    folder = Path(folder)
    try:
        result = json.loads((folder / EVAL_FILE).read_text())
        current = file_sha256(folder / "synthetic.pt")
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(result, dict) or result.get("key", {}).get("synthetic_sha256") != current:
        return None
    return EvalStatus("done", result=result)


class EvalJob:
    """One exported set's evaluation; `launch` is called by the device queue when the device is free."""

    def __init__(self, folder: Path, device: str, spec: SuiteSpec, queue, data_root: str | None = None,
                 threads: int | None = None):
        """`threads`: the child's torch threads (default: this process's)."""
        self.folder, self.device, self.spec = Path(folder), device, spec
        self._queue, self._data_root, self._threads = queue, data_root, threads
        self._status = EvalStatus("queued")
        self._lock = threading.Lock()
        self._process = None

    @property
    def status(self) -> EvalStatus:
        return self._status

    def _set(self, **changes) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def launch(self) -> None:
        self._set(state="running")
        threading.Thread(target=self._work, name=f"eval:{self.folder.name}", daemon=True).start()

    def stop(self) -> None:
        """End the child (the server is closing); eval.partial.json keeps every finished model."""
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()

    def _work(self) -> None:
        """Start the child and follow it until it answers or dies; the device is released either way."""
        import torch

        from engine.run.remote import context

        try:
            ctx = context()
            ours, theirs = ctx.Pipe(duplex=False)
            self._process = ctx.Process(target=_evaluate_in_child, name=f"eval:{self.folder.name}", daemon=True,
                                        args=(str(self.folder), self.spec, self.device, self._data_root,
                                              self._threads or torch.get_num_threads(), theirs))
            self._process.start()
            theirs.close()
            self._follow(ours)
        except Exception as exc:  # noqa: BLE001 - no forkserver, no memory for a fork: one sentence
            log.exception("evaluation of %s could not run", self.folder)
            self._set(state="failed", message=f"the evaluation's process could not start ({exc})")
        finally:
            self._queue.release(self)

    def _follow(self, conn) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "progress":
                self._set(done=message[1], total=message[2])
            elif message[0] == "done":
                self._set(state="done", result=message[1], done=self._status.total)
                break
            else:  # ("failed", sentence, traceback)
                log.error("evaluation of %s failed:\n%s", self.folder, message[2])
                self._set(state="failed", message=message[1])
                break
        conn.close()
        self._process.join(JOIN_S)
        if self._process.is_alive():  # answered but not exiting: it has nothing left to do
            self._process.terminate()
            self._process.join(JOIN_S)
        if self._status.state == "running":  # the child died without a word: killed, out of memory, a crash
            self._set(state="failed", message=f"the evaluation's process ended unexpectedly (exit code "
                                              f"{self._process.exitcode}); press Evaluate to resume it from its "
                                              "last finished model")


def _evaluate_in_child(folder: str, spec: SuiteSpec, device: str, data_root: str | None, threads: int, conn) -> None:
    """The child: the suite, its progress and its end sent up the pipe. A parent gone makes the next send
    fail, which ends the evaluation (the partial file keeps what was finished)."""
    import torch

    from engine.runtime import tune_allocator

    tune_allocator()
    torch.set_num_threads(threads)

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "suite":
            conn.send(("progress", done, total))

    try:
        conn.send(("done", evaluate_run(folder, spec, device=device, data_root=data_root, progress=progress)))
    except (BrokenPipeError, EOFError):
        pass
    except Exception as exc:  # noqa: BLE001 - the page shows one sentence; the server's log has the rest
        conn.send(("failed", str(exc).split("\n")[0], traceback.format_exc()))
    finally:
        conn.close()


def verdict(a: dict, b: dict, label_a: str, label_b: str) -> str:
    """One line on which set did better across architectures, honest about what one seed can say: the
    difference of the cross-arch means against twice its standard error over the networks trained."""
    ma, mb = a.get("cross_arch_mean"), b.get("cross_arch_mean")
    models = [m for m in a.get("cross_arch_models", []) if m in b.get("models", {})]
    if ma is None or mb is None or not models:
        return "No cross-architecture mean to compare (each run needs a model besides its backbone)."
    diff = 100 * (ma - mb)
    var = 0.0
    for m in models:
        for side in (a, b):
            r = side["models"][m]
            var += (100 * r["std"]) ** 2 / max(1, len(r["accuracies"]))
    se = var ** 0.5 / len(models)
    leader, trailer = (label_a, label_b) if diff > 0 else (label_b, label_a)
    basis = f"cross-architecture mean over {', '.join(models)}; ±{2 * se:.1f} is twice its standard error"
    if abs(diff) <= 2 * se:
        return f"**No clear winner:** {label_a} − {label_b} = {diff:+.1f} points ({basis}), one seed."
    return (f"**{leader} is better** by {abs(diff):.1f} points over {trailer} ({basis}), one seed; "
            "`python -m engine compare` over several seeds says whether it holds.")


def evaluation_json(status: EvalStatus | None) -> dict | None:
    """What /status says of an evaluation: no server paths, accuracies as fractions."""
    if status is None:
        return None
    out = {"state": status.state, "done": status.done, "total": status.total, "message": status.message}
    r = status.result
    if r is not None:
        out |= {"backbone": r.get("backbone"), "cross_arch_mean": r.get("cross_arch_mean"),
                "cross_arch_models": r.get("cross_arch_models"), "repeats": r.get("repeats"),
                "protocol": r.get("protocol", {}).get("name"),
                "models": {m: {"mean": v["mean"], "std": v["std"], "accuracies": v["accuracies"]}
                           for m, v in r.get("models", {}).items()}}
    return out


def _cell(result: dict, model: str) -> str:
    r = result["models"].get(model)
    return "–" if r is None else f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}"


def _waiting(label: str, status: EvalStatus | None) -> str | None:
    """The line for a run whose evaluation is not done, None when it is."""
    if status is None:
        return f"{label}: not evaluated (press **Evaluate** once it has finished)"
    if status.state == "done":
        return None
    if status.state == "failed":
        return f"{label}: evaluation failed: {status.message}"
    if status.state == "queued":
        return f"{label}: evaluation waiting for the device"
    share = f" {100 * status.done / status.total:.0f}%" if status.total else ""
    return f"{label}: evaluating{share} (networks trained on the exported set, tested on the test split)"


def table(entries: list[tuple[str, EvalStatus | None]]) -> str:
    """Markdown: test accuracy (%) per model, a column per run, the difference of the first two and a
    verdict once both are done; lines for runs still waiting."""
    notes = [line for label, status in entries if (line := _waiting(label, status))]
    done = [(label, status.result) for label, status in entries if status is not None and status.state == "done"]
    if not done:
        return "\n\n".join(notes)
    first = done[0][1]
    models = list(first["models"])
    pair = len(done) == 2 and len(entries) == 2
    head = ["model"] + [label for label, _ in done] + ([f"{done[0][0]} − {done[1][0]}"] if pair else [])
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for m in models:
        name = f"{m} (backbone)" if m == first.get("backbone") else m
        cells = [_cell(r, m) for _, r in done]
        if pair:
            other = done[1][1]["models"].get(m)
            cells.append("–" if other is None else f"{100 * (first['models'][m]['mean'] - other['mean']):+.1f}")
        rows.append("| " + " | ".join([name] + cells) + " |")
    means = [r.get("cross_arch_mean") for _, r in done]
    cells = ["–" if v is None else f"**{100 * v:.1f}**" for v in means]
    if pair:
        cells.append("–" if None in means else f"**{100 * (means[0] - means[1]):+.1f}**")
    rows.append("| " + " | ".join(["cross-arch mean (without the backbone)"] + cells) + " |")
    caption = (f"Test accuracy, %, mean ± std over {first['repeats']} networks per model ({first['protocol']['name']} "
               f"protocol, {first['protocol']['epochs']} epochs; networks seeded from the run's seed, so the same "
               "for runs of one seed).")
    parts = ["\n".join(rows), caption]
    if pair:
        parts.append(verdict(first, done[1][1], done[0][0], done[1][0]))
    return "\n\n".join(parts + notes)
