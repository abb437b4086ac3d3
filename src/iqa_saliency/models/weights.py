"""Locating, downloading, verifying and safely loading weight files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import UserError, WeightsUnavailableError

UNTRAINED = "untrained"


@dataclass(frozen=True)
class WeightsIdentity:
    """What a run's model weights were: a name, the file and its sha256, or 'untrained'."""

    name: str
    source: str | None = None
    sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "sha256": self.sha256}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_url(source: str) -> bool:
    return urlparse(str(source)).scheme in ("http", "https")


def hub_checkpoint_dir() -> Path:
    """The torch hub cache folder where downloaded weights live."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _check_hash(path: Path, sha256: str | None, what: str, override: str) -> str:
    actual = sha256_file(path)
    if sha256 and not actual.startswith(sha256.lower()):
        raise WeightsUnavailableError(
            f"{what} '{path}' has sha256 {actual[:16]}…, expected {sha256[:16]}…; the file is corrupt or a "
            f"different release. Delete it to download again, or set {override}=PATH to a file you trust."
        )
    return actual


def fetch_weights(source: str, sha256: str | None, override: str, download: bool = True) -> tuple[Path, str]:
    """Return (local path, sha256) for a URL (torch hub cache, downloaded if absent) or a local path.

    `sha256` may be a full digest or a prefix (torch hub convention); a mismatch is an error.
    `override` names the config key a user sets to point at a local file instead.
    """
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"Weights file '{path}' does not exist. Set {override}=PATH to an existing file."
            )
        return path, _check_hash(path, sha256, "Weights file", override)

    filename = os.path.basename(urlparse(source).path)
    cache_dir = hub_checkpoint_dir()
    cached = cache_dir / filename
    if not cached.is_file():
        if not download:
            raise WeightsUnavailableError(
                f"Weights '{filename}' are not in the cache folder {cache_dir}. "
                f"Copy the file there, or set {override}=PATH."
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", dir=cache_dir)
        os.close(fd)
        try:
            torch.hub.download_url_to_file(source, tmp, progress=False)
            _check_hash(Path(tmp), sha256, "Downloaded weights", override)
            os.replace(tmp, cached)
        except WeightsUnavailableError:
            raise
        except Exception as exc:
            raise WeightsUnavailableError(
                f"Weights '{filename}' are not in the cache folder {cache_dir} and could not be downloaded from "
                f"{source} ({type(exc).__name__}). Download the file into that folder, or set {override}=PATH "
                f"to a local copy (or pretrained=false to run untrained)."
            ) from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return cached, _check_hash(cached, sha256, "Cached weights", override)


def load_checkpoint_file(path: str | os.PathLike, override: str, allow: tuple[type, ...] = ()) -> Any:
    """torch.load with weights_only=True: a checkpoint is untrusted input and must not run code.

    `allow`: classes the file may also hold, allow-listed for this load only (e.g. argparse.Namespace, the
    hyper-parameters of the original study's Lightning checkpoints).
    """
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "Unsupported global" in line), first[0] if first else "")
        raise UserError(
            f"Could not load weights from '{path}' ({type(exc).__name__}: {detail[:200]}). "
            f"Check that the file is a complete PyTorch checkpoint, or set {override}=PATH to another file."
        ) from exc


def extract_state_dict(obj: Any, path: str | os.PathLike, override: str) -> dict[str, torch.Tensor]:
    """The state_dict inside a checkpoint: plain, or under 'model', 'state_dict' or 'params'."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "params"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(
            f"'{path}' holds no state_dict (a dict of tensors, plain or under 'model'/'state_dict'). "
            f"Set {override}=PATH to a checkpoint saved with torch.save(model.state_dict())."
        )
    return obj


def load_matching_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str, override: str) -> None:
    """Load strictly; on mismatch name the missing, unexpected or misshapen keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshapen:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise UserError(
            f"'{path}' does not fit {type(model).__name__}: {'; '.join(parts)}. "
            f"Set {override}=PATH to weights of the configured architecture."
        )
    model.load_state_dict(state, strict=True)
