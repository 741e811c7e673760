"""helix_ops.schedules (the generator), the descriptor's rotation section and `helix-ops schedules`."""

from __future__ import annotations

import shutil

import pytest
import yaml
from core_helpers import DEPLOYMENTS, ROOT, DELETE, descriptor_data, dump, mutate

from helix_ops.cli import main
from helix_ops.descriptor import parse_descriptor
from helix_ops.errors import ConfigError
from helix_ops.schedules import check_schedules, descriptor_schedules, write_schedules


def desc(data):
    return parse_descriptor(dump(data))


def test_one_backup_schedule_per_component_in_the_descriptors_timezone():
    out = descriptor_schedules(desc(descriptor_data("prod")))
    assert out["backup-helix/prod"] == [
        {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "active": True, "slug": "backup-neo4j",
         "parameters": {"components": ["neo4j"]}},
        {"cron": "15 * * * *", "timezone": "Europe/Berlin", "active": True, "slug": "backup-redis",
         "parameters": {"components": ["redis"]}},
    ]
    assert out["rotate-helix-secrets/prod"] == [
        {"cron": "0 3 1 * *", "timezone": "UTC", "active": True, "slug": "rotation"}]


def test_no_rotation_section_no_rotation_schedule_and_local_is_inactive():
    out = descriptor_schedules(desc(descriptor_data("local")))
    assert out["rotate-helix-secrets/local"] == []
    assert [s["active"] for s in out["backup-helix/local"]] == [False, False]


@pytest.mark.parametrize("path,value,message", [
    ("rotation.schedule", "0 3 32 * *", "out of range 1-31"),
    ("rotation.schedule", "@monthly", "5 fields"),
    ("rotation.timezone", "Mars/Olympus", "unknown timezone"),
    ("rotation.every", "month", "every"),
])
def test_rotation_section_is_validated(path, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        desc(mutate(descriptor_data("prod"), path, value))
    assert info.value.path.startswith("rotation")


def test_rotation_timezone_defaults_to_utc():
    data = mutate(descriptor_data("prod"), "rotation.timezone", DELETE)
    assert desc(data).rotation.timezone == "UTC"


TEXT = """\
deployments:
  # a hand-written comment that stays
  - name: prod
    entrypoint: flows/backup.py:backup_helix
    parameters: {env: prod}
    # >>> schedules of backup-helix/prod: anything
    schedules: []
    # <<< schedules of backup-helix/prod
    tags: [a]
"""


def test_write_replaces_only_the_marked_block_and_is_idempotent():
    wanted = {"backup-helix/prod": descriptor_schedules(desc(descriptor_data("prod")))["backup-helix/prod"]}
    once = write_schedules(TEXT, wanted)
    assert write_schedules(once, wanted) == once
    assert once.startswith(TEXT.split("    # >>>")[0]) and once.endswith("    tags: [a]\n")
    assert check_schedules(yaml.safe_load(once), wanted) == []
    [problem] = check_schedules(yaml.safe_load(TEXT), wanted)
    assert problem.startswith('backup-helix/prod: prefect.yaml has no schedule, the descriptor says cron="0 2 * * *"')


@pytest.mark.parametrize("text,message", [
    (TEXT.replace("backup-helix/prod: anything", "backup-helix/staging: x")
     .replace("<<< schedules of backup-helix/prod", "<<< schedules of backup-helix/staging"), "no descriptor"),
    (TEXT.replace("    # <<< schedules of backup-helix/prod\n", ""), "no '# <<< schedules of backup-helix/prod'"),
    (TEXT.replace("    # >>> schedules of backup-helix/prod: anything\n", ""), "without its"),
    ("deployments: []\n", "no '# >>> schedules of backup-helix/prod' marker"),
])
def test_write_refuses_broken_markers(text, message):
    with pytest.raises(ConfigError, match=message):
        write_schedules(text, {"backup-helix/prod": []})


def test_a_schedule_edited_by_hand_outside_the_generator_is_reported():
    wanted = {"backup-helix/prod": []}
    doc = {"deployments": [{"name": "prod", "entrypoint": "flows/backup.py:backup_helix", "parameters": {"env": "prod"},
                            "schedules": [{"cron": "0 2 * * *", "timezone": "UTC"}]}]}
    assert check_schedules(doc, wanted) == [
        'backup-helix/prod: prefect.yaml has cron="0 2 * * *", timezone="UTC", the descriptor says no schedule']
    assert check_schedules({"deployments": []}, wanted) == ["backup-helix/prod: 0 deployments in prefect.yaml, expected 1"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copytree(DEPLOYMENTS, tmp_path / "deployments")
    shutil.copy(ROOT / "prefect.yaml", tmp_path / "prefect.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_check_fails_on_a_changed_descriptor_and_write_fixes_only_its_lines(project, capsys):
    assert main(["schedules", "--check"], environ={}) == 0
    before = (project / "prefect.yaml").read_text()
    prod = project / "deployments" / "prod.yaml"
    prod.write_text(prod.read_text().replace('neo4j: "0 2 * * *"', 'neo4j: "30 1 * * *"'))
    capsys.readouterr()
    assert main(["schedules", "--check"], environ={}) == 1
    err = capsys.readouterr().err
    assert "backup-helix/prod" in err and "30 1 * * *" in err and "backup-helix/staging" not in err
    assert main(["schedules", "--write"], environ={}) == 0
    after = (project / "prefect.yaml").read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [('      - cron: "0 2 * * *"', '      - cron: "30 1 * * *"')]
    assert main(["schedules", "--check"], environ={}) == 0


def test_cli_names_an_environment_without_a_descriptor(project, capsys):
    (project / "deployments" / "staging.yaml").unlink()
    assert main(["schedules", "--check"], environ={}) == 2
    assert "staging.yaml" in capsys.readouterr().err
