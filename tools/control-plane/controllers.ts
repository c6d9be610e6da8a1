// The controllers that make workloads behave as in a real cluster (option `controllers`):
// kube-controller-manager with the controllers listed below, and kube-scheduler, which binds
// pods that name no node to the kwok node.
//
// Each authenticates with a client certificate from the test CA (CN=system:kube-controller-manager,
// CN=system:kube-scheduler: the identities the default RBAC policy binds), serves its own HTTPS
// port on loopback (probed for readiness), and runs without leader election (one instance).
// kube-controller-manager gives each controller its own ServiceAccount token
// (--use-service-account-credentials, as kubeadm does), so every controller has only its
// system:controller:* role.
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { applyObjects, type Kubectl } from "./kubectl.js";
import { clientCertAuth, writeKubeconfig } from "./kubeconfig.js";
import { httpsGet } from "./loopback.js";
import type { Pki } from "./pki.js";
import type { Supervisor } from "./supervisor.js";

/**
 * kube-controller-manager's controllers here (canonical names), and why each. Left out on purpose:
 * node-lifecycle (kwok's node sends no heartbeats that it would accept for long: it would mark the
 * node NotReady and its pods not ready), taint-eviction, pod-garbage-collector, node-ipam (kwok
 * assigns pod IPs), jobs, cronjobs, daemonsets, statefulsets, HPA, disruption, resource quota,
 * certificate signing, and the attach/detach and expansion of volumes (no real kubelet or storage).
 */
export const CONTROLLERS = [
  "deployment-controller", // Deployments -> ReplicaSets; rollout status and conditions
  "replicaset-controller", // ReplicaSets -> pods
  "garbage-collector-controller", // owner references: deleting a Deployment deletes its ReplicaSets and pods
  "namespace-controller", // deleting a namespace deletes what is in it, then the namespace
  "serviceaccount-controller", // the "default" ServiceAccount of every namespace
  "serviceaccount-token-controller", // fills Secrets of type kubernetes.io/service-account-token
  "root-ca-certificate-publisher-controller", // the kube-root-ca.crt ConfigMap that pods' token volumes name
  "clusterrole-aggregation-controller", // admin/edit/view follow ClusterRoles created later
  "endpointslice-controller", // Services get EndpointSlices of their ready pods
  "persistentvolume-binder-controller", // PVCs are provisioned (hostPath, below) and bound
  "persistentvolumeclaim-protection-controller", // a deleted PVC goes once no pod uses it
  "persistentvolume-protection-controller", // a deleted PV goes once no PVC is bound to it
] as const;

/** The default StorageClass: kube-controller-manager's built-in hostPath provisioner. */
export const STORAGE_CLASS = "standard";
/** The directory that provisioner makes for each volume (the path is fixed in Kubernetes' code). */
const PROVISIONED_VOLUME_DIR = /^\/tmp\/hostpath_pv\/[0-9a-f-]+$/;

export interface ControllersOptions {
  apiServerUrl: string;
  ports: { controllerManager: number; scheduler: number };
  kubectl: Kubectl;
}

/**
 * Starts kube-controller-manager and kube-scheduler, waits until both serve their health checks
 * and the serviceaccount controller has made the "default" ServiceAccount, then creates the
 * default StorageClass.
 */
export async function startControllers(
  supervisor: Supervisor,
  binaries: { controllerManager: string; scheduler: string },
  dir: string,
  pki: Pki,
  options: ControllersOptions,
): Promise<void> {
  const ca = readFileSync(pki.caCert);
  const { controllerManager, scheduler } = pki;
  if (!controllerManager || !scheduler) throw new Error("the PKI has no kube-controller-manager or kube-scheduler certificate");
  const kubeconfigFor = (name: string, pair: { cert: string; key: string }) =>
    writeKubeconfig(join(dir, `${name}.kubeconfig`), options.apiServerUrl, pki.caCert, `system:${name}`, clientCertAuth(pair));
  // Both check their callers (metrics, flags) against the API server like any aggregated server.
  const serving = async (name: string, pair: { cert: string; key: string }, port: number) => {
    const kubeconfig = await kubeconfigFor(name, pair);
    return [
      `--kubeconfig=${kubeconfig}`, `--authentication-kubeconfig=${kubeconfig}`, `--authorization-kubeconfig=${kubeconfig}`,
      "--bind-address=127.0.0.1", `--secure-port=${port}`,
      `--tls-cert-file=${pair.cert}`, `--tls-private-key-file=${pair.key}`,
      "--leader-elect=false", "--profiling=false", "--v=1",
    ];
  };

  supervisor.start("kube-controller-manager", binaries.controllerManager, [
    ...(await serving("kube-controller-manager", controllerManager, options.ports.controllerManager)),
    `--controllers=${CONTROLLERS.join(",")}`,
    "--use-service-account-credentials=true",
    `--service-account-private-key-file=${pki.serviceAccountKey}`,
    `--root-ca-file=${pki.caCert}`,
    "--enable-hostpath-provisioner=true",
  ], join(dir, "kube-controller-manager.log"));
  supervisor.start("kube-scheduler", binaries.scheduler, [
    ...(await serving("kube-scheduler", scheduler, options.ports.scheduler)),
  ], join(dir, "kube-scheduler.log"));

  await supervisor.waitUntil("kube-controller-manager", async () =>
    (await httpsGet(`https://127.0.0.1:${options.ports.controllerManager}/healthz`, ca)).status === 200);
  await supervisor.waitUntil("kube-scheduler", async () =>
    (await httpsGet(`https://127.0.0.1:${options.ports.scheduler}/readyz`, ca)).status === 200);
  await supervisor.waitUntil("the default ServiceAccount (serviceaccount controller)", async () =>
    (await options.kubectl(["get", "serviceaccount", "default", "-n", "default", "-o", "name"], { allowFailure: true })).code === 0);
  await applyObjects(options.kubectl, [{
    apiVersion: "storage.k8s.io/v1", kind: "StorageClass",
    metadata: { name: STORAGE_CLASS, annotations: { "storageclass.kubernetes.io/is-default-class": "true" } },
    provisioner: "kubernetes.io/host-path",
    reclaimPolicy: "Delete",
    volumeBindingMode: "Immediate",
  }]);
}

/**
 * The node is Ready, so no pod should wait for it: take off the not-ready taint that kube-apiserver
 * puts on every new node, once, as the node-lifecycle controller (not run here) would.
 */
export async function untaintReadyNode(kubectl: Kubectl, node: string): Promise<void> {
  await kubectl(["taint", "node", node, "node.kubernetes.io/not-ready:NoSchedule-"]);
}

/**
 * The directories of the hostPath volumes provisioned so far. kube-controller-manager removes a
 * volume's directory when its claim is deleted; stop() removes the ones still there.
 */
export async function provisionedVolumeDirs(kubectl: Kubectl): Promise<string[]> {
  const r = await kubectl(["get", "persistentvolumes", "-o", "jsonpath={.items[*].spec.hostPath.path}"], { allowFailure: true, timeoutMs: 10_000 });
  if (r.code !== 0) return [];
  return r.stdout.split(/\s+/).filter((path) => PROVISIONED_VOLUME_DIR.test(path));
}

export async function removeVolumeDirs(dirs: string[]): Promise<void> {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}
