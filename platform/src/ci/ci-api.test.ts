import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { parse } from "yaml";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { call, kasHeaders, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import { buildCiWorld, type CiWorld } from "./ci-fixture.test-support.js";

const PROXY_URL = "https://kas.example.test/k8s-proxy";

describeEachStore("platform/ci over HTTP", (getStore) => {
  let p: TestPlatform;
  let clock: Date;
  let w: CiWorld;
  /** PATs: `api` scope, and `k8s_proxy` (+ read_api) for the proxy. */
  const pat: Record<string, string> = {};
  const patIds: Record<string, number> = {};

  beforeEach(async () => {
    clock = new Date("2030-01-01T00:00:00Z");
    p = await startTestPlatform(getStore(), { now: () => clock, k8sProxyUrl: PROXY_URL });
    w = await buildCiWorld(p.services);
    for (const user of [w.owner, w.dev, w.reporter, w.stranger]) {
      pat[user.username] = (await p.services.personalAccessTokens.create(user.id, { name: "api", scopes: ["api"] })).secret;
      const k8s = await p.services.personalAccessTokens.create(user.id, { name: "k8s", scopes: ["k8s_proxy"] });
      pat[`${user.username}:k8s`] = k8s.secret;
      patIds[`${user.username}:k8s`] = k8s.token.id;
    }
    pat["dev:read"] = (await p.services.personalAccessTokens.create(w.dev.id, { name: "read", scopes: ["read_api"] })).secret;
  });
  afterEach(async () => {
    await p.close();
  });

  const startJob = (projectId: number, token: string, body: Record<string, unknown> = {}) =>
    call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/jobs`, { token, body });
  const allowedAgents = (jobToken?: string) =>
    call(p.baseUrl, "GET", "/api/v4/job/allowed_agents", jobToken === undefined ? {} : { headers: { "Job-Token": jobToken } });

  describe("POST /projects/:id/jobs", () => {
    it("starts a job and returns its token, environment and a working kubeconfig", async () => {
      const res = await startJob(w.projects.web.id, pat.dev!, { environment: "production", ref: "release" });
      expect(res.status).to.equal(201);
      const { token, kubeconfig, ...job } = res.body;
      expect(token).to.match(/^glcbt-/);
      expect(job).to.deep.equal({
        id: job.id,
        status: "running",
        ref: "release",
        project_id: w.projects.web.id,
        user_id: w.dev.id,
        pipeline: { id: job.pipeline.id },
        created_at: "2030-01-01T00:00:00.000Z",
        finished_at: null,
        expires_at: "2030-01-01T01:00:00.000Z",
        environment: { name: "production", slug: "production", tier: "production" },
      });
      expect(parse(kubeconfig)).to.deep.equal({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "gitlab", cluster: { server: PROXY_URL } }],
        users: [
          { name: `agent:${w.agents.prod}`, user: { token: `ci:${w.agents.prod}:${token}` } },
          { name: `agent:${w.agents.dev}`, user: { token: `ci:${w.agents.dev}:${token}` } },
        ],
        contexts: [
          { name: "ops/config:prod", context: { cluster: "gitlab", namespace: "apps", user: `agent:${w.agents.prod}` } },
          { name: "ops/config:dev", context: { cluster: "gitlab", user: `agent:${w.agents.dev}` } },
        ],
      });
      // The token in the kubeconfig is the job's: it authenticates.
      expect((await allowedAgents(token)).status).to.equal(200);

      // Outside the environments of prod's group entry: only dev's context.
      const staging = await startJob(w.projects.web.id, pat.dev!, { environment: "staging", environment_tier: "testing" });
      expect(staging.body.environment).to.deep.equal({ name: "staging", slug: "staging", tier: "testing" });
      expect(parse(staging.body.kubeconfig).contexts.map((c: { name: string }) => c.name)).to.deep.equal(["ops/config:dev"]);
      // No agent at all: no kubeconfig, as GitLab sets no KUBECONFIG.
      const lonely = await startJob(w.projects.lonely.id, pat.owner!);
      expect(lonely.status).to.equal(201);
      expect(lonely.body.kubeconfig).to.equal(null);
      expect(lonely.body).not.to.have.property("environment");
    });

    it("points the kubeconfig at KAS's default proxy address unless told otherwise", async () => {
      const plain = await startTestPlatform(getStore(), { now: () => clock });
      try {
        const res = await call(plain.baseUrl, "POST", `/api/v4/projects/${w.projects.api.id}/jobs`, { token: pat.dev!, body: {} });
        expect(parse(res.body.kubeconfig).clusters).to.deep.equal([{ name: "gitlab", cluster: { server: "http://127.0.0.1:8154" } }]);
      } finally {
        await plain.close();
      }
    });

    it("needs Developer on the project and the api scope; validates its parameters", async () => {
      expect((await startJob(w.projects.api.id, pat.rep!)).status).to.equal(403);
      expect((await startJob(w.projects.api.id, pat.stranger!)).status).to.equal(404);
      expect((await startJob(w.projects.api.id, pat["dev:read"]!)).status).to.equal(403);
      expect((await call(p.baseUrl, "POST", `/api/v4/projects/${w.projects.api.id}/jobs`)).status).to.equal(401);
      expect((await startJob(4242, pat.dev!)).status).to.equal(404);
      const badTier = await startJob(w.projects.api.id, pat.dev!, { environment: "prod", environment_tier: "gold" });
      expect(badTier.status).to.equal(400);
      expect(badTier.body.message).to.match(/environment_tier/);
      expect((await startJob(w.projects.api.id, pat.dev!, { environment: "/x" })).status).to.equal(400);
      expect((await startJob(w.projects.api.id, pat.dev!, { ref: "a..b" })).status).to.equal(400);
    });
  });

  describe("GET /job/allowed_agents", () => {
    it("answers GitLab's shape for a job authorized by project and by parent group", async () => {
      const job = (await startJob(w.projects.api.id, pat.dev!)).body;
      const res = await allowedAgents(job.token);
      expect(res.status).to.equal(200);
      const configProject = res.body.allowed_agents[0].config_project;
      expect(configProject).to.include({ id: w.projects.config.id, path_with_namespace: "ops/config", name: "config" });
      expect(res.body).to.deep.equal({
        allowed_agents: [
          {
            id: w.agents.prod,
            config_project: configProject,
            configuration: { default_namespace: "api-ns", access_as: { ci_job: {} } },
          },
          { id: w.agents.dev, config_project: configProject, configuration: {} },
        ],
        job: { id: job.id, token_expires_at: job.expires_at },
        pipeline: { id: job.pipeline.id },
        project: { id: w.projects.api.id, groups: [{ id: w.groups.ops }] },
        user: { id: w.dev.id, username: "dev", roles_in_project: ["guest", "planner", "reporter", "developer"] },
      });
    });

    it("reports the environment and applies the environments filter", async () => {
      const review = (await startJob(w.projects.web.id, pat.dev!, { environment: "review/feature-1" })).body;
      const res = await allowedAgents(review.token);
      expect(res.body.allowed_agents.map((a: { id: number }) => a.id)).to.deep.equal([w.agents.prod, w.agents.dev]);
      expect(res.body.allowed_agents[0].configuration).to.deep.equal({
        default_namespace: "apps",
        environments: ["production", "review/*"],
      });
      expect(res.body.environment).to.deep.equal({ tier: "development", slug: review.environment.slug });
      expect(res.body.project).to.deep.equal({ id: w.projects.web.id, groups: [{ id: w.groups.apps }, { id: w.groups.ops }] });
      // dev is Maintainer of ops/apps, so of web.
      expect(res.body.user.roles_in_project).to.deep.equal(["guest", "planner", "reporter", "developer", "maintainer"]);

      const plain = (await startJob(w.projects.web.id, pat.dev!)).body;
      const noEnv = await allowedAgents(plain.token);
      expect(noEnv.body.allowed_agents.map((a: { id: number }) => a.id)).to.deep.equal([w.agents.dev]);
      expect(noEnv.body).not.to.have.property("environment");
    });

    it("gives an unauthorized project an empty list", async () => {
      const job = (await startJob(w.projects.lonely.id, pat.owner!)).body;
      const res = await allowedAgents(job.token);
      expect(res.status).to.equal(200);
      expect(res.body.allowed_agents).to.deep.equal([]);
      expect(res.body.project).to.deep.equal({ id: w.projects.lonely.id, groups: [{ id: w.groups.elsewhere }] });
    });

    it("refuses missing, forged, expired and finished tokens with 401", async () => {
      const unauthorized = { message: "401 Unauthorized" };
      expect((await allowedAgents()).status).to.equal(401);
      expect((await allowedAgents("glcbt-" + "A".repeat(40))).body).to.deep.equal(unauthorized);
      // A personal access token is not a job token.
      expect((await allowedAgents(pat.dev!)).status).to.equal(401);

      const a = (await startJob(w.projects.api.id, pat.dev!)).body;
      const b = (await startJob(w.projects.api.id, pat.dev!)).body;
      const finish = await call(p.baseUrl, "POST", `/api/v4/projects/${w.projects.api.id}/jobs/${a.id}/finish`, { token: pat.dev! });
      expect(finish.status).to.equal(200);
      expect(finish.body).to.include({ id: a.id, status: "success", finished_at: "2030-01-01T00:00:00.000Z" });
      expect(finish.body).not.to.have.property("token");
      expect((await allowedAgents(a.token)).status).to.equal(401);
      expect((await allowedAgents(b.token)).status).to.equal(200);

      clock = new Date("2030-01-01T01:00:00Z");
      expect((await allowedAgents(b.token)).status).to.equal(401);
    });

    it("finishes only the project's jobs, for Developers, with a known status", async () => {
      const job = (await startJob(w.projects.api.id, pat.dev!)).body;
      const finish = (projectId: number, token: string, body?: unknown) =>
        call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/jobs/${job.id}/finish`, { token, body });
      expect((await finish(w.projects.other.id, pat.owner!)).status).to.equal(404);
      expect((await finish(w.projects.api.id, pat.rep!)).status).to.equal(403);
      expect((await finish(w.projects.api.id, pat.dev!, { status: "exploded" })).status).to.equal(400);
      expect((await finish(w.projects.api.id, pat.dev!, { status: "canceled" })).body.status).to.equal("canceled");
      // Again: nothing changes.
      expect((await finish(w.projects.api.id, pat.dev!)).body.status).to.equal("canceled");
    });
  });

  describe("POST /internal/kubernetes/authorize_proxy_user", () => {
    const authorize = async (body: Record<string, unknown>, jwt = true) =>
      call(p.baseUrl, "POST", "/api/v4/internal/kubernetes/authorize_proxy_user", {
        body,
        headers: jwt ? await kasHeaders(p.jwtSecret) : {},
      });
    const withPat = (agentId: number, key: string) => ({ agent_id: agentId, access_type: "personal_access_token", access_key: key });

    it("authorizes access_as agent for a Developer of an authorized project", async () => {
      const res = await authorize(withPat(w.agents.prod, pat["dev:k8s"]!));
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({
        agent: { id: w.agents.prod, config_project: { id: w.projects.config.id } },
        user: { id: w.dev.id, username: "dev" },
        access_as: { agent: {} },
        personal_access_token: { id: patIds["dev:k8s"], expires_at: null },
      });
      // KAS sends int64 as a string (protojson).
      expect((await authorize({ ...withPat(w.agents.prod, pat["dev:k8s"]!), agent_id: String(w.agents.prod) })).status).to.equal(200);
    });

    it("authorizes access_as user with the user's roles in each usable project and group", async () => {
      const res = await authorize(withPat(w.agents.dev, pat["dev:k8s"]!));
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({
        agent: { id: w.agents.dev, config_project: { id: w.projects.config.id } },
        user: { id: w.dev.id, username: "dev" },
        access_as: {
          user: {
            projects: [{ id: w.projects.api.id, roles: ["guest", "planner", "reporter", "developer"] }],
            groups: [{ id: w.groups.apps, roles: ["guest", "planner", "reporter", "developer", "maintainer"] }],
          },
        },
        personal_access_token: { id: patIds["dev:k8s"], expires_at: null },
      });
      // The owner of ops reaches both through the group membership.
      const owner = await authorize(withPat(w.agents.dev, pat["owner:k8s"]!));
      expect(owner.body.access_as.user.projects).to.deep.equal([
        { id: w.projects.api.id, roles: ["guest", "planner", "reporter", "developer", "maintainer", "owner"] },
      ]);
    });

    it("refuses as GitLab: 403 without a usable authorization or scope, 401 for bad keys, 404 for unknown agents", async () => {
      const forbidden = await authorize(withPat(w.agents.prod, pat["rep:k8s"]!));
      expect(forbidden.status).to.equal(403);
      expect(forbidden.body).to.deep.equal({ message: "403 Forbidden" });
      expect((await authorize(withPat(w.agents.dev, pat["stranger:k8s"]!))).status).to.equal(403);
      const scope = await authorize(withPat(w.agents.prod, pat.dev!));
      expect(scope.status).to.equal(403);
      expect(scope.body).to.include({ error: "insufficient_scope", scope: "k8s_proxy" });
      expect((await authorize(withPat(w.agents.prod, "glpat-unknown-0123456789"))).status).to.equal(401);
      expect((await authorize(withPat(4242, pat["dev:k8s"]!))).body).to.deep.equal({ message: "404 Not found" });

      // An agent without user_access.
      const bare = await p.services.agents.create(w.projects.config.id, "bare", w.owner.id);
      expect((await authorize(withPat(bare.id, pat["owner:k8s"]!))).status).to.equal(403);

      // Browser sessions are not supported yet.
      const session = { agent_id: w.agents.prod, access_type: "session_cookie", access_key: "cookie", csrf_token: "csrf" };
      const cookie = await authorize(session);
      expect(cookie.status).to.equal(401);
      expect(cookie.body.message).to.match(/not supported/);
      expect((await authorize({ ...session, csrf_token: undefined })).status).to.equal(400);

      expect((await authorize({ ...withPat(w.agents.prod, "x"), access_type: "oidc" })).status).to.equal(400);
      expect((await authorize({ access_type: "personal_access_token", access_key: "x" })).status).to.equal(400);
      expect((await authorize({ agent_id: w.agents.prod, access_type: "personal_access_token" })).status).to.equal(400);
      expect((await authorize(withPat(w.agents.prod, pat["dev:k8s"]!), false)).status).to.equal(401);
    });
  });
});
