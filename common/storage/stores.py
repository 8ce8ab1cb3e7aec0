"""The store that serves an object URL: obstore (the optional ``storage`` extra), imported on first use.

Stores per bucket and process, made from the URL and each cloud's standard settings in the environment:

- S3: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for MinIO, Ceph and other S3-compatible stores, an
  ``http://`` endpoint allowed; ``AWS_REGION``; credentials from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
  (``AWS_SESSION_TOKEN``), web identity (``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``: a Kubernetes service
  account), container credentials (ECS, EKS Pod Identity) and instance metadata (IMDSv2), all natively; the
  shared files' profile (``AWS_PROFILE``, else ``default``: ``~/.aws/credentials`` and ``~/.aws/config``) for
  its static keys, region and endpoint (``aws_profiles``), the environment coming first; a profile that assumes
  a role or uses SSO or a credential process through boto3's chain when boto3 is installed (obstore's
  ``Boto3CredentialProvider``). ``AWS_SKIP_SIGNATURE=true``: a public bucket.
- Google Cloud Storage, Azure Blob and HTTPS: the library's own settings (``GOOGLE_APPLICATION_CREDENTIALS``,
  ``AZURE_STORAGE_ACCOUNT_NAME`` ...).

``TFCLASSIFY_STORAGE_TIMEOUT`` (seconds, default 30): how long a request may go without a byte of its answer
(waiting for the answer to start, or between two reads of its body) before it is abandoned and tried again; a
long transfer that keeps moving is never cut. Connecting may take 5 s (or that timeout, when shorter).

Two stores per bucket: ``store_for(url)`` retries failed requests itself (5xx answers, dropped and refused
connections, timeouts; ``RETRY``'s limits) and is used only for multipart uploads, whose parts only the library
can retry one by one; ``store_for(url, library_retries=False)`` never retries, and its requests go through
``retries``, which tries them again within the same limits and counts each retry. (The model repository's sync,
``syncing``, makes stores of its own: short library retries, uncounted, and time limits of its own.)
"""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from typing import Any

from tfclassify.common.storage.aws_profiles import ProfileError, read_profile
from tfclassify.common.storage.errors import NO_CREDENTIALS, OTHER, StorageError, StorageUnavailable
from tfclassify.common.storage.urls import ObjectURL

#: Retries of a failed request (5xx, connection errors, timeouts): 10 with backoff from 0.1 s up to 15 s, and
#: none started 3 minutes after the first try.
RETRY: dict[str, Any] = {
    "max_retries": 10,
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=15), "base": 2},
    "retry_timeout": timedelta(minutes=3),
}
#: The retry settings of a store whose requests ``retries`` tries again (the library itself never does).
NO_RETRY: dict[str, Any] = {"max_retries": 0}
#: Seconds a request may wait for a byte of its answer, unless ``TFCLASSIFY_STORAGE_TIMEOUT`` says otherwise.
DEFAULT_TIMEOUT = 30.0
TIMEOUT_VARIABLE = "TFCLASSIFY_STORAGE_TIMEOUT"
#: Seconds connecting may take (at most the timeout).
CONNECT_TIMEOUT = 5.0
INSTALL_HINT = "pip install 'tfclassify[storage]'"

#: The environment variables that, changed, make a new store (credentials, endpoint, region).
_SETTINGS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_SKIP_SIGNATURE", "AWS_EC2_METADATA_DISABLED", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT", "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_KEY", TIMEOUT_VARIABLE,
)
_stores: dict[tuple[str, int, bool], Any] = {}
_lock = threading.Lock()


def obstore_module() -> Any:
    """The ``obstore`` module; ``StorageUnavailable`` with the install command when it is not installed."""
    try:
        import obstore
        import obstore.store  # the store classes, used as obstore.store
    except ImportError:
        raise StorageUnavailable(f"reading object storage needs the storage extra: {INSTALL_HINT}") from None
    return obstore


def settings_stamp() -> int:
    """A stamp of the environment stores are made from: a cached store is made again when it changes."""
    return hash(tuple(map(os.environ.get, _SETTINGS)))


def request_timeout() -> float:
    """``TFCLASSIFY_STORAGE_TIMEOUT`` in seconds (``DEFAULT_TIMEOUT`` when unset); ``StorageError`` when it is
    not a positive number."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise StorageError(OTHER, f"{TIMEOUT_VARIABLE}={text!r}: expected a number of seconds above 0 (default "
                           f"{DEFAULT_TIMEOUT:g})")
    return seconds


def default_client_options() -> dict[str, Any]:
    """The library's client options: ``request_timeout()`` without a byte of an answer, and the connect timeout.
    (The library's ``timeout`` would limit the whole transfer: a tar object streamed for minutes would be cut.)"""
    seconds = request_timeout()
    return {"read_timeout": timedelta(seconds=seconds),
            "connect_timeout": timedelta(seconds=min(CONNECT_TIMEOUT, seconds))}


def store_for(url: ObjectURL, library_retries: bool = True) -> Any:
    """The (cached) store of ``url``'s bucket; its keys are the bucket's keys. With ``library_retries`` off, one
    that never retries a request (``retries`` does). A store is made again when the environment it was made
    from changes (other credentials, another endpoint, another timeout)."""
    key = (url.root, settings_stamp(), library_retries)
    store = _stores.get(key)
    if store is not None:
        return store
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = make_store(url, retry=RETRY if library_retries else NO_RETRY)
    return store


def make_store(url: ObjectURL, client_options: dict[str, Any] | None = None, retry: dict[str, Any] = RETRY) -> Any:
    """A new store for ``url``'s bucket from the environment's settings and credentials, with these client
    options (timeouts; ``default_client_options()`` when None) and retries; ``StorageError`` (NO_CREDENTIALS) when S3 has
    no credentials to find."""
    obstore = obstore_module()
    client = dict(default_client_options() if client_options is None else client_options)
    if url.scheme in ("s3", "s3a"):
        kwargs = _s3_settings(url)
        if str(kwargs.get("endpoint", "")).lower().startswith("http://"):
            client["allow_http"] = True
        return obstore.store.S3Store(url.bucket, client_options=client, retry_config=retry, **kwargs)
    if url.scheme == "http":
        client["allow_http"] = True
    return obstore.store.from_url(url.root, client_options=client, retry_config=retry)


def _s3_settings(url: ObjectURL) -> dict[str, Any]:
    """What the library does not read itself: the shared files' profile (its static keys, region and endpoint;
    boto3's chain for one that assumes a role, uses SSO or a process), the environment coming first; and an
    early, clear refusal when no credential can come from anywhere."""
    env = os.environ
    settings: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    try:
        profile = read_profile()
    except ProfileError as exc:
        raise StorageError(NO_CREDENTIALS, f"{url}: {exc}") from None
    if profile is not None:
        endpoint = endpoint or profile.endpoint_url
        if profile.region and not env.get("AWS_REGION") and not env.get("AWS_DEFAULT_REGION"):
            settings["region"] = profile.region
    if endpoint:
        settings["endpoint"] = endpoint
    if _native_credentials():
        return settings
    if profile is not None and profile.has_keys:
        settings.update(access_key_id=profile.access_key_id, secret_access_key=profile.secret_access_key)
        if profile.session_token:
            settings["session_token"] = profile.session_token
        return settings
    if profile is not None and profile.needs_sdk:
        settings["credential_provider"] = _sdk_credentials(url, profile.name)
        return settings
    if _metadata_disabled():
        raise StorageError(NO_CREDENTIALS, f"{url}: no credentials found for {url.root} (AWS_EC2_METADATA_DISABLED "
                           "rules out an instance role); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                           "AWS_PROFILE, or a web identity (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE); "
                           "AWS_SKIP_SIGNATURE=true reads a public bucket")
    return settings  # the library's chain goes on: instance metadata


def _native_credentials() -> bool:
    """Whether the environment holds credentials the library reads itself (or asks for anonymous requests)."""
    env = os.environ
    native = ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
              "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    return any(env.get(name) for name in native) or env.get("AWS_SKIP_SIGNATURE", "").lower() in ("1", "true")


def _metadata_disabled() -> bool:
    """``AWS_EC2_METADATA_DISABLED=true`` (the AWS SDKs' switch): no instance role to ask for credentials."""
    return os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() in ("1", "true")


def _sdk_credentials(url: ObjectURL, profile: str) -> Any:
    """boto3's credential provider for a profile whose credentials only an SDK resolves (an assumed role, SSO,
    a credential process); ``StorageError`` saying what to install or check."""
    try:
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise StorageError(NO_CREDENTIALS, f"{url}: profile {profile} assumes a role or uses SSO or a credential "
                           "process, which tfclassify resolves through boto3: pip install boto3, or give the "
                           "profile aws_access_key_id and aws_secret_access_key") from None
    try:
        return Boto3CredentialProvider()
    except Exception as exc:  # noqa: BLE001 - boto3 found no credentials, or a broken profile: say which, secret-free
        raise StorageError(NO_CREDENTIALS, f"{url}: profile {profile} gives no credentials "
                           f"({type(exc).__name__}); check ~/.aws/config and ~/.aws/credentials") from None

