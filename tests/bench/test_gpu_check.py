"""`make gpu-check` cannot rot: every file, module, marker and option its commands name exists (read from
`make -n`, the commands make would run), and every CUDA test carries the `cuda` marker the check selects."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess

import pytest
from helpers.cli import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def gpu_check_commands(device: str) -> list[list[str]]:
    """The commands of `make gpu-check DEVICE=device` as argument lists (environment assignments dropped)."""
    # --no-print-directory: under a parent make (`make test`), make prints "Entering directory" lines
    proc = subprocess.run(["make", "--no-print-directory", "-n", "gpu-check", f"DEVICE={device}", "PY=python",
                           "BENCH_OUT=bench-out"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    commands = []
    for line in proc.stdout.splitlines():
        words = shlex.split(line)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words = words[1:]
        if words:
            commands.append(words)
    return commands


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_every_module_option_and_path_gpu_check_names_exists(device):
    commands = gpu_check_commands(device)
    modules = [c[2] for c in commands if c[:2] == ["python", "-m"]]
    assert "pytest" in modules and "benchmarks.pipeline" in modules, commands
    for words in commands:
        assert words[:2] == ["python", "-m"], f"not a python -m command: {words}"
        module, args = words[2], words[3:]
        if module == "pytest":
            marker = args[args.index("-m") + 1]
            assert marker == "cuda"
            paths = [a for a in args if not a.startswith("-") and a not in (marker, "no:cacheprovider")]
            assert paths and all((ROOT / p).exists() for p in paths), paths
            continue
        bench = importlib.import_module(module)
        parsed = bench.build_parser().parse_args(args)  # an unknown or renamed option exits here
        assert parsed.device == device
        assert str(parsed.out).startswith(f"bench-out/gpu-check-{device}/"), parsed.out


def test_the_cpu_mode_is_tiny_and_the_gpu_mode_is_not():
    def images(device):
        return [int(c[c.index("--images") + 1]) for c in gpu_check_commands(device) if "--images" in c]

    assert max(images("cpu")) <= 8 and min(images("cuda")) >= 512


def test_ci_runs_the_tiny_mode():
    assert "make gpu-check DEVICE=cpu" in (ROOT / ".ci" / "run").read_text()


def test_every_cuda_test_carries_the_marker_gpu_check_selects():
    # a test that skips itself without CUDA (instead of @pytest.mark.cuda) would never run in `make gpu-check`
    marked, unmarked = [], []
    for path in (ROOT / "tests").rglob("test_*.py"):
        text = path.read_text()
        if "pytest.mark.cuda" in text:
            marked.append(path.name)
        if re.search(r"skip(if)?\(\s*not\s+torch\.cuda\.is_available\(\)", text):
            unmarked.append(path.name)
    assert not unmarked, f"use @pytest.mark.cuda instead of a skipif on torch.cuda.is_available(): {unmarked}"
    assert {"test_torch_backend.py", "test_similarity_reference.py", "test_methods.py"} <= set(marked)
