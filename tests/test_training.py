"""Training: losses, data, the loop's exact resume, dual-block training, gloo data parallelism, errors.

Every run uses a tiny DRN (1 block, 4 features: 16-channel RCABs) on small real patches so the
whole file stays well inside the CPU time budget.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from drn_cli.arch import DRN, DRNConfig, DualModel
from drn_cli.checkpoint import save_model
from drn_cli.errors import DrnError, InputError
from drn_cli.losses import GradientSensitiveLoss, dual_loss, gradient_mask, l1_loss, primal_loss
from drn_cli.train_data import PatchDataset, StepSampler, load_images, lr_pyramid
from drn_cli.training import DistInfo, StepContext, TrainOptions, train

from .conftest import BENCHMARK, REFERENCE, ROOT, TRAIN

T91 = TRAIN / "T91"
FEW = [str(T91 / f"t{i}.bmp") for i in (1, 2, 3, 5, 8, 13)]


def tiny(out: Path, **kw: object) -> TrainOptions:
    """Options for a tiny, fast x4 run on a few real T91 images."""
    base: dict[str, object] = dict(
        hr_dirs=FEW,
        scale=4,
        n_blocks=1,
        n_feats=4,
        out=str(out),
        steps=6,
        batch_size=2,
        patch_size=32,
        lr=1e-3,
        workers=0,
        save_every=1000,
        log_every=1,
    )
    base.update(kw)
    return TrainOptions(**base)  # type: ignore[arg-type]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> bool:
    assert a.keys() == b.keys()
    if atol == 0.0:
        return all(torch.equal(a[k], b[k]) for k in a)
    return all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


# ---------------------------------------------------------------------------- losses and data


def test_lr_pyramid_reproduces_benchmark_lr() -> None:
    """x_0 of the pyramid is the MATLAB-bicubic LR that the benchmark files hold, to +-1 grey level.

    MATLAB rounds a uint8 image after each axis as well; the pyramid rounds once, at the end, so a
    minority of pixels differ by one level.
    """
    hr = np.asarray(Image.open(BENCHMARK / "Set5" / "HR" / "baby.png").convert("RGB"))
    lr_file = np.asarray(Image.open(BENCHMARK / "Set5" / "LR_bicubic" / "X4" / "babyx4.png").convert("RGB"))
    h, w = lr_file.shape[0] * 4, lr_file.shape[1] * 4
    t = torch.from_numpy(hr[:h, :w].copy()).permute(2, 0, 1)[None].double()
    pyramid = lr_pyramid(t, 4)
    assert [tuple(x.shape[-2:]) for x in pyramid] == [(h // 4, w // 4), (h // 2, w // 2), (h, w)]
    x0 = pyramid[0][0].permute(1, 2, 0).numpy()
    diff = np.abs(x0 - lr_file.astype(np.float64))
    assert diff.max() <= 1.0
    assert diff.mean() < 0.2


def test_gradient_sensitive_loss_limits() -> None:
    """Zero for a perfect output; plain L1 where the target is flat (the mask is zero there)."""
    hr = torch.from_numpy(np.asarray(Image.open(T91 / "t1.bmp").convert("RGB"))[:40, :40].copy())
    hr = hr.permute(2, 0, 1)[None].float()
    loss = GradientSensitiveLoss(lambda_g=2.0)
    assert loss(hr, hr).item() == 0.0
    flat = torch.full((1, 3, 16, 16), 100.0)
    sr = flat + torch.linspace(-5, 5, 16 * 16 * 3).reshape(1, 3, 16, 16)
    assert gradient_mask(flat).abs().max().item() == 0.0
    expected = (sr - flat).abs().mean().item()
    assert loss(sr, flat).item() == pytest.approx(expected, rel=1e-6)
    mask = gradient_mask(hr)
    assert mask.shape == (1, 1, 40, 40) and mask.min().item() == 0.0 and mask.max().item() == pytest.approx(1.0)


def test_primal_and_dual_loss_terms() -> None:
    """The losses are the sums of Eq. 1, computed here term by term."""
    torch.manual_seed(0)
    cfg = DRNConfig(4, 1, 4)
    primal, dual = DRN(cfg), DualModel(cfg)
    hr = torch.rand(2, 3, 16, 16) * 255
    pyr = lr_pyramid(hr, 4)
    with torch.no_grad():
        out = primal.forward_pyramid(pyr[0])
        full = sum((out[k] - pyr[k]).abs().mean() for k in range(3)).item()
        last = (out[2] - pyr[2]).abs().mean().item()
        dual_expected = sum((dual.blocks[k - 1](out[k]) - pyr[k - 1]).abs().mean() for k in (1, 2)).item()
        assert primal_loss(out, pyr, l1_loss, progressive=True).item() == pytest.approx(full, rel=1e-5)
        assert primal_loss(out, pyr, l1_loss, progressive=False).item() == pytest.approx(last, rel=1e-5)
        assert dual_loss(dual.blocks, out, pyr).item() == pytest.approx(dual_expected, rel=1e-5)


def test_patches_are_fixed_by_seed_and_index() -> None:
    images = load_images(FEW, 32)
    ds = PatchDataset(images.images, 32, seed=3)
    assert torch.equal(ds[17], ds[17])
    assert ds[17].shape == (3, 32, 32) and ds[17].dtype == torch.uint8
    assert not torch.equal(ds[17], ds[18])
    assert not torch.equal(ds[17], PatchDataset(images.images, 32, seed=4)[17])
    # Two ranks of batch 2 cover exactly the indices of one process with batch 4.
    r0, r1 = list(StepSampler(1, 3, 2, 0, 2)), list(StepSampler(1, 3, 2, 1, 2))
    assert sorted(r0 + r1) == list(StepSampler(1, 3, 4, 0, 1))


def test_step_context_refuses_nonfinite_and_spikes() -> None:
    """A NaN loss, a loss spike or NaN gradients never reach the weights."""
    ctx = StepContext(torch.device("cpu"), DistInfo(), None, skip_threshold=10.0)
    layer = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    before = [p.detach().clone() for p in layer.parameters()]
    assert not ctx.accept(torch.tensor(float("nan")))
    assert not ctx.accept(torch.tensor(float("inf")))
    for _ in range(10):
        assert ctx.accept(torch.tensor(1.0))
    assert not ctx.accept(torch.tensor(50.0))
    assert ctx.accept(torch.tensor(5.0))
    loss = (layer(torch.ones(1, 3)) * float("nan")).sum()
    ctx.backward(loss)
    assert not ctx.update([opt])
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
    assert ctx.skipped_nonfinite == 3 and ctx.skipped_spike == 1


# ---------------------------------------------------------------------------- training runs


def _fixed_batch_loss(model_file: Path) -> float:
    """The primal L1 loss (Eq. 1, progressive) of a model file on fixed real Set5 crops."""
    from drn_cli.checkpoint import build_primal, read_checkpoint

    ckpt = read_checkpoint(model_file)
    net = build_primal(ckpt.primal, ckpt.config, ckpt.source)
    crops = []
    for name in ("baby", "bird", "head", "woman"):
        hr = np.asarray(Image.open(BENCHMARK / "Set5" / "HR" / f"{name}.png").convert("RGB"))
        crops.append(torch.from_numpy(hr[100:164, 60:124].copy()).permute(2, 0, 1))
    pyramid = lr_pyramid(torch.stack(crops).float(), 4)
    with torch.no_grad():
        return primal_loss(net.forward_pyramid(pyramid[0]), pyramid).item()


def test_training_lowers_the_loss(tmp_path: Path) -> None:
    """A few steps on the shared T91 folder lower the loss on held-out real crops."""
    torch.manual_seed(2)
    init = tmp_path / "init.safetensors"
    save_model(init, DRN(DRNConfig(4, 1, 4)), DualModel(DRNConfig(4, 1, 4)))
    seen = []
    result = train(
        tiny(
            tmp_path / "run",
            hr_dirs=[str(T91)],
            n_blocks=None,
            n_feats=None,
            init=str(init),
            steps=20,
            batch_size=4,
            lr=2e-3,
            log_every=5,
        ),
        progress=seen.append,
    )
    assert result.finished and result.step == 20 and len(seen) == 20
    run = tmp_path / "run"
    assert _fixed_batch_loss(run / "final.safetensors") < 0.8 * _fixed_batch_loss(init)
    assert seen[-1].lr == pytest.approx(1e-7, rel=1e-6)  # cosine annealing reached min_lr
    for name in ("config.json", "metrics.csv", "last.ckpt", "last.safetensors", "final.safetensors"):
        assert (run / name).is_file(), name
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(5, 21, 5))
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {"scale": 4, "n_blocks": 1, "n_feats": 4}
    assert config["train_images"] == 91
    final = weights(run / "final.safetensors")
    assert any(k.startswith("dual.blocks.1.") for k in final)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    """Stopping at step 3 and resuming gives the same weights as an uninterrupted 7-step run."""
    train(tiny(tmp_path / "a", steps=7))
    partial = train(tiny(tmp_path / "b", steps=7, stop_at=3))
    assert not partial.finished and partial.step == 3
    assert not (tmp_path / "b" / "final.safetensors").exists()
    # Resume with only the runtime options given (and data-loader workers this time).
    resumed = train(TrainOptions(out=str(tmp_path / "b"), resume=True, workers=1))
    assert resumed.finished and resumed.step == 7
    a, b = weights(tmp_path / "a" / "final.safetensors"), weights(tmp_path / "b" / "final.safetensors")
    assert same_weights(a, b)
    state_a = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)
    state_b = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    exp_a = state_a["optimizers"]["primal"]["state"][0]["exp_avg_sq"]
    assert torch.equal(exp_a, state_b["optimizers"]["primal"]["state"][0]["exp_avg_sq"])
    with open(tmp_path / "b" / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 8))


def test_ctrl_c_saves_the_finished_step_and_resume_continues_exactly(tmp_path: Path) -> None:
    """SIGINT to `drn train` ends it with exit 130 and a one-line message, after saving the state of
    the last finished step (no regular save would have happened yet); --resume then continues
    exactly as an uninterrupted run."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "drn_cli", "train", *FEW, "-s", "4", "--n-blocks", "1", "--n-feats", "4"]
    cmd += ["--steps", "5000", "--batch-size", "2", "--patch-size", "32", "--lr", "1e-3", "--workers", "0"]
    cmd += ["--save-every", "4000", "--log-every", "1", "--out", str(run), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = run / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 4:  # header + 3 steps
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    message = err.decode().strip()
    assert proc.returncode == 130, message
    assert "Traceback" not in message and "--resume" in message, message
    state = torch.load(run / "last.ckpt", weights_only=True)
    stopped = int(state["step"])
    assert 3 <= stopped < 4000
    assert f"step {stopped}/5000" in message

    until = stopped + 2
    resumed = train(TrainOptions(out=str(run), resume=True, stop_at=until))
    straight = train(tiny(tmp_path / "straight", steps=5000, save_every=4000, stop_at=until))
    assert resumed.step == straight.step == until
    a = torch.load(run / "last.ckpt", weights_only=True)["modules"]
    b = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=True)["modules"]
    for name in ("primal", "dual"):
        assert same_weights(a[name], b[name])


def test_dual_term_trains_the_dual_blocks(tmp_path: Path) -> None:
    """With dual_weight > 0 the dual blocks (started from the init file) change; with 0 they do not."""
    torch.manual_seed(1)
    cfg = DRNConfig(4, 1, 4)
    init = tmp_path / "init.safetensors"
    save_model(init, DRN(cfg), DualModel(cfg))
    start = weights(init)
    dual_keys = [k for k in start if k.startswith("dual.")]
    assert dual_keys
    for w, changes in ((0.1, True), (0.0, False)):
        out = tmp_path / f"w{w}"
        options = tiny(out, n_blocks=None, n_feats=None, init=str(init), steps=3, dual_weight=w, amp="bf16")
        with pytest.warns(UserWarning, match="AMP"):
            result = train(options)
        assert any("AMP" in note for note in result.notes)
        end = weights(out / "final.safetensors")
        unchanged = same_weights({k: start[k] for k in dual_keys}, {k: end[k] for k in dual_keys})
        assert unchanged is not changes
        assert not torch.equal(start["head.weight"], end["head.weight"])


def test_official_primal_and_dual_files_as_starting_point(tmp_path: Path) -> None:
    """An official-layout DRN-S x4 state dict plus the official dual file start a run (stopped at 0)."""
    from drn_cli.checkpoint import read_checkpoint, read_dual_checkpoint

    primal_file = REFERENCE / "golden" / "drn-s-x4.pt"
    dual_file = REFERENCE / "weights" / "DRNS4x_dual_model.pt"
    run = tmp_path / "run"
    options = tiny(run, n_blocks=None, n_feats=None, init=str(primal_file), init_dual=str(dual_file), stop_at=0)
    result = train(options)
    assert result.step == 0 and not result.finished
    saved = weights(run / "last.safetensors")
    expected = read_checkpoint(primal_file).primal
    official_dual = read_dual_checkpoint(dual_file, DRNConfig(4, 30, 16)).state_dict()
    assert same_weights({k: v for k, v in saved.items() if not k.startswith("dual.")}, expected)
    assert same_weights({k[5:]: v for k, v in saved.items() if k.startswith("dual.")}, official_dual)
    assert json.loads((run / "config.json").read_text())["dual_init"] == f"from {dual_file}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gloo_data_parallel_matches_single_process(tmp_path: Path) -> None:
    """2 CPU processes (gloo) end with identical weights, equal to one process with twice the batch.

    Rank r of step s gets the samples (2s + r) * 2 .. + 1, so the two ranks together see exactly the
    4-sample batch of the single process, and the averaged gradient is that batch's gradient.
    """
    # The gradient-sensitive loss without progressive supervision leaves tail[0] unused: a case that
    # plain DistributedDataParallel would refuse without find_unused_parameters.
    opts = tiny(tmp_path / "ddp", steps=3, batch_size=2, loss="gs", progressive=False).to_dict()
    opts_file = tmp_path / "ddp.json"
    opts_file.write_text(json.dumps(opts))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            WORLD_SIZE="2",
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            OMP_NUM_THREADS="1",
        )
        cmd = [sys.executable, "-m", "drn_cli.training", str(opts_file), "--dump-dir", str(tmp_path / "dump")]
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-2000:]
    r0, r1 = weights(tmp_path / "dump" / "rank0.safetensors"), weights(tmp_path / "dump" / "rank1.safetensors")
    assert same_weights(r0, r1)
    assert same_weights(r0, weights(tmp_path / "ddp" / "final.safetensors"))
    single = train(tiny(tmp_path / "single", steps=3, batch_size=4, loss="gs", progressive=False))
    assert single.finished
    assert same_weights(r0, weights(tmp_path / "single" / "final.safetensors"), atol=1e-5)


# ---------------------------------------------------------------------------- errors


def _small_image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "small"
    d.mkdir()
    Image.open(T91 / "t1.bmp").convert("RGB").crop((0, 0, 20, 20)).save(d / "crop.png")
    return d


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"patch_size": 30}, "multiple of the scale"),
        ({"scale": 3}, "scales"),
        ({"loss": "l2"}, "unknown loss"),
        ({"hr_dirs": []}, "no training image folder"),
        ({"hr_dirs": ["/nonexistent/drn-train"]}, "does not exist"),
        ({"n_feats": 2}, "invalid model shape"),
        ({"steps": 0}, "steps"),
        ({"amp": "fp8"}, "AMP"),
    ],
)
def test_bad_options_raise_input_error(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        train(tiny(tmp_path / "run", **change))


def test_bad_data_and_runs_raise_input_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        train(tiny(tmp_path / "r1", hr_dirs=[str(empty)]))
    with pytest.raises(InputError, match="smaller than the 32-pixel patch"):
        train(tiny(tmp_path / "r2", hr_dirs=[str(_small_image_dir(tmp_path))]))
    with pytest.raises(InputError, match="cannot resume"):
        train(tiny(tmp_path / "r3", resume=True))
    train(tiny(tmp_path / "r4", steps=1))
    with pytest.raises(InputError, match="already holds a training run"):
        train(tiny(tmp_path / "r4", steps=1))


def test_init_model_of_another_scale_is_refused(tmp_path: Path) -> None:
    x8 = tmp_path / "x8.safetensors"
    save_model(x8, DRN(DRNConfig(8, 1, 4)))
    with pytest.raises(DrnError, match="x8"):
        train(tiny(tmp_path / "run", n_blocks=None, n_feats=None, init=str(x8)))
