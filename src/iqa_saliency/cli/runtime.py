"""What the entry points set up around a run: known third-party warnings, wandb's folders and
progress output. No Hydra here, so the Python API uses the same set-up."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

from .. import progress

# wandb's folders outside the run's own: staging of table media and artifacts (data), the artifact cache, artifact
# downloads. Pointed into the run or sweep folder so an offline run is self-contained.
WANDB_DIRS = {"WANDB_DATA_DIR": "data", "WANDB_CACHE_DIR": "cache", "WANDB_ARTIFACT_DIR": "artifacts"}
_ours: dict[str, str] = {}  # the values this process set (a later run or sweep may move them; a user's stay)


def keep_wandb_inside(folder: str | os.PathLike) -> dict[str, str]:
    """Point WANDB_DATA_DIR / WANDB_CACHE_DIR / WANDB_ARTIFACT_DIR into `folder`/wandb, except where the user set
    them. Call before the first wandb run of the process starts (its service inherits the environment)."""
    changed = {}
    for var, sub in WANDB_DIRS.items():
        current = os.environ.get(var)
        if current and current != _ours.get(var):
            continue  # the user's choice
        path = str(Path(folder).resolve() / "wandb" / sub)
        os.environ[var] = _ours[var] = changed[var] = path
    return changed


def quiet_known_warnings() -> None:
    """Silence the third-party warnings a run cannot act on, each by its exact message and origin."""
    # pytorch_lightning 2.6's pytree copy builds torch's LeafSpec, which newer torch deprecates; nothing to change
    # on our side (a Lightning release that uses TreeSpec.is_leaf removes it).
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"pytorch_lightning\.utilities\._pytree")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"torch\.utils\._pytree")
    # Lightning looks for Slurm in every Trainer (and again in trainer.test) and, where `srun` is installed, warns
    # that it is not used. Outside a Slurm allocation there is nothing to use it for; inside one (sbatch without
    # srun) the hint stays. Slurm sweeps run each cell under srun (hydra/launcher=slurm), where it is silent.
    if "SLURM_JOB_ID" not in os.environ:
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used",
                                module=r"lightning_fabric\.plugins\.environments\.slurm")
    quiet_known_adverts()


class _DropMessages(logging.Filter):
    """Drop log records whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


# Lightning 2.6 advertises a cloud logger in every Trainer: nothing a run here can act on.
_ADVERTS = _DropMessages("💡 Tip: For seamless cloud logging")


def quiet_known_adverts() -> None:
    """Drop Lightning's advertisement from its rank-zero log (its messages about devices stay)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _ADVERTS not in logger.filters:
            logger.addFilter(_ADVERTS)


def show_progress(enabled: bool) -> None:
    """Progress of work outside Lightning's loops follows trainer.enable_progress_bar."""
    progress.set_enabled(enabled)


def discard_stub_folder(run_dir: str | os.PathLike, stop_at: str | os.PathLike) -> bool:
    """Remove a run folder that holds only what Hydra wrote when the job started (.hydra/ and the job's log): a run
    refused by a check leaves nothing behind. Its parents below `stop_at` go too when that leaves them empty."""
    folder = Path(run_dir)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    if not all((e.name == ".hydra" and e.is_dir()) or (e.suffix == ".log" and e.is_file()) for e in entries):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    stop = Path(stop_at).resolve()
    parent = folder.resolve().parent
    while parent != stop and stop in parent.parents:
        try:
            parent.rmdir()  # only while empty
        except OSError:
            break
        parent = parent.parent
    return True
