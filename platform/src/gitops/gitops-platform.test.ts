import { randomBytes } from "node:crypto";
import http from "node:http";
import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import express from "express";
import { ManifestProjectStatusSchema } from "@kasbridge/sdk/gen/kasbridge/gitops/v1/sync_status_pb";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { createInternalApi } from "../api/internal-api.js";
import { RepositoryFileTooLargeError, createHttpPlatformClient, type PlatformClient } from "@kasbridge/sdk/platform-client";
import { createInProcessPlatformClient } from "../client/in-process-platform-client.js";
import { useGitPlatform } from "../git/git-fixtures.test-support.js";
import { call, platformError } from "../testing/http-fixtures.test-support.js";

describe("platform for GitOps: repository reads and sync status, in process and over HTTP", function () {
  this.timeout(30_000);
  const git = useGitPlatform();

  /** Both clients over one platform, with a pushed repository and an agent token. */
  async function setup() {
    const p = git.platform;
    const project = await p.project("manifests");
    const c = await git.client();
    await c.ok(["clone", "-q", p.url(project, p.adminToken), "wc"]);
    const commit = await c.commit("wc", { "deploy/a.yaml": "a: 1\n", "big.yaml": "x".repeat(2000) });
    await c.ok(["push", "-q", "origin", "HEAD:refs/heads/main"], "wc");
    const agent = await p.services.agents.create(project.id, "agent", null);
    const { secret: token } = await p.services.agentTokens.create(agent.id, { name: "t" }, null);
    const jwtSecret = new Uint8Array(randomBytes(32));
    const app = express();
    app.use(createInternalApi({ services: p.services, jwtSecret }));
    const server = http.createServer(app);
    const port = await listen(server);
    const clients: Record<string, PlatformClient> = {
      "in process": createInProcessPlatformClient(p.services),
      HTTP: createHttpPlatformClient({ baseUrl: `http://127.0.0.1:${port}`, jwtSecret }),
    };
    return { project, commit, agent, token, clients, close: () => closeServer(server) };
  }

  it("resolves revisions, lists and reads files, refuses files over the limit", async () => {
    const s = await setup();
    try {
      for (const [name, client] of Object.entries(s.clients)) {
        expect(await client.resolveRepositoryRevision!(s.project.id, "HEAD"), name).to.equal(s.commit);
        expect(await client.resolveRepositoryRevision!(s.project.id, "refs/heads/main"), name).to.equal(s.commit);
        expect(await client.resolveRepositoryRevision!(s.project.id, "refs/tags/nope"), name).to.equal(undefined);
        expect(await client.listRepositoryFiles!(s.project.id, s.commit), name).to.deep.equal(["big.yaml", "deploy/a.yaml"]);
        expect(new TextDecoder().decode(await client.readRepositoryFile!(s.project.id, s.commit, "deploy/a.yaml", 100)), name).to.equal("a: 1\n");
        expect(await client.readRepositoryFile!(s.project.id, s.commit, "missing.yaml", 100), name).to.equal(undefined);
        const tooLarge = await client.readRepositoryFile!(s.project.id, s.commit, "big.yaml", 1000).then(() => undefined, (e: unknown) => e);
        expect(tooLarge, name).to.be.instanceOf(RepositoryFileTooLargeError);
        expect((await platformError(client.listRepositoryFiles!(s.project.id, "f".repeat(40)))).kind, name).to.equal("not_found");
      }
    } finally {
      await s.close();
    }
  });

  it("stores each agent's reported status, shown by GET …/cluster_agents/:agent_id/gitops", async () => {
    const s = await setup();
    try {
      const status = (project: string, error = "", seconds = 1_700_000_000n) =>
        create(ManifestProjectStatusSchema, {
          project,
          commitSeen: s.commit,
          commitApplied: error ? "" : s.commit,
          lastError: error,
          objects: [{ group: "", version: "v1", kind: "ConfigMap", namespace: "default", name: "a", status: "Current", source: "deploy/a.yaml" }],
          updatedAt: { seconds, nanos: 0 },
        });
      await s.clients["in process"]!.reportGitopsStatus!(s.token, status("group/one"));
      await s.clients.HTTP!.reportGitopsStatus!(s.token, status("group/two", "a.yaml:3: broken"));
      await s.clients.HTTP!.reportGitopsStatus!(s.token, status("group/one", "later failure", 1_700_000_060n));
      expect((await platformError(s.clients.HTTP!.reportGitopsStatus!("glagent-nope", status("x")))).kind).to.equal("unauthenticated");
      const res = await call(git.platform.baseUrl, "GET", `/api/v4/projects/${s.project.id}/cluster_agents/${s.agent.id}/gitops`, { token: git.platform.adminToken });
      expect(res.status).to.equal(200);
      expect(res.body.manifest_projects.map((p: { project: string; last_error: string | null; commit_applied: string | null }) => [p.project, p.last_error, p.commit_applied])).to.deep.equal([
        ["group/one", "later failure", null],
        ["group/two", "a.yaml:3: broken", null],
      ]);
      expect(res.body.manifest_projects[0].objects).to.deep.equal([
        { group: "", version: "v1", kind: "ConfigMap", namespace: "default", name: "a", status: "Current", message: null, source: "deploy/a.yaml" },
      ]);
      expect(res.body.manifest_projects[0].updated_at).to.equal("2023-11-14T22:14:20.000Z");
      // The agent's health shows the newest of those errors.
      const health = await call(git.platform.baseUrl, "GET", `/api/v4/projects/${s.project.id}/cluster_agents/${s.agent.id}/health`, { token: git.platform.adminToken });
      expect(health.body.last_error).to.deep.equal({ source: "gitops", message: "later failure", at: "2023-11-14T22:14:20.000Z", project: "group/one" });
      // Someone who may not read the agent's project sees nothing.
      const stranger = await git.platform.user("stranger");
      const refused = await call(git.platform.baseUrl, "GET", `/api/v4/projects/${s.project.id}/cluster_agents/${s.agent.id}/gitops`, { token: stranger.token });
      expect(refused.status).to.equal(404);
    } finally {
      await s.close();
    }
  });
});
