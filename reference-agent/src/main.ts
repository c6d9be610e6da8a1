import { readFileSync } from "node:fs";
import { KubeConfig } from "@kubernetes/client-node";
import { createAgent, KubeHttp, type AgentModule, type LeaderElectionOptions } from "@kasbridge/sdk/agent";
import { agentConfigurationAgentModule } from "@kasbridge/sdk/modules/agent_configuration/agent";
import { agentRegistrarAgentModule } from "@kasbridge/sdk/modules/agent_registrar/agent";
import { echoAgentModule } from "@kasbridge/sdk/modules/echo/agent";
import { fluxAgentModule } from "@kasbridge/sdk/modules/flux/agent";
import { gitopsAgentModule } from "@kasbridge/sdk/modules/gitops/agent";
import { kubernetesApiAgentModule } from "@kasbridge/sdk/modules/kubernetes_api/agent";
import { observabilityAgentModule } from "@kasbridge/sdk/modules/observability/agent";
import { remoteDevelopmentAgentModule } from "@kasbridge/sdk/modules/remote_development/agent";
import { workspacesProxyAgentModule } from "@kasbridge/sdk/modules/workspaces_proxy/agent";
import { starboardVulnerabilityAgentModule } from "@kasbridge/sdk/modules/starboard_vulnerability/agent";
import { startOtlpTracing, type OtlpTracing } from "@kasbridge/sdk/otlp";
import { installProcessSafetyNet } from "@kasbridge/sdk/util";
import pino from "pino";
import { parseAgentArgs, UsageError } from "./args.js";

// agentk: configuration and a list of modules; the agent itself is the SDK's createAgent.
let args;
try {
  args = parseAgentArgs(process.argv.slice(2), process.env);
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(error instanceof UsageError ? 2 : 1);
}
// The token stays in memory only; child processes and /proc/<pid>/environ must not see it.
delete process.env.AGENTK_TOKEN;
const logger = pino({ name: "agentk", level: args.logLevel });
// What reaches the top of the process is logged and counted (agentk_uncaught_errors_total on
// /metrics) and agentk keeps running: docs/security.md.
const { metrics } = installProcessSafetyNet({ logger, metricPrefix: "agentk" });

// GitLab agentk's observability listener (/metrics, /liveness, real /readiness), owned by the module.
let tls: { cert: Buffer; key: Buffer } | undefined;
try {
  const { certFile, keyFile } = args.observability;
  tls = certFile && keyFile ? { cert: readFileSync(certFile), key: readFileSync(keyFile) } : undefined;
} catch (error) {
  logger.fatal({ err: error }, "cannot read --observability-cert-file/--observability-key-file");
  process.exit(1);
}
const observability = observabilityAgentModule({ listen: { host: args.observability.host, port: args.observability.port }, tls });
const modules: AgentModule[] = [agentRegistrarAgentModule(), agentConfigurationAgentModule(), observability, echoAgentModule()];
// The Kubernetes API proxy's agent half: with --kubeconfig/KUBECONFIG, or in a pod (ServiceAccount).
const inCluster = !args.kubeconfig && Boolean(process.env.KUBERNETES_SERVICE_HOST);
let leaderElection: LeaderElectionOptions | undefined;
if (args.kubeconfig || inCluster) {
  // Loaded now so a bad file fails at start.
  const kc = new KubeConfig();
  if (args.kubeconfig) kc.loadFromFile(args.kubeconfig);
  else kc.loadFromCluster();
  logger.info({ cluster: kc.getCurrentCluster()?.server, context: kc.getCurrentContext() }, "kubeconfig loaded");
  modules.push(await kubernetesApiAgentModule({ kubeconfig: kc, logger: logger.child({ module: "kubernetes_api" }) }));
  // Workspace ports KAS's workspace proxy forwards here (only to this agent's workspace Services).
  modules.push(workspacesProxyAgentModule({ kubeconfig: kc, mode: args.workspacesProxyMode, logger: logger.child({ module: "workspaces_proxy" }) }));
  // Flux: trigger Flux's reconciliation on every push (runs only where Flux's CRDs are installed).
  const kube = new KubeHttp(kc);
  modules.push(fluxAgentModule({ kube }));
  // Built-in GitOps: applies gitops.manifest_projects, pulled through KAS at each pushed commit.
  modules.push(gitopsAgentModule({ kube, metrics }));
  // Remote development: the workspaces' reconcile loop with the platform (when remote_development.enabled).
  modules.push(remoteDevelopmentAgentModule({ kube, metrics }));
  // The agent's pods elect a leader (Lease agent-<id>-lock in POD_NAMESPACE) for the leader-only modules.
  leaderElection = { kubeConfig: kc };
  modules.push(
    starboardVulnerabilityAgentModule({
      kubeConfig: kc,
      metrics,
      serviceAccountName: args.serviceAccountName,
      scannerImage: args.containerScanning.image,
      scanRequestPollIntervalMs: args.containerScanning.pollIntervalMs,
      rescanDelayMs: args.containerScanning.rescanDelayMs,
    }),
  );
}

const version = process.env.npm_package_version ? `v${process.env.npm_package_version}` : "v0.1.0";
// Spans over OTLP (--otlp-endpoint): the agent's tunnel calls and its API server requests.
let tracing: OtlpTracing | undefined;
if (args.tracing) {
  try {
    tracing = await startOtlpTracing({
      serviceName: "agentk",
      serviceVersion: version,
      resourceAttributes: args.podName ? { "k8s.pod.name": args.podName, "k8s.namespace.name": args.podNamespace } : undefined,
      endpoint: args.tracing.otlpEndpoint,
      tokenSecretFile: args.tracing.otlpTokenSecretFile,
      caCertificateFile: args.tracing.otlpCaCertificateFile,
      logger: logger.child({ component: "tracing" }),
    });
  } catch (error) {
    logger.fatal({ err: (error as Error).message }, "cannot set up tracing");
    process.exit(1);
  }
}

const agent = createAgent({
  kasAddress: args.kasAddress,
  token: args.token,
  logger,
  modules,
  podName: args.podName,
  podNamespace: args.podNamespace,
  leaderElection,
  maxMessageBytes: args.maxMessageBytes,
  metrics,
  kasLossTimeoutMs: args.kasLossTimeoutMs,
  version,
  tracing: tracing?.tracing,
  transport: {
    headers: args.headers,
    ca: args.caCertFile ? readFileSync(args.caCertFile) : undefined,
  },
});
agent.start();
await observability.listening.catch((error: unknown) => {
  logger.fatal({ err: error }, "cannot listen on --observability-listen-address");
  process.exit(1);
});

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, graceMs: args.graceMs }, "shutting down: finishing in-flight requests");
    // The spans of the shutdown go out too (at most 5 s more).
    agent
      .stop(args.graceMs)
      .then(() => tracing?.shutdown())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, "shutdown failed");
          process.exit(1);
        },
      );
  });
}
