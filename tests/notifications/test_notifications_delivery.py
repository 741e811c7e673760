"""Notifications against the test bed's real Prefect server (its triggers and actions services): the bootstrap
creates the automations, a second bootstrap changes nothing, and a failed scheduled run, an approval wait, a
restore, a rollback event and a missing backup each reach a webhook receiver on loopback through a
CustomWebhookNotificationBlock, the failed run exactly once.

Every test uses environment names of its own (``nt<hex>``): the deployments it makes runs of are named after
them, so no other test's runs on the shared server reach these automations, and these reach no one else's."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from blocks.notifications import apply_notifications, environment_settings
from helix_ops.errors import ConfigError
from helix_ops.notifications import KINDS, owned_prefix
from tests.blocks.conftest import REPO, unique_descriptor_text
from tests.prefect_worker import client_env

STALE_S = 10  # the proactive trigger's window here (the minimum Prefect accepts); 26 h in notifications.yaml


class Receiver:
    """A webhook receiver on 127.0.0.1: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        calls = self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                calls.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def matching(self, env: str, text: str) -> list[dict]:
        return [c for c in self.calls if f"[helix-ops {env}]" in c["subject"] and text in c["subject"]]

    def wait_for(self, env: str, text: str, timeout_s: float = 30) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if found := self.matching(env, text):
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no notification for {env} with {text!r} in {timeout_s}s; got {self.calls}")


@pytest.fixture(scope="module")
def api(prefect_server):
    """This process's Prefect client settings point at the bed's server for the module."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def hook(api, receiver) -> str:
    """A custom-webhook notification block posting {subject, body} to the receiver; its name."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    name = f"helix-test-hook-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(name="helix-ops test", url=receiver.url,
                                   json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(name)
    return name


def _file(tmp_path_factory, text: str) -> str:
    path = tmp_path_factory.mktemp("notifications") / "notifications.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _bootstrap(descriptor: str, notifications: str) -> tuple[int, str, str]:
    from blocks.bootstrap import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--descriptor", descriptor], {"HELIX_NOTIFICATIONS_FILE": notifications})
    return code, out.getvalue(), err.getvalue()


def _owned(env: str) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return sorted(a.name for a in client.read_automations(limit=200) if a.name.startswith(owned_prefix(env)))


@pytest.fixture(scope="module")
def bed_env(api, hook, tmp_path_factory):
    """An environment bootstrapped twice with notifications on (stale-backup window STALE_S); yields its name, the
    two bootstraps' results and when the automations were made; removes its automations afterwards."""
    suffix = uuid.uuid4().hex[:6]
    env = f"nt{suffix}"
    descriptor = tmp_path_factory.mktemp("descriptor") / f"{env}.yaml"
    descriptor.write_text(unique_descriptor_text("local", suffix).replace("environment: local\n",
                                                                          f"environment: {env}\n", 1))
    notifications = _file(tmp_path_factory, f"block: {hook}\nstale_backup_after_s: {STALE_S}\n")
    made_at = time.monotonic()
    first = _bootstrap(str(descriptor), notifications)
    second = _bootstrap(str(descriptor), notifications)
    yield {"env": env, "first": first, "second": second, "made_at": made_at}
    apply_notifications(environment_settings(env, {"HELIX_NOTIFICATIONS_FILE": _file(tmp_path_factory, "block: null")}))


def _run(env: str, flow: str, *states) -> str:
    """A run of deployment ``<flow>/<env>`` taken through ``states`` (forced, as an engine would set them); its id."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow)
        deployment_id = client.create_deployment(flow_id=flow_id, name=env, tags=["helix", env])
        run = client.create_flow_run_from_deployment(deployment_id)
        for state in states:
            client.set_flow_run_state(run.id, state, force=True)
    return str(run.id)


def test_bootstrap_creates_the_automations_and_a_second_bootstrap_keeps_them(bed_env, hook):
    env = bed_env["env"]
    code, out, err = bed_env["first"]
    assert code == 0, err
    assert out.splitlines()[-1] == f"environment {env}: 4 created"  # stdout stays the blocks' report
    assert err.splitlines() == [f"notifications: created automation helix-ops/{env}/{k}" for k in KINDS] + [
        f"notifications: {env}: {', '.join(KINDS)} through custom-webhook/{hook}; automations 5 created"]
    code, out, err = bed_env["second"]
    assert code == 0, err
    assert err.splitlines()[:-1] == [f"notifications: kept automation helix-ops/{env}/{k}: unchanged" for k in KINDS]
    assert err.splitlines()[-1].endswith("automations 5 kept")
    assert _owned(env) == sorted(f"helix-ops/{env}/{k}" for k in KINDS)  # one of each


def test_a_failed_scheduled_run_sends_exactly_one_notification_with_the_runs_page(bed_env, receiver, api):
    from prefect.states import Failed, Pending, Running

    env = bed_env["env"]
    _run(env, "deploy-helix", Pending(), Running(), Failed(message="not scheduled: no alert"))
    run_id = _run(env, "backup-helix", Pending(), Running(), Failed(message="made to fail"))
    call = receiver.wait_for(env, "backup-helix")
    time.sleep(2)  # a second notification (or the deploy-helix one) would have arrived by now
    assert receiver.matching(env, "Failed") == [call]
    assert call["subject"] == f"[helix-ops {env}] backup-helix/{env} Failed"
    assert f"Environment: {env}\n" in call["body"] and "state Failed: made to fail" in call["body"]
    assert f"UI: {api.ui_url}/runs/flow-run/{run_id}" in call["body"]


ROLLBACK_FLOW = """
import sys
from prefect import flow
from blocks.notifications import emit_rolled_back

@flow(name="upgrade-helix")
def upgrade_helix():
    emit_rolled_back(sys.argv[1], "upgrade", "dashboard unhealthy: back to 1.4.1", "test")

upgrade_helix()
"""


def test_an_approval_a_restore_and_a_rollback_notify(bed_env, receiver, api):
    from prefect.states import Completed, Pending, Running, Suspended

    env = bed_env["env"]
    # a flow run that rolled a change back emits the event (blocks.notifications.emit_rolled_back)
    rollback_run = subprocess.Popen([sys.executable, "-c", ROLLBACK_FLOW, env], cwd=REPO, env=client_env(api),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    waiting = _run(env, "deploy-helix", Pending(), Running(), Suspended(timeout_seconds=600, pause_key="approval"))
    restored = _run(env, "restore-helix", Pending(), Running(), Completed())

    approval = receiver.wait_for(env, "waits for an approval")
    assert approval["subject"] == f"[helix-ops {env}] deploy-helix/{env} waits for an approval"
    assert f"UI: {api.ui_url}/runs/flow-run/{waiting}" in approval["body"]
    restore = receiver.wait_for(env, "restore Completed")
    assert f"UI: {api.ui_url}/runs/flow-run/{restored}" in restore["body"]
    out, _ = rollback_run.communicate(timeout=120)
    assert rollback_run.returncode == 0, out
    rollback = receiver.wait_for(env, "upgrade rolled back")
    assert "Detail: dashboard unhealthy: back to 1.4.1" in rollback["body"]
    assert f"(upgrade-helix), {api.ui_url}/runs/flow-run/" in rollback["body"]


def test_the_stale_backup_trigger_fires_when_no_backup_completed(bed_env, receiver):
    env = bed_env["env"]
    left = STALE_S + 25 - (time.monotonic() - bed_env["made_at"])  # the window, and the 5 s evaluation period
    call = receiver.wait_for(env, f"no completed backup in {STALE_S} s", timeout_s=max(left, 1))
    assert f"No run of backup-helix/{env} has completed in the last {STALE_S} s" in call["body"]


def test_a_changed_file_updates_deletes_and_none_removes_everything(api, hook, tmp_path_factory):
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    env = f"nt{uuid.uuid4().hex[:6]}"

    def apply(text: str) -> list[str]:
        outcomes, summary = apply_notifications(environment_settings(
            env, {"HELIX_NOTIFICATIONS_FILE": _file(tmp_path_factory, text)}))
        return [o.line() for o in outcomes] + [summary]

    assert apply(f"block: {hook}\nnotify: [failed-run, stale-backup]\n")[-1].endswith("automations 2 created")
    with get_client(sync_client=True) as client:  # a copy made by hand (`prefect automation create` twice)
        same = client.read_automations_by_name(f"helix-ops/{env}/failed-run")[0]
        copy = same.model_dump(exclude={"id"})
        copy["trigger"].pop("id", None)
        client.create_automation(AutomationCore.model_validate(copy))
    lines = apply(f"block: {hook}\nnotify: [failed-run]\nstale_backup_after_s: 7200\n")
    assert lines[:2] == [f"notifications: kept automation helix-ops/{env}/failed-run: unchanged",
                         f"notifications: deleted automation helix-ops/{env}/failed-run: duplicate"]
    assert lines[2].startswith(f"notifications: deleted automation helix-ops/{env}/stale-backup: not asked for in /")
    assert len(lines) == 4
    assert apply(f"block: {hook}\nnotify: [failed-run, stale-backup]\nstale_backup_after_s: 7200\n")[-1].endswith(
        "automations 1 created, 1 kept")
    assert apply(f"block: {hook}\nnotify: [failed-run, stale-backup]\n")[:-1] == [
        f"notifications: kept automation helix-ops/{env}/failed-run: unchanged",
        f"notifications: updated automation helix-ops/{env}/stale-backup"]
    lines = apply("block: null\n")
    assert lines[:-1] == [f"notifications: deleted automation helix-ops/{env}/{k}: no notification block configured"
                          for k in ("failed-run", "stale-backup")]
    assert f"no notification block for {env}" in lines[-1] and "no automations created" in lines[-1]
    assert _owned(env) == []


def test_a_block_that_is_missing_or_cannot_notify_is_refused(api, tmp_path_factory, capsys):
    from prefect.blocks.system import Secret

    from blocks.notifications import main

    secret = f"helix-test-secret-{uuid.uuid4().hex[:8]}"
    Secret(value="not-a-notifier").save(secret)
    env = f"nt{uuid.uuid4().hex[:6]}"
    for block, message in ((f"missing-{uuid.uuid4().hex[:6]}", "create the notification block first"),
                           (secret, "is not a notification block")):
        path = _file(tmp_path_factory, f"block: {block}\n")
        with pytest.raises(ConfigError) as info:
            apply_notifications(environment_settings(env, {"HELIX_NOTIFICATIONS_FILE": path}))
        assert message in str(info.value) and info.value.source == path
        assert main(["--env", env], {"HELIX_NOTIFICATIONS_FILE": path}) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("blocks.notifications: error: ") and message in err
    assert _owned(env) == []
