import { expect } from "chai";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { SpanKind } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import pino from "pino";
import { Registry } from "prom-client";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer } from "@kasbridge/testing/servers";
import { waitFor } from "@kasbridge/testing/wait";
import { createAgent } from "../agent/create-agent.js";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { KasAuditLog } from "../kas/audit-log.js";
import { internalApiClientInterceptor } from "../kas/internal-api-auth.js";
import { createKasServer } from "../kas/kas-server.js";
import { echoAgentModule } from "../modules/echo/agent/echo-service.js";
import { kubernetesApiAgentModule } from "../modules/kubernetes_api/agent/kubernetes-api-agent-module.js";
import { ProxyPlatform, fakeApiServer, job, kubeConfig } from "../modules/kubernetes_api/kubernetes-api.test-support.js";
import { createKubernetesApiProxy } from "../modules/kubernetes_api/server/kubernetes-api-proxy.js";
import type { KasAuditEvent } from "../platform-client/audit-events.js";
import type { PlatformClient } from "../platform-client/platform-client.js";
import { Tracing, type TracingOptions } from "./tracing.js";

/** A tracer provider exporting to memory, as `service.name`; W3C trace context. */
function memoryTracing(serviceName: string): { options: TracingOptions; exporter: InMemorySpanExporter } {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": serviceName }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  return { options: { tracerProvider: provider, propagator: new W3CTraceContextPropagator() }, exporter };
}

const CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN = "00f067aa0ba902b7";
const secret = new Uint8Array(32).fill(3);

/**
 * KAS with its Kubernetes API proxy, an agent connected over a real HTTP/2 tunnel and a stand-in
 * API server that echoes the headers it got; each side with its own tracing (or none).
 */
async function startStack(cleanup: Cleanup, tracing: { kas?: TracingOptions; agent?: TracingOptions }) {
  const logger = pino({ level: "silent" });
  const api = await fakeApiServer();
  cleanup.add(() => closeServer(api.server));
  const platform = new ProxyPlatform();
  platform.addToken("glagent-k", { agentId: 7, agentName: "a", projectId: 3, projectPath: "g/cfg", defaultBranch: "main", tokenId: 70 });
  platform.jobs.set("job-ci", job({ access_as: { ci_job: {} } }));
  const audited: KasAuditEvent[] = [];
  const audit = new KasAuditLog({
    platform: { recordAuditEvents: async (events: KasAuditEvent[]) => void audited.push(...events) } as unknown as PlatformClient,
    logger,
    metrics: new Registry(),
    flushIntervalMs: 10,
  });
  cleanup.add(() => audit.close(0));
  const kas = await createKasServer({ platform, logger, tracing: tracing.kas, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: secret } });
  cleanup.add(() => kas.close(100));
  const proxy = await createKubernetesApiProxy({ agentCalls: kas.agentCalls, platform, logger, port: 0, audit, tracing: new Tracing(tracing.kas) });
  cleanup.add(() => proxy.close(100));
  const agent = createAgent({
    kasAddress: kas.agentApi.url("grpc"),
    token: "glagent-k",
    logger,
    tracing: tracing.agent,
    modules: [await kubernetesApiAgentModule({ kubeconfig: await kubeConfig(api.url, "agent-sa-token"), logger }), echoAgentModule()],
  });
  agent.start();
  cleanup.add(() => agent.stop(100));
  await waitFor(() => kas.registry.stats().idleTunnels > 0, undefined, "a tunnel from the agent");
  const get = async (path: string, headers: Record<string, string>) => {
    const res = await fetch(proxy.url + path, { headers });
    const text = await res.text();
    return { status: res.status, seen: res.status === 200 ? (JSON.parse(text) as { headers: Record<string, string> }).headers : undefined };
  };
  const auditedRequest = async (path: string) => {
    let found: Extract<KasAuditEvent, { kind: "k8s_api_request" }> | undefined;
    await waitFor(() => Boolean((found = audited.find((e): e is typeof found & object => e.kind === "k8s_api_request" && e.path === path))), undefined, `the audit event of ${path}`);
    return found!;
  };
  return { kas, get, auditedRequest };
}

const byName = (spans: ReadableSpan[], name: string, kind: SpanKind) => {
  const found = spans.filter((s) => s.name === name && s.kind === kind);
  expect(found, `one ${SpanKind[kind]} span ${name} in ${spans.map((s) => s.name).join(", ")}`).to.have.length(1);
  return found[0]!;
};
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
const MAKE_REQUEST = "gitlab.agent.kubernetes_api.rpc.KubernetesApi/MakeRequest";

describe("tracing: a Kubernetes API request through KAS, the tunnel and the agent", function () {
  this.timeout(30_000);
  const cleanup = new Cleanup();
  const kas = memoryTracing("kas");
  const agent = memoryTracing("agentk");
  let stack: Awaited<ReturnType<typeof startStack>>;

  before(async () => {
    stack = await startStack(cleanup, { kas: kas.options, agent: agent.options });
  });
  after(() => cleanup.run());
  beforeEach(() => {
    kas.exporter.reset();
    agent.exporter.reset();
  });

  /** The spans of both processes once the four of one request have ended. */
  async function fourSpans() {
    await waitFor(() => kas.exporter.getFinishedSpans().length >= 2 && agent.exporter.getFinishedSpans().length >= 2, undefined, "the spans of KAS and the agent");
    const kasSpans = kas.exporter.getFinishedSpans();
    const agentSpans = agent.exporter.getFinishedSpans();
    return {
      kasSpans,
      agentSpans,
      server: byName(kasSpans, "GET /api/v1/namespaces", SpanKind.SERVER),
      call: byName(kasSpans, MAKE_REQUEST, SpanKind.CLIENT),
      served: byName(agentSpans, MAKE_REQUEST, SpanKind.SERVER),
      apiRequest: byName(agentSpans, "GET", SpanKind.CLIENT),
    };
  }

  it("continues the client's trace: KAS's spans, the agent's and the API server's traceparent, parent to child", async () => {
    const r = await stack.get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-ci", traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01` });
    expect(r.status).to.equal(200);
    const { kasSpans, agentSpans, server, call, served, apiRequest } = await fourSpans();
    for (const span of [server, call, served, apiRequest]) expect(span.spanContext().traceId).to.equal(CLIENT_TRACE);
    expect(parentOf(server)).to.equal(CLIENT_SPAN);
    expect(parentOf(call)).to.equal(server.spanContext().spanId);
    // Across the tunnel: RequestInfo's metadata carried the call's span context.
    expect(parentOf(served)).to.equal(call.spanContext().spanId);
    expect(parentOf(apiRequest)).to.equal(served.spanContext().spanId);
    // The API server's parent is the agent's request span.
    expect(r.seen!.traceparent).to.equal(`00-${CLIENT_TRACE}-${apiRequest.spanContext().spanId}-01`);
    expect(kasSpans.every((s) => s.resource.attributes["service.name"] === "kas")).to.equal(true);
    expect(agentSpans.every((s) => s.resource.attributes["service.name"] === "agentk")).to.equal(true);

    expect(server.attributes).to.deep.include({
      "http.request.method": "GET",
      "http.route": "/api/v1/namespaces",
      "url.path": "/api/v1/namespaces",
      "url.scheme": "http",
      "http.response.status_code": 200,
      "gitlab.agent.id": 7,
      "gitlab.agent.module": "kubernetes_api",
      "gitlab.caller.kind": "ci_job",
      "k8s.request.verb": "list",
      "k8s.request.resource": "namespaces",
    });
    expect(call.attributes).to.deep.include({ "rpc.system": "grpc", "rpc.service": "gitlab.agent.kubernetes_api.rpc.KubernetesApi", "rpc.method": "MakeRequest", "rpc.grpc.status_code": 0, "gitlab.agent.id": 7 });
    expect(served.attributes).to.deep.include({ "rpc.system": "grpc", "rpc.method": "MakeRequest", "rpc.grpc.status_code": 0, "gitlab.agent.module": "kubernetes_api" });
    expect(apiRequest.attributes).to.deep.include({ "http.request.method": "GET", "server.address": "127.0.0.1", "http.response.status_code": 200, "k8s.request.verb": "list" });
    expect(String(apiRequest.attributes["url.full"])).to.match(/^http:\/\/127\.0\.0\.1:\d+\/api\/v1\/namespaces$/);
    // No credential in any span.
    const all = JSON.stringify([...kasSpans, ...agentSpans].map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status })));
    for (const secret of ["job-ci", "Bearer", "agent-sa-token", "glagent-k"]) expect(all).to.not.contain(secret);

    const audited = await stack.auditedRequest("/api/v1/namespaces");
    expect(audited.trace_id).to.equal(CLIENT_TRACE);
  });

  it("starts a trace when the client sends none, and marks refused requests", async () => {
    const r = await stack.get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-ci" });
    expect(r.status).to.equal(200);
    const { server, call, served, apiRequest } = await fourSpans();
    expect(server.parentSpanContext).to.equal(undefined);
    const traceId = server.spanContext().traceId;
    for (const span of [call, served, apiRequest]) expect(span.spanContext().traceId).to.equal(traceId);
    expect(r.seen!.traceparent).to.equal(`00-${traceId}-${apiRequest.spanContext().spanId}-01`);

    kas.exporter.reset();
    const refused = await stack.get("/api/v1/namespaces/default/pods", { authorization: "Bearer ci:7:job-forged" });
    expect(refused.status).to.equal(401);
    await waitFor(() => kas.exporter.getFinishedSpans().length >= 1, undefined, "the refused request's span");
    const span = byName(kas.exporter.getFinishedSpans(), "GET /api/v1/namespaces/{namespace}/pods", SpanKind.SERVER);
    expect(span.attributes).to.deep.include({ "http.response.status_code": 401, "k8s.request.verb": "list", "k8s.namespace.name": "default" });
    expect(span.attributes).to.not.have.property("gitlab.agent.id");
  });

  it("links a call on the internal API to the agent's span through the tunnel", async () => {
    const echo = createClient(
      EchoService,
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${stack.kas.internalApiAddress.port}`, interceptors: [internalApiClientInterceptor(secret, 7)] }),
    );
    await echo.echo({ payload: new Uint8Array([1]) }, { headers: { traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01` }, timeoutMs: 10_000 });
    await waitFor(() => kas.exporter.getFinishedSpans().length >= 1 && agent.exporter.getFinishedSpans().length >= 1, undefined, "the call's spans");
    const gateway = byName(kas.exporter.getFinishedSpans(), "kasbridge.echo.v1.EchoService/Echo", SpanKind.SERVER);
    const served = byName(agent.exporter.getFinishedSpans(), "kasbridge.echo.v1.EchoService/Echo", SpanKind.SERVER);
    expect(gateway.spanContext().traceId).to.equal(CLIENT_TRACE);
    expect(parentOf(gateway)).to.equal(CLIENT_SPAN);
    expect(parentOf(served)).to.equal(gateway.spanContext().spanId);
    expect(gateway.attributes).to.deep.include({ "gitlab.agent.id": 7, "rpc.grpc.status_code": 0 });
    expect(served.attributes).to.deep.include({ "gitlab.agent.module": "echo", "rpc.grpc.status_code": 0 });
  });
});

describe("tracing off (the default): nothing recorded, the client's traceparent passes untouched", function () {
  this.timeout(30_000);
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  it("forwards the client's traceparent to the API server as it came and audits no trace id", async () => {
    const stack = await startStack(cleanup, {});
    const traceparent = `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`;
    const r = await stack.get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-ci", traceparent });
    expect(r.status).to.equal(200);
    expect(r.seen!.traceparent).to.equal(traceparent);
    expect((await stack.auditedRequest("/api/v1/namespaces")).trace_id).to.equal(null);
  });

  it("a tracing agent behind a KAS that does not trace starts a trace of its own, which the API server continues", async () => {
    const agent = memoryTracing("agentk");
    const stack = await startStack(cleanup, { agent: agent.options });
    const r = await stack.get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-ci", traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01` });
    await waitFor(() => agent.exporter.getFinishedSpans().length >= 2, undefined, "the agent's spans");
    const apiRequest = byName(agent.exporter.getFinishedSpans(), "GET", SpanKind.CLIENT);
    const served = byName(agent.exporter.getFinishedSpans(), MAKE_REQUEST, SpanKind.SERVER);
    // KAS sent no traceparent in RequestInfo: the agent's call span starts a trace of its own,
    // and its API server request is its child.
    expect(served.parentSpanContext).to.equal(undefined);
    expect(parentOf(apiRequest)).to.equal(served.spanContext().spanId);
    expect(r.seen!.traceparent).to.equal(`00-${served.spanContext().traceId}-${apiRequest.spanContext().spanId}-01`);
  });
});
