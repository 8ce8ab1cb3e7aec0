"""The bucket repository's pure parts: when a version's listing is whole, where the cache goes, and the
``--model-repo`` setting keeping a URL as a URL."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfclassify.server.core.object_repository import RepositoryMirror, default_cache, missing_files
from tfclassify.server.settings import ServerSettings


def listing(*names: str) -> dict[str, tuple[int, str]]:
    return dict.fromkeys(names, (1, "etag"))


def test_a_version_is_whole_with_its_graph_index_and_every_shard():
    assert missing_files(listing("saved_model.pb", "variables/variables.index",
                                 "variables/variables.data-00000-of-00001", "labels.txt")) == []
    assert missing_files(listing("saved_model.pb")) == ["variables/variables.index", "variables/variables.data-*"]
    assert missing_files(listing("variables/variables.index", "variables/variables.data-00000-of-00001")) == [
        "saved_model.pb"]
    assert missing_files(listing("saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00003",
                                 "variables/variables.data-00002-of-00003")) == [
        "variables/variables.data-00001-of-00003"]


def test_keys_are_grouped_by_model_and_version_hidden_parts_skipped(tmp_path):
    from tfclassify.common.storage.syncing import ObjectInfo

    mirror = RepositoryMirror("s3://bucket/repo", tmp_path)
    keys = ["repo/fashion/1/saved_model.pb", "repo/fashion/1/variables/variables.index", "repo/fashion/notes/x",
            "repo/.trash/2/saved_model.pb", "repo/fashion/.tmp-3/saved_model.pb", "repo/README.md",
            "repo/fashion/2/.DS_Store", "repo/digits/10/saved_model.pb"]
    groups = mirror._group(ObjectInfo(k, 5, "e") for k in keys)
    assert groups == {("fashion", 1): {"saved_model.pb": (5, "e"), "variables/variables.index": (5, "e")},
                      ("digits", 10): {"saved_model.pb": (5, "e")}}
    mirror.close()


def test_the_default_cache_is_one_folder_per_url(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a, b = default_cache("s3://bucket/models"), default_cache("s3://bucket/other")
    assert a.parent == b.parent == tmp_path / "tfclassify" / "models" and a != b
    assert default_cache("s3://bucket/models/") == a


def test_model_repo_keeps_a_url_as_a_url_and_a_folder_as_a_path(monkeypatch):
    monkeypatch.delenv("TFCLASSIFY_MODEL_REPO", raising=False)
    parser = argparse.ArgumentParser()
    ServerSettings.add_arguments(parser)
    url = ServerSettings.from_args(parser.parse_args(["--model-repo", "s3://bucket/models"]))
    assert url.model_repo == "s3://bucket/models" and url.model_cache is None
    folder = ServerSettings.from_args(parser.parse_args(["--model-repo", "/srv/models", "--model-cache", "/c"]))
    assert folder.model_repo == Path("/srv/models") and folder.model_cache == Path("/c")
