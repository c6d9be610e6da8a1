import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { toJson } from "@bufbuild/protobuf";
import { ConfigurationFileSchema } from "@kasbridge/sdk/gen/gitlab/agent/agentcfg/agentcfg_pb";
import { createHttpPlatformClient } from "@kasbridge/sdk/platform-client";
import { createInProcessPlatformClient } from "../client/in-process-platform-client.js";
import type { PlatformClient } from "@kasbridge/sdk/platform-client";
import { useTestStore } from "../testing/fixtures.test-support.js";
import { call, kasHeaders, platformError, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import { TestRepositories } from "./git-fixture.test-support.js";
import { waitFor } from "@kasbridge/testing/wait";
import { FeedFetch } from "../testing/feed-fetch.test-support.js";

const VALID = "ci_access:\n  projects:\n  - id: ops/config\n    default_namespace: prod\nobservability:\n  logging: {level: debug}\n";

describe("platform/agent-config over HTTP and PlatformClient", () => {
  const db = useTestStore("sqlite");
  let p: TestPlatform;
  let clock: Date;
  let projectId: number;
  let agentId: number;
  const admin = () => ({ token: p.adminToken });
  const agentPath = () => `/api/v4/projects/${projectId}/cluster_agents/${agentId}`;

  beforeEach(async () => {
    clock = new Date("2030-01-01T00:00:00Z");
    p = await startTestPlatform(db.store, { now: () => clock });
    const group = await call(p.baseUrl, "POST", "/api/v4/groups", { ...admin(), body: { name: "Ops", path: "ops" } });
    projectId = (await call(p.baseUrl, "POST", "/api/v4/projects", { ...admin(), body: { name: "config", namespace_id: group.body.id } })).body.id;
    agentId = (await call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { ...admin(), body: { name: "prod" } })).body.id;
  });
  afterEach(async () => {
    await p.close();
  });

  describe("REST API", () => {
    it("shows the accepted commit, when it was stored, and the last error on the agent", async () => {
      const fresh = await call(p.baseUrl, "GET", agentPath(), admin());
      expect(fresh.body).to.deep.include({ config_commit_id: null, config_updated_at: null, config_error: null });

      await p.services.agentConfigs.apply(agentId, "a".repeat(40), VALID);
      clock = new Date("2030-01-01T01:00:00Z");
      await p.services.agentConfigs.apply(agentId, "b".repeat(40), "ci_access:\n  projects:\n  - id: x\n    acces_as: {}\n");
      const res = await call(p.baseUrl, "GET", agentPath(), admin());
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.include({
        id: agentId,
        name: "prod",
        config_commit_id: "a".repeat(40),
        config_updated_at: "2030-01-01T00:00:00.000Z",
        config_error: {
          message: "ci_access.projects[0].acces_as: unknown key (line 4)",
          commit_id: "b".repeat(40),
          at: "2030-01-01T01:00:00.000Z",
        },
      });
      const list = await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/cluster_agents`, admin());
      expect(list.body[0]).to.deep.include({ config_commit_id: "a".repeat(40) });
      const created = await call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { ...admin(), body: { name: "next" } });
      expect(created.status).to.equal(201);
      expect(created.body).to.deep.include({ config_commit_id: null, config_error: null });
    });
  });

  describe("internal API", () => {
    it("serves an agent's configuration as proto JSON, behind the KAS JWT", async () => {
      const path = `/api/v4/internal/kubernetes/agent_configuration?agent_id=${agentId}`;
      expect((await call(p.baseUrl, "GET", path)).status).to.equal(401);
      let res = await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret) });
      expect(res.body).to.deep.equal({ agent_id: agentId, commit_id: "", configuration: {} });

      await p.services.agentConfigs.apply(agentId, "c".repeat(40), VALID);
      res = await call(p.baseUrl, "GET", path, { headers: await kasHeaders(p.jwtSecret) });
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({
        agent_id: agentId,
        commit_id: "c".repeat(40),
        configuration: {
          ci_access: { projects: [{ id: "ops/config", default_namespace: "prod" }] },
          observability: { logging: { level: "debug" } },
        },
      });

      const headers = await kasHeaders(p.jwtSecret);
      const bad = await call(p.baseUrl, "GET", "/api/v4/internal/kubernetes/agent_configuration", { headers });
      expect(bad.status).to.equal(400);
      expect(bad.body).to.include({ error: "agent_id is missing" });
      expect((await call(p.baseUrl, "GET", "/api/v4/internal/kubernetes/agent_configuration?agent_id=x", { headers })).status).to.equal(400);
      const missing = await call(p.baseUrl, "GET", "/api/v4/internal/kubernetes/agent_configuration?agent_id=4242", { headers });
      expect(missing.status).to.equal(404);
      expect(missing.body).to.deep.equal({ message: "404 Agent Not Found" });
    });

    it("pages the change feed from a cursor", async () => {
      const feed = (after?: string) =>
        kasHeaders(p.jwtSecret).then((headers) =>
          call(p.baseUrl, "GET", `/api/v4/internal/kubernetes/agent_configuration_changes${after === undefined ? "" : `?after=${after}`}`, {
            headers,
          }),
        );
      expect((await call(p.baseUrl, "GET", "/api/v4/internal/kubernetes/agent_configuration_changes")).status).to.equal(401);
      const start = await feed();
      expect(start.body).to.deep.equal({ changes: [], cursor: "0" });
      await p.services.agentConfigs.apply(agentId, "c1", "");
      await p.services.agentConfigs.apply(agentId, "c2", "flux: 1\n"); // rejected: not in the feed
      await p.services.agentConfigs.apply(agentId, "c3", "flux: {}\n");
      const page = await feed(start.body.cursor);
      expect(page.body.changes).to.deep.equal([
        { agent_id: agentId, commit_id: "c1" },
        { agent_id: agentId, commit_id: "c3" },
      ]);
      expect((await feed(page.body.cursor)).body).to.deep.equal({ changes: [], cursor: page.body.cursor });
      expect((await feed("-1")).status).to.equal(400);
    });
  });

  describe("PlatformClient", () => {
    const clients: AbortController[] = [];
    afterEach(() => {
      for (const c of clients.splice(0)) c.abort();
    });

    function bothClients(): [string, () => PlatformClient][] {
      return [
        ["in-process", () => createInProcessPlatformClient(p.services)],
        ["http", () => createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret })],
      ];
    }

    it("getAgentConfiguration: the accepted config, the empty one before any, not_found for unknown agents", async () => {
      for (const [name, make] of bothClients()) {
        const client = make();
        await p.services.agentConfigs.apply(agentId, "", "");
        expect(toJson(ConfigurationFileSchema, (await client.getAgentConfiguration!(agentId)).config), name).to.deep.equal({});
        await p.services.agentConfigs.apply(agentId, `${name}-commit`, VALID);
        const snapshot = await client.getAgentConfiguration!(agentId);
        expect(snapshot.agentId, name).to.equal(agentId);
        expect(snapshot.commitId, name).to.equal(`${name}-commit`);
        expect(snapshot.config.ciAccess?.projects[0]?.defaultNamespace, name).to.equal("prod");
        expect((await platformError(client.getAgentConfiguration!(4242))).kind, name).to.equal("not_found");
        const aborted = new AbortController();
        aborted.abort(new Error("stop"));
        expect(await client.getAgentConfiguration!(agentId, aborted.signal).catch((e: Error) => e.message), name).to.equal("stop");
      }
    });

    it("in-process watch: called synchronously after the change commits, until the signal aborts", async () => {
      const client = createInProcessPlatformClient(p.services);
      const seen: number[] = [];
      const controller = new AbortController();
      client.watchAgentConfigurations!((id) => seen.push(id), controller.signal);
      await p.services.agentConfigs.apply(agentId, "c1", VALID);
      expect(seen).to.deep.equal([agentId]);
      await p.services.agentConfigs.apply(agentId, "c2", "flux: 1\n");
      expect(seen).to.have.length(1); // rejected configs are no change
      controller.abort();
      await p.services.agentConfigs.apply(agentId, "c3", "");
      expect(seen).to.have.length(1);
    });

    it("HTTP watch: a pushed config reaches every watcher through one poller, which stops when the last leaves", async () => {
      const feed = new FeedFetch("agent_configuration_changes");
      feed.hold = true;
      const client = createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret, fetch: feed.fetch, configurationPollIntervalMs: 20 });
      const repos = new TestRepositories();
      const detach = p.services.agentConfigs.attach(repos);
      try {
        await repos.init(projectId);
        const seenA: number[] = [];
        const seenB: number[] = [];
        const a = new AbortController();
        const b = new AbortController();
        clients.push(a, b);
        client.watchAgentConfigurations!((id) => seenA.push(id), a.signal);
        client.watchAgentConfigurations!((id) => seenB.push(id), b.signal);
        // The first answer positions the cursor; one poller, so one request without a cursor.
        (await feed.next()).pass();
        const polling = await feed.next();
        expect(feed.requests.filter((u) => !u.searchParams.has("after"))).to.have.length(1);
        expect(feed.requests).to.have.length(2);

        // A push processed before the platform answers the poll is in its answer.
        const push = await repos.commit(projectId, { ".gitlab/agents/prod/config.yaml": VALID }, { announce: false });
        repos.announce(push);
        await p.services.agentConfigs.idle();
        polling.pass();
        await waitFor(() => seenA.length === 1 && seenB.length === 1, undefined, "both watchers to see the change");
        expect(seenA).to.deep.equal([agentId]);
        expect(seenB).to.deep.equal([agentId]);
        const snapshot = await client.getAgentConfiguration!(agentId);
        expect(snapshot.commitId).to.equal(await repos.resolveRef(projectId, "main"));

        a.abort();
        const next = await feed.next();
        await p.services.agentConfigs.apply(agentId, "later", "");
        next.pass();
        await waitFor(() => seenB.length === 2, undefined, "the remaining watcher to see the second change");
        expect(seenA).to.have.length(1);

        // All gone: the poller stops, cancelling the request it has made.
        const last = await feed.next();
        b.abort();
        expect(last.signal?.aborted).to.equal(true);
        last.pass();
      } finally {
        detach();
        await p.services.agentConfigs.idle();
        await repos.dispose();
      }
    });

    it("an agent created after its config file was pushed starts with that config", async () => {
      const repos = new TestRepositories();
      const detach = p.services.agentConfigs.attach(repos);
      try {
        await repos.init(projectId);
        const e = await repos.commit(projectId, { ".gitlab/agents/late/config.yaml": VALID });
        await p.services.agentConfigs.idle();
        const created = await call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { ...admin(), body: { name: "late" } });
        expect(created.body).to.deep.include({ config_commit_id: e.after, config_error: null });
        const client = createInProcessPlatformClient(p.services);
        expect((await client.getAgentConfiguration!(created.body.id)).commitId).to.equal(e.after);
      } finally {
        detach();
        await repos.dispose();
      }
    });
  });
});
