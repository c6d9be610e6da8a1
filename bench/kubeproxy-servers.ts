/**
 * The two SDK halves of the Kubernetes API proxy, each alone in a child process for the kubeproxy
 * benchmark (`bench/kubeproxy.ts`), as `kas` and `agentk` run in production:
 *
 *   node kubeproxy-servers.js kas    createKasServer + createKubernetesApiProxy (TLS, HTTP/2 and
 *                                    HTTP/1.1) with a platform that knows one agent token and two
 *                                    CI job tokens (access_as agent, access_as ci_job)
 *   node kubeproxy-servers.js agent  createAgent + kubernetesApiAgentModule (kubeconfig of the
 *                                    agent's ServiceAccount on the real kube-apiserver)
 *
 * Logs go at info level (the proxy's audit line per request included) to /dev/null, so their cost
 * is counted. Talks to the parent over IPC: -> { type: "ready", ... }; <- { type: "close" }.
 * Environment: BENCH_KP_AGENT_ID, BENCH_KP_AGENT_TOKEN, BENCH_KP_JOB_TOKEN, BENCH_KP_CI_JOB_TOKEN,
 * BENCH_KP_TLS_CERT/KEY (kas); BENCH_KP_KAS_URL, BENCH_KP_KUBECONFIG (agent); BENCH_KP_OTLP_ENDPOINT
 * (both, optional: spans exported there over OTLP/HTTP, as with KAS_OTLP_ENDPOINT / --otlp-endpoint).
 */
import { readFileSync } from "node:fs";
import pino from "pino";
import { createAgent } from "../sdk/src/agent/create-agent.js";
import { kubernetesApiAgentModule } from "../sdk/src/modules/kubernetes_api/agent/kubernetes-api-agent-module.js";
import { createKubernetesApiProxy } from "../sdk/src/modules/kubernetes_api/server/kubernetes-api-proxy.js";
import { PlatformError, type JobAllowedAgents } from "../sdk/src/platform-client/platform-client.js";
import { createKasServer } from "../sdk/src/kas/kas-server.js";
import { StaticPlatformClient } from "../sdk/src/platform-client/static-platform-client.test-support.js";
import { startOtlpTracing } from "../sdk/src/otlp/otlp-tracing.js";
import { Tracing } from "../sdk/src/tracing/tracing.js";

if (!process.send) throw new Error("run as a forked child");
const send = process.send.bind(process);
const role = process.argv[2];
const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
// BENCH_KP_LOG=<level> shows the logs on stderr instead (for debugging the bench).
const logger = process.env.BENCH_KP_LOG
  ? pino({ name: role, level: process.env.BENCH_KP_LOG }, pino.destination(2))
  : pino({ name: role, level: "info" }, pino.destination({ dest: "/dev/null", sync: true }));
const agentId = Number(env("BENCH_KP_AGENT_ID"));
// Tracing on (bench section 8) as the shipped kas and agentk set it up; off without the variable.
const otlpEndpoint = process.env.BENCH_KP_OTLP_ENDPOINT;
const otlp = otlpEndpoint ? await startOtlpTracing({ serviceName: role === "kas" ? "kas" : "agentk", endpoint: otlpEndpoint, logger }) : undefined;

/** CI jobs as the platform's `allowed_agents` answers them (cached by the proxy for 5 s). */
class BenchPlatform extends StaticPlatformClient {
  readonly jobs = new Map<string, JobAllowedAgents>();
  async allowedAgentsForJob(token: string): Promise<JobAllowedAgents> {
    const job = this.jobs.get(token);
    if (!job) throw new PlatformError("unauthenticated", "unknown job token");
    return job;
  }
}

function job(id: number, configuration: Record<string, unknown>): JobAllowedAgents {
  return {
    allowedAgents: [{ id: agentId, configProject: { id: 1 }, configuration }],
    job: { id },
    pipeline: { id: 1 },
    project: { id: 2, groups: [{ id: 3 }] },
    user: { id: 4, username: "bench", rolesInProject: ["developer"] },
  };
}

let close: () => Promise<void>;
if (role === "kas") {
  const platform = new BenchPlatform();
  platform.addToken(env("BENCH_KP_AGENT_TOKEN"), { agentId, agentName: "bench", projectId: 1, projectPath: "bench/cfg", defaultBranch: "main", tokenId: 1 });
  platform.jobs.set(env("BENCH_KP_JOB_TOKEN"), job(100, { default_namespace: "default" }));
  platform.jobs.set(env("BENCH_KP_CI_JOB_TOKEN"), job(101, { access_as: { ci_job: {} } }));
  // A throughput benchmark measures the path, not GitLab's per-token connection limit.
  const kas = await createKasServer({
    platform,
    logger,
    agentApi: { port: 0 },
    internalApi: { port: 0, jwtSecret: new Uint8Array(32).fill(5) },
    connectionsPerTokenPerMinute: 0,
    tracing: otlp?.tracing,
  });
  const proxy = await createKubernetesApiProxy({
    agentCalls: kas.agentCalls,
    platform,
    logger: logger.child({ component: "k8s-proxy" }),
    port: 0,
    tls: { cert: readFileSync(env("BENCH_KP_TLS_CERT")), key: readFileSync(env("BENCH_KP_TLS_KEY")) },
    metrics: kas.metrics,
    tracing: new Tracing(otlp?.tracing),
  });
  close = async () => {
    await proxy.close(1000);
    await kas.close(1000);
    await otlp?.shutdown();
  };
  send({ type: "ready", agentUrl: kas.agentApi.url("grpc"), proxyUrl: proxy.url });
} else if (role === "agent") {
  const agent = createAgent({
    kasAddress: env("BENCH_KP_KAS_URL"),
    token: env("BENCH_KP_AGENT_TOKEN"),
    logger,
    modules: [await kubernetesApiAgentModule({ kubeconfig: env("BENCH_KP_KUBECONFIG"), logger })],
    tracing: otlp?.tracing,
  });
  agent.start();
  close = async () => {
    await agent.stop(1000);
    await otlp?.shutdown();
  };
  send({ type: "ready" });
} else {
  throw new Error(`unknown role ${role}: expected kas or agent`);
}

process.on("message", (msg: { type: string }) => {
  // CPU time of this process (all threads), for CPU-per-request figures.
  if (msg.type === "cpu") send({ type: "cpu", usage: process.cpuUsage() });
  if (msg.type !== "close") return;
  void close().finally(() => {
    process.disconnect();
    process.exit(0);
  });
});
// The parent going away (however it ended) ends this process too.
process.on("disconnect", () => process.exit(0));
