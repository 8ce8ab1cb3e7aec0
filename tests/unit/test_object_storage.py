"""Object storage without a server: URLs, the secret-free error messages, zip members read from a fetched span,
manifest inputs, and the light install (no storage library) refusing object URLs in one line."""

from __future__ import annotations

import asyncio
import io
import sys
import zipfile

import pytest

from tfclassify.client.inputs.fetch import ObjectFetcher
from tfclassify.common.inputs import zipindex
from tfclassify.common.inputs.sources import FileRef, open_input, read_file_ref
from tfclassify.common.storage import errors, stores
from tfclassify.common.storage.urls import base_name, is_object_url, join, parse


def test_object_urls_parse_join_and_name():
    assert parse("s3://bucket/photos/") == ("s3", "bucket", "photos/")
    assert parse("s3://bucket/photos/").is_prefix and parse("s3://bucket").is_prefix
    assert not parse("gs://b/x.zip").is_prefix and parse("gs://b/x.zip").root == "gs://b"
    assert str(parse("az://container/a/b.png")) == "az://container/a/b.png"
    assert base_name(parse("s3://b/photos/")) == "photos" and base_name(parse("s3://b")) == "b"
    assert join("s3://b/lists/test.csv", "img/1.png") == "s3://b/lists/img/1.png"
    assert join("s3://b/lists/test.csv", "../photos/1.png") == "s3://b/photos/1.png"
    assert join("s3://b/lists/test.csv", "/top.png") == "s3://b/top.png"
    assert join("s3://b/lists/test.csv", "gs://other/x.png") == "gs://other/x.png"
    assert is_object_url("s3://b/k") and is_object_url("https://host/x.zip") and is_object_url("abfs://c/k")
    assert not is_object_url("photos/") and not is_object_url("C:/x") and not is_object_url("ftp://h/x")
    with pytest.raises(ValueError, match="no bucket"):
        parse("s3:///key")


def _library_error(name: str, message: str) -> Exception:
    """An exception as obstore raises it: its own classes by name, the builtin ``FileNotFoundError``."""
    if name == "FileNotFoundError":
        return FileNotFoundError(message)
    return type(name, (Exception,), {})(message)


@pytest.mark.parametrize("name, message, kind, says", [
    ("GenericError", "Error performing list request: Received redirect... <Code>NoSuchBucket</Code>",
     errors.MISSING_BUCKET, "bucket s3://b does not exist"),
    ("FileNotFoundError", "Object at location photos/x.png not found", errors.MISSING_OBJECT, "no such object"),
    ("PermissionDeniedError", "Client error 403 <Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIDSECRETID"
     "</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256 x</StringToSign>", errors.ACCESS_DENIED,
     "the credentials were refused"),
    ("PermissionDeniedError", "<Code>AccessDenied</Code>", errors.ACCESS_DENIED, "access denied by s3://b"),
    ("GenericError", "Generic S3 error: Error getting credentials from IMDS: connection refused",
     errors.NO_CREDENTIALS, "no credentials found for s3://b"),
    ("GenericError", "error sending request for url (http://127.0.0.1:9/b): tcp connect error",
     errors.UNREACHABLE, "cannot reach the object store"),
])
def test_library_errors_become_one_secret_free_line(monkeypatch, name, message, kind, says):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    error = errors.classify(_library_error(name, message + " s3cr3t-value"), "s3://b/photos/", "b", "s3")
    assert error.kind == kind and says in str(error)
    assert "\n" not in str(error) and "AKIDSECRETID" not in str(error) and "s3cr3t-value" not in str(error)
    assert "StringToSign" not in str(error)


def test_scrub_takes_out_the_environments_secrets_and_signed_query_strings(monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok-123456")
    text = errors.scrub("GET https://h/b/k?X-Amz-Signature=abcdef&X-Amz-Credential=AKID%2F tok-123456\nmore")
    assert "abcdef" not in text and "AKID" not in text and "tok-123456" not in text and "\n" not in text


def _zip_with_extra(members: dict[str, bytes], extra: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.extra = extra
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


@pytest.mark.parametrize("extra_len", [0, 1000])
def test_a_zip_member_reads_from_the_span_fetched_for_it(extra_len):
    """One ranged read of ``member_span`` bytes holds the member; a local extra field longer than the allowance
    is seen by ``member_extent`` (a second read of that many bytes then holds it)."""
    extra = (0xCAFE).to_bytes(2, "little") + (extra_len - 4).to_bytes(2, "little") + b"x" * (extra_len - 4) \
        if extra_len else b""
    data = _zip_with_extra({"a/one.png": b"first" * 100, "b/two.png": b"second" * 50}, extra)
    members = list(zipindex.iter_members(io.BytesIO(data)))
    for member, expected in zip(members, [b"first" * 100, b"second" * 50]):
        start = member.header_offset
        span = data[start : start + zipindex.member_span(member)]
        extent = zipindex.member_extent(span[:64], member)
        assert (extent > len(span)) == (extra_len > zipindex.LOCAL_EXTRA_ALLOWANCE)
        span = data[start : start + max(extent, len(span))]
        ref = FileRef("s3://b/x.zip", member=member, data=span)
        assert read_file_ref(ref, {}) == expected


def test_a_local_manifest_input_resolves_paths_beside_it(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"png")
    (tmp_path / "list.jsonl").write_text('{"path": "imgs/a.png", "label": "Shirt"}\n{"path": "s3://b/k.png"}\n')
    items = list(open_input(tmp_path / "list.jsonl").items())
    assert [(i.source, i.member, i.label) for i in items] == [
        ("list.jsonl/imgs/a.png", "imgs/a.png", "Shirt"), ("s3://b/k.png", "s3://b/k.png", None)]
    assert items[0].ref.path == str(tmp_path / "imgs" / "a.png") and items[1].ref.path == "s3://b/k.png"
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    with pytest.raises(ValueError, match="needs a header with a column path"):
        list(open_input(tmp_path / "bad.csv").items())


def test_without_the_storage_library_an_object_url_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "obstore", None)
    monkeypatch.setattr(stores, "_stores", {})
    with pytest.raises(errors.StorageUnavailable, match=r"pip install 'tfclassify\[storage\]'"):
        open_input("s3://bucket/photos/")


def test_the_fetcher_leaves_local_refs_alone_without_importing_the_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "obstore", None)
    refs = [FileRef("/data/a.png"), FileRef("/data/b.zip", data=b"x"), 3]
    assert asyncio.run(ObjectFetcher().fetch(refs)) == refs
