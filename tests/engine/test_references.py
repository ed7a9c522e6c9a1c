"""Teacher references: roots, links, archives, pickles and custom code are checked before loading."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from worker.engine.archive import ArchiveLimits, unpack_archive
from worker.engine.errors import ModelReferenceError, UnsafeInputError
from worker.engine.recipe import ArchiveRef, BundledRef, HubRef, LocalRef
from worker.engine.references import ResolvedModel, check_model_dir, resolve
from worker.engine.tasks import get_task


def _resolve(ref, roots, tmp_path, **kw):
    return resolve(ref, roots=roots, base_dir=tmp_path, work_dir=tmp_path / "work", **kw)


def test_local_dir_under_root_loads(tiny_bert, tmp_path):
    resolved = _resolve(LocalRef(source="local", path=str(tiny_bert)), [tiny_bert.parent], tmp_path)
    model, _ = get_task("feature-extraction").load(resolved)
    assert model.config.num_hidden_layers == 4


def test_paths_outside_roots_are_refused(tiny_bert, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UnsafeInputError, match="outside the allowed roots"):
        _resolve(LocalRef(source="local", path=str(tiny_bert)), [root], tmp_path)
    with pytest.raises(UnsafeInputError, match="outside the allowed roots"):
        _resolve(LocalRef(source="local", path=str(root / ".." / "..")), [root], tmp_path)
    (root / "link").symlink_to(tiny_bert)  # a link inside the root pointing out of it
    with pytest.raises(UnsafeInputError, match="outside the allowed roots"):
        _resolve(LocalRef(source="local", path=str(root / "link")), [root], tmp_path)
    with pytest.raises(UnsafeInputError, match=r"\(none configured\)"):
        _resolve(LocalRef(source="local", path=str(tiny_bert)), [], tmp_path)


def test_bundled_minilm_resolves(tmp_path):
    resolved = _resolve(BundledRef(source="bundled"), [], tmp_path)
    assert (Path(resolved.name_or_path) / "model.safetensors").is_file()


def test_hub_model_not_cached_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # refused by the reference itself (the dry run), before any load is tried
    with pytest.raises(ModelReferenceError, match=r"nobody/nothing@a{40} is not in the local Hugging Face cache"):
        _resolve(HubRef(source="hf", id="nobody/nothing", revision="a" * 40), [], tmp_path)
    # a load reached without the reference's check says the same
    with pytest.raises(ModelReferenceError, match="not in the local Hugging Face cache"):
        get_task("feature-extraction").load(ResolvedModel("nobody/nothing", "a" * 40))


class _Payload:
    """Unpickling this calls os.system: the classic code-running checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_copy(model: Path, dest: Path, marker: Path) -> None:
    """A copy of `model` whose weights are a pickle that would create `marker` when unpickled."""
    shutil.copytree(model, dest)
    (dest / "model.safetensors").unlink()
    torch.save({"weight": _Payload(marker)}, dest / "pytorch_model.bin")


def test_pickle_that_runs_code_is_refused_and_never_runs(tiny_bert, tmp_path):
    model_dir, marker = tmp_path / "evil", tmp_path / "pwned"
    _evil_copy(tiny_bert, model_dir, marker)
    with pytest.raises(UnsafeInputError, match="pickle that would run code"):
        _resolve(LocalRef(source="local", path=str(model_dir)), [tmp_path], tmp_path)
    assert not marker.exists()


def test_plain_pickle_checkpoint_is_accepted(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    model_dir = tmp_path / "bin"
    shutil.copytree(tiny_bert, model_dir)
    torch.save(load_file(model_dir / "model.safetensors"), model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    resolved = _resolve(LocalRef(source="local", path=str(model_dir)), [tmp_path], tmp_path)
    assert resolved.local_dir == model_dir.resolve()


def test_custom_code_is_refused(tiny_bert, tmp_path):
    model_dir = tmp_path / "custom"
    shutil.copytree(tiny_bert, model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsafeInputError, match="custom code"):
        check_model_dir(model_dir)
    cfg.pop("auto_map")
    (model_dir / "config.json").write_text(json.dumps(cfg))
    (model_dir / "modeling_evil.py").write_text("import os\n")
    with pytest.raises(UnsafeInputError, match="Python files"):
        check_model_dir(model_dir)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_model_archive_round_trip(tiny_bert, tmp_path):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tiny_bert, arcname="tiny-bert")
    resolved = _resolve(ArchiveRef(source="archive", path=str(archive)), [tmp_path], tmp_path)
    assert (Path(resolved.name_or_path) / "config.json").is_file()
    assert resolved.provenance["sha256"]
    zipped = tmp_path / "model.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in tiny_bert.iterdir():
            zf.write(f, arcname=f.name)
    assert (unpack_archive(zipped, tmp_path / "z") / "model.safetensors").is_file()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "dotdot", "absolute"])
def test_unsafe_tar_entries_are_refused_before_writing_outside(tmp_path, kind):
    target = tmp_path / "target"
    if kind in ("symlink", "hardlink"):
        info = tarfile.TarInfo("config.json")
        info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        info.linkname = "/etc/passwd"
        members = [(info, None)]
    else:
        name = "../escaped.txt" if kind == "dotdot" else str(tmp_path / "abs.txt")
        members = [_file(name)]
    archive = _tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(UnsafeInputError):
        unpack_archive(archive, target)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "abs.txt").exists()
    assert not target.exists()  # nothing half-unpacked is left


def test_zip_slip_and_zip_symlink_refused(tmp_path):
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(UnsafeInputError, match=r"\.\."):
        unpack_archive(slip, tmp_path / "t1")
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("config.json")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeInputError, match="link"):
        unpack_archive(link, tmp_path / "t2")


def test_entry_count_and_decompression_bomb_caps(tmp_path):
    many = _tar(tmp_path / "many.tar.gz", [_file(f"f{i}") for i in range(20)])
    with pytest.raises(UnsafeInputError, match="more than 10 entries"):
        unpack_archive(many, tmp_path / "t1", ArchiveLimits(max_entries=10))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", b"\0" * (8 * 1024 * 1024))  # 8 MB of zeros packs to ~8 KB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UnsafeInputError, match="decompression bomb"):
        unpack_archive(bomb, tmp_path / "t2", ArchiveLimits(max_total_bytes=1024 * 1024))
    assert not (tmp_path / "t2").exists()


def test_hub_model_at_a_pinned_revision_loads_offline_from_the_cache(tiny_bert, tmp_path):
    """The normal transformers path: a snapshot in the Hugging Face cache layout, no network. In a fresh
    process, since huggingface_hub reads HF_HUB_CACHE once, at import."""
    import subprocess
    import sys

    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--acme--tiny-bert" / "snapshots" / revision
    shutil.copytree(tiny_bert, snapshot)
    code = (
        "import sys\n"
        "from worker.engine.recipe import HubRef\n"
        "from worker.engine.references import resolve\n"
        "from worker.engine.tasks import get_task\n"
        "from worker.engine.errors import ModelReferenceError\n"
        "from pathlib import Path\n"
        "def load(rev):\n"
        "    r = resolve(HubRef(source='hf', id='acme/tiny-bert', revision=rev), roots=[], base_dir=Path('.'),\n"
        "                work_dir=Path('.'))\n"
        "    return get_task('feature-extraction').load(r)[0]\n"
        f"print('layers', load('{revision}').config.num_hidden_layers)\n"
        "try:\n"
        "    load('f' * 40)\n"
        "except ModelReferenceError as e:\n"
        "    print('refused:', e)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "layers 4" in out.stdout, out.stderr[-2000:]
    assert "refused:" in out.stdout and "not in the local Hugging Face cache" in out.stdout


def test_hub_snapshot_with_a_code_running_pickle_is_refused_by_the_cli(tiny_bert, data, tmp_path):
    """A cached hub snapshot gets the local directory's checks: exit 2 naming the unsafe pickle, not an
    internal error from deep inside the load. In a fresh process, as above (HF_HUB_CACHE is read at import)."""
    import subprocess
    import sys

    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--acme--evil" / "snapshots" / revision
    marker = tmp_path / "pwned"
    _evil_copy(tiny_bert, snapshot, marker)
    recipe = {"teacher": {"source": "hf", "id": "acme/evil", "revision": revision}, "task": "feature-extraction",
              "data": {"train": str(data["train"])}, "stages": [{"kind": "distill"}]}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "app.cli", "compress", "r.json", "--out", "out", "--root", "/"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error [unsafe_input]: teacher: pytorch_model.bin is a pickle that would run code" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert not marker.exists()


def test_a_load_that_meets_a_code_running_pickle_says_unsafe_input(tiny_bert, tmp_path):
    """Defence in depth: a load that bypassed the reference checks (transformers' own download of a hub
    model, say) refuses the pickle through transformers' weights_only reader; that is unsafe input."""
    model_dir, marker = tmp_path / "evil", tmp_path / "pwned"
    _evil_copy(tiny_bert, model_dir, marker)
    with pytest.raises(UnsafeInputError, match="holds a pickle that would run code"):
        get_task("feature-extraction").load(ResolvedModel(str(model_dir)))
    assert not marker.exists()


def test_a_partly_downloaded_sharded_hub_snapshot_is_not_taken_as_cached(tiny_bert, tmp_path, monkeypatch):
    """One shard of two in the cache (an interrupted download): online the load completes the download rather
    than being pinned to the cache; offline it is refused at the reference, naming the missing shard."""
    from safetensors.torch import load_file, save_file

    from worker.engine import references

    snapshot = tmp_path / "snapshot"
    shutil.copytree(tiny_bert, snapshot)
    weights = load_file(snapshot / "model.safetensors")
    (snapshot / "model.safetensors").unlink()
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[:len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    index = {"metadata": {}, "weight_map": {k: name for name, names in shards.items() for k in names}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    first = "model-00001-of-00002.safetensors"
    save_file({k: weights[k] for k in shards[first]}, snapshot / first, metadata={"format": "pt"})
    monkeypatch.setattr(references, "hub_snapshot", lambda repo_id, revision: snapshot)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    ref = HubRef(source="hf", id="acme/sharded", revision="b" * 40)

    resolved = _resolve(ref, [], tmp_path)
    assert resolved.snapshot is None and resolved.name_or_path == "acme/sharded"  # not local_files_only
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelReferenceError, match=r"acme/sharded@b{40} is only partly in the local Hugging Face "
                                                  r"cache \(model-00002-of-00002.safetensors is missing\)"):
        _resolve(ref, [], tmp_path)

    second = "model-00002-of-00002.safetensors"
    save_file({k: weights[k] for k in shards[second]}, snapshot / second, metadata={"format": "pt"})
    assert _resolve(ref, [], tmp_path).snapshot == snapshot  # complete: read from the cache, offline too
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert _resolve(ref, [], tmp_path).snapshot == snapshot


def test_a_sharded_pickle_checkpoint_has_each_shard_checked(tiny_bert, tmp_path):
    """pytorch_model.bin.index.json names the shards: they are the weights, and each goes through the
    restricted unpickler (a plain one is accepted, one that would run code is refused before any load)."""
    model_dir = tmp_path / "sharded"
    shutil.copytree(tiny_bert, model_dir)
    (model_dir / "model.safetensors").unlink()
    shards = ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin")
    (model_dir / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a.weight": shards[0], "b.weight": shards[1]}}))
    torch.save({"a.weight": torch.zeros(2)}, model_dir / shards[0])
    torch.save({"b.weight": torch.zeros(2)}, model_dir / shards[1])
    check_model_dir(model_dir)
    marker = tmp_path / "pwned"
    torch.save({"b.weight": _Payload(marker)}, model_dir / shards[1])
    with pytest.raises(UnsafeInputError, match=f"{shards[1]} is a pickle that would run code"):
        check_model_dir(model_dir)
    assert not marker.exists()
