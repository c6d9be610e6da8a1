import { expect } from "chai";
import { createHttpPlatformClient, type KasAuditEvent } from "@kasbridge/sdk/platform-client";
import { createInProcessPlatformClient } from "../client/in-process-platform-client.js";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { call, kasHeaders, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";

const DAY = 24 * 60 * 60 * 1000;

function request(agentId: number, overrides: Partial<Extract<KasAuditEvent, { kind: "k8s_api_request" }>> = {}): KasAuditEvent {
  return {
    kind: "k8s_api_request",
    at: new Date().toISOString(),
    agent_id: agentId,
    actor: { kind: "ci_job", user_id: 1, username: "root", job_id: 42, project_id: 9, pipeline_id: 3 },
    impersonated: { username: "gitlab:ci_job:42", groups: ["gitlab:ci_job", "gitlab:project:9"] },
    method: "GET",
    path: "/api/v1/namespaces/default/pods",
    verb: "list",
    resource: "pods",
    namespace: "default",
    name: "",
    status: 200,
    duration_ms: 12,
    error: null,
    trace_id: null,
    ...overrides,
  };
}

describeEachStore("audit trail", (getStore) => {
  let p: TestPlatform;
  let clock: Date;
  let projectId: number;
  let agentId: number;
  beforeEach(async () => {
    clock = new Date();
    p = await startTestPlatform(getStore(), { now: () => clock });
    projectId = (await call(p.baseUrl, "POST", "/api/v4/projects", { token: p.adminToken, body: { name: "cfg" } })).body.id;
    agentId = (await call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { token: p.adminToken, body: { name: "prod" } })).body.id;
  });
  afterEach(() => p.close());

  const list = async (query = "", token = p.adminToken) => call(p.baseUrl, "GET", `/api/v4/kubernetes_audit_events${query}`, { token });

  it("stores KAS's events (HTTP and in process) with the agent's project, filters and pages them newest first", async () => {
    const http = createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret });
    await http.recordAuditEvents!([
      request(agentId),
      request(agentId, { actor: { kind: "user", user_id: 1, username: "root", access_type: "personal_access_token" }, verb: "get", name: "web", status: 403 }),
      request(agentId, { actor: { kind: "refused", credential: "ci" }, impersonated: null, status: 401, error: "unknown job token" }),
    ]);
    await createInProcessPlatformClient(p.services).recordAuditEvents!([
      { kind: "agent_connected", at: new Date().toISOString(), agent_id: agentId, connection_id: "77", pod_name: "agentk-0", pod_namespace: "ns", agent_version: "v16.0.0", kas_instance: "kas-1" },
    ]);
    const all = await list();
    expect(all.status).to.equal(200);
    expect(all.headers.get("x-total")).to.equal("4");
    expect(all.body.map((e: { kind: string }) => e.kind)).to.deep.equal(["agent_connected", "k8s_api_request", "k8s_api_request", "k8s_api_request"]);
    expect(all.body[0]).to.deep.include({ agent_id: agentId, project_id: projectId, actor: { kind: "agent" } });
    expect(all.body[0].details).to.include({ connection_id: "77", pod_name: "agentk-0" });
    const ci = all.body[3];
    expect(ci).to.deep.include({
      kind: "k8s_api_request",
      agent_id: agentId,
      project_id: projectId,
      actor: { kind: "ci_job", user_id: 1, username: "root", job_id: 42, project_id: 9, pipeline_id: 3 },
      impersonated: { username: "gitlab:ci_job:42", groups: ["gitlab:ci_job", "gitlab:project:9"] },
      error: null,
    });
    expect(ci.request).to.include({ verb: "list", resource: "pods", namespace: "default", status: 200, duration_ms: 12 });

    expect((await list("?status=403")).body.map((e: { request: { name: string } }) => e.request.name)).to.deep.equal(["web"]);
    expect((await list("?job_id=42")).body).to.have.length(1);
    expect((await list("?kind=k8s_api_request&verb=list")).body).to.have.length(2);
    expect((await list(`?project_id=${projectId}&username=root`)).body).to.have.length(2);
    const page2 = await list("?per_page=3&page=2");
    expect(page2.body).to.have.length(1);
    expect(page2.headers.get("x-total-pages")).to.equal("2");
    expect((await list("?kind=nonsense")).status).to.equal(400);
    expect((await list("?created_after=yesterday")).status).to.equal(400);
  });

  it("refuses bad events naming them (nothing of the batch stored) and calls without the KAS JWT", async () => {
    const path = "/api/v4/internal/kubernetes/kasbridge/audit_events";
    const headers = await kasHeaders(p.jwtSecret);
    const bad = { ...request(agentId), status: -1 };
    const res = await call(p.baseUrl, "POST", path, { headers, body: { events: [request(agentId), bad] } });
    expect(res.status).to.equal(400);
    expect(JSON.stringify(res.body)).to.contain("events[1].status");
    expect((await call(p.baseUrl, "POST", path, { headers, body: { events: [{ ...request(agentId), kind: "other" }] } })).status).to.equal(400);
    expect((await call(p.baseUrl, "POST", path, { body: { events: [request(agentId)] } })).status).to.equal(401);
    expect((await list()).body).to.deep.equal([]);
  });

  it("records token creation and revocation by whom, never the token; one agent's activity for who may read the agent", async () => {
    const created = await call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens`, { token: p.adminToken, body: { name: "t1" } });
    const revoke = () => call(p.baseUrl, "DELETE", `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens/${created.body.id}`, { token: p.adminToken });
    expect((await revoke()).status).to.equal(204);
    // Revoking again is answered the same (as GitLab) but is not a second event.
    expect((await revoke()).status).to.equal(204);
    const activity = await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/cluster_agents/${agentId}/activity_events`, { token: p.adminToken });
    expect(activity.body.map((e: { kind: string }) => e.kind)).to.deep.equal(["token_revoked", "token_created"]);
    expect(activity.body[1]).to.deep.include({ actor: { kind: "user", user_id: 1, username: "root" }, details: { token_id: created.body.id, token_name: "t1" } });
    expect(JSON.stringify((await list()).body)).to.not.contain(created.body.token);
    // Not for strangers, and the instance-wide list is for admins.
    const u = await call(p.baseUrl, "POST", "/api/v4/users", { token: p.adminToken, body: { username: "eve", name: "Eve", email: "eve@example.com" } });
    const pat = (await call(p.baseUrl, "POST", `/api/v4/users/${u.body.id}/personal_access_tokens`, { token: p.adminToken, body: { name: "t", scopes: ["api"] } })).body.token;
    expect((await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/cluster_agents/${agentId}/activity_events`, { token: pat })).status).to.equal(404);
    expect((await list("", pat)).status).to.equal(403);
  });

  it("streams JSON lines after a cursor, and follows new entries", async () => {
    await p.services.audit.recordFromKas({ events: [request(agentId), request(agentId, { verb: "get" })] });
    const once = await fetch(`${p.baseUrl}/api/v4/kubernetes_audit_events/stream`, { headers: { "private-token": p.adminToken } });
    expect(once.headers.get("content-type")).to.match(/^application\/x-ndjson/);
    const lines = (await once.text()).trim().split("\n").map((l) => JSON.parse(l) as { id: number; request: { verb: string } });
    expect(lines.map((l) => l.request.verb)).to.deep.equal(["list", "get"]);

    const abort = new AbortController();
    const follow = await fetch(`${p.baseUrl}/api/v4/kubernetes_audit_events/stream?follow=true&after=${lines[1]!.id}`, {
      headers: { "private-token": p.adminToken },
      signal: abort.signal,
    });
    const reader = follow.body!.getReader();
    await p.services.audit.recordFromKas({ events: [request(agentId, { verb: "watch" })] });
    let text = "";
    while (!text.includes("\n")) text += new TextDecoder().decode((await reader.read()).value);
    expect(JSON.parse(text.split("\n")[0]!).request.verb).to.equal("watch");
    abort.abort();
  });

  it("prunes entries older than the retention", async () => {
    await p.services.audit.record({ kind: "token_created", agent_id: agentId, actor: { kind: "user", user_id: 1 }, impersonated: null, request: null, details: null, error: null });
    clock = new Date(clock.getTime() + 91 * DAY);
    await p.services.audit.record({ kind: "token_revoked", agent_id: agentId, actor: { kind: "user", user_id: 1 }, impersonated: null, request: null, details: null, error: null });
    expect((await list()).body.map((e: { kind: string }) => e.kind)).to.deep.equal(["token_revoked"]);
  });
});
