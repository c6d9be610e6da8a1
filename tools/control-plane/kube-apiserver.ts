// kube-apiserver: RBAC on, client certificates from the test CA, ServiceAccount tokens signed
// with the PKI's key, kwok's kubelet-like server verified with the test CA.
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { httpsGet } from "./loopback.js";
import type { Pki } from "./pki.js";
import type { Supervisor } from "./supervisor.js";

export interface ApiServerOptions {
  etcdUrl: string;
  port: number;
  /**
   * Whether kube-controller-manager runs. Without it no "default" ServiceAccount appears in new
   * namespaces, so the ServiceAccount admission plugin is off (pods are admitted without one and
   * get no token volume); with it, pods get their ServiceAccount and token volume as in a real
   * cluster.
   */
  controllers: boolean;
  /**
   * Where to write the audit log (every request at level Metadata: user, impersonated user, verb,
   * the request URI as received, response code). Default: none.
   */
  auditLogPath?: string;
}

/** Starts kube-apiserver and waits for /readyz; resolves to its URL. */
export async function startApiServer(supervisor: Supervisor, binary: string, dir: string, pki: Pki, options: ApiServerOptions): Promise<string> {
  const url = `https://127.0.0.1:${options.port}`;
  const auditArgs: string[] = [];
  if (options.auditLogPath) {
    const policyPath = join(dir, "audit-policy.yaml");
    await writeFile(policyPath, "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n");
    // The log backend writes each event before the request completes (mode blocking).
    auditArgs.push(`--audit-policy-file=${policyPath}`, `--audit-log-path=${options.auditLogPath}`, "--audit-log-mode=blocking");
  }
  supervisor.start("kube-apiserver", binary, [
    ...auditArgs,
    `--etcd-servers=${options.etcdUrl}`,
    "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", `--secure-port=${options.port}`,
    `--cert-dir=${join(dir, "apiserver")}`,
    `--tls-cert-file=${pki.apiServer.cert}`, `--tls-private-key-file=${pki.apiServer.key}`,
    `--client-ca-file=${pki.caCert}`,
    "--authorization-mode=RBAC",
    "--anonymous-auth=true", // /readyz, /livez, /version for system:public-info-viewer only
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    `--service-account-key-file=${pki.serviceAccountPublicKey}`,
    `--service-account-signing-key-file=${pki.serviceAccountKey}`,
    "--service-cluster-ip-range=10.96.0.0/16",
    `--kubelet-client-certificate=${pki.apiServerKubeletClient.cert}`,
    `--kubelet-client-key=${pki.apiServerKubeletClient.key}`,
    `--kubelet-certificate-authority=${pki.caCert}`,
    "--kubelet-preferred-address-types=InternalIP",
    ...(options.controllers ? [] : ["--disable-admission-plugins=ServiceAccount"]),
    "--endpoint-reconciler-type=none",
    "--allow-privileged=true",
    "--profiling=false",
    "--v=1",
  ], join(dir, "kube-apiserver.log"));
  const ca = readFileSync(pki.caCert);
  await supervisor.waitUntil("kube-apiserver", async () => (await httpsGet(`${url}/readyz`, ca)).status === 200);
  return url;
}
