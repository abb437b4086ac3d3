"""What the entry points set up around a run: known third-party warnings, wandb's folders and
progress output. No Hydra here, so the Python API uses the same set-up."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import progress

# wandb's folders outside the run's own: staging of table media and artifacts (data), the artifact cache, artifact
# downloads. Pointed into the run or sweep folder so an offline run is self-contained.
WANDB_DIRS = {"WANDB_DATA_DIR": "data", "WANDB_CACHE_DIR": "cache", "WANDB_ARTIFACT_DIR": "artifacts"}
# The values this tool set (a later run or cell may move them; a user's stay), kept in the environment so that a
# launcher's worker processes (joblib, submitit) know them too.
OURS = "IQA_SALIENCY_WANDB_DIRS"


def keep_wandb_inside(folder: str | os.PathLike, variables: tuple[str, ...] = tuple(WANDB_DIRS)) -> dict[str, str]:
    """Point `variables` (WANDB_DATA_DIR / WANDB_CACHE_DIR / WANDB_ARTIFACT_DIR) into `folder`/wandb, except where
    the user set them. The cache and artifact folders are read by wandb's service, which inherits the environment
    of the first run of the process; the staging folder (data) is read when a table is logged, so each cell can
    have its own (its table media then stay inside its folder)."""
    ours = set(filter(None, os.environ.get(OURS, "").split(os.pathsep)))
    changed = {}
    for var in variables:
        current = os.environ.get(var)
        if current and current not in ours:
            continue  # the user's choice
        path = str(Path(folder).resolve() / "wandb" / WANDB_DIRS[var])
        os.environ[var] = changed[var] = path
        ours.add(path)
    os.environ[OURS] = os.pathsep.join(sorted(ours))
    return changed


@contextmanager
def wandb_staging_in(folder: str | os.PathLike) -> Iterator[None]:
    """While a cell logs its table: wandb's staging folder (WANDB_DATA_DIR, read when the table's media are staged)
    inside the cell's folder, unless the user set it; restored afterwards, since wandb warns when its variables
    differ at the next run's start."""
    var = "WANDB_DATA_DIR"
    current = os.environ.get(var)
    if current and current not in set(os.environ.get(OURS, "").split(os.pathsep)):
        yield  # the user's choice
        return
    os.environ[var] = str(Path(folder).resolve() / "wandb" / WANDB_DIRS[var])
    try:
        yield
    finally:
        if current is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = current


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


class _OncePerProcess(logging.Filter):
    """Let a message that starts with one of `prefixes` through the first time only (each text once)."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if not text.startswith(self.prefixes):
            return True
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


# Every Trainer (each cell of a sweep) reports the devices again: shown for the first cell of the process only.
_DEVICE_LINES = _OncePerProcess("GPU available:", "TPU available:", "HPU available:", "IPU available:")


def quiet_known_adverts() -> None:
    """Drop Lightning's advertisement from its rank-zero log; its messages about devices once per process."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        for flt in (_ADVERTS, _DEVICE_LINES):
            if flt not in logger.filters:
                logger.addFilter(flt)


def show_progress(enabled: bool) -> None:
    """Progress of work outside Lightning's loops follows trainer.enable_progress_bar."""
    progress.set_enabled(enabled)


def discard_stub_folder(run_dir: str | os.PathLike, stop_at: str | os.PathLike, also: tuple[str, ...] = ()) -> bool:
    """Remove a run folder that holds only what Hydra wrote when the job started (.hydra/, the job's log and the
    files named in `also`): a run refused by a check leaves nothing behind. Its parents below `stop_at` go too when
    that leaves them empty."""
    folder = Path(run_dir)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    if not all((e.name == ".hydra" and e.is_dir()) or (e.suffix == ".log" and e.is_file()) or e.name in also
               for e in entries):
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
