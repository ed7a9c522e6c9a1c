"""The no-follow reader of model folders (worker/engine/safe_files.py) and the verified snapshot a registered
folder loads from (references.resolve): links, hard links, odd files and Python files in sub-folders are refused
naming the file; a folder changed since registration never reaches a load."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from worker.engine.errors import EngineError, ModelReferenceError, UnsafeInputError
from worker.engine.recipe import LocalRef
from worker.engine.references import SNAPSHOTS, hash_dir, resolve
from worker.engine.safe_files import CHANGED, ModelFolder, manifest_digest, snapshot
from worker.engine.tasks import get_task

SECRET = b"zz-outside-secret-zz"


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "root").mkdir()
    return (tmp_path / "root").resolve()


@pytest.fixture
def model(root, tiny_bert) -> Path:
    shutil.copytree(tiny_bert, root / "m")
    return root / "m"


@pytest.fixture
def outside(tmp_path, tiny_bert) -> Path:
    """A valid vocabulary outside every root, marked so that its content is recognisable wherever it lands."""
    path = tmp_path / "outside" / "vocab.txt"
    path.parent.mkdir()
    path.write_bytes((tiny_bert / "vocab.txt").read_bytes() + SECRET + b"\n")
    return path


def registered(model: Path) -> str:
    """The digest a registration records (the manifest of hash_dir, as app/intake.py recorded it before)."""
    manifest = "".join(f"{name} {digest}\n" for name, digest in hash_dir(model).items())
    return hashlib.sha256(manifest.encode()).hexdigest()


def local(model: Path, digest: str | None) -> LocalRef:
    return LocalRef(source="local", path=str(model), sha256=digest)


def open_folder(model: Path, root: Path) -> ModelFolder:
    return ModelFolder.open(model, root, str(model))


def test_the_digest_is_the_one_registration_records_whatever_the_names(root):
    folder = root / "names"
    for name in ("a/x", "a-b/x", "a.b", "a/b/c", "z", "A"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    with open_folder(folder, root) as f:
        assert manifest_digest(f.hashes()) == registered(folder)
        assert f.files == {n: len(n) for n in ("A", "a-b/x", "a.b", "a/b/c", "a/x", "z")}


@pytest.mark.parametrize("case", ["file link inside", "file link out", "dir link inside", "hard link", "fifo",
                                  "too deep"])
def test_the_walk_refuses_naming_the_file_relative_to_the_folder(model, root, outside, case):
    sub = model / "1_Pooling"
    sub.mkdir()
    (sub / "config.json").write_text("{}")
    expected = {"file link inside": ("1_Pooling/link.json", "symbolic link"),
                "file link out": ("1_Pooling/config.json", "symbolic link"),
                "dir link inside": ("more", "symbolic link"),
                "hard link": ("1_Pooling/config.json", "hard links"),
                "fifo": ("pipe", "not a regular file"),
                "too deep": ("d/" * 16 + "d", "nested more than")}[case]
    if case == "file link inside":
        (sub / "link.json").symlink_to(model / "config.json")
    elif case == "file link out":
        (sub / "config.json").unlink()
        (sub / "config.json").symlink_to(outside)
    elif case == "dir link inside":
        (model / "more").symlink_to(sub, target_is_directory=True)
    elif case == "hard link":
        os.link(sub / "config.json", root / "elsewhere.json")
    elif case == "fifo":
        os.mkfifo(model / "pipe")
    else:
        (model / Path(*["d"] * 17)).mkdir(parents=True)
    with pytest.raises(EngineError) as caught:
        open_folder(model, root)
    name, why = expected
    assert f"model file {name} " in caught.value.message and why in caught.value.message
    assert str(root) not in caught.value.message  # the user's relative name, never a server path


def test_a_file_swapped_for_a_link_after_the_walk_is_refused_when_opened(model, root, outside):
    with open_folder(model, root) as folder:
        (model / "vocab.txt").unlink()
        (model / "vocab.txt").symlink_to(outside)
        with pytest.raises(UnsafeInputError, match=r"model file vocab\.txt is a symbolic link"):
            folder.hashes()


def test_a_folder_component_swapped_for_a_link_is_refused(root, tiny_bert, tmp_path):
    (root / "team").mkdir()
    shutil.copytree(tiny_bert, root / "team" / "m")
    real = root / "team" / "m"  # resolved now; then "team" becomes a link to a look-alike outside
    shutil.copytree(root / "team", tmp_path / "elsewhere")
    shutil.rmtree(root / "team")
    (root / "team").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafeInputError, match="changed while it was opened"):
        open_folder(real, root)


def test_a_snapshot_is_verified_and_shared_by_digest(model, root, tmp_path):
    digest = registered(model)
    with open_folder(model, root) as folder:
        made = snapshot(folder, tmp_path / "cache", digest)
    assert made == tmp_path / "cache" / digest and hash_dir(made) == hash_dir(model)
    (model / "vocab.txt").write_text("edited\n")
    with open_folder(model, root) as folder:
        assert snapshot(folder, tmp_path / "cache", digest) == made  # made once: the edit is not read
        with pytest.raises(ModelReferenceError, match=f"{CHANGED}: the files' sha256 is now"):
            snapshot(folder, tmp_path / "other", digest)
    assert list((tmp_path / "other").iterdir()) == []  # nothing half-made is left behind


def test_a_registered_folder_loads_its_verified_copy_never_the_folder(model, root, tmp_path, outside):
    base = tmp_path / "data"
    ref = local(model, registered(model))
    (model / "vocab.txt").unlink()
    (model / "vocab.txt").symlink_to(outside)
    with pytest.raises(EngineError, match=f"^{CHANGED}: model file vocab.txt is a symbolic link"):
        resolve(ref, roots=[root], base_dir=base, work_dir=tmp_path / "w")
    (model / "vocab.txt").unlink()
    shutil.copy(outside, model / "vocab.txt")  # a plain edit: the digest no longer matches
    with pytest.raises(ModelReferenceError, match=f"^{CHANGED}: the files' sha256"):
        resolve(ref, roots=[root], base_dir=base, work_dir=tmp_path / "w")
    assert not (base / SNAPSHOTS / ref.sha256).exists()

    (model / "vocab.txt").write_bytes(outside.read_bytes()[: -len(SECRET) - 1])  # the registered content again
    resolved = resolve(ref, roots=[root], base_dir=base, work_dir=tmp_path / "w")
    assert Path(resolved.name_or_path) == base / SNAPSHOTS / ref.sha256
    assert resolved.provenance == {"source": "local", "path": str(model), "sha256": ref.sha256}
    (model / "vocab.txt").unlink()  # changed after the copy was made: jobs keep loading the registered files
    (model / "vocab.txt").symlink_to(outside)
    again = resolve(ref, roots=[root], base_dir=base, work_dir=tmp_path / "w")
    _, tokenizer = get_task("feature-extraction").load(again)
    assert SECRET.decode() not in tokenizer.get_vocab()


def test_an_unregistered_folder_gets_the_same_refusals(model, root, tmp_path):
    (model / "sub").mkdir()
    (model / "sub" / "helper.py").write_text("import os\n")
    with pytest.raises(UnsafeInputError, match=r"contains Python files \(sub/helper.py\)"):
        resolve(local(model, None), roots=[root], base_dir=tmp_path, work_dir=tmp_path / "w")
    (model / "sub" / "helper.py").unlink()
    os.link(model / "config.json", tmp_path / "second-name.json")
    with pytest.raises(UnsafeInputError, match=r"model file config\.json has 2 hard links"):
        resolve(local(model, None), roots=[root], base_dir=tmp_path, work_dir=tmp_path / "w")
