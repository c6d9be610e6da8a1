// Kubeconfig files for the control plane's clients (kubectl as admin or as the agent,
// kube-controller-manager, kube-scheduler, kwok): one cluster, one user, one context.
import { writeFile } from "node:fs/promises";

/** Client credentials: a client certificate and key, or a bearer token. */
export type KubeconfigAuth = { "client-certificate": string; "client-key": string } | { token: string };

/** Writes a kubeconfig for `server` (verified with the CA at caPath) as `user`. */
export async function writeKubeconfig(path: string, server: string, caPath: string, user: string, auth: KubeconfigAuth): Promise<string> {
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "kasbridge-test", cluster: { server, "certificate-authority": caPath } }],
    users: [{ name: user, user: auth }],
    contexts: [{ name: user, context: { cluster: "kasbridge-test", user } }],
    "current-context": user,
  };
  await writeFile(path, JSON.stringify(config, null, 2));
  return path;
}

/** The auth entry for a client certificate. */
export function clientCertAuth(pair: { cert: string; key: string }): KubeconfigAuth {
  return { "client-certificate": pair.cert, "client-key": pair.key };
}
