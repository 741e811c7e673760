"""``write_env_file``: a Compose ``.env`` that is 0600 from its creation, parses back exactly (with our
reader and with python-dotenv, which podman-compose uses), and is never written where others can swap it."""

from __future__ import annotations

import os
import stat

import pytest
from dotenv import dotenv_values

from blocks.secrets import format_env_file, read_env_file, write_env_file
from helix_ops.errors import ConfigError
from tests.blocks.conftest import assert_no_secret

MAPPING = {
    "NEO4J_USER": "neo4j",
    "NEO4J_PASSWORD": "AbC_-123xyz" * 4,
    "REDIS_PASSWORD": "p$ss#word with spaces=and\"dq",
    "NEXTAUTH_SECRET": "a/b+c=d?e&f%g!h@i*j(k)l[m]n{o}p|q~r^s<t>u,v.w;x:y`z",
    "EMPTY": "",
}


@pytest.fixture
def umask_zero():
    old = os.umask(0)
    yield
    os.umask(old)


def test_env_file_is_0600_and_parses_back(tmp_path, umask_zero):
    path = write_env_file(tmp_path / ".env", MAPPING)
    assert path == tmp_path / ".env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path) == MAPPING
    assert dict(dotenv_values(path, interpolate=True)) == MAPPING
    assert [p.name for p in tmp_path.iterdir()] == [".env"]  # no temp file left behind


def test_existing_file_with_a_wider_mode_is_replaced_not_reused(tmp_path, umask_zero):
    path = tmp_path / ".env"
    path.write_text("OLD='x'\n")
    path.chmod(0o644)
    old_inode = path.stat().st_ino
    write_env_file(path, {"NEO4J_PASSWORD": "fresh-Zq8Zq8"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != old_inode
    assert read_env_file(path) == {"NEO4J_PASSWORD": "fresh-Zq8Zq8"}


def test_symlink_at_the_path_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (tmp_path / ".env").symlink_to(victim)
    write_env_file(tmp_path / ".env", {"A": "b"})
    assert victim.read_text() == "keep me\n"
    assert not (tmp_path / ".env").is_symlink()


def test_format_is_single_quoted_lines():
    assert format_env_file({"A": "x y", "B": ""}) == "A='x y'\nB=''\n"


def test_world_writable_folder_without_sticky_bit_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="world-writable folder without the sticky bit"):
        write_env_file(shared / ".env", {"A": "b"})
    assert list(shared.iterdir()) == []
    shared.chmod(0o1777)
    write_env_file(shared / ".env", {"A": "b"})
    assert stat.S_IMODE((shared / ".env").stat().st_mode) == 0o600


@pytest.mark.parametrize("value", ["it's-Zq8", "back\\slash-Zq8", "new\nline-Zq8", "${HOME}-Zq8", "nul\0-Zq8"])
def test_values_the_parsers_disagree_on_are_refused_without_showing_them(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        write_env_file(tmp_path / ".env", {"NEO4J_PASSWORD": value})
    assert info.value.path == "env.NEO4J_PASSWORD"
    assert_no_secret([str(info.value)], [value])
    assert not (tmp_path / ".env").exists()


@pytest.mark.parametrize("key", ["1ABC", "A-B", "A B", ""])
def test_bad_variable_names_are_refused(tmp_path, key):
    with pytest.raises(ConfigError, match="not a variable name"):
        write_env_file(tmp_path / ".env", {key: "v"})


def test_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot use folder"):
        write_env_file(tmp_path / "nope" / ".env", {"A": "b"})


def test_reader_refuses_other_syntax(tmp_path):
    (tmp_path / ".env").write_text("# comment\n\nA='b'\nC=d\n")
    with pytest.raises(ConfigError, match="line 4: expected KEY='value'"):
        read_env_file(tmp_path / ".env")
