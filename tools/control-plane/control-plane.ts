// A real Kubernetes control plane for tests: etcd + kube-apiserver (RBAC on) + kwok (simulated
// nodes and pods, with logs/exec/port-forward), and on request kube-controller-manager and
// kube-scheduler, all on loopback, from the binaries that tools/control-plane/build.sh builds
// (`npm run control-plane`). Nothing is mocked.
//
//   const cp = await startControlPlane();
//   try { await cp.runKubectl(["get", "ns"]); } finally { await cp.stop(); }
//
// This file is the public API and the order of the start; each component and concern has its
// own file (README.md lists them).
import { rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AGENT_USERNAME, createAgentIdentity } from "./agent-identity.js";
import { findBinaries, type BinaryName } from "./binaries.js";
import { provisionedVolumeDirs, removeVolumeDirs, startControllers, untaintReadyNode } from "./controllers.js";
import { startEtcd } from "./etcd.js";
import { startApiServer } from "./kube-apiserver.js";
import { clientCertAuth, writeKubeconfig } from "./kubeconfig.js";
import { kubectlRunner, type KubectlOptions } from "./kubectl.js";
import { KWOK_NODE_NAME, createPodFiles, startKwok, type OwnLogPod } from "./kwok.js";
import type { PortForwardTarget } from "./kwok-config.js";
import { freePorts, isPortConflict } from "./loopback.js";
import { makePki } from "./pki.js";
import { aggregateClusterRoles, type PolicyRule } from "./rbac.js";
import type { RunResult } from "./run-command.js";
import { ComponentExitedError, Supervisor } from "./supervisor.js";

export { AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, AGENT_USERNAME } from "./agent-identity.js";
export { BINARIES, controlPlaneBinDir, findBinaries, type BinaryName } from "./binaries.js";
export { CONTROLLERS, STORAGE_CLASS } from "./controllers.js";
export type { KubectlOptions } from "./kubectl.js";
export { KWOK_NODE_NAME } from "./kwok.js";
export type { OwnLogPod } from "./kwok.js";
export type { PortForwardTarget } from "./kwok-config.js";
export type { PolicyRule } from "./rbac.js";
export type { RunResult } from "./run-command.js";

export interface ControlPlaneOptions {
  /** Aborting stops the control plane (or the start in progress). */
  signal?: AbortSignal;
  /** Folder with the binaries; default: the cache folder build.sh uses. */
  binDir?: string;
  /** Start kwok and a Ready node named KWOK_NODE_NAME (default true). */
  kwok?: boolean;
  /**
   * Start kube-controller-manager (the controllers in CONTROLLERS) and kube-scheduler, so that
   * Deployments roll out, namespaces are deleted, ServiceAccounts and PVCs work as in a real
   * cluster (default false: the start takes a few seconds longer).
   */
  controllers?: boolean;
  /** Cluster-wide rules granted to the agent identity besides impersonation. */
  agentRules?: PolicyRule[];
  /** Keep the temporary folder (logs, certs, etcd data) after stop(), for debugging. */
  keepDir?: boolean;
  /** Milliseconds for each component to become ready (default 90 s). */
  readyTimeoutMs?: number;
  /**
   * Pod ports that kwok's port-forward connects to a TCP address (every pod); other ports run
   * `cat`, an echo.
   */
  portForwards?: PortForwardTarget[];
  /**
   * Write the API server's audit log (every request at level Metadata: user, impersonated user,
   * verb, the request URI as received, response code) to auditLogPath. Default false.
   */
  auditLog?: boolean;
  /**
   * Pods, by namespace and name (they may not exist yet, e.g. pods another program creates),
   * whose containers' log is a file of their own rather than podLogsFile: `setPodLog` writes it.
   */
  ownLogPods?: OwnLogPod[];
}

export interface ControlPlane {
  /** Temporary folder with certificates, kubeconfigs, component logs (*.log) and etcd data. */
  dir: string;
  apiServerUrl: string;
  caCertPath: string;
  /** Admin (client certificate in group system:masters). */
  kubeconfigPath: string;
  /** The agent's ServiceAccount token: impersonation rights plus options.agentRules only. */
  agentKubeconfigPath: string;
  agentToken: string;
  agentUsername: string;
  /** Path of the kubectl binary (same version as the API server). */
  kubectl: string;
  binaries: Record<BinaryName, string>;
  /** True when kwok runs and KWOK_NODE_NAME is Ready. */
  kwokRunning: boolean;
  /** The API server's audit log (JSON lines, audit.k8s.io/v1 Events), with options.auditLog. */
  auditLogPath: string | undefined;
  nodeName: string | undefined;
  /** True when kube-controller-manager and kube-scheduler run (options.controllers). */
  controllersRunning: boolean;
  /** CRI-format log file that kwok serves as every container's log (`kubectl logs`). */
  podLogsFile: string;
  /**
   * Working directory of `kubectl exec` in every kwok pod: kwok runs the command as a local
   * process here, so relative paths of `kubectl cp` land in (and are read from) this folder.
   */
  execDir: string;
  /**
   * Appends a line to podLogsFile (visible to `kubectl logs` at once, `-f` included, and to
   * `kubectl attach`, which kwok serves by following the same file from its end).
   */
  appendPodLog(line: string, stream?: "stdout" | "stderr"): Promise<void>;
  /**
   * Replaces the log of a pod listed in options.ownLogPods (each line of `text` one log line), as
   * that pod's program would have written it; `kubectl logs` of the pod shows `text`.
   */
  setPodLog(namespace: string, name: string, text: string, stream?: "stdout" | "stderr"): Promise<void>;
  /** Runs the real kubectl (admin kubeconfig unless options.kubeconfig). */
  runKubectl(args: string[], options?: KubectlOptions): Promise<RunResult>;
  /** Ends every child process (process groups) and removes the temporary folder. Idempotent. */
  stop(): Promise<void>;
}

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const binaries = findBinaries(options.binDir);
  options.signal?.throwIfAborted();
  let lastError: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startOnce(binaries, options);
    } catch (err) {
      lastError = err;
      // A port picked as free was taken before the component bound it: try new ports.
      if (!(err instanceof ComponentExitedError && isPortConflict(err.log)) || options.signal?.aborted) break;
    }
  }
  throw lastError;
}

async function startOnce(binaries: Record<BinaryName, string>, options: ControlPlaneOptions): Promise<ControlPlane> {
  const controllers = options.controllers ?? false;
  const dir = await mkdtemp(join(tmpdir(), "kasbridge-control-plane-"));
  const supervisor = new Supervisor({ dir, signal: options.signal, readyTimeoutMs: options.readyTimeoutMs });
  // With the controllers, the hostPath volumes that kube-controller-manager provisions live
  // outside `dir`: stop() asks the API server for them before it ends it.
  let listVolumeDirs = async (): Promise<string[]> => [];
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      options.signal?.removeEventListener("abort", onAbort);
      supervisor.refuseNewStarts(); // an abort may come in the middle of the start
      const volumeDirs = await listVolumeDirs().catch(() => []);
      await supervisor.stopAll();
      await removeVolumeDirs(volumeDirs);
      if (!options.keepDir) rmSync(dir, { recursive: true, force: true });
    })());
  const onAbort = () => void stop();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  try {
    const pki = await makePki(join(dir, "pki"), { controllers, kwokNodeName: KWOK_NODE_NAME });
    const [etcdClient, etcdPeer, apiServer, kwokPort, controllerManager, scheduler] = await freePorts(6);
    const etcdUrl = await startEtcd(supervisor, binaries.etcd, dir, { client: etcdClient, peer: etcdPeer });
    const auditLogPath = options.auditLog ? join(dir, "audit.log") : undefined;
    const apiServerUrl = await startApiServer(supervisor, binaries["kube-apiserver"], dir, pki, { etcdUrl, port: apiServer, controllers, auditLogPath });

    const kubeconfigPath = await writeKubeconfig(join(dir, "admin.kubeconfig"), apiServerUrl, pki.caCert, "admin", clientCertAuth(pki.admin));
    const kubectl = kubectlRunner(binaries.kubectl, dir, kubeconfigPath);
    await aggregateClusterRoles(kubectl);
    const agent = await createAgentIdentity(kubectl, { dir, apiServerUrl, caCertPath: pki.caCert, agentRules: options.agentRules });

    if (controllers) {
      listVolumeDirs = () => provisionedVolumeDirs(kubectl);
      await startControllers(supervisor, { controllerManager: binaries["kube-controller-manager"], scheduler: binaries["kube-scheduler"] }, dir, pki, {
        apiServerUrl, kubectl, ports: { controllerManager, scheduler },
      });
    }

    const podFiles = await createPodFiles(dir, options.ownLogPods);
    let kwokRunning = false;
    if (options.kwok !== false) {
      await startKwok(supervisor, binaries.kwok, dir, pki, { kubectl, kubeconfigPath, port: kwokPort, podFiles, portForwards: options.portForwards ?? [] });
      if (controllers) await untaintReadyNode(kubectl, KWOK_NODE_NAME);
      kwokRunning = true;
    }

    supervisor.checkAlive();
    return {
      dir,
      apiServerUrl,
      caCertPath: pki.caCert,
      kubeconfigPath,
      agentKubeconfigPath: agent.kubeconfigPath,
      agentToken: agent.token,
      agentUsername: AGENT_USERNAME,
      kubectl: binaries.kubectl,
      binaries,
      kwokRunning,
      auditLogPath,
      nodeName: kwokRunning ? KWOK_NODE_NAME : undefined,
      controllersRunning: controllers,
      podLogsFile: podFiles.podLogsFile,
      execDir: podFiles.execDir,
      appendPodLog: podFiles.appendPodLog,
      setPodLog: podFiles.setPodLog,
      runKubectl: kubectl,
      stop,
    };
  } catch (err) {
    await stop();
    // An abort in the middle of a step makes that step fail in its own way: report the abort.
    if (options.signal?.aborted) throw options.signal.reason;
    throw err;
  }
}
