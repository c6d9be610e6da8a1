// kwok: one simulated node (KWOK_NODE_NAME) whose pods go Running and Ready, and a kubelet-like
// HTTPS server that serves their logs, exec, attach and port-forward (kwok-config.ts).
import { readFileSync } from "node:fs";
import { appendFile, mkdir, rename, writeFile } from "node:fs/promises";
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

/** A pod, by namespace and name, whose containers' log is a file of its own (kwok's `Logs`). */
export interface OwnLogPod {
  namespace: string;
  name: string;
}

/** What the pods of the node show: their log file (CRI format) and where exec'd commands run. */
export interface PodFiles {
  podLogsFile: string;
  execDir: string;
  appendPodLog(line: string, stream?: "stdout" | "stderr"): Promise<void>;
  /** The log files of the pods with their own (by "namespace/name"). */
  ownLogFiles: Map<string, string>;
  /** Replaces the log of a pod with its own: each line of `text` becomes one CRI log line. */
  setPodLog(namespace: string, name: string, text: string, stream?: "stdout" | "stderr"): Promise<void>;
}

export async function createPodFiles(dir: string, ownLogPods: readonly OwnLogPod[] = []): Promise<PodFiles> {
  const podLogsFile = join(dir, "pod-logs", "containers.log");
  const execDir = join(dir, "exec");
  await mkdir(dirname(podLogsFile), { recursive: true });
  await mkdir(execDir, { recursive: true });
  await writeFile(podLogsFile, "");
  const ownLogFiles = new Map<string, string>();
  for (const pod of ownLogPods) {
    const file = join(dir, "pod-logs", `${pod.namespace}_${pod.name}.log`);
    await writeFile(file, "");
    ownLogFiles.set(`${pod.namespace}/${pod.name}`, file);
  }
  const criLine = (line: string, stream: string) => `${new Date().toISOString()} ${stream} F ${line}\n`;
  return {
    podLogsFile,
    execDir,
    appendPodLog: (line, stream = "stdout") => appendFile(podLogsFile, criLine(line, stream)),
    ownLogFiles,
    async setPodLog(namespace, name, text, stream = "stdout") {
      const file = ownLogFiles.get(`${namespace}/${name}`);
      if (!file) throw new Error(`pod ${namespace}/${name} has no log of its own: list it in the control plane's ownLogPods`);
      const lines = text.endsWith("\n") ? text.slice(0, -1).split("\n") : text.split("\n");
      // Written whole to a new file, then renamed: a reader sees the old log or the new one.
      const next = `${file}.next`;
      await writeFile(next, text === "" ? "" : lines.map((line) => criLine(line, stream)).join(""));
      await rename(next, file);
    },
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
  await writeFile(configPath, kwokConfig(options.podFiles.podLogsFile, options.podFiles.execDir, options.portForwards, options.podFiles.ownLogFiles));
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
