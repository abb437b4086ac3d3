"""Every checkpoint the project opens goes through the safe reader (issue 22): train.py's ckpt_path, local or a
URL, is never handed to Lightning's unpickler unchecked; a checkpoint that carries code is refused in one line and
its code never runs. Every torch.load in the library is the safe reader's."""

from __future__ import annotations

import ast
import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from helpers.cli import ROOT
from helpers.images import make_image

from iqa_saliency.errors import UserError
from iqa_saliency.training.module import AtomicCheckpointIO


class _Payload:
    """Unpickling this calls Path.touch(marker): code execution, if the loader allows it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def lightning_like_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """What a resumable last.ckpt looks like, with a payload hidden among the loop states."""
    marker = tmp_path / "pwned"
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1, "global_step": 4, "state_dict": {"classifier.net.fc.weight": torch.zeros(2, 2)},
                "loops": {"fit_loop": {"state": _Payload(marker)}}, "optimizer_states": [],
                "iqa_saliency": {"arch": "resnet18", "class_names": ["a", "b"]}}, path)
    return path, marker


def test_lightnings_checkpoint_reader_is_the_safe_one(tmp_path):
    path, marker = lightning_like_checkpoint(tmp_path)
    with pytest.raises(UserError, match=r"Could not load weights from .*ckpt_path"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()
    safe = tmp_path / "safe.ckpt"
    torch.save({"epoch": 2, "state_dict": {"w": torch.ones(3)}, "hparams": {"lr": 0.1}}, safe)
    loaded = AtomicCheckpointIO().load_checkpoint(safe)
    assert loaded["epoch"] == 2 and torch.equal(loaded["state_dict"]["w"], torch.ones(3))


def test_every_torch_load_in_the_library_is_the_safe_readers():
    """torch.load appears once in src/, inside load_checkpoint_file, with weights_only=True."""
    calls = []
    for path in sorted((ROOT / "src" / "iqa_saliency").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for call in ast.walk(node):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                            and call.func.attr in ("load", "pl_load", "load_from_checkpoint")
                            and ast.unparse(call.func.value) in ("torch", "pl", "pytorch_lightning")):
                        calls.append((path.name, node.name, ast.unparse(call)))
    assert len(calls) == 1, calls
    name, function, source = calls[0]
    assert (name, function) == ("weights.py", "load_checkpoint_file") and "weights_only=True" in source


def _train(tmp_path: Path, ckpt: str) -> subprocess.CompletedProcess:
    data = tmp_path / "data"
    for c in ("a", "b"):
        for k in range(2):
            make_image(data / c / f"{k}.png", size=(40, 40), seed=k)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({"TORCH_HOME": str(tmp_path / "torch_home"), "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0",
                "no_proxy": "127.0.0.1,localhost"})
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "dataset=folder", f"dataset.root={data}",
                           "pretrained=false", "logger=none", "dataset.crop=32", f"ckpt_path={ckpt}",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def _assert_refused(proc: subprocess.CompletedProcess, marker: Path, tmp_path: Path) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "ckpt_path" in lines[0], proc.stderr[-3000:]
    assert "Could not load weights" in lines[0]
    assert not marker.exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_local_ckpt_path_carrying_code_is_refused_in_one_line(tmp_path):
    path, marker = lightning_like_checkpoint(tmp_path)
    _assert_refused(_train(tmp_path, str(path)), marker, tmp_path)


@pytest.mark.slow
def test_a_ckpt_path_url_carrying_code_is_downloaded_then_refused(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    path, marker = lightning_like_checkpoint(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proc = _train(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/{path.name}")
    finally:
        server.shutdown()
        server.server_close()
    _assert_refused(proc, marker, tmp_path)
    assert (tmp_path / "torch_home" / "hub" / "checkpoints" / "last.ckpt").is_file()  # read from the hub cache
