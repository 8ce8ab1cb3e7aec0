"""The object store's failures as one-line errors: what went wrong, on which bucket or object, what to check.

The library's own messages can carry what must never be shown: an S3 ``SignatureDoesNotMatch`` answer echoes
the access key id and the string that was signed. The four failures a user must act on (a missing bucket, a
missing object, access denied or wrong credentials, no credentials at all) get messages of our own; any other
message goes through ``scrub``, which takes out the credentials of the environment and the XML elements that
carry them, and keeps the first line.
"""

from __future__ import annotations

import os
import re

#: The kinds of ``StorageError``.
MISSING_BUCKET = "missing bucket"
MISSING_OBJECT = "missing object"
ACCESS_DENIED = "access denied"
NO_CREDENTIALS = "no credentials"
UNREACHABLE = "unreachable"
OTHER = "error"

#: Environment variables whose values are secrets (never printed, whatever a library's message holds).
SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_TOKEN", "AZURE_CLIENT_SECRET", "GOOGLE_SERVICE_ACCOUNT_KEY",
)
_SECRET_ELEMENTS = re.compile(
    r"<(AWSAccessKeyId|StringToSign|StringToSignBytes|SignatureProvided|CanonicalRequest|CanonicalRequestBytes|"
    r"HostId|RequestId)>.*?</\1>", re.S)
_QUERY_SECRETS = re.compile(r"(?i)(X-Amz-Credential|X-Amz-Signature|X-Amz-Security-Token|sig|sv|se)=[^&\s\"']+")
_MAX_MESSAGE = 300


class StorageError(OSError):
    """An object store refused or failed a request. ``kind`` is one of ``MISSING_BUCKET``, ``MISSING_OBJECT``,
    ``ACCESS_DENIED``, ``NO_CREDENTIALS``, ``UNREACHABLE`` or ``OTHER``; ``str()`` is the whole one-line story."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return str(self.args[0])


class StorageUnavailable(RuntimeError):
    """An object URL was given, but the ``storage`` extra (obstore) is not installed."""


def scrub(text: str) -> str:
    """``text`` without the secrets of the environment or of an S3 error body, on one line, at most 300
    characters."""
    text = _SECRET_ELEMENTS.sub("", text)
    text = _QUERY_SECRETS.sub(lambda m: f"{m.group(1)}=***", text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def classify(exc: BaseException, url: str, bucket: str, scheme: str) -> StorageError:
    """The ``StorageError`` for the library's ``exc`` raised by a request for ``url`` (in ``bucket``)."""
    if isinstance(exc, StorageError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    lower = text.lower()
    root = f"{scheme}://{bucket}"
    if "nosuchbucket" in lower or "bucket does not exist" in lower or "containernotfound" in lower \
            or "the specified bucket" in lower:
        return StorageError(MISSING_BUCKET, f"{url}: bucket {root} does not exist{_check_endpoint(scheme)}")
    if isinstance(exc, FileNotFoundError) or name == "NotFoundError":
        return StorageError(MISSING_OBJECT, f"{url}: no such object (check the key and that it was uploaded)")
    if credentials_failure(lower):
        return StorageError(NO_CREDENTIALS, f"{url}: no credentials found for {root}; {_credentials_hint(scheme)}")
    if name in ("PermissionDeniedError", "UnauthenticatedError") or any(
            word in lower for word in ("accessdenied", "access denied", "forbidden", "unauthorized",
                                       "invalidaccesskeyid", "signaturedoesnotmatch", "authenticationfailed")):
        what = ("the credentials were refused (a wrong access key or secret)"
                if name == "UnauthenticatedError" or any(
                    w in lower for w in ("invalidaccesskeyid", "signaturedoesnotmatch", "unauthorized",
                                         "authenticationfailed", "invalidtoken", "expiredtoken"))
                else "access denied")
        return StorageError(ACCESS_DENIED, f"{url}: {what} by {root}; check the credentials "
                            f"({_credentials_hint(scheme, short=True)}) and that they may read this bucket")
    if "invalidcertificate" in lower:  # rustls: InvalidCertificate(UnknownIssuer | Expired | NotValidForName ...)
        reason = re.search(r"InvalidCertificate\(\s*(\w+)", text)
        return StorageError(UNREACHABLE, f"{url}: the server's TLS certificate is not trusted "
                            f"({reason.group(1) if reason else 'invalid'}); a private authority's certificate goes in "
                            "SSL_CERT_FILE (a PEM bundle)")
    if any(word in lower for word in ("error sending request", "connection refused", "dns error", "timed out",
                                      "connect error", "tcp connect", "operation timed out")):
        return StorageError(UNREACHABLE, f"{url}: cannot reach the object store ({scrub(text)[:160]})"
                            f"{_check_endpoint(scheme, always=True)}")
    return StorageError(OTHER, f"{url}: {scrub(text)}")


def credentials_failure(lower: str) -> bool:
    """Whether a library's message (lower case) is about getting credentials (none found, a credential service
    that failed)."""
    return any(phrase in lower for phrase in (
        "error getting credentials", "failed to get credentials", "no credentials", "missing credentials",
        "credential provider", "error fetching token", "imds", "instance metadata", "/latest/api/token",
        "/latest/meta-data", "169.254.169.254", "web identity", "assumerolewithwebidentity"))


def _credentials_hint(scheme: str, short: bool = False) -> str:
    if scheme in ("s3", "s3a"):
        return ("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the web identity of the service account"
                if short else "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (with boto3 installed), "
                "or run with a web identity (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE) or an instance role; "
                "AWS_SKIP_SIGNATURE=true reads a public bucket")
    if scheme == "gs":
        return "GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT, or the instance's service account"
    if scheme in ("az", "abfs", "abfss"):
        return "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, a SAS, or a managed identity"
    return "the URL must be readable without credentials"


def _check_endpoint(scheme: str, always: bool = False) -> str:
    """What to check about where the store is: the S3 endpoint for S3-compatible stores."""
    if scheme in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return f" at {scrub(endpoint)} (AWS_ENDPOINT_URL): check the bucket name and the endpoint"
        return " (check the bucket name; for an S3-compatible store, set AWS_ENDPOINT_URL)"
    return " (check the name and the network)" if always else " (check the name)"
