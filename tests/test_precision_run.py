"""`distill --precision fp32|bf16` (issue 18): refused in one sentence when wrong, recorded in run.json without
changing an earlier fp32 run's identity, exact under fp32, and honoured under bf16 by DM and DC/DSA's real side."""
import json

import pytest
import torch
import torch.nn.functional as F

from cli_helpers import engine_cli
from engine import objectives
from engine.cli.distill import _already_done
from engine.compare import folder_state
from engine.objectives.dc import gradient_distance
from engine.objectives.dm import EMBED_CHUNK
from engine.run import Run, RunConfig
from run_fixtures import tiny_config
from test_objectives import context


def test_a_bad_precision_is_refused_by_the_cli_in_one_sentence(tmp_path, root):
    res = engine_cli("distill", "--method", "pixel", "--data-root", str(root), "--out", str(tmp_path / "x"),
                     "--precision", "fp16")
    assert res.returncode == 2
    assert "--precision must be one of fp32, bf16, got 'fp16'" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_the_config_refuses_a_bad_precision_and_defaults_to_fp32(root):
    assert tiny_config(root).precision == "fp32"
    with pytest.raises(ValueError, match=r"^--precision must be one of fp32, bf16, got 'half'$"):
        tiny_config(root, precision="half")


def _finish(run):
    """What `distill` and compare's cells do: run to the end, record it finished, give the folder up."""
    run.prepare()
    while run.step():
        pass
    run.emit_state("finished")
    run.close()


def test_precision_is_recorded_and_an_earlier_fp32_run_keeps_its_identity(root, tmp_path, proxy):
    config = tiny_config(root, method="pixel", steps_per_space=1)
    run = Run(config, tmp_path / "fp32", classifier=proxy)
    _finish(run)
    meta = tmp_path / "fp32" / "run.json"
    saved = json.loads(meta.read_text())
    assert saved["config"]["precision"] == "fp32" and saved["state"] == "finished"
    # A run.json written before the flag existed: no precision key. It is still this fp32 config's run.
    del saved["config"]["precision"]
    meta.write_text(json.dumps(saved))
    assert folder_state(tmp_path / "fp32", config) == "finished"
    assert _already_done(tmp_path / "fp32", config, resuming=False)
    assert RunConfig(**saved["config"]) == config  # what --resume rebuilds from it
    bf16 = tiny_config(root, method="pixel", steps_per_space=1, precision="bf16")
    with pytest.raises(ValueError, match="holds a different run"):
        folder_state(tmp_path / "fp32", bf16)
    assert not _already_done(tmp_path / "fp32", bf16, resuming=True)

    run = Run(bf16, tmp_path / "bf16", classifier=proxy)
    _finish(run)
    saved = json.loads((tmp_path / "bf16" / "run.json").read_text())
    assert saved["config"]["precision"] == "bf16"
    assert folder_state(tmp_path / "bf16", bf16) == "finished"
    with pytest.raises(ValueError, match="holds a different run"):
        folder_state(tmp_path / "bf16", config)


# ------------------------------------------------------------------ the objectives' arithmetic
def dm_loss_before(syn, labels, net, ctx):
    """dm_loss as it was before --precision existed (the reference the fp32 path must equal bit for bit)."""
    real_parts, syn_parts = [], []
    for _, real_c, syn_c in objectives.context.class_pairs(syn, labels, ctx):
        real_parts.append(real_c)
        syn_parts.append(syn_c)
    with torch.no_grad():
        real = torch.cat(real_parts)
        real_emb = torch.cat([net.embed(chunk) for chunk in real.split(EMBED_CHUNK)]).split([len(r) for r in real_parts])
    syn_emb = net.embed(torch.cat(syn_parts)).split([len(s) for s in syn_parts])
    return sum(((r.mean(0) - s.mean(0)) ** 2).sum() for r, s in zip(real_emb, syn_emb))


def dc_loss_before(syn, labels, net, ctx):
    params = [p for p in net.parameters() if p.requires_grad]
    total = syn.new_zeros(())
    for c, real_c, syn_c in objectives.context.class_pairs(syn, labels, ctx):
        target = torch.full((len(real_c),), c, device=syn.device)
        g_real = torch.autograd.grad(F.cross_entropy(net(real_c), target), params)
        g_syn = torch.autograd.grad(F.cross_entropy(net(syn_c), target[: len(syn_c)]), params, create_graph=True)
        total = total + gradient_distance([g.detach() for g in g_real], g_syn)
    return total


def _loss_and_grad(loss_fn, precision: str | None, dsa: bool):
    """(loss, d loss / d syn) on a fresh context (the same real draws every call); precision None: unset."""
    torch.set_num_threads(1)
    ctx = context(dsa=dsa)
    if precision is not None:
        ctx.precision = precision
    net = ctx.new_net(0)
    net.train()
    syn = torch.randn(20, 1, 32, 32, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    labels = torch.arange(10).repeat(2)
    loss = loss_fn(syn, labels, net, ctx)
    (grad,) = torch.autograd.grad(loss, syn)
    return loss.detach(), grad


@pytest.mark.parametrize("name, dsa", [("dm", False), ("dm", True), ("dc", False), ("dsa", True)])
def test_fp32_is_exactly_the_code_path_before_and_bf16_moves_the_loss_slightly(name, dsa):
    new, before = {"dm": (objectives.dm_loss, dm_loss_before)}.get(
        name, (objectives.dc.dc_loss, dc_loss_before))
    ref_loss, ref_grad = _loss_and_grad(before, None, dsa)
    for precision in (None, "fp32"):
        loss, grad = _loss_and_grad(new, precision, dsa)
        assert torch.equal(loss, ref_loss) and torch.equal(grad, ref_grad)
    loss, grad = _loss_and_grad(new, "bf16", dsa)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32  # the synthetic side stays float32
    rel = float((loss - ref_loss).abs() / ref_loss.abs())
    assert 0 < rel < 0.01, rel  # autocast was honoured, and changed the loss only slightly
    cos = float(F.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0))
    assert cos > 0.99, cos


def test_bf16_reaches_the_objective_of_a_run(root, tmp_path, G, proxy):
    runs = {p: Run(tiny_config(root, steps_per_space=2, precision=p), tmp_path / p, generator=G, classifier=proxy)
            for p in ("fp32", "bf16")}
    for run in runs.values():
        run.prepare()
        run.step()
        run.step()
    assert runs["bf16"].ctx.objective.ctx.precision == "bf16"
    a, b = ([x for x in runs[p].state.spaces[0].losses if x is not None][-1] for p in ("fp32", "bf16"))
    for run in runs.values():
        run.close()
    assert a != b and abs(a - b) < 0.05 * abs(a)


def test_a_killed_bf16_run_resumes_like_an_uninterrupted_one(root, tmp_path, G, proxy):
    config = tiny_config(root, precision="bf16")
    whole = Run(config, tmp_path / "whole", generator=G, classifier=proxy)
    _finish(whole)
    killed = Run(config, tmp_path / "killed", generator=G, classifier=proxy)
    for _ in range(4):  # one space and one step of the second, then the process "dies"
        killed.step()
    killed.close()
    saved = json.loads((tmp_path / "killed" / "run.json").read_text())["config"]
    resumed = Run(RunConfig(**saved), tmp_path / "killed", generator=G, classifier=proxy)  # what --resume does
    assert resumed.config.precision == "bf16"
    _finish(resumed)
    a = torch.load(tmp_path / "whole" / "synthetic.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "synthetic.pt", weights_only=True)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["ws"], b["ws"])
