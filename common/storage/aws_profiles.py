"""The AWS shared config and credentials files (``~/.aws/config``, ``~/.aws/credentials``), read as the AWS SDKs
and CLI read them, for what obstore does not read itself: a profile's static keys, region and endpoint.

- The profile: ``AWS_PROFILE`` (or the older ``AWS_DEFAULT_PROFILE``), else ``default``.
- The files: ``AWS_SHARED_CREDENTIALS_FILE`` and ``AWS_CONFIG_FILE``, else the two under ``~/.aws``. Keys in the
  credentials file's ``[name]`` come before those in the config file's ``[profile name]`` (``[default]``).
- Static keys (``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``), ``region`` and
  ``endpoint_url`` (a profile's own, or its ``services`` section's ``s3 = endpoint_url = ...``, as for MinIO).
- A profile that gets its credentials another way (``role_arn``, ``sso_session``/``sso_start_url``,
  ``credential_process``, ``web_identity_token_file``) is ``needs_sdk``, with static keys or without (the SDKs
  assume the role rather than use the keys): boto3's chain resolves it.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

#: Keys that make a profile's credentials something only an SDK resolves (an assumed role, SSO, a process).
SDK_KEYS = ("role_arn", "sso_session", "sso_start_url", "credential_process", "web_identity_token_file")


class ProfileError(ValueError):
    """A named profile that the shared files do not have, or files that cannot be parsed."""


@dataclass(frozen=True)
class SharedProfile:
    """What the shared files say for one profile (secrets never in ``repr``)."""

    name: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    #: The profile's credentials come from an assumed role, SSO or a process: boto3 resolves them.
    needs_sdk: bool = False

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    def __repr__(self) -> str:
        return (f"SharedProfile(name={self.name!r}, keys={'yes' if self.has_keys else 'no'}, region={self.region!r}, "
                f"endpoint_url={self.endpoint_url!r}, needs_sdk={self.needs_sdk})")


def profile_name(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, bool]:
    """The profile to read, and whether it was named (``AWS_PROFILE``) rather than ``default``."""
    named = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE")
    return (named, True) if named else ("default", False)


def shared_files(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[Path, Path]:
    """The credentials file and the config file, where the environment or the SDKs' defaults put them."""
    home = Path.home() / ".aws"
    return (Path(environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / "credentials"),
            Path(environ.get("AWS_CONFIG_FILE") or home / "config"))


def read_profile(environ: dict[str, str] | os._Environ[str] = os.environ) -> SharedProfile | None:
    """The profile the environment selects, from the shared files; None when neither file has it and it was
    not named. ``ProfileError`` when a named profile is in neither file, or a file cannot be parsed."""
    name, named = profile_name(environ)
    credentials_file, config_file = shared_files(environ)
    credentials = _section(credentials_file, name)
    config = _section(config_file, f"profile {name}")
    if name == "default":  # the SDKs read [default], and [profile default] too
        config = {**(config or {}), **(_section(config_file, "default") or {})} or None
    if credentials is None and config is None:
        if named:
            raise ProfileError(f"AWS_PROFILE={name}: no such profile in {credentials_file} or {config_file}")
        return None
    values = {**(config or {}), **(credentials or {})}
    endpoint = values.get("endpoint_url")
    services = values.get("services")
    if services:
        s3 = _s3_service_endpoint(config_file, services)
        endpoint = s3 or endpoint
    return SharedProfile(
        name=name,
        access_key_id=values.get("aws_access_key_id"),
        secret_access_key=values.get("aws_secret_access_key"),
        session_token=values.get("aws_session_token"),
        region=values.get("region"),
        endpoint_url=endpoint,
        needs_sdk=any(values.get(k) for k in SDK_KEYS),
    )


def _parser(path: Path) -> configparser.ConfigParser | None:
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not an AWS config file ({type(exc).__name__})") from None
    return parser


def _section(path: Path, section: str) -> dict[str, str] | None:
    parser = _parser(path)
    if parser is None or not parser.has_section(section):
        return None
    return {k.lower(): v.strip() for k, v in parser.items(section)}


def _s3_service_endpoint(config_file: Path, services: str) -> str | None:
    """``endpoint_url`` of the ``s3`` sub-section of ``[services NAME]`` (the nested form the SDKs read)."""
    block = _section(config_file, f"services {services}")
    if not block or "s3" not in block:
        return None
    for line in block["s3"].splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "endpoint_url":
            return value.strip()
    return None


__all__ = ["ProfileError", "SharedProfile", "profile_name", "read_profile", "shared_files"]
