// gitlab_access end to end: an agent module's request goes from a real agent through a real KAS
// (its gitlab_access module) to this platform's module registry, with both PlatformClients.
import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import pino from "pino";
import { createAgent, type Agent, type AgentModule } from "@kasbridge/sdk/agent";
import { createKasServer, type KasServer } from "@kasbridge/sdk/kas";
import { gitlabAccessClient, type GitlabAccessRequest, type GitlabAccessResponse } from "@kasbridge/sdk/modules/gitlab_access/agent";
import { gitlabAccessServerModule } from "@kasbridge/sdk/modules/gitlab_access/server";
import { createHttpPlatformClient, type PlatformClient } from "@kasbridge/sdk/platform-client";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { HUNG_MS, deferred, within } from "@kasbridge/testing/wait";
import { createInProcessPlatformClient } from "../client/in-process-platform-client.js";
import { useTestStore } from "../testing/fixtures.test-support.js";
import { call, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import type { AgentModuleRequest } from "./module-requests.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/** An agent module that makes the requests a test gives it, through gitlab_access, once the agent runs. */
function requestingModule(moduleName: string) {
  let client: ReturnType<typeof gitlabAccessClient> | undefined;
  const ready = deferred();
  const module: AgentModule = {
    name: "test_requester",
    start(ctx) {
      client = gitlabAccessClient(ctx.transport, moduleName);
      ready.resolve(undefined);
    },
  };
  return {
    module,
    async request(request: GitlabAccessRequest): Promise<GitlabAccessResponse> {
      await ready.promise;
      return within(HUNG_MS, client!.request({ timeoutMs: HUNG_MS, ...request }), "module request");
    },
  };
}

describe("gitlab_access: agent module -> KAS -> platform", () => {
  const db = useTestStore("sqlite");
  const cleanup = new Cleanup();
  let platform: TestPlatform;
  let agentToken: string;
  let agentId: number;
  let projectId: number;
  /** What the platform's "test_module" handler received. */
  let received: AgentModuleRequest[];

  beforeEach(async () => {
    platform = await startTestPlatform(db.store);
    cleanup.add(() => platform.close());
    const admin = { token: platform.adminToken };
    projectId = (await call(platform.baseUrl, "POST", "/api/v4/projects", { ...admin, body: { name: "cluster" } })).body.id;
    agentId = (await call(platform.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { ...admin, body: { name: "prod" } })).body.id;
    agentToken = (await call(platform.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens`, { ...admin, body: { name: "t" } })).body
      .token;
    received = [];
    cleanup.add(
      platform.services.moduleRequests.register("test_module", (request) => {
        received.push(request);
        if (request.path === "/fail") throw new Error("the module broke");
        return {
          status: request.method === "PUT" ? 201 : 200,
          headers: { "x-module": "test_module" },
          json: { agent: request.agent.agent.id, path: request.path, query: request.query.getAll("n"), body: Buffer.from(request.body).toString() },
        };
      }),
    );
  });
  afterEach(() => cleanup.run());

  async function startKasAndAgent(client: PlatformClient, moduleName = "test_module") {
    const kas: KasServer = await createKasServer({
      platform: client,
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: platform.jwtSecret },
      modules: [gitlabAccessServerModule()],
    });
    cleanup.add(() => kas.close(100));
    const requester = requestingModule(moduleName);
    const agent: Agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token: agentToken, logger, modules: [requester.module] });
    agent.start();
    cleanup.add(() => agent.stop(100));
    return requester;
  }

  const clients: Record<string, () => PlatformClient> = {
    "in process": () => createInProcessPlatformClient(platform.services),
    "over HTTP (GitLab's internal API)": () => createHttpPlatformClient({ baseUrl: platform.baseUrl, jwtSecret: platform.jwtSecret }),
  };

  for (const [how, client] of Object.entries(clients)) {
    describe(how, () => {
      it("carries method, path, query, headers and body to the module and its answer back", async () => {
        const requester = await startKasAndAgent(client());
        const res = await requester.request({
          method: "PUT",
          path: "/vulnerabilities/report",
          query: { n: ["1", "2"] },
          headers: { "content-type": "application/json", "x-report": "r1" },
          body: JSON.stringify({ name: "CVE-1" }),
        });
        expect(res.status).to.equal(201);
        expect(res.statusLine).to.equal("201 Created");
        expect(res.headers.get("x-module")).to.equal("test_module");
        expect(res.json()).to.deep.equal({ agent: agentId, path: "/vulnerabilities/report", query: ["1", "2"], body: '{"name":"CVE-1"}' });
        expect(received).to.have.length(1);
        expect(received[0]!.method).to.equal("PUT");
        expect(received[0]!.headers.get("x-report")).to.equal("r1");
        // The platform authenticated the agent by its token, which KAS added; the agent's own never went.
        expect(received[0]!.agent.project.id).to.equal(projectId);
      });

      it("passes the platform's refusals on as answers: unknown module 404, failing module 500", async () => {
        const other = await startKasAndAgent(client(), "no_such_module");
        expect((await other.request({ path: "/reconcile" })).status).to.equal(404);
        const requester = await startKasAndAgent(client());
        const failed = await requester.request({ path: "/fail" });
        expect(failed.status).to.equal(500);
        expect(failed.json()).to.deep.equal({ message: "500 Internal Server Error" });
      });

      it("refuses a path that would climb out of the module's prefix, before the platform sees it", async () => {
        const requester = await startKasAndAgent(client());
        const error = await requester.request({ path: "/../../agent_info" }).then(
          () => undefined,
          (e: Error) => e,
        );
        expect(error?.message).to.match(/"\." or "\.\." segments/);
        expect(received).to.have.length(0);
      });
    });
  }
});
