"""`distill --compile` (issue 18): DM's real-side embedding through torch.compile, refused in one sentence
where it does nothing, recorded without changing an earlier run's identity, and equal to eager to rounding."""
import json
import shutil

import pytest
import torch

from engine.cli.distill import _already_done
from engine.nets import get_network
from engine.objectives.dm import compiled_embed, embed_real
from engine.run import Run, read_space_file
from run_fixtures import tiny_config

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="torch.compile's CPU backend needs a C++ compiler")


def test_compile_is_refused_where_it_does_nothing(root):
    """(The CLI turns this ValueError into its one line and exit 2, as test_precision_run checks for --precision.)"""
    with pytest.raises(ValueError, match=r"^--compile speeds up DM's real side only; drop it for --objective dsa$"):
        tiny_config(root, method="pixel", objective="dsa", compile=True)
    assert tiny_config(root).compile is False


@needs_compiler
def test_the_compiled_embedding_equals_eager_for_fresh_networks(root):
    embed = compiled_embed()
    images = torch.randn(80, 1, 32, 32)  # a full chunk and a short one, as the run below embeds them
    for seed in (1, 2):  # each iteration's fresh network runs the same compiled code
        net = get_network("convnet", 1, 10, 32, seed=seed).train().requires_grad_(False)
        eager = embed_real(net, images, torch.autocast("cpu", enabled=False))
        compiled = embed_real(net, images, torch.autocast("cpu", enabled=False), embed)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


@needs_compiler
def test_a_compiled_run_is_recorded_and_an_earlier_run_keeps_its_identity(root, tmp_path, proxy):
    config = tiny_config(root, method="pixel", steps_per_space=2, compile=True)
    run = Run(config, tmp_path / "compiled", classifier=proxy)
    run.prepare()
    while run.step():
        pass
    run.emit_state("finished")
    run.close()
    saved = json.loads((tmp_path / "compiled" / "run.json").read_text())
    assert saved["config"]["compile"] is True
    eager = Run(tiny_config(root, method="pixel", steps_per_space=2), tmp_path / "eager", classifier=proxy)
    eager.prepare()
    while eager.step():
        pass
    eager.close()
    torch.testing.assert_close(read_space_file(tmp_path / "compiled", 0)["images"],
                               read_space_file(tmp_path / "eager", 0)["images"], rtol=1e-3, atol=1e-4)
    assert not _already_done(tmp_path / "compiled", tiny_config(root, method="pixel", steps_per_space=2),
                             resuming=True)  # compiled is another run; off is the old runs' identity
    del saved["config"]["compile"]
    (tmp_path / "compiled" / "run.json").write_text(json.dumps(saved))
    assert _already_done(tmp_path / "compiled", tiny_config(root, method="pixel", steps_per_space=2), resuming=False)
