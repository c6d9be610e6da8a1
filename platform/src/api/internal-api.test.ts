import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { createHash, randomBytes } from "node:crypto";
import { call, kasHeaders, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import { useTestStore } from "../testing/fixtures.test-support.js";

describe("platform internal API (KAS -> platform)", () => {
  const db = useTestStore("sqlite");
  let p: TestPlatform;
  let clock: Date;
  let projectId: number;
  let agentId: number;
  let token: { id: number; secret: string };
  const tokensPath = () => `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens`;

  beforeEach(async () => {
    clock = new Date();
    p = await startTestPlatform(db.store, { now: () => clock });
    const admin = { token: p.adminToken };
    const group = await call(p.baseUrl, "POST", "/api/v4/groups", { ...admin, body: { name: "Ops", path: "ops" } });
    const project = await call(p.baseUrl, "POST", "/api/v4/projects", {
      ...admin,
      body: { name: "config", namespace_id: group.body.id, default_branch: "trunk" },
    });
    projectId = project.body.id;
    agentId = (await call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { ...admin, body: { name: "prod" } })).body.id;
    const t = await call(p.baseUrl, "POST", tokensPath(), { ...admin, body: { name: "t" } });
    token = { id: t.body.id, secret: t.body.token };
  });
  afterEach(async () => {
    await p.close();
  });

  it("answers agent_info at both GitLab paths", async () => {
    const hash = createHash("sha256").update(String(projectId)).digest("hex");
    for (const path of ["/api/v4/internal/kubernetes/agent_info", "/api/v4/internal/agents/agentk/agent_info"]) {
      const res = await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret, token.secret) });
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({
        project_id: projectId,
        agent_id: agentId,
        agent_name: "prod",
        gitaly_info: { address: "", token: "", features: {} },
        gitaly_repository: {
          storage_name: "default",
          relative_path: `@hashed/${hash.slice(0, 2)}/${hash.slice(2, 4)}/${hash}.git`,
          git_object_directory: "",
          git_alternate_object_directories: [],
          gl_repository: `project-${projectId}`,
          gl_project_path: "ops/config",
        },
        default_branch: "trunk",
        agent_token_id: token.id,
      });
    }
  });

  it("refuses a missing, wrongly signed or expired KAS JWT", async () => {
    const path = "/api/v4/internal/kubernetes/agent_info";
    const cases: Record<string, string>[] = [
      { authorization: `Bearer ${token.secret}` },
      await kasHeaders(new Uint8Array(randomBytes(32)), token.secret),
      await kasHeaders(p.jwtSecret, token.secret, Date.now() - 120_000),
      { "Gitlab-Kas-Api-Request": "garbage", authorization: `Bearer ${token.secret}` },
    ];
    for (const headers of cases) {
      const res = await call(p.baseUrl, "GET", path, { headers });
      expect(res.status).to.equal(401);
      expect(res.body).to.deep.equal({ message: "KAS JWT authentication invalid" });
    }
  });

  it("refuses a missing, unknown or revoked agent token, the revoked one at once", async () => {
    const path = "/api/v4/internal/kubernetes/agent_info";
    for (const agentToken of [undefined, "glagent-" + "x".repeat(50)]) {
      const res = await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret, agentToken) });
      expect(res.status).to.equal(401);
      expect(res.body).to.deep.equal({ message: "401 Unauthorized" });
    }
    const revoke = await call(p.baseUrl, "DELETE", `${tokensPath()}/${token.id}`, { token: p.adminToken });
    expect(revoke.status).to.equal(204);
    const after = await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret, token.secret) });
    expect(after.status).to.equal(401);
  });

  it("records the token's last use, at most once a minute", async () => {
    const path = "/api/v4/internal/kubernetes/agent_info";
    const lastUsed = async () =>
      (await call(p.baseUrl, "GET", `${tokensPath()}/${token.id}`, { token: p.adminToken })).body.last_used_at as string | null;
    expect(await lastUsed()).to.equal(null);
    const first = clock.toISOString();
    await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret, token.secret) });
    expect(await lastUsed()).to.equal(first);
    clock = new Date(clock.getTime() + 59_000);
    await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret, token.secret) });
    expect(await lastUsed()).to.equal(first);
    clock = new Date(clock.getTime() + 2_000);
    await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret, token.secret) });
    expect(await lastUsed()).to.equal(clock.toISOString());
  });

  it("serves the token revocation feed from a cursor", async () => {
    const path = "/api/v4/internal/kubernetes/token_revocations";
    expect((await call(p.baseUrl, "GET", path)).status).to.equal(401);
    const start = await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret) });
    expect(start.status).to.equal(200);
    expect(start.body).to.deep.equal({ revocations: [], cursor: "0" });

    await call(p.baseUrl, "DELETE", `${tokensPath()}/${token.id}`, { token: p.adminToken });
    const page = await call(p.baseUrl, "GET", `${path}?after=${start.body.cursor}`, { headers: await kasHeaders(p.jwtSecret) });
    expect(page.body.revocations).to.deep.equal([{ kind: "agent_token", agent_id: agentId, token_id: token.id }]);
    expect(page.body.cursor).to.equal("1");
    const empty = await call(p.baseUrl, "GET", `${path}?after=${page.body.cursor}`, { headers: await kasHeaders(p.jwtSecret) });
    expect(empty.body).to.deep.equal({ revocations: [], cursor: "1" });
    const bad = await call(p.baseUrl, "GET", `${path}?after=abc`, { headers: await kasHeaders(p.jwtSecret) });
    expect(bad.status).to.equal(400);
  });
});
