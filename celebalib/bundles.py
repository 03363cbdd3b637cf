"""Run bundles: a trained run in one zip file, and reading one back without trusting it.

A bundle holds the files a run needs to predict (its model saved with Keras's own layers,
config.json, the evaluation and retrieval summaries) and ``manifest.json``: the format's
name and version and each member's name, sha256 and size. :func:`pack` writes one
(``celebalib.export.write_bundle`` chooses the run's members). :func:`unpack_bundle` checks
every name and every hash before anything is used, loads the model once in Keras's safe
mode, and only then renames the unpacked folder into the cache under ``CELEBALIB_HOME``
(``runs-cache/NAME-<sha256[:12]>``), where it is a normal run folder from then on.
:func:`fetch_bundle` downloads an ``https://.../NAME.zip#sha256=HEX`` address once, through
``keras.utils.get_file`` and its hash check, so a second use needs no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celebalib.environment import read_environment
from celebalib.errors import RunError
from celebalib.io import atomic_path

FORMAT = "celebalib-run-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL = "best.keras"  # the member a bundle's run predicts with
CACHE = "runs-cache"  # under CELEBALIB_HOME
# A member is one plain file name: no folder, no "..", nothing absolute.
MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ADDRESS = re.compile(r"(?P<url>https?://[^#\s]+/(?P<name>[^/#\s]+)\.zip)#sha256=(?P<digest>[0-9a-fA-F]{64})")
EXPECTED_ADDRESS = "expected an address like https://host/NAME.zip#sha256=<its 64 hex digits>"
CHUNK = 1 << 20
# What every command's --run accepts (``runs.locate_run``), for errors and --help.
RUN_SOURCES = "a run folder, a .zip bundle or an https://.../NAME.zip#sha256=HEX address"


def is_address(source: str | Path) -> bool:
    """Whether ``source`` is an http(s) address rather than a path."""
    return str(source).lower().startswith(("http://", "https://"))


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where unpacked bundles live: ``runs-cache`` under CELEBALIB_HOME."""
    return read_environment().home / CACHE


def cache_folder(name: str, digest: str) -> Path:
    """The run folder a bundle named ``name`` with sha256 ``digest`` unpacks into."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "bundle"
    return cache_root() / f"{plain}-{digest[:12].lower()}"


def check_member_name(name: str, source: str | Path) -> None:
    """Raise RunError unless ``name`` is one plain file name (unpacked only inside the bundle's folder)."""
    if not MEMBER_NAME.fullmatch(name):
        raise RunError(f"{source}: member {name!r}: expected a plain file name (no folder, no '..', "
                       "not absolute); refusing to unpack it")


# ---------------------------------------------------------------------------------------
# Writing


def pack(out: str | Path, members: Mapping[str, Path | bytes], info: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``members`` (name -> file or bytes) and their manifest into the zip ``out``, atomically.

    ``info`` (e.g. the run id) goes into the manifest beside the format and the member list,
    which the manifest is returned as.
    """
    entries = []
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            check_member_name(name, out)
            if isinstance(content, bytes):
                archive.writestr(name, content)
                digest, size = hashlib.sha256(content).hexdigest(), len(content)
            else:
                archive.write(content, name)
                digest, size = sha256_file(content), Path(content).stat().st_size
            entries.append({"name": name, "sha256": digest, "size": size})
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **info, "model": MODEL, "members": entries}
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------
# Reading


def read_manifest(archive: zipfile.ZipFile, source: str | Path) -> dict[str, dict[str, Any]]:
    """The manifest's members as {name: {"sha256", "size"}}, checked against the zip's own entries."""
    names = archive.namelist()
    if MANIFEST not in names:
        raise RunError(f"{source}: no {MANIFEST}; expected a run bundle, as `python -m celebalib export "
                       "--out NAME.zip` writes")
    try:
        manifest = json.loads(archive.read(MANIFEST))
        if manifest.get("format") != FORMAT:
            raise RunError(f"{source}: {MANIFEST} names format {manifest.get('format')!r}; expected {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise RunError(f"{source}: {FORMAT} version {manifest.get('format_version')!r}; this celebalib "
                           f"reads version {FORMAT_VERSION}")
        members = {str(m["name"]): {"sha256": str(m["sha256"]).lower(), "size": int(m["size"])}
                   for m in manifest["members"]}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RunError(f"{source}: {MANIFEST}: expected a JSON object with format, format_version and "
                       f"members of name, sha256 and size ({type(error).__name__}: {error})") from None
    for name in [*members, *names]:
        check_member_name(name, source)
    if set(members) != set(names) - {MANIFEST} or len(names) != len(set(names)):
        raise RunError(f"{source}: its files and {MANIFEST}'s member list differ")
    if MODEL not in members:
        raise RunError(f"{source}: no {MODEL}; expected the run's model in the bundle")
    return members


def extract_checked(archive: zipfile.ZipFile, name: str, expected: Mapping[str, Any], folder: Path,
                    source: str | Path) -> None:
    """Write member ``name`` into ``folder``, raising RunError where its size or sha256 differ from the manifest's."""
    if archive.getinfo(name).file_size != expected["size"]:
        raise RunError(f"{source}: member {name} does not match the size in {MANIFEST}; the bundle is damaged "
                       "or was changed")
    digest, size = hashlib.sha256(), 0
    with archive.open(name) as member, open(folder / name, "wb") as out:
        while chunk := member.read(CHUNK):
            size += len(chunk)
            if size > expected["size"]:
                break
            digest.update(chunk)
            out.write(chunk)
    if size != expected["size"] or digest.hexdigest() != expected["sha256"]:
        raise RunError(f"{source}: member {name} does not match the sha256 and size in {MANIFEST}; "
                       "the bundle is damaged or was changed")


def check_model_is_safe(path: Path, source: str | Path) -> None:
    """Load the model with plain Keras in safe mode, raising RunError where it refuses (e.g. a Lambda layer's code)."""
    import keras

    try:
        keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises ValueError, TypeError or others for a model it cannot load
        reason = " ".join(str(error).split()).split(". ")[0]  # Keras's first sentence says what it refused
        refused = "safe_mode" in str(error) or "Lambda" in str(error)
        what = "Keras's safe mode refuses to load the model" if refused else "Keras cannot load the model"
        raise RunError(f"{source}: {path.name}: {what}; expected Keras's own layers without Python code "
                       f"({reason})") from None


def unpack_bundle(path: str | Path, *, digest: str | None = None, name: str | None = None,
                  source: str | Path | None = None) -> Path:
    """The cache folder the bundle ``path`` unpacks into, unpacked once (see the module docstring).

    ``digest`` is the file's sha256 where the caller checked it already; ``name`` the folder's
    name (default: the file's stem); ``source`` what error messages name (default: ``path``).
    """
    path = Path(path)
    source = source or path
    digest = digest or sha256_file(path)
    target = cache_folder(name or path.stem, digest)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".unpack-{target.name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(path) as archive:
            members = read_manifest(archive, source)
            for member, expected in members.items():
                extract_checked(archive, member, expected, folder, source)
            archive.extract(MANIFEST, folder)
        check_model_is_safe(folder / MODEL, source)
        try:
            os.rename(folder, target)
        except OSError:
            if not target.is_dir():  # else another process unpacked the same bundle first
                raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError):
        raise RunError(f"{source}: not a readable zip file; expected a run bundle, as `python -m celebalib export "
                       "--out NAME.zip` writes") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return target


def fetch_bundle(address: str) -> Path:
    """The cache folder of the bundle at ``address`` (``https://.../NAME.zip#sha256=HEX``), downloaded once.

    ``keras.utils.get_file`` downloads it (with a progress bar) into a temporary folder and checks
    its sha256 before it is unpacked; the download itself is not kept.
    """
    match = ADDRESS.fullmatch(address.strip())
    if not match:
        raise RunError(f"{address}: {EXPECTED_ADDRESS}")
    name, digest = match["name"], match["digest"].lower()
    target = cache_folder(name, digest)
    if target.is_dir():
        return target
    import keras

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".download-{target.name}-", dir=target.parent) as folder:
        try:
            downloaded = keras.utils.get_file(f"{name}.zip", origin=match["url"], file_hash=digest,
                                              hash_algorithm="sha256", cache_dir=folder, cache_subdir="")
        except ValueError as error:
            if "hash" not in str(error):
                raise RunError(f"{match['url']}: download failed ({' '.join(str(error).split())})") from None
            raise RunError(f"{match['url']}: the downloaded file's sha256 differs from the address's "
                           f"#sha256={digest}; nothing was kept") from None
        except Exception as error:  # get_file raises a bare Exception for HTTP and network failures
            raise RunError(f"{match['url']}: download failed ({' '.join(str(error).split())})") from None
        return unpack_bundle(downloaded, digest=digest, name=name, source=match["url"])
