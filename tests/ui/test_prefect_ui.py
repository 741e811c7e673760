"""The Prefect UI in a real browser (Debian's chromium through playwright, see conftest.py): the dashboard
renders; ``deploy-helix/local`` started from its deployment page through the UI's Custom run form deploys
the stack on the test bed's engine, reaches Completed, and its status artifact (``helix-status-local``) shows;
a deploy of an environment whose approval policy asks waits suspended, its Resume form shows the typed fields,
and the answer given in the form is what happens (approved: applied and recorded with the reason; rejected:
nothing changes)."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
import yaml
from playwright.sync_api import expect

from testbed.helix import local_descriptor
from tests.prefect_worker import BIN, latest_artifact, sh

SERVICES = ("neo4j", "redis", "dashboard", "mcp-graph", "mcp-discovery", "mcp-derivation", "mcp-cascade",
            "mcp-verification", "nginx")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def test_the_dashboard_loads(prefect_server, page):
    page.goto(f"{prefect_server.ui_url}/dashboard")
    # rendered by the UI's app (index.html alone is an empty <div id="app">): its navigation (links with
    # role=button) and the page heading
    nav = page.get_by_role("button", name="Deployments", exact=True)
    expect(nav).to_be_visible()
    expect(page.get_by_role("button", name="Work Pools", exact=True)).to_be_visible()
    expect(page.get_by_text("Dashboard", exact=True).last).to_be_visible()
    nav.click()
    expect(page).to_have_url(re.compile(r"/deployments$"))


def _run_ids(api: str, deployment_id: str) -> list[str]:
    r = httpx.post(f"{api}/flow_runs/filter", timeout=10,
                   json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "limit": 200})
    r.raise_for_status()
    return [run["id"] for run in r.json()]


def _prop(page, name: str):
    """A parameter of the run form (its label reads ``<name> (Optional)``)."""
    label = page.locator(".schema-form-property__label", has_text=re.compile(rf"^\s*{re.escape(name)} \("))
    return page.locator(".schema-form-property").filter(has=label)


@pytest.fixture(scope="module")
def ui_stack(bed, engine, images, tmp_path_factory):
    """This module's Helix project (its own name and free host port), removed after the module's tests."""
    from drivers.engine import EngineDriver

    project = f"ui{bed.run_id.split('-')[-1]}"
    path = local_descriptor(tmp_path_factory.mktemp("ui") / "local.yaml", project)
    yield {"project": project, "path": path}
    EngineDriver.connect(engine.base_url, project, "local").remove_project()


def test_deploy_run_from_the_ui_completes_and_shows_its_status(bed, engine, images, worker, prefect_server, page,
                                                               ui_stack):
    env, api = worker, prefect_server.api_url
    path = ui_stack["path"]
    sh([str(BIN / "python"), "-m", "blocks.bootstrap", "--descriptor", str(path)], env)
    deployment = httpx.get(f"{api}/deployments/name/deploy-helix/local", timeout=10).json()
    run_id = None
    try:
        # the deployment page, then Run → Custom run
        page.goto(f"{prefect_server.ui_url}/deployments/deployment/{deployment['id']}")
        expect(page.get_by_text("deploy-helix").first).to_be_visible()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run", exact=True).click()
        expect(page).to_have_url(re.compile(r"/run(\?|$)"))
        # the form's fields: text for the descriptor and the engine, JSON for the labels (parameters the bed needs:
        # the test's project, this bed's engine, the labels that let the bed remove the containers)
        values = {"descriptor": ("str", str(path)), "engine_url": ("str", engine.base_url),
                  "container_labels": ("dict", json.dumps(bed.container_labels()))}
        expect(_prop(page, "reset_overrides")).to_be_visible()  # the whole form is there (its last field)
        for name, (kind, value) in values.items():
            field = _prop(page, name)
            field.get_by_role("button", name=kind, exact=True).click()
            field.locator("textarea").first.fill(value)
        for name, (_, value) in values.items():  # a field the form re-rendered meanwhile is filled again
            box = _prop(page, name).locator("textarea").first
            if box.input_value() != value:
                box.fill(value)
            expect(box).to_have_value(value)
        before = set(_run_ids(api, deployment["id"]))
        def submit():  # the form stays on the page when the API refuses it
            with page.expect_response(lambda r: r.url.endswith("/create_flow_run")) as created:
                page.get_by_role("button", name="Submit", exact=True).click()
            return created.value

        answer = _until_not_503(submit)
        assert answer.ok, f"the API refused the form's run: {answer.status} {answer.text()[:500]}"
        # back on the deployment page, the new run is in its Runs list (the "View run" toast may be gone already)
        expect(page).to_have_url(re.compile(rf"/deployments/deployment/{deployment['id']}"))
        deadline = time.monotonic() + 30
        while not (new := set(_run_ids(api, deployment["id"])) - before):
            assert time.monotonic() < deadline, "no flow run was created by the form's Submit"
            time.sleep(0.5)
        [run_id] = new
        # the run's page (the deployment's Runs list refreshes on its own schedule, so it is opened by its address)
        page.goto(f"{prefect_server.ui_url}/runs/flow-run/{run_id}")
        expect(page).to_have_url(re.compile(rf"/runs/flow-run/{run_id}$"))
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        assert run["deployment_id"] == deployment["id"]
        assert run["parameters"]["descriptor"] == str(path)
        assert run["parameters"]["container_labels"] == bed.container_labels()

        # the run, as the API sees it, until it ends (the deploy takes minutes); then the page must say Completed
        deadline = time.monotonic() + 900
        while (state := httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"])["type"] not in TERMINAL:
            assert time.monotonic() < deadline, f"the run is still {state['name']} after 900 s"
            time.sleep(5)
        assert state["type"] == "COMPLETED", f"the run ended {state['name']}: {state.get('message')}"
        page.reload()
        expect(page.locator(".state-badge").first).to_have_text("Completed", timeout=60_000)

        # its status artifact, from the run's Artifacts tab: the card, then the rendered markdown table
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("helix-status-local", exact=True).first.click()
        expect(page).to_have_url(re.compile(r"/artifacts/artifact/"))
        table = page.locator("table").first
        expect(table).to_be_visible()
        for service in SERVICES:
            expect(table.get_by_role("cell", name=service, exact=True).first).to_be_visible()
        text = table.inner_text()
        assert "unhealthy" not in text and "absent" not in text, text
    finally:
        _cancel_if_running(api, run_id)


def _cancel_if_running(api: str, run_id: str | None) -> None:
    """A failed test leaves no run holding the deployment's concurrency slot or the environment's lease."""
    if run_id is None:
        return
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
    if state["type"] not in TERMINAL:
        httpx.post(f"{api}/flow_runs/{run_id}/set_state", timeout=10, json={
            "state": {"type": "CANCELLED", "name": "Cancelled", "message": "the browser test failed"}, "force": True})


def _wait_state(api: str, run_id: str, types: set[str], deadline_s: float) -> dict:
    deadline = time.monotonic() + deadline_s
    while (state := httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"])["type"] not in types:
        assert state["type"] not in TERMINAL, f"the run ended {state['name']}: {state.get('message')}"
        assert time.monotonic() < deadline, f"the run is still {state['name']} after {deadline_s} s"
        time.sleep(2)
    return state


def _create_run(api: str, deployment_id: str, parameters: dict) -> str:
    """A run of the deployment, created as `prefect deployment run` creates it: through Prefect's own client, which
    tries again when the server answers 503 (its SQLite busy on a loaded machine; seen in a clean-clone CI)."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api) as client:
        return str(client.create_flow_run_from_deployment(deployment_id, parameters=parameters).id)


def _deploy_and_wait(api: str, deployment_id: str, parameters: dict) -> None:
    """A deploy-helix/local run through the API (not the form), until it completes."""
    run_id = _create_run(api, deployment_id, parameters)
    try:
        _wait_state(api, run_id, {"COMPLETED"}, 900)
    finally:
        _cancel_if_running(api, run_id)


RETRIES_503 = 3
"""How often a browser test submits a form again when the API answers 503 (Prefect's "retry later": its SQLite
database was locked by a concurrent write on the loaded test machine; Prefect's own client retries those, the
UI says "Something went wrong" and leaves it to the person). Any other refusal fails the test at once."""


def _until_not_503(submit):
    """``submit()`` (a form's submission, returning the API's response) again while the API answers 503, up to
    RETRIES_503 times, 2 s apart: the server's SQLite was busy, and a person would submit again."""
    for attempt in range(1, RETRIES_503 + 1):
        answer = submit()
        if answer.status != 503 or attempt == RETRIES_503:
            return answer
        time.sleep(2)
    raise AssertionError("unreachable")


def _answer_in_the_resume_form(page, ui_url: str, run_id: str, who: str, why: str, approve: bool, folder):
    """Open the suspended run's page, check the Resume form (the plan and the typed fields), fill it and submit;
    returns the API's response to the form's ``/resume``."""
    page.goto(f"{ui_url}/runs/flow-run/{run_id}")
    expect(page.locator(".state-badge").first).to_have_text("Suspended")
    page.get_by_role("button", name="Resume").first.click()
    form = page.locator(".p-modal")
    expect(form.get_by_text("Resume Flow Run")).to_be_visible()
    expect(form.get_by_role("heading", name=re.compile("Approve deploy"))).to_be_visible()
    expect(form.get_by_text("replicas", exact=False).first).to_be_visible()  # the plan's change, in the form
    for label in ("Approve (Optional)", "Approver", "Reason"):
        expect(form.locator(".schema-form-property__label", has_text=label)).to_be_visible()
    field = form.locator(".schema-form-property")
    field.filter(has=page.locator(".schema-form-property__label", has_text="Approver")).locator("textarea").fill(who)
    field.filter(has=page.locator(".schema-form-property__label", has_text="Reason")).locator("textarea").fill(why)
    toggle = form.get_by_role("switch")
    if approve:
        toggle.click()
    expect(toggle).to_have_attribute("aria-checked", "true" if approve else "false")
    page.screenshot(path=str(folder / "approval-form.png"))  # the README's picture comes from here
    with page.expect_response(lambda r: r.url.endswith(f"/flow_runs/{run_id}/resume")) as answered:
        form.get_by_role("button", name="Submit", exact=True).click()
    return answered.value


def _dashboards(engine, project: str) -> int:
    from drivers.engine import EngineDriver

    d = EngineDriver.connect(engine.base_url, project, "local")
    return len([c for c in d.containers("dashboard") if c.status == "running"])


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
def test_a_guarded_deploy_waits_for_the_answer_given_in_the_resume_form(bed, engine, images, worker, prefect_server,
                                                                        page, ui_stack, tmp_path, approve):
    """The descriptor asks for approval of deploys (``approval: {when: on-change}``) and wants one dashboard
    replica more than runs: the run suspends (its process ends, the worker is free) before anything changes;
    the run page's Resume form shows the plan and the typed fields; the answer submitted there decides."""
    env, api = worker, prefect_server.api_url
    data = yaml.safe_load(ui_stack["path"].read_text())
    sh([str(BIN / "python"), "-m", "blocks.bootstrap", "--descriptor", str(ui_stack["path"])], env)
    deployment = httpx.get(f"{api}/deployments/name/deploy-helix/local", timeout=10).json()
    if not _dashboards(engine, ui_stack["project"]):  # the UI deploy test did not leave the stack: deploy it here
        _deploy_and_wait(api, deployment["id"], {"descriptor": str(ui_stack["path"]), "engine_url": engine.base_url,
                                                 "container_labels": bed.container_labels()})
    running = _dashboards(engine, ui_stack["project"])
    assert running >= 1
    data["services"]["dashboard"]["replicas"] = max(running, 1) + 1
    data["approval"] = {"when": "on-change", "timeout": "15m", "actions": ["deploy"]}
    guarded = tmp_path / "guarded.yaml"
    guarded.write_text(yaml.safe_dump(data, sort_keys=False))
    run_id = _create_run(api, deployment["id"], {
        "descriptor": str(guarded), "engine_url": engine.base_url, "container_labels": bed.container_labels()})
    who, why = "ui-tester", f"{'ship it' if approve else 'not today'} (browser)"
    try:
        state = _wait_state(api, run_id, {"PAUSED"}, 900)  # a first deploy (the earlier test failed) takes minutes
        assert state["name"] == "Suspended", state  # suspended, not paused: the flow's process has ended
        assert _dashboards(engine, ui_stack["project"]) == running, "nothing changes before the answer"

        answer = _until_not_503(lambda: _answer_in_the_resume_form(page, prefect_server.ui_url, run_id, who, why,
                                                                   approve, tmp_path))
        assert answer.ok, f"the API refused the answer: {answer.status} {answer.text()[:500]}"

        state = _wait_state(api, run_id, {"COMPLETED"}, 600)
        record = latest_artifact(api, "changes-local")
        verdict = "approved" if approve else "refused"
        assert f"{verdict} by {who}: {why}" in record, record
        expected = running + 1 if approve else running
        assert _dashboards(engine, ui_stack["project"]) == expected
        page.reload()
        expect(page.locator(".state-badge").first).to_have_text("Completed", timeout=60_000)
    finally:
        _cancel_if_running(api, run_id)
