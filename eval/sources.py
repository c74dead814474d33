"""Assets: pinned files fetched by URL and checked by sha256 into a cache, local files, and HF datasets."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError


def cache_root() -> Path:
    """`$LLMJP_EVAL_CACHE`, else `$XDG_CACHE_HOME/llmjp-eval`, else `~/.cache/llmjp-eval`."""
    if explicit := os.environ.get("LLMJP_EVAL_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmjp-eval"


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "LLMJP_EVAL_OFFLINE"))


def go_offline() -> None:
    """Offline mode for the Hugging Face libraries in this process: they read their caches without asking the hub
    (and without a minute of retries when it does not answer). They read the variable when first imported; the
    copies of modules already imported are set too."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if (hub := sys.modules.get("huggingface_hub.constants")) is not None:
        vars(hub)["HF_HUB_OFFLINE"] = True
    if (datasets_config := sys.modules.get("datasets.config")) is not None:
        vars(datasets_config).update(HF_HUB_OFFLINE=True, HF_DATASETS_OFFLINE=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileRef:
    """A file the harness needs: a pinned URL (with sha256) or a local path (sha256 optional)."""

    label: str
    url: str | None = None
    path: Path | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ResolvedFile:
    label: str
    path: Path
    sha256: str
    url: str | None

    def provenance(self) -> dict[str, Any]:
        return {"label": self.label, "url": self.url, "path": str(self.path), "sha256": self.sha256}


def mirrored(url: str, mirrors: dict[str, str]) -> Path | None:
    for prefix, folder in mirrors.items():
        if url.startswith(prefix):
            return Path(folder).expanduser() / url[len(prefix):]
    return None


def _cache_path(ref: FileRef) -> Path:
    assert ref.url is not None
    key = ref.sha256 or hashlib.sha256(ref.url.encode()).hexdigest()
    return cache_root() / "assets" / key[:16] / Path(ref.url).name


def _verify(ref: FileRef, path: Path, where: str) -> str:
    actual = sha256_file(path)
    if ref.sha256 and actual != ref.sha256:
        raise UserError(
            f"{ref.label}: checksum mismatch for {where}: expected sha256 {ref.sha256}, got {actual}; "
            "the file is corrupt or a different version (delete it to re-download, or set sha256: null to accept it)"
        )
    return actual


def resolve_file(ref: FileRef, mirrors: dict[str, str] | None = None, download: bool = True) -> ResolvedFile:
    """Return a verified local copy of `ref`, downloading into the cache if needed."""
    if ref.path is not None:
        if not ref.path.is_file():
            raise UserError(f"{ref.label}: file not found: {ref.path}")
        return ResolvedFile(ref.label, ref.path, _verify(ref, ref.path, str(ref.path)), ref.url)
    if ref.url is None:
        raise UserError(f"{ref.label}: neither a url nor a path is given")
    local = mirrored(ref.url, mirrors or {})
    if local is not None:
        if not local.is_file():
            raise UserError(f"{ref.label}: mirrored file not found: {local} (mirror of {ref.url})")
        return ResolvedFile(ref.label, local, _verify(ref, local, str(local)), ref.url)
    cached = _cache_path(ref)
    if cached.is_file():
        return ResolvedFile(ref.label, cached, _verify(ref, cached, f"cached copy {cached}"), ref.url)
    if not download or offline():
        raise UserError(
            f"{ref.label}: {ref.url} is not in the cache ({cached.parent}) and downloads are off; "
            "run `python -m eval fetch CONFIG` where the internet is reachable, or map it with asset_mirrors"
        )
    _download(ref, cached)
    return ResolvedFile(ref.label, cached, _verify(ref, cached, f"download of {ref.url}"), ref.url)


def is_cached(ref: FileRef, mirrors: dict[str, str] | None = None) -> bool:
    if ref.path is not None:
        return ref.path.is_file()
    if ref.url is None:
        return False
    local = mirrored(ref.url, mirrors or {})
    return (local or _cache_path(ref)).is_file()


def _download(ref: FileRef, dest: Path) -> None:
    assert ref.url is not None
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(ref.url, headers={"User-Agent": "llmjp-eval"})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with urllib.request.urlopen(request, timeout=60) as response, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(response, out)
        actual = sha256_file(Path(tmp))
        if ref.sha256 and actual != ref.sha256:
            raise UserError(
                f"{ref.label}: checksum mismatch for download of {ref.url}: expected sha256 {ref.sha256}, got {actual}"
            )
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        raise UserError(f"{ref.label}: cannot download {ref.url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"{ref.label}: cannot download {ref.url} ({reason}); check the network, "
            "or give a local copy via asset_mirrors"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_jsonl(path: Path, label: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line; a bad line is a UserError naming the file and line."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise UserError(f"{label}: {path} line {lineno}: expected a JSON object, got {type(row).__name__}")
                    rows.append((lineno, row))
    except json.JSONDecodeError as e:
        raise UserError(f"{label}: {path} line {lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{label}: {path} is not UTF-8 text") from None
    return rows


def load_hf_rows(label: str, dataset: str, config: str | None, split: str, revision: str | None) -> list[dict[str, Any]]:
    """Rows of a Hugging Face dataset (hub id or local HF-layout folder) through `datasets.load_dataset`."""
    import datasets
    from huggingface_hub import errors as hub_errors

    kwargs: dict[str, Any] = {}
    if Path(dataset).is_dir():
        # datasets keys the cache of a local folder by its name and layout, not its content: two folders with the
        # same layout would share (and return) one cached copy. A cache per folder content avoids that.
        kwargs["cache_dir"] = str(cache_root() / "hf-local" / _folder_fingerprint(Path(dataset)))
    try:
        ds = datasets.load_dataset(dataset, name=config, split=split, revision=revision, **kwargs)
    except (hub_errors.GatedRepoError, datasets.exceptions.DatasetNotFoundError, hub_errors.RepositoryNotFoundError) as e:
        text = str(e)
        if "gated" in text.lower() or isinstance(e, hub_errors.GatedRepoError) or "401" in text or "403" in text:
            raise UserError(
                f"{label}: the dataset {dataset} is gated: accept its terms on https://huggingface.co/datasets/{dataset} "
                "and set HF_TOKEN to a token of that account"
            ) from None
        raise UserError(f"{label}: dataset {dataset} not found ({text.splitlines()[0]})") from None
    except ValueError as e:
        raise UserError(f"{label}: {dataset} config {config!r} split {split!r}: {str(e).splitlines()[0]}") from None
    except (ConnectionError, OSError) as e:
        hint = " (offline and not cached: run `python -m eval fetch CONFIG` with internet first)" if offline() else ""
        raise UserError(f"{label}: cannot load dataset {dataset}{hint}: {str(e).splitlines()[0]}") from None
    return [dict(row) for row in ds]


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def hf_datasets_cache() -> Path:
    """Where `datasets` keeps prepared datasets, by the rule of `datasets.config` (read without importing datasets):
    `$HF_DATASETS_CACHE`, else `$HF_HOME/datasets`, else `$XDG_CACHE_HOME/huggingface/datasets`."""
    home = os.environ.get("HF_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
    return Path(os.environ.get("HF_DATASETS_CACHE", os.path.join(os.path.expanduser(home), "datasets"))).expanduser()


def _snake_case(name: str) -> str:
    """`datasets.naming.camelcase_to_snakecase`: "AnswerCarefully" → "answer_carefully", "HTMLPage" → "html_page"."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


def hf_is_cached(dataset: str, config: str | None) -> bool:
    """Whether `load_dataset(dataset, config)` works offline: a local folder, or a hub dataset prepared in the
    datasets cache, which keeps it under `<namespace>___<snake_case name>/<config>/<version>/<hash>/` (the folder
    that `datasets` reads back when the hub cannot be reached)."""
    if Path(dataset).is_dir():
        return True
    namespace, _, name = dataset.rpartition("/")
    folder = hf_datasets_cache() / "___".join([*filter(None, [namespace]), _snake_case(name)])
    return any((prepared / "dataset_info.json").is_file()
               for prepared in folder.glob(f"{glob.escape(config) if config else '*'}/*/*"))
