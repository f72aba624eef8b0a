"""The studio as a shared server, tried as a hostile second user would (two gradio_client clients with
different tokens, plain HTTP for the file routes, the real server with tiny components on fake data):
nobody reaches another user's runs or files, no request can exhaust or wedge it, nothing is lost when a
run fails."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from engine.run import Run
from hpd_app.jobs import ServerLimits
from run_fixtures import fake_root, tiny_config, tiny_generator, tiny_proxy
from test_app_fixtures import TINY, served, status, wait_for
from test_run_failures import _BrokenLog

LIMITS = ServerLimits(runs_per_owner=3, queued=6, folders_per_owner=4, pause_release_s=2.0, idle_release_s=600.0)
NOT_A_FOLDER = "is not a run folder directly under the runs folder"


class Flaky:
    """An event listener of every run that raises while switched on (a broken plug-in)."""

    def __init__(self) -> None:
        self.on = threading.Event()

    def __call__(self, event) -> None:
        if self.on.is_set() and event.kind.value == "step":
            raise RuntimeError("listener bug")


FLAKY = Flaky()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_root(tmp_path_factory.mktemp("fm"))


@pytest.fixture(scope="module")
def components(root):
    return dict(generator=tiny_generator(), classifier=tiny_proxy(), data_root=str(root))


@pytest.fixture(scope="module")
def server(tmp_path_factory, components):
    runs = tmp_path_factory.mktemp("runs")
    with served(runs, tmp_path_factory.mktemp("gradio"), limits=LIMITS, listeners=(FLAKY,), **components) as url:
        yield url, runs


class User:
    """A client with a token of its own, from the server."""

    def __init__(self, url: str, token: str | None = None):
        self.client = Client(url, verbose=False)
        self.token = token or self.client.predict(api_name="/new_token")

    def __call__(self, *args, api_name: str):
        return self.client.predict(*args, self.token, api_name=api_name)

    def start(self, **config) -> str:
        return self(json.dumps(TINY | config), api_name="/start")

    def status(self, run_id: str) -> dict:
        return status(self.client, run_id, self.token)

    def wait(self, run_id: str, pred, timeout: float = 90.0) -> dict:
        return wait_for(self.client, run_id, pred, timeout, self.token)


@pytest.fixture(scope="module")
def alice(server):
    return User(server[0])


@pytest.fixture(scope="module")
def bob(server):
    return User(server[0])


@pytest.fixture(scope="module")
def finished(server, alice):
    """Alice's finished, exported run: (run id, its folder)."""
    rid = alice.start(steps_per_space=2)
    alice.wait(rid, lambda s: s["state"] == "finished")
    alice(rid, api_name="/export")
    return rid, server[1] / rid


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _refused(user: User, *args, api_name: str, match: str) -> str:
    with pytest.raises(AppError) as err:
        user(*args, api_name=api_name)
    message = str(err.value)
    assert match in message and "Traceback" not in message
    return message


# ------------------------------------------------------------------ who owns what
def test_tokens_are_issued_checked_and_never_stored(server, alice, finished):
    rid, folder = finished
    assert alice.token != User(server[0]).token and len(alice.token) >= 16
    for weak in ("short", "a" * 40, "abcdefghijklmnopqrst", "session:" + "x1y2" * 8, "../../" + "k" * 20):
        with pytest.raises(AppError, match="this token cannot own runs"):
            Client(server[0], verbose=False).predict("{}", weak, api_name="/start")
    owner = json.loads((folder / "run.json").read_text())["owner"]
    assert len(owner) == 64 and int(owner, 16) >= 0            # a sha256, not the token
    for path in folder.rglob("*"):
        if path.is_file():
            assert alice.token.encode() not in path.read_bytes(), path


def test_a_token_spelled_like_a_session_key_does_not_reach_that_session(server):
    plain = Client(server[0], verbose=False)      # owns its runs by its session
    rid = plain.predict(json.dumps(TINY | {"steps_per_space": 1}), "", api_name="/start")
    assert status(plain, rid)["run_id"] == rid
    mimic = User(server[0], token=plain.session_hash)  # a uuid4: long and random enough to be a token
    with pytest.raises(AppError, match="no run"):
        mimic.status(rid)
    wait_for(plain, rid, lambda s: s["state"] == "finished")


def test_every_spelling_of_another_users_folder_is_refused(server, alice, bob, finished, components):
    rid, folder = finished
    runs = server[1]
    spellings = [rid, rid + "/", "./" + rid, f"{rid}/.", f"./{rid}/", str(folder), str(folder) + "/",
                 f"{runs}/../{runs.name}/{rid}", f"{rid}//", f"../{runs.name}/{rid}", rid + "\x00", str(runs)]
    messages = [_refused(bob, name, api_name="/open_folder", match=NOT_A_FOLDER) for name in spellings]
    assert all(str(runs) not in m for m in messages)            # no server path in any answer
    for api_name in ("/status", "/stop", "/pause", "/export", "/download"):
        _refused(bob, rid, api_name=api_name, match="no run")
    _refused(bob, rid, 0, api_name="/select_layer", match="no run")
    # The owner reaches it by any spelling too (resolved to the same folder: their own live run).
    assert alice(str(folder) + "/", api_name="/open_folder") == rid
    # Ownership is on disk: a restarted server (nothing in memory) still tells them apart.
    with served(runs, runs.parent / "gradio-restart", **components) as url:
        again_bob, again_alice = User(url, bob.token), User(url, alice.token)
        _refused(again_bob, rid, api_name="/open_folder", match=NOT_A_FOLDER)
        assert rid not in json.loads(again_bob(api_name="/runs"))["folders"]
        browsed = again_alice(rid + "/", api_name="/open_folder")
        assert again_alice.status(browsed)["state"] == "finished"


def test_listing_shows_each_user_only_their_folders_and_the_clis(server, alice, bob, finished, components):
    rid, _ = finished
    cli = Run(tiny_config(Path(components["data_root"]), steps_per_space=1), server[1] / "cli-run",
              generator=components["generator"], classifier=components["classifier"])  # no owner: a CLI run
    while cli.step():
        pass
    cli.emit_state("finished")
    cli.close()
    mine, theirs = json.loads(alice(api_name="/runs")), json.loads(bob(api_name="/runs"))
    assert rid in mine["folders"] and rid in mine["mine"] and "cli-run" in mine["folders"]
    assert rid not in theirs["folders"] and rid not in theirs["mine"] and "cli-run" in theirs["folders"]
    # A CLI folder is everyone's to browse and read-only: an export goes beside it, never over its own.
    own = (server[1] / "cli-run" / "synthetic.pt").read_bytes()
    browsed = bob("cli-run", api_name="/open_folder")
    exported = Path(bob(browsed, api_name="/export"))
    assert exported.parent.parent == (server[1] / "cli-run" / "exports").resolve() and exported.is_file()
    assert (server[1] / "cli-run" / "synthetic.pt").read_bytes() == own


def test_nothing_under_the_runs_folder_is_fetchable_by_url(server, alice, bob, finished):
    url, runs = server
    rid, folder = finished
    files = ["export.zip", "synthetic.pt", "checkpoint.pt", "run.json", "events.jsonl", "grid.png"]
    assert all((folder / name).is_file() for name in files)
    for name in files:
        for path in (f"{folder}/{name}", f"{runs}/./{rid}/{name}", urllib.parse.quote(f"{folder}/{name}")):
            assert _http_status(f"{url}gradio_api/file={path}") in (403, 404), path
    # The owner's download is a copy made for that request, in Gradio's cache, never the runs folder.
    files_client = Client(url, verbose=False, download_files=False)
    first, second = (files_client.predict(rid, alice.token, api_name="/download") for _ in range(2))
    assert first["path"] != second["path"] and not first["path"].startswith(str(runs))
    assert _http_status(urllib.parse.urljoin(url, first["url"])) == 200
    local = alice(rid, api_name="/download")
    with zipfile.ZipFile(local) as zf:
        assert zf.testzip() is None and "synthetic.pt" in zf.namelist()
    _refused(bob, rid, api_name="/download", match="no run")


# ------------------------------------------------------------------ no request exhausts the server
BAD_CONFIGS = [
    ({"ipc": 10 ** 9}, "--ipc must be at most 1000"),
    ({"ipc": 100000}, "--ipc must be at most 1000"),
    ({"ipc": True}, "ipc must be a whole number, got True"),
    ({"ipc": 1.5}, "ipc must be a whole number"),
    ({"steps_per_space": 10 ** 12}, "--steps-per-space must be at most 100000"),
    ({"method": "glad", "glad_steps": 10 ** 9}, "--glad-steps must be at most 1000000"),
    ({"batch_real": 10 ** 7}, "--batch-real must be at most 10000"),
    ({"mean_ws_samples": 10 ** 9}, "--mean-ws-samples must be at most 100000"),
    ({"eval_epochs": 10 ** 6}, "--eval-epochs must be at most 10000"),
    ({"eval_repeats": 10 ** 4}, "--eval-repeats must be at most 100"),
    ({"distance_real_per_class": 10 ** 6}, "--distance-real-per-class must be at most 10000"),
    ({"holdout_per_class": 10 ** 6}, "--holdout-per-class must be at most 10000"),
    ({"sg_chunk": 10 ** 6}, "--sg-chunk must be at most 10000"),
    ({"lr_f": "nan"}, "lr_f must be a finite number"),
    ({"lr_w": 1e308 * 10}, "lr_w must be a finite number"),
    ({"lr_w": 10 ** 400}, "lr_w is out of range"),
    ({"seed": 2 ** 64}, "--seed must be between 0 and"),
    ({"seed": -1}, "--seed must be between 0 and"),
    ({"device": "meta"}, "--device meta is not supported"),
    ({"device": "cuda:7"}, "--device cuda:7"),
    ({"accuracy_pick": "maybe"}, "accuracy_pick must be true or false"),
    ({"dataset": ["fashion-mnist"]}, "dataset must be a string"),
    ({"first_cut": 99}, "does not fit this generator's cuts"),
    ({"x" * 50: 1}, "unknown config field"),
]


@pytest.mark.parametrize("config, says", BAD_CONFIGS, ids=[next(iter(c)) [:20] for c, _ in BAD_CONFIGS])
def test_oversized_or_malformed_configs_are_refused_at_start_in_under_a_second(server, bob, config, says):
    t = time.perf_counter()
    message = _refused(bob, json.dumps(TINY | config), api_name="/start", match=says)
    assert time.perf_counter() - t < 1.0 and str(server[1]) not in message


def test_files_named_by_a_config_are_checked_at_start(tmp_path_factory, root):
    """Without injected components the generator file is checked before queuing: missing, a folder, not
    a pickle, unreadable kinds; all in under a second, no path of the server in the answer."""
    folder = tmp_path_factory.mktemp("files")
    (folder / "text.pkl").write_text("not a pickle")
    (folder / "dir.pkl").mkdir()
    cases = [("/nonexistent/G.pkl", "generator file .../G.pkl does not exist"),
             (str(folder / "text.pkl"), ".../text.pkl is not a pickle file"),
             (str(folder / "dir.pkl"), ".../dir.pkl is not a file"),
             (str(folder / "G.onnx"), "does not exist")]
    with served(folder / "runs", folder / "gradio", data_root=str(root)) as url:
        user = User(url)
        for generator, says in cases:
            t = time.perf_counter()
            message = _refused(user, json.dumps(TINY | {"generator": generator}), api_name="/start", match=says)
            assert time.perf_counter() - t < 1.0 and str(folder) not in message
        for classifier, says in (("torchvision:resnet18=/nonexistent/w.pth", "the classifier weights are not at .../w.pth"),
                                 (f"torchvision:resnet18={folder / 'text.pkl'}", ".../text.pkl is not a torch weight file"),
                                 ("timm:vit", "unknown classifier 'timm:vit'")):
            t = time.perf_counter()
            message = _refused(user, json.dumps(TINY | {"classifier": classifier}), api_name="/start", match=says)
            assert time.perf_counter() - t < 1.0 and str(folder) not in message


def test_many_quick_runs_hit_the_per_owner_and_server_caps(server, alice):
    greedy = User(server[0])
    started, refusals = [], []
    for _ in range(20):
        try:
            started.append(greedy.start(steps_per_space=1000))
        except AppError as err:
            refusals.append(str(err))
    assert len(started) == LIMITS.runs_per_owner and len(refusals) == 20 - LIMITS.runs_per_owner
    assert all("the most one user may hold on this server (3); stop one" in m for m in refusals)
    others = [User(server[0]) for _ in range(3)]
    more, full = [], []
    for user in others:
        for _ in range(LIMITS.runs_per_owner):
            try:
                more.append((user, user.start(steps_per_space=1000)))
            except AppError as err:
                full.append(str(err))
    assert full and all("the server's queue is full" in m for m in full)
    assert max(status(u.client, r, u.token).get("queue_position") or 0 for u, r in more) == LIMITS.queued
    everyone = [(greedy, r) for r in started] + more
    stopping = [(user, rid) for user, rid in everyone if user(rid, api_name="/stop") != "stopped"]
    for user, rid in stopping:  # the one on the device stops after its step; the queued ones at once
        user.wait(rid, lambda s: s["state"] == "stopped")
    greedy(greedy.start(steps_per_space=1), api_name="/stop")  # stopped runs make room again


def test_a_paused_run_gives_its_device_back_and_resumes_after(server, alice, bob):
    held = alice.start(steps_per_space=60)
    alice(held, api_name="/pause")
    alice.wait(held, lambda s: s["state"] == "paused" and s["layers"])
    waiting = bob.start(steps_per_space=2)
    assert bob.status(waiting)["state"] == "queued"
    s = alice.wait(held, lambda s: s["state"] == "suspended", timeout=LIMITS.pause_release_s + 15)
    assert "Resume queues it again" in s["message"]
    bob.wait(waiting, lambda s: s["state"] == "finished")      # it got the device
    assert alice(held, api_name="/resume") in ("queued", "running")  # the device is free: it may start at once
    s = alice.wait(held, lambda s: s["state"] == "running" and s["steps_done"] > 0, timeout=60)
    alice(held, api_name="/stop")
    alice.wait(held, lambda s: s["state"] == "stopped")


# ------------------------------------------------------------------ failures never wedge or corrupt
def test_six_parallel_exports_succeed_or_are_refused_cleanly_and_leave_one_whole_zip(server, alice, finished):
    rid, folder = finished
    clients = [User(server[0], alice.token) for _ in range(6)]
    answers: list = [None] * 6

    def export(i):
        try:
            answers[i] = clients[i](rid, api_name="/export")
        except AppError as err:
            answers[i] = err
    threads = [threading.Thread(target=export, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for answer in answers:
        assert isinstance(answer, str) and answer.endswith("synthetic.pt") or (
            isinstance(answer, AppError) and "Traceback" not in str(answer) and "Errno" not in str(answer))
    with zipfile.ZipFile(folder / "export.zip") as zf:
        assert zf.testzip() is None and {"synthetic.pt", "grid.png", "export.json"} <= set(zf.namelist())
    assert [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name not in (".lock", ".export.lock")] == []


def test_a_subscriber_that_raises_is_reported_while_the_run_goes_on(server, alice):
    FLAKY.on.set()
    try:
        rid = alice.start(steps_per_space=2)
        s = alice.wait(rid, lambda s: s["state"] in ("finished", "failed"))
    finally:
        FLAKY.on.clear()
    assert s["state"] == "finished" and s["steps_done"] == s["total_steps"]
    assert s["warnings"] and "an event subscriber" in s["warnings"][0] and "listener bug" in s["warnings"][0]
    assert "the run goes on" in s["warnings"][0]


def test_a_log_write_that_fails_ends_the_run_as_failed_and_the_next_queued_run_starts(server, alice, bob):
    runs = server[1]
    doomed = alice.start(steps_per_space=400)
    alice.wait(doomed, lambda s: s["state"] == "running" and s["steps_done"] >= 1)
    after = bob.start(steps_per_space=2)
    assert bob.status(after)["state"] == "queued"
    with _BrokenLog(runs / doomed):
        s = alice.wait(doomed, lambda s: s["state"] in ("failed", "finished", "stopped"), timeout=60)
        assert s["state"] == "failed" and "the run's event log could not be written" in s["message"]
        assert str(runs) not in s["message"] and "Traceback" not in s["message"]
        bob.wait(after, lambda s: s["state"] == "finished", timeout=60)  # the device was freed
    assert alice(doomed, api_name="/stop") == "failed"                  # a final state; Stop is harmless
