"""The Prefect UI in a real browser (Debian's chromium through playwright, see conftest.py): the dashboard
renders, and ``deploy-helix/local`` started from its deployment page through the UI's Custom run form deploys
the stack on the test bed's engine, reaches Completed, and its status artifact (``helix-status-local``) shows."""

from __future__ import annotations

import json
import re
import time

import httpx
from playwright.sync_api import expect

from testbed.helix import local_descriptor
from tests.prefect_worker import BIN, sh

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


def test_deploy_run_from_the_ui_completes_and_shows_its_status(bed, engine, images, worker, prefect_server, page,
                                                               tmp_path):
    from drivers.engine import EngineDriver

    env, api = worker, prefect_server.api_url
    project = f"ui{bed.run_id.split('-')[-1]}"
    path = local_descriptor(tmp_path / "local.yaml", project)  # its own project and a free host port
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
        for name, kind, value in (("descriptor", "str", str(path)), ("engine_url", "str", engine.base_url),
                                  ("container_labels", "dict", json.dumps(bed.container_labels()))):
            field = _prop(page, name)
            field.get_by_role("button", name=kind, exact=True).click()
            field.locator("textarea").first.fill(value)
        before = set(_run_ids(api, deployment["id"]))
        page.get_by_role("button", name="Submit", exact=True).click()
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
        if run_id is not None:  # a failed test leaves no run holding the deployment's concurrency slot
            state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
            if state["type"] not in TERMINAL:
                httpx.post(f"{api}/flow_runs/{run_id}/set_state", timeout=10, json={
                    "state": {"type": "CANCELLED", "name": "Cancelled", "message": "the browser test failed"},
                    "force": True})
        EngineDriver.connect(engine.base_url, project, "local").remove_project()
