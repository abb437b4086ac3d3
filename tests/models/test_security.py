"""Untrusted files and configs: pickles do not run, downloads are hash-checked, nothing uploads, no shell."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
from helpers.cli import ROOT, run_cli

from iqa_saliency.errors import UserError, WeightsUnavailableError
from iqa_saliency.models.classifier import load_classifier
from iqa_saliency.models.paq2piq import PaQ2PiQ, PaQ2PiQWeights, load_paq2piq


class _Payload:
    """Unpickling this calls Path.touch(marker): code execution, if the loader allows it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    return path, marker


def test_the_malicious_checkpoint_really_runs_code_with_an_unsafe_load(tmp_path):
    path, marker = malicious_checkpoint(tmp_path)
    torch.load(path, weights_only=False)  # what the project must never do
    assert marker.exists()


@pytest.mark.parametrize("loader", ["quality", "classifier"])
def test_malicious_checkpoint_does_not_execute(tmp_path, loader):
    path, marker = malicious_checkpoint(tmp_path)
    load = load_paq2piq if loader == "quality" else load_classifier
    with pytest.raises(UserError, match=rf"Could not load weights from '{re.escape(str(path))}'.*{loader}\.checkpoint"):
        load(checkpoint=str(path))
    assert not marker.exists()


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_malicious_checkpoint_via_cli_is_one_line_error(tmp_path):
    path, marker = malicious_checkpoint(tmp_path)
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "pretrained=false", "logger=none", f"classifier.checkpoint={path}",
                   f"hydra.run.dir={run}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: Could not load weights from '{path}'")
    assert not marker.exists() and not (run / "summary.json").exists()


def _fake_download(payload: bytes):
    def download(url: str, dst: str, progress: bool = True) -> None:
        Path(dst).write_bytes(payload)

    return download


def test_downloaded_weights_with_wrong_sha256_are_never_used_or_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    src = tmp_path / "release.pth"
    torch.save(PaQ2PiQ().state_dict(), src)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fake_download(src.read_bytes()))
    loaded = []
    monkeypatch.setattr("iqa_saliency.models.paq2piq.load_checkpoint_file", lambda *a: loaded.append(a))
    with pytest.raises(WeightsUnavailableError, match="Downloaded weights.*sha256"):
        load_paq2piq(PaQ2PiQWeights.OFFICIAL.value.url, sha256="0" * 64)
    assert not loaded  # the file was refused before torch.load saw it
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").iterdir())  # and not kept in the cache


def test_downloaded_weights_with_right_sha256_are_cached_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    src = tmp_path / "release.pth"
    torch.save(PaQ2PiQ().state_dict(), src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fake_download(src.read_bytes()))
    _, ident = load_paq2piq(PaQ2PiQWeights.OFFICIAL.value.url, sha256=digest[:10])
    assert ident.sha256 == digest
    assert (tmp_path / "torch" / "hub" / "checkpoints" / "RoIPoolModel-fit.10.bs.120.pth").is_file()


def test_wandb_is_offline_unless_the_user_turns_it_on():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="evaluate")
        assert cfg.logger._target_.endswith("WandbLogger") and cfg.logger.offline is True
        assert compose(config_name="evaluate", overrides=["logger=wandb"]).logger.offline is True
    for path in (ROOT / "conf" / "logger").glob("*.yaml"):
        text = path.read_text()
        assert "WandbLogger" not in text or re.search(r"^offline: true", text, re.M), path


def test_no_config_value_can_reach_a_shell():
    """The only subprocess in the library runs `git rev-parse` with an argument list; nothing uses a shell."""
    sources = [*sorted((ROOT / "src").rglob("*.py")), *sorted(ROOT.glob("*.py"))]
    shell = re.compile(r"shell\s*=\s*True|os\.system|os\.popen|commands\.|pty\.spawn|(?<![.\w])(eval|exec)\(")
    hits = []
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if shell.search(line):
                hits.append(f"{path.name}:{n}: {line.strip()}")
            if re.search(r"subprocess\.", line) and path.name != "provenance.py":
                hits.append(f"{path.name}:{n}: {line.strip()}")
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                hits.append(f"{path.name}:{n}: {line.strip()}")
    assert not hits, hits
