"""The studio's named API driven by gradio_client against the real server (tiny components, fake data;
plus one real default path: Pixel on the real Fashion-MNIST)."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from engine.cli import main as engine_main
from hpd_app.evaluation import EvalSettings
from run_fixtures import fake_root, tiny_generator, tiny_proxy
from test_app_fixtures import TINY, served, status, wait_for

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_root(tmp_path_factory.mktemp("fm"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, root):
    runs = tmp_path_factory.mktemp("runs")
    with served(runs, tmp_path_factory.mktemp("gradio"), generator=tiny_generator(), classifier=tiny_proxy(),
                data_root=str(root), evaluation=EvalSettings(models=("convnet", "alexnet"), epochs=2)) as url:
        yield url, runs


def start(client, **config) -> str:
    return client.predict(json.dumps(TINY | config), "", api_name="/start")


def steps_drawn(status: dict) -> int:
    """Curve points of optimisation steps (a space's step 0 is its initial latent, not a step)."""
    return sum(1 for step in status["curves"]["step"] if step > 0)


def test_named_endpoints_are_listed(server):
    c = Client(server[0], verbose=False)
    names = c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/start", "/compare", "/status", "/pause", "/resume", "/step", "/stop", "/select_layer", "/export",
            "/evaluate", "/open_folder", "/runs"} <= set(names)


def test_compare_then_evaluate_through_the_api(server):
    c = Client(server[0], verbose=False)
    token = c.predict(api_name="/new_token")
    hpd, glad = json.loads(c.predict(json.dumps(TINY | {"steps_per_space": 2, "evaluate": True}), token,
                                     api_name="/compare"))
    assert "-hpd-" in hpd and "-glad-" in glad
    done = [wait_for(c, rid, lambda s: (s["evaluation"] or {}).get("state") == "done", 180, token) for rid in (hpd, glad)]
    for s in done:
        assert s["state"] == "finished" and s["evaluation"]["backbone"] == "convnet"
        assert set(s["evaluation"]["models"]) == {"convnet", "alexnet"}
        assert s["evaluation"]["cross_arch_mean"] == s["evaluation"]["models"]["alexnet"]["mean"]
        assert str(server[1]) not in json.dumps(s["evaluation"])  # no server paths
    # A second Evaluate of the same exported set trains nothing: it is already done.
    assert c.predict(hpd, token, api_name="/evaluate") == "done"
    with pytest.raises(Exception, match="config must be a JSON object|not valid JSON"):
        c.predict("[1, 2]", token, api_name="/compare")


def test_start_pause_step_resume_select_export(server):
    c = Client(server[0], verbose=False)
    rid = start(c, steps_per_space=10)  # 50 steps
    # Pause at once: polling for a few steps first let a fast CI machine finish all 50 before the pause
    # landed (polls apparently answered slowly beside the busy run thread). Queued, loading or stepping,
    # the run must come to rest with steps left.
    assert c.predict(rid, "", api_name="/pause") in ("queued", "pausing", "paused")
    held = wait_for(c, rid, lambda s: s["state"] == "paused" and s["layers"])  # layers: loaded, then held
    assert held["steps_done"] < held["total_steps"]
    assert steps_drawn(held) == held["steps_done"]
    time.sleep(2)
    assert status(c, rid)["steps_done"] == held["steps_done"]  # pause holds
    c.predict(rid, "", api_name="/step")
    stepped = wait_for(c, rid, lambda s: s["steps_done"] == held["steps_done"] + 1 and s["state"] == "paused")
    time.sleep(0.5)
    assert status(c, rid)["steps_done"] == stepped["steps_done"]  # exactly one step
    c.predict(rid, "", api_name="/resume")
    s = wait_for(c, rid, lambda s: s["steps_done"] > stepped["steps_done"] and
                 (len(s["spaces"]) >= 2 or s["state"] == "finished"), timeout=120)
    assert s["steps_done"] > stepped["steps_done"] and steps_drawn(s) == s["steps_done"]
    assert [sp["index"] for sp in s["spaces"]][:2] == [0, 1] and s["curves"]["distance"][-1] is not None
    c.predict(rid, "", api_name="/stop")
    s = wait_for(c, rid, lambda s: s["state"] in ("stopped", "finished"))
    assert c.predict(rid, 1, "", api_name="/select_layer") == "selected layer 1"
    path = Path(c.predict(rid, "", api_name="/export"))
    saved = torch.load(path, weights_only=True)
    assert saved["space"] == 1 and saved["images"].shape == (10, 1, 32, 32) and saved["labels"].tolist() == list(range(10))
    assert (path.parent / "export.zip").is_file() and path.parent.parent == server[1]
    import zipfile
    with zipfile.ZipFile(path.parent / "export.zip") as zf:  # the journey strip and DD-Ranking's layout too
        assert {"journey.png", "journey.gif", "images.pt", "labels.pt", "synthetic.pt", "grid.png"} <= set(zf.namelist())
        from PIL import Image
        with Image.open(io.BytesIO(zf.read("journey.gif"))) as gif:  # the saved previews, in step order
            # (Pillow merges a frame equal to the one before it into that one's time)
            assert 2 < gif.n_frames <= len(list((path.parent / "previews").glob("*.png")))
    assert status(c, rid)["selected_space"] == 1


def test_a_run_walks_every_layer_to_the_end(server):
    c = Client(server[0], verbose=False)
    rid = start(c, steps_per_space=2)
    done = wait_for(c, rid, lambda s: s["state"] == "finished", timeout=120)
    assert done["steps_done"] == done["total_steps"] == 2 * len(done["layers"]) == steps_drawn(done)
    assert done["curves"]["step"].count(0) == len(done["layers"])  # every layer's initial latent is measured
    assert [sp["index"] for sp in done["spaces"]] == list(range(len(done["layers"])))
    assert done["selected_space"] == len(done["layers"]) - 1 and Path(done["export_path"]).is_file()


def test_two_clients_see_and_steer_only_their_own_runs(server):
    a, b = Client(server[0], verbose=False), Client(server[0], verbose=False)
    ra, rb = start(a, steps_per_space=2, seed=1), start(b, steps_per_space=2, seed=2)
    sb = status(b, rb)
    assert sb["state"] in ("queued", "running", "finished")  # one device: b waits unless a is already done
    if sb["state"] == "queued":
        assert sb["queue_position"] == 1
    for client, mine, other in ((a, ra, rb), (b, rb, ra)):
        with pytest.raises(AppError, match="no run"):
            client.predict(other, "", api_name="/status")
        with pytest.raises(AppError, match="no run"):
            client.predict(other, "", api_name="/stop")
        assert json.loads(client.predict("", api_name="/runs"))["mine"] == [mine]
    da = wait_for(a, ra, lambda s: s["state"] == "finished")
    db = wait_for(b, rb, lambda s: s["state"] == "finished")
    assert da["steps_done"] == db["steps_done"] == da["total_steps"]
    assert da["curves"]["distance"] != db["curves"]["distance"]  # different seeds, separate runs


def test_stop_a_queued_run_and_a_running_one(server):
    c = Client(server[0], verbose=False)
    first, second = start(c, steps_per_space=50), start(c, steps_per_space=2)
    assert status(c, second)["state"] == "queued"
    assert c.predict(second, "", api_name="/stop") == "stopped"
    wait_for(c, first, lambda s: s["steps_done"] >= 1)
    c.predict(first, "", api_name="/stop")
    s = wait_for(c, first, lambda s: s["state"] == "stopped")
    assert s["steps_done"] < s["total_steps"]


@pytest.mark.parametrize("config, message", [
    ('{"ipc": 0}', "--ipc must be at least 1"),
    ('{"method": "diffusion"}', "unknown method 'diffusion'; choose one of: hpd, glad, pixel"),
    ('{"steps": 3}', "unknown config field"),
    ('{"ipc": "two"}', "ipc must be a whole number"),
    ("not json", "not valid JSON"),
    ('{"device": "cuda:7"}', "CUDA is not available"),
    ('{"data_root": "/nonexistent/fmnist"}', "there is no fashion-mnist folder at"),
])
def test_bad_configs_come_back_as_clear_messages(server, config, message):
    c = Client(server[0], verbose=False)
    with pytest.raises(AppError) as err:
        c.predict(config, "", api_name="/start")
    assert message in str(err.value) and "Traceback" not in str(err.value)


def test_a_missing_generator_is_refused_at_start(tmp_path, root):
    """Found before the run is queued (not when it reaches the device), in one sentence without the path."""
    with served(tmp_path / "runs", tmp_path / "gradio", data_root=str(root)) as url:
        c = Client(url, verbose=False)
        with pytest.raises(AppError) as err:
            c.predict('{"generator": "/nonexistent/sg.pkl"}', "", api_name="/start")
    message = str(err.value)
    assert "generator file .../sg.pkl does not exist" in message and "Traceback" not in message
    assert "/nonexistent" not in message


def test_opening_a_cli_run_folder(server, root):
    url, runs = server
    assert engine_main(["distill", "--method", "pixel", "--iterations", "2", "--batch-real", "8", "--data-root",
                        str(root), "--device", "cpu", "--out", str(runs / "cli-run")]) == 0
    c = Client(url, verbose=False)
    assert "cli-run" in json.loads(c.predict("", api_name="/runs"))["folders"]
    rid = c.predict("cli-run", "", api_name="/open_folder")
    s = status(c, rid)
    assert s["source"] == "folder" and s["state"] == "finished" and s["steps_done"] == 2
    assert s["curves"]["step"] == [0, 1, 2] and [sp["index"] for sp in s["spaces"]] == [0]
    assert None not in s["curves"]["distance"]  # a Pixel run measures the distance too
    with pytest.raises(AppError, match="opened from disk"):
        c.predict(rid, "", api_name="/pause")
    c.predict(rid, 0, "", api_name="/select_layer")
    exported = Path(c.predict(rid, "", api_name="/export"))
    # A CLI folder (no owner) is read-only for the studio: the export goes beside the run's own.
    assert exported == runs.resolve() / "cli-run" / "exports" / "space_00" / "synthetic.pt"
    saved = torch.load(exported, weights_only=True)
    assert saved["images"].shape == (10, 1, 32, 32)
    with pytest.raises(AppError, match="not a run folder directly under"):
        c.predict("../x", "", api_name="/open_folder")


@pytest.mark.skipif(not REAL_FMNIST.is_file(), reason="the real Fashion-MNIST is not installed")
def test_real_default_path_pixel_on_fashion_mnist(tmp_path):
    with served(tmp_path / "runs", tmp_path / "gradio") as url:
        c = Client(url, verbose=False)
        rid = c.predict('{"method": "pixel", "steps_per_space": 3, "batch_real": 8}', "", api_name="/start")
        s = wait_for(c, rid, lambda s: s["state"] in ("finished", "failed"), timeout=120)
        assert s["state"] == "finished", s["message"]
        saved = torch.load(Path(c.predict(rid, "", api_name="/export")), weights_only=True)
    assert saved["images"].shape == (10, 1, 32, 32) and s["layers"] == ["pixels 32x32x1"]


def test_commands_through_the_server_return_at_once_beside_a_slow_step(tmp_path, root):
    """The API answers while a 5 s step runs: Pause says "pausing" until the step in flight ends."""
    from test_engine_core import STEP_S, Slow
    with Slow(tiny_generator(), STEP_S / 2) as G, served(tmp_path / "runs", tmp_path / "gradio", generator=G,
                                                         classifier=tiny_proxy(), data_root=str(root)) as url:
        c = Client(url, verbose=False)
        rid = start(c, steps_per_space=1, preview_every=100)
        wait_for(c, rid, lambda s: len(s["spaces"]) >= 1 and s["state"] == "running", timeout=60)

        def timed(api_name: str, *args) -> tuple[str, float]:
            t = time.perf_counter()
            return c.predict(*args, api_name=api_name), time.perf_counter() - t

        answer, took = timed("/select_layer", rid, 0, "")
        assert answer == "selected layer 0" and took < 1.0  # well under one step
        answer, took = timed("/pause", rid, "")
        assert answer == "pausing" and took < 1.0
        held = wait_for(c, rid, lambda s: s["state"] == "paused", timeout=2 * STEP_S + 5)
        assert held["selected_space"] == 0 and held["steps_done"] < held["total_steps"]
        c.predict(rid, "", api_name="/resume")
        wait_for(c, rid, lambda s: s["state"] == "running", timeout=10)
        answer, took = timed("/stop", rid, "")
        assert answer == "stopping" and took < 1.0
        wait_for(c, rid, lambda s: s["state"] == "stopped", timeout=2 * STEP_S + 5)


def test_the_idle_queue_wakes_every_20_ms_not_every_1(tmp_path):
    """Gradio's idle queue loops are slowed by setting Gradio's own (non-public) attributes; if a Gradio
    version renames them this fails, rather than the idle server silently taking 6% of a core again."""
    from hpd_app import build_app
    from hpd_app.app import IDLE_WAKE_S, PROGRESS_WAKE_S
    queue = build_app(tmp_path / "runs")._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (IDLE_WAKE_S, PROGRESS_WAKE_S)
