// kwok: one simulated node (KWOK_NODE_NAME) whose pods go Running and Ready, and a kubelet-like
// HTTPS server that serves their logs, exec, attach and port-forward (kwok-config.ts).
import { readFileSync } from "node:fs";
import { appendFile, mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { applyObjects, type Kubectl } from "./kubectl.js";
import { kwokConfig, type PortForwardTarget } from "./kwok-config.js";
import { httpsGet } from "./loopback.js";
import type { Pki } from "./pki.js";
import { childEnv } from "./run-command.js";
import type { Supervisor } from "./supervisor.js";

/**
 * The simulated node that kwok manages. Pods name it in spec.nodeName, unless kube-scheduler runs
 * (option `controllers`) and binds them to it.
 */
export const KWOK_NODE_NAME = "kwok-node-0";

/** What the pods of the node show: their log file (CRI format) and where exec'd commands run. */
export interface PodFiles {
  podLogsFile: string;
  execDir: string;
  appendPodLog(line: string, stream?: "stdout" | "stderr"): Promise<void>;
}

export async function createPodFiles(dir: string): Promise<PodFiles> {
  const podLogsFile = join(dir, "pod-logs", "containers.log");
  const execDir = join(dir, "exec");
  await mkdir(dirname(podLogsFile), { recursive: true });
  await mkdir(execDir, { recursive: true });
  await writeFile(podLogsFile, "");
  return {
    podLogsFile,
    execDir,
    appendPodLog: (line, stream = "stdout") => appendFile(podLogsFile, `${new Date().toISOString()} ${stream} F ${line}\n`),
  };
}

export interface KwokOptions {
  kubectl: Kubectl;
  kubeconfigPath: string;
  port: number;
  podFiles: PodFiles;
  portForwards: PortForwardTarget[];
}

/** Starts kwok, registers KWOK_NODE_NAME and waits until the node is Ready. */
export async function startKwok(supervisor: Supervisor, binary: string, dir: string, pki: Pki, options: KwokOptions): Promise<void> {
  const configPath = join(dir, "kwok.yaml");
  await writeFile(configPath, kwokConfig(options.podFiles.podLogsFile, options.podFiles.execDir, options.portForwards));
  supervisor.start("kwok", binary, [
    `--config=${configPath}`, `--kubeconfig=${options.kubeconfigPath}`,
    "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
    "--node-ip=127.0.0.1", `--node-port=${options.port}`, `--server-address=127.0.0.1:${options.port}`,
    `--tls-cert-file=${pki.kwok.cert}`, `--tls-private-key-file=${pki.kwok.key}`,
    "--cidr=10.244.0.1/16",
  ], join(dir, "kwok.log"), childEnv({ HOME: dir }));
  const ca = readFileSync(pki.caCert);
  await supervisor.waitUntil("kwok", async () => (await httpsGet(`https://127.0.0.1:${options.port}/healthz`, ca)).status === 200);
  await applyObjects(options.kubectl, [{
    apiVersion: "v1", kind: "Node",
    metadata: {
      name: KWOK_NODE_NAME,
      annotations: { "kwok.x-k8s.io/node": "fake" },
      labels: { type: "kwok", "kubernetes.io/hostname": KWOK_NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" },
    },
  }]);
  await supervisor.waitUntil(`node ${KWOK_NODE_NAME}`, async () => {
    const r = await options.kubectl(["get", "node", KWOK_NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"], { allowFailure: true });
    return r.stdout.trim() === "True";
  });
}
