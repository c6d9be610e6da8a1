// Fixtures of the tracing tests: KAS with its Kubernetes API proxy, an agent over a real HTTP/2
// tunnel and a stand-in API server, each side with the tracing a test gives it.
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import pino, { type Logger } from "pino";
import { Registry } from "prom-client";
import type { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer } from "@kasbridge/testing/servers";
import { waitFor } from "@kasbridge/testing/wait";
import { createAgent } from "../agent/create-agent.js";
import { KasAuditLog } from "../kas/audit-log.js";
import { createKasServer } from "../kas/kas-server.js";
import { echoAgentModule } from "../modules/echo/agent/echo-service.js";
import { kubernetesApiAgentModule } from "../modules/kubernetes_api/agent/kubernetes-api-agent-module.js";
import { ProxyPlatform, fakeApiServer, job, kubeConfig } from "../modules/kubernetes_api/kubernetes-api.test-support.js";
import { createKubernetesApiProxy } from "../modules/kubernetes_api/server/kubernetes-api-proxy.js";
import type { KasAuditEvent } from "../platform-client/audit-events.js";
import type { PlatformClient } from "../platform-client/platform-client.js";
import { Tracing, type TracingOptions } from "./tracing.js";

/** A tracer provider exporting to memory, as `service.name`; W3C trace context. */
export function memoryTracing(serviceName: string): { options: TracingOptions; exporter: InMemorySpanExporter } {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": serviceName }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  return { options: { tracerProvider: provider, propagator: new W3CTraceContextPropagator() }, exporter };
}

export const CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
export const CLIENT_SPAN = "00f067aa0ba902b7";
export const secret = new Uint8Array(32).fill(3);

/**
 * KAS with its Kubernetes API proxy, an agent connected over a real HTTP/2 tunnel and a stand-in
 * API server that echoes the headers it got; each side with its own tracing (or none).
 */
export async function startStack(cleanup: Cleanup, tracing: { kas?: TracingOptions; agent?: TracingOptions }, logger: Logger = pino({ level: "silent" })) {
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

