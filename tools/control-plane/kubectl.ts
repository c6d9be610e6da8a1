// Running the real kubectl against the control plane.
import { join } from "node:path";
import { childEnv, commandFailed, run, type RunResult } from "./run-command.js";

export interface KubectlOptions {
  /** Default: the admin kubeconfig. */
  kubeconfig?: string;
  /** Written to kubectl's standard input (for `apply -f -`). */
  input?: string;
  /** Resolve with the result instead of rejecting on a non-zero exit. */
  allowFailure?: boolean;
  timeoutMs?: number;
}

export type Kubectl = (args: string[], options?: KubectlOptions) => Promise<RunResult>;

/**
 * kubectl with `defaultKubeconfig` unless a call names another; its discovery cache lives in
 * `dir`, so runs never touch the developer's ~/.kube.
 */
export function kubectlRunner(binary: string, dir: string, defaultKubeconfig: string): Kubectl {
  const env = childEnv({ KUBECACHEDIR: join(dir, "kube-cache"), KUBECONFIG: defaultKubeconfig });
  return async (args, o = {}) => {
    const r = await run(binary, [`--kubeconfig=${o.kubeconfig ?? defaultKubeconfig}`, ...args], {
      input: o.input, env, timeoutMs: o.timeoutMs ?? 60_000,
    });
    if (r.code !== 0 && !o.allowFailure) throw commandFailed("kubectl", args, r);
    return r;
  };
}

/** `kubectl apply` of these objects as one List. */
export function applyObjects(kubectl: Kubectl, objects: object[]): Promise<RunResult> {
  return kubectl(["apply", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }) });
}
