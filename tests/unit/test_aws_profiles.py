"""The AWS shared files read as the SDKs read them: the selected profile's keys, region and endpoint, the
credentials file before the config file, a profile only an SDK resolves, and clear errors."""

from __future__ import annotations

import pytest

from tfclassify.common.storage.aws_profiles import ProfileError, read_profile

CREDENTIALS = """\
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = default-secret

[minio]
aws_access_key_id = AKIDMINIO
aws_secret_access_key = minio-secret
"""

CONFIG = """\
[default]
region = eu-west-1

[profile minio]
region = us-east-1
aws_access_key_id = IGNORED-THE-CREDENTIALS-FILE-WINS
services = local

[services local]
s3 =
  endpoint_url = http://127.0.0.1:9000

[profile sso]
sso_session = corp
region = eu-central-1

[profile plain]
endpoint_url = https://ceph.example:7480
aws_access_key_id = AKIDPLAIN
aws_secret_access_key = plain-secret
aws_session_token = plain-token
"""


@pytest.fixture
def env(tmp_path):
    (tmp_path / "credentials").write_text(CREDENTIALS)
    (tmp_path / "config").write_text(CONFIG)
    return {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "AWS_CONFIG_FILE": str(tmp_path / "config")}


def test_the_default_profile_without_aws_profile(env):
    profile = read_profile(env)
    assert profile is not None and profile.name == "default"
    assert (profile.access_key_id, profile.secret_access_key, profile.region) == ("AKIDDEFAULT", "default-secret",
                                                                                   "eu-west-1")
    assert not profile.needs_sdk and profile.endpoint_url is None


def test_a_named_profile_takes_keys_from_credentials_and_the_endpoint_from_its_services_section(env):
    profile = read_profile({**env, "AWS_PROFILE": "minio"})
    assert profile is not None and profile.access_key_id == "AKIDMINIO", "the credentials file comes first"
    assert profile.region == "us-east-1" and profile.endpoint_url == "http://127.0.0.1:9000"
    assert "minio-secret" not in repr(profile)


def test_keys_session_token_and_endpoint_in_the_config_file_alone(env):
    profile = read_profile({**env, "AWS_DEFAULT_PROFILE": "plain"})
    assert profile is not None and profile.has_keys and profile.session_token == "plain-token"
    assert profile.endpoint_url == "https://ceph.example:7480"


def test_a_profile_of_sso_or_an_assumed_role_needs_the_sdk(env, tmp_path):
    profile = read_profile({**env, "AWS_PROFILE": "sso"})
    assert profile is not None and profile.needs_sdk and not profile.has_keys and profile.region == "eu-central-1"
    (tmp_path / "config").write_text(CONFIG + "\n[profile role]\nrole_arn = arn:aws:iam::1:role/r\n"
                                     "aws_access_key_id = AKIDROLE\naws_secret_access_key = role-secret\n")
    profile = read_profile({**env, "AWS_PROFILE": "role"})
    assert profile is not None and profile.has_keys and profile.needs_sdk, "the SDKs assume the role"


def test_profile_default_in_the_config_file_is_the_default_profile(env, tmp_path):
    (tmp_path / "config").write_text("[profile default]\nregion = ap-south-1\n")
    (tmp_path / "credentials").write_text("")
    profile = read_profile(env)
    assert profile is not None and profile.region == "ap-south-1"


def test_a_named_profile_that_is_nowhere_is_an_error_and_no_files_are_no_profile(env, tmp_path):
    with pytest.raises(ProfileError, match="AWS_PROFILE=nope: no such profile in"):
        read_profile({**env, "AWS_PROFILE": "nope"})
    missing = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none2")}
    assert read_profile(missing) is None


def test_a_file_that_is_not_ini_is_a_clear_error(env, tmp_path):
    (tmp_path / "config").write_text("region = no section header\n")
    with pytest.raises(ProfileError, match="not an AWS config file"):
        read_profile({**env, "AWS_PROFILE": "minio"})
