"""Copying a registered local model directory into the store (app/model_copy.py): a directory the API cannot
read is the registrant's problem, a 422 naming the file, and nothing is left behind."""

from __future__ import annotations

import builtins
import shutil

import pytest

from app import model_copy
from app.errors import Unprocessable


def test_an_unreadable_model_file_is_a_422_naming_it(tiny_bert, tmp_path, monkeypatch):
    root = tmp_path / "models"
    shutil.copytree(tiny_bert, root / "tiny")
    weights = next((root / "tiny").glob("*.safetensors"))
    real_open = builtins.open

    def refusing_open(file, mode="r", *args, **kwargs):  # root reads anything: simulate a file it may not
        if str(file) == str(weights) and "r" in mode:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(model_copy, "open", refusing_open, raising=False)
    with pytest.raises(Unprocessable) as caught:
        model_copy.copy_local_model(str(root / "tiny"), "mdl_x", tmp_path / "data", [root], 10**9)
    (error,) = caught.value.errors
    assert error["code"] == "unreadable" and error["field"] == "source.path"
    assert str(weights) in caught.value.detail and "Permission denied" in caught.value.detail
    assert not list((tmp_path / "data").rglob("*.safetensors"))  # the staged copy is gone
