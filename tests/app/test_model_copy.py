"""Copying a registered local model directory into the store (app/model_copy.py): a directory the API cannot
read is the registrant's problem, a 422 naming the file, and nothing is left behind."""

from __future__ import annotations

import os
import shutil

import pytest

from app import model_copy
from app.errors import Unprocessable


def test_an_unreadable_model_file_is_a_422_naming_it(tiny_bert, tmp_path, monkeypatch):
    root = tmp_path / "models"
    shutil.copytree(tiny_bert, root / "tiny")
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):  # root reads anything: simulate a file it may not
        if path == "model.safetensors" and kwargs.get("dir_fd") is not None:  # the reader opens by relative name
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(Unprocessable) as caught:
        model_copy.copy_local_model(str(root / "tiny"), "mdl_x", tmp_path / "data", [root], 10**9)
    (error,) = caught.value.errors
    assert error["code"] == "unreadable" and error["field"] == "source.path"
    assert caught.value.detail == "cannot read model file model.safetensors: Permission denied"  # no server path
    assert not list((tmp_path / "data").rglob("*.safetensors"))  # the staged copy is gone


def test_a_link_inside_the_folder_is_refused_and_nothing_is_copied(tiny_bert, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_bert, root / "tiny")
    (root / "elsewhere").mkdir()
    (root / "tiny" / "1_Pooling").symlink_to(root / "elsewhere", target_is_directory=True)  # inside the root
    with pytest.raises(Unprocessable) as caught:
        model_copy.copy_local_model(str(root / "tiny"), "mdl_x", tmp_path / "data", [root], 10**9)
    assert caught.value.errors[0]["field"] == "source.path"
    assert caught.value.detail.startswith("model file 1_Pooling is a symbolic link")
    assert not list((tmp_path / "data").rglob("*.safetensors"))
