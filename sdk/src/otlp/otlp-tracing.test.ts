import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { expect } from "chai";
import pino from "pino";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { SPAN_KIND_CLIENT, SPAN_KIND_SERVER, startOtlpReceiver } from "@kasbridge/testing/otlp-receiver";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { selfSignedCertificate } from "@kasbridge/testing/tls";
import { waitFor } from "@kasbridge/testing/wait";
import { startStack } from "../tracing/tracing.test-support.js";
import { startOtlpTracing } from "./otlp-tracing.js";

/** A pino logger whose lines are kept in `lines`. */
function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { logger: pino({ level: "debug" }, stream), lines };
}

describe("@kasbridge/sdk/otlp: OTLP/HTTP export as GitLab's observability.tracing", function () {
  this.timeout(30_000);
  const cleanup = new Cleanup();
  const dir = mkdtempSync(join(tmpdir(), "otlp-"));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  after(() => cleanup.run());

  it("sends protobuf spans to an https endpoint signed by the given CA, with the token as Private-Token, never logged", async () => {
    const cert = selfSignedCertificate("127.0.0.1");
    const receiver = await startOtlpReceiver({ cert: cert.cert, key: cert.key });
    cleanup.add(() => receiver.close());
    const caFile = join(dir, "ca.pem");
    writeFileSync(caFile, cert.cert);
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, "otlp-secret-token\n");
    const { logger, lines } = capturingLogger();
    const otlp = await startOtlpTracing({ serviceName: "kas", serviceVersion: "v1.2.3", endpoint: receiver.url, tokenSecretFile: tokenFile, caCertificateFile: caFile, logger, scheduledDelayMs: 10 });
    const tracer = otlp.tracing.tracerProvider.getTracer("test");
    const span = tracer.startSpan("a span", { attributes: { "gitlab.agent.id": 7, "k8s.request.verb": "list" } });
    span.end();
    await otlp.shutdown();
    expect(receiver.spans).to.have.length(1);
    expect(receiver.spans[0]).to.deep.include({ serviceName: "kas", name: "a span", traceId: span.spanContext().traceId, spanId: span.spanContext().spanId });
    expect(receiver.spans[0]!.attributes).to.deep.equal({ "gitlab.agent.id": 7, "k8s.request.verb": "list" });
    expect(receiver.requests[0]!["private-token"]).to.equal("otlp-secret-token");
    expect(lines.join("")).to.contain("exporting spans over OTLP/HTTP").and.not.contain("otlp-secret-token");
  });

  it("refuses bad settings with errors that name them", async () => {
    const start = (o: Partial<Parameters<typeof startOtlpTracing>[0]>) => startOtlpTracing({ serviceName: "kas", endpoint: "http://127.0.0.1:4318/v1/traces", ...o });
    await expectRejection(start({ endpoint: "collector:4317" }), /otlp_endpoint must be an http:\/\/ or https:\/\/ URL/);
    await expectRejection(start({ endpoint: "http://u:p@c:4318/v1/traces" }), /must not carry credentials/);
    await expectRejection(start({ tokenSecretFile: join(dir, "missing") }), /cannot read otlp_token_secret_file .*missing: ENOENT/);
    const empty = join(dir, "empty");
    writeFileSync(empty, "\n");
    await expectRejection(start({ tokenSecretFile: empty }), /otlp_token_secret_file .* is empty/);
    const ca = join(dir, "ca-for-http.pem");
    writeFileSync(ca, selfSignedCertificate().cert);
    await expectRejection(start({ caCertificateFile: ca }), /otlp_ca_certificate_file needs an https:\/\/ otlp_endpoint/);
  });

  it("exports the spans of KAS and the agent, one trace, to the receiver", async () => {
    const receiver = await startOtlpReceiver();
    cleanup.add(() => receiver.close());
    const kas = await startOtlpTracing({ serviceName: "kas", endpoint: receiver.url, scheduledDelayMs: 10 });
    const agent = await startOtlpTracing({ serviceName: "agentk", endpoint: receiver.url, scheduledDelayMs: 10 });
    cleanup.add(() => kas.shutdown());
    cleanup.add(() => agent.shutdown());
    const stack = await startStack(cleanup, { kas: kas.tracing, agent: agent.tracing });
    expect((await stack.get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-ci" })).status).to.equal(200);
    await waitFor(() => receiver.spans.length >= 4, undefined, "four spans exported");
    const server = receiver.spans.find((s) => s.serviceName === "kas" && s.kind === SPAN_KIND_SERVER)!;
    const apiRequest = receiver.spans.find((s) => s.serviceName === "agentk" && s.kind === SPAN_KIND_CLIENT)!;
    expect(server.name).to.equal("GET /api/v1/namespaces");
    expect(apiRequest.traceId).to.equal(server.traceId);
    expect((await stack.auditedRequest("/api/v1/namespaces")).trace_id).to.equal(server.traceId);
  });

  it("an endpoint that refuses connections or never answers costs spans, never a request", async () => {
    // Nothing listens on `closedPort`; `hanging` takes connections and never answers.
    const closed = http.createServer();
    const closedPort = await listen(closed);
    await closeServer(closed);
    const sockets = new Set<Socket>();
    const hanging = http.createServer(() => {});
    hanging.on("connection", (s: Socket) => sockets.add(s));
    const hangingPort = await listen(hanging);
    cleanup.add(async () => {
      for (const s of sockets) s.destroy();
      await closeServer(hanging);
    });
    const kasLog = capturingLogger();
    const kas = await startOtlpTracing({ serviceName: "kas", endpoint: `http://127.0.0.1:${closedPort}/v1/traces`, logger: kasLog.logger, scheduledDelayMs: 10, exportTimeoutMs: 300 });
    const agent = await startOtlpTracing({ serviceName: "agentk", endpoint: `http://127.0.0.1:${hangingPort}/v1/traces`, scheduledDelayMs: 10, exportTimeoutMs: 300 });
    const stack = await startStack(cleanup, { kas: kas.tracing, agent: agent.tracing });
    for (let i = 0; i < 20; i++) {
      expect((await stack.get("/api/v1/namespaces", { authorization: "Bearer ci:7:job-ci" })).status).to.equal(200);
    }
    await waitFor(() => kasLog.lines.some((l) => l.includes("tracing: cannot export spans")), undefined, "the export failure logged");
    await waitFor(() => sockets.size > 0, undefined, "the agent's exporter connected to the hanging endpoint");
    // Shutting down does not wait for the endpoint beyond its timeout.
    await Promise.all([kas.shutdown(1_000), agent.shutdown(1_000)]);
  });
});

async function expectRejection(promise: Promise<unknown>, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(error, "rejected").to.be.instanceOf(Error);
  expect(error!.message).to.match(message);
}
