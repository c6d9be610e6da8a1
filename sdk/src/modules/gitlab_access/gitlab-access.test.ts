import { describe, it, afterEach } from "mocha";
import { expect } from "chai";
import pino from "pino";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { deferred, rejection, HUNG_MS, within } from "@kasbridge/testing/wait";
import type { AgentModule } from "../../agent/agent-module.js";
import { createAgent } from "../../agent/create-agent.js";
import { GitlabAccess, HeaderExtraSchema } from "../../gen/gitlab/agent/gitlab_access/rpc/rpc_pb.js";
import { HttpRequestSchema } from "../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { HeaderExtraSchema as KubernetesApiHeaderExtraSchema } from "../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import { createKasServer } from "../../kas/kas-server.js";
import type { ModuleRequest, ModuleResponse } from "../../platform-client/platform-client.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import { gitlabAccessClient } from "./agent/gitlab-access-client.js";
import { gitlabAccessServerModule } from "./server/gitlab-access-module.js";
import { CLIENT_SPAN, CLIENT_TRACE, memoryTracing } from "../../tracing/tracing.test-support.js";
import type { TracingOptions } from "../../tracing/tracing.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const token = "glagent-gitlab-access";

/** A platform that takes module requests, answering each with what it received. */
class ModulePlatform extends StaticPlatformClient {
  requests: Array<Omit<ModuleRequest, "body"> & { body: string }> = [];
  async makeModuleRequest(request: ModuleRequest): Promise<ModuleResponse> {
    const chunks: Uint8Array[] = [];
    for await (const chunk of request.body) chunks.push(chunk);
    this.requests.push({ ...request, body: Buffer.concat(chunks).toString() });
    const body = Buffer.alloc(3 * 1024 * 1024, 0x62);
    return {
      status: 200,
      statusText: "OK",
      headers: { "content-type": ["text/plain"], connection: ["close"] },
      body: (async function* () {
        yield body;
      })(),
    };
  }
}

describe("gitlab_access on KAS", () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  /** KAS with the module and an agent whose module hands its transport to the test. */
  async function start(platform: StaticPlatformClient, tracing?: TracingOptions): Promise<Transport> {
    platform.addToken(token, { agentId: 7, agentName: "a", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 1 });
    const kas = await createKasServer({
      platform,
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: new Uint8Array(32) },
      modules: [gitlabAccessServerModule({ maxFrameBytes: 1024 * 1024 })],
      tracing,
    });
    cleanup.add(() => kas.close(100));
    const transport = deferred<Transport>();
    const module: AgentModule = { name: "test", start: (ctx) => transport.resolve(ctx.transport) };
    const agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token, logger, modules: [module] });
    agent.start();
    cleanup.add(() => agent.stop(100));
    return within(HUNG_MS, transport.promise, "agent start");
  }

  it("sends the platform the agent's token instead of any credential the agent put in the request, and streams a large answer back", async () => {
    const platform = new ModulePlatform();
    const client = gitlabAccessClient(await start(platform), "starboard_vulnerability");
    const res = await client.request({
      method: "post",
      path: "/scan",
      headers: { authorization: "Bearer forged", cookie: "session=x", "gitlab-kas-api-request": "forged", "x-kept": "yes", connection: "x-hop", "x-hop": "dropped" },
      body: "report",
      timeoutMs: HUNG_MS,
    });
    expect(res.status).to.equal(200);
    expect(res.body.byteLength).to.equal(3 * 1024 * 1024);
    expect(res.headers.get("connection")).to.equal(null);
    const [seen] = platform.requests;
    expect(seen.agentToken).to.equal(token);
    expect(seen.module).to.equal("starboard_vulnerability");
    expect(seen.method).to.equal("POST");
    expect(seen.body).to.equal("report");
    expect(Object.keys(seen.headers).map((h) => h.toLowerCase())).to.have.members(["x-kept"]);
  });

  it("traces the request: a child of the agent's traceparent, and the platform gets the span's", async () => {
    const platform = new ModulePlatform();
    const kasTracing = memoryTracing("kas");
    const client = createClient(GitlabAccess, await start(platform, kasTracing.options));
    const extra = anyPack(HeaderExtraSchema, create(HeaderExtraSchema, { moduleName: "starboard_vulnerability" }));
    async function* requests() {
      yield create(HttpRequestSchema, { message: { case: "header", value: { request: { method: "GET", urlPath: "/policies", header: {}, query: {} }, extra } } });
      yield create(HttpRequestSchema, { message: { case: "trailer", value: {} } });
    }
    for await (const _ of client.makeRequest(requests(), { headers: { traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01` }, timeoutMs: HUNG_MS })) void _;
    const [span] = kasTracing.exporter.getFinishedSpans();
    expect(span!.name).to.equal("gitlab.agent.gitlab_access.rpc.GitlabAccess/MakeRequest");
    expect(span!.spanContext().traceId).to.equal(CLIENT_TRACE);
    expect(span!.parentSpanContext?.spanId).to.equal(CLIENT_SPAN);
    expect(span!.attributes).to.deep.include({ "gitlab.agent.id": 7, "gitlab.agent.module": "starboard_vulnerability", "rpc.grpc.status_code": 0 });
    expect(platform.requests[0]!.headers.traceparent).to.deep.equal([`00-${CLIENT_TRACE}-${span!.spanContext().spanId}-01`]);
  });

  it("refuses a request without a module name, or whose first message is not the header", async () => {
    const platform = new ModulePlatform();
    const raw = createClient(GitlabAccess, await start(platform));
    const noModule = raw.makeRequest(
      (async function* () {
        yield {
          message: {
            case: "header" as const,
            // Another module's HeaderExtra: not gitlab_access's, so no module name.
            value: { request: { method: "GET", urlPath: "/x" }, extra: anyPack(KubernetesApiHeaderExtraSchema, create(KubernetesApiHeaderExtraSchema)) },
          },
        };
      })(),
    );
    const noHeader = raw.makeRequest(
      (async function* () {
        yield { message: { case: "data" as const, value: { data: new Uint8Array([1]) } } };
      })(),
    );
    for (const call of [noModule, noHeader]) {
      const error = await rejection((async () => {
        for await (const _ of call);
      })());
      expect(error.code).to.equal(Code.InvalidArgument);
    }
    expect(platform.requests).to.have.length(0);
  });

  it("answers UNIMPLEMENTED when the platform takes no module requests", async () => {
    const client = gitlabAccessClient(await start(new StaticPlatformClient()), "remote_development");
    const error = await rejection(client.request({ path: "/reconcile", timeoutMs: HUNG_MS }));
    expect(error.code).to.equal(Code.Unimplemented);
  });
});
