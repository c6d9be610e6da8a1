import { expect } from "chai";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { SpanKind } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { internalApiClientInterceptor } from "../kas/internal-api-auth.js";
import { CLIENT_SPAN, CLIENT_TRACE, memoryTracing, secret, startStack } from "./tracing.test-support.js";

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
