/**
 * A workspace's Kubernetes objects, as GitLab generates them for the agent's `config_to_apply`:
 * the inventory ConfigMap, the Deployment, Service and PersistentVolumeClaims from the devfile,
 * the optional NetworkPolicy, and (when all resources are included) the Secrets inventory and the
 * Secrets that carry the user's variables.
 */
import { stringify } from "yaml";
import type { Devfile, DevfileContainer } from "./devfile.js";

export const AGENT_ID_LABEL = "agent.gitlab.com/id";
export const INVENTORY_ID_LABEL = "cli-utils.sigs.k8s.io/inventory-id";
export const OWNING_INVENTORY_ANNOTATION = "config.k8s.io/owning-inventory";
export const HOST_TEMPLATE_ANNOTATION = "workspaces.gitlab.com/host-template";
export const WORKSPACE_ID_ANNOTATION = "workspaces.gitlab.com/id";
/** The user the workspace's containers run as (GitLab's). */
export const WORKSPACE_RUN_AS_USER = 5001;
/** Volume that mounts the file Secret of the user's variables. */
export const VARIABLES_VOLUME = "gl-workspace-variables";
export const VARIABLES_MOUNT_PATH = "/.workspace-data/variables/file";
/** The volume holding the project's sources when a container sets `mountSources`. */
export const PROJECTS_VOLUME = "gl-workspace-data";

/** Container resources merged in where the devfile sets none. */
const DEFAULT_RESOURCES = { limits: { cpu: "1", memory: "1Gi" }, requests: { cpu: "100m", memory: "128Mi" } };

export interface WorkspaceVariable {
  key: string;
  value: string;
  type: "env_var" | "file";
}

export interface DesiredConfigInput {
  workspaceId: number;
  name: string;
  namespace: string;
  agentId: number;
  dnsZone: string;
  /** Replicas 1 when the workspace should run (desired Running or just created), else 0. */
  running: boolean;
  devfile: Devfile;
  networkPolicyEnabled: boolean;
  /** Namespace of gitlab-workspaces-proxy, the only source of ingress the NetworkPolicy allows. */
  proxyNamespace: string;
  /** Emit the Secrets and their inventory too (full syncs and forced includes). */
  includeAllResources: boolean;
  variables: readonly WorkspaceVariable[];
}

type K8sObject = Record<string, unknown>;

export function workspaceInventoryName(workspace: string): string {
  return `${workspace}-workspace-inventory`;
}
export function secretsInventoryName(workspace: string): string {
  return `${workspace}-secrets-inventory`;
}

/** The objects, in GitLab's order. */
export function desiredObjects(input: DesiredConfigInput): K8sObject[] {
  const { name, namespace, agentId } = input;
  const labels = { [AGENT_ID_LABEL]: String(agentId) };
  const annotations = (inventory: string) => ({
    [OWNING_INVENTORY_ANNOTATION]: inventory,
    [HOST_TEMPLATE_ANNOTATION]: `{{.port}}-${name}.${input.dnsZone}`,
    [WORKSPACE_ID_ANNOTATION]: String(input.workspaceId),
  });
  const workspaceInventory = workspaceInventoryName(name);
  const meta = (objectName: string, inventory = workspaceInventory) => ({ name: objectName, namespace, labels, annotations: annotations(inventory) });

  const objects: K8sObject[] = [inventoryConfigMap(workspaceInventory, namespace, agentId)];
  objects.push(deployment(input, meta(name)));
  const ports = mainContainers(input.devfile).flatMap((c) => c.endpoints.filter((e) => e.exposure !== "none"));
  if (ports.length > 0) {
    objects.push({
      apiVersion: "v1",
      kind: "Service",
      metadata: meta(name),
      spec: {
        selector: labels,
        ports: ports.map((e) => ({ name: e.name, port: e.targetPort, targetPort: e.targetPort, protocol: e.protocol === "udp" ? "UDP" : "TCP" })),
      },
    });
  }
  // The claim's name goes into its metadata only: a top-level `name` is no PVC field (the API server refuses it under strict validation).
  for (const { name: claim, ...pvc } of persistentVolumeClaims(input)) objects.push({ ...pvc, metadata: meta(claim) });
  if (input.networkPolicyEnabled) objects.push(networkPolicy(input, meta(name)));
  if (input.includeAllResources) {
    const secretsInventory = secretsInventoryName(name);
    objects.push(inventoryConfigMap(secretsInventory, namespace, agentId));
    for (const type of ["env_var", "file"] as const) {
      const data = Object.fromEntries(input.variables.filter((v) => v.type === type).map((v) => [v.key, Buffer.from(v.value).toString("base64")]));
      objects.push({ apiVersion: "v1", kind: "Secret", metadata: meta(secretName(name, type), secretsInventory), data });
    }
  }
  return objects;
}

/** `config_to_apply`: the objects as one multi-document YAML string. */
export function desiredConfigYaml(input: DesiredConfigInput): string {
  return desiredObjects(input)
    .map((o) => "---\n" + stringify(o, { lineWidth: 0 }))
    .join("");
}

/** The long-running containers: all but those that run at preStart. */
export function mainContainers(devfile: Devfile): DevfileContainer[] {
  return devfile.containers.filter((c) => !devfile.preStart.includes(c.name));
}

function secretName(workspace: string, type: "env_var" | "file"): string {
  return type === "env_var" ? `${workspace}-env-var` : `${workspace}-file`;
}

function inventoryConfigMap(name: string, namespace: string, agentId: number): K8sObject {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name, namespace, labels: { [INVENTORY_ID_LABEL]: name, [AGENT_ID_LABEL]: String(agentId) } },
  };
}

function persistentVolumeClaims(input: DesiredConfigInput): Array<K8sObject & { name: string }> {
  const claims = input.devfile.volumes.map((v) => ({ name: `${input.name}-${v.name}`, size: v.size }));
  if (input.devfile.containers.some((c) => c.mountSources)) claims.push({ name: `${input.name}-${PROJECTS_VOLUME}`, size: "15Gi" });
  return claims.map((c) => ({
    name: c.name,
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: c.size } } },
  }));
}

function deployment(input: DesiredConfigInput, metadata: K8sObject): K8sObject {
  const { devfile, name } = input;
  const labels = { [AGENT_ID_LABEL]: String(input.agentId) };
  const volumes: K8sObject[] = devfile.volumes.map((v) => ({ name: v.name, persistentVolumeClaim: { claimName: `${name}-${v.name}` } }));
  if (devfile.containers.some((c) => c.mountSources)) volumes.push({ name: PROJECTS_VOLUME, persistentVolumeClaim: { claimName: `${name}-${PROJECTS_VOLUME}` } });
  volumes.push({
    name: VARIABLES_VOLUME,
    projected: { defaultMode: 0o774, sources: [{ secret: { name: secretName(name, "file") } }] },
  });
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata,
    spec: {
      replicas: input.running ? 1 : 0,
      selector: { matchLabels: labels },
      // One pod at a time: the workspace's volumes are ReadWriteOnce.
      strategy: { type: "Recreate" },
      template: {
        metadata: { name, namespace: input.namespace, labels, annotations: (metadata as { annotations: object }).annotations },
        spec: {
          // preStart components run to completion first, in order (devfile semantics).
          ...(devfile.preStart.length > 0 ? { initContainers: devfile.preStart.map((n) => container(input, devfile.containers.find((c) => c.name === n)!)) } : {}),
          containers: mainContainers(devfile).map((c) => container(input, c)),
          volumes,
          securityContext: { runAsNonRoot: true, runAsUser: WORKSPACE_RUN_AS_USER, fsGroup: 0, fsGroupChangePolicy: "OnRootMismatch" },
        },
      },
    },
  };
}

function container(input: DesiredConfigInput, c: DevfileContainer): K8sObject {
  const volumeMounts: K8sObject[] = c.volumeMounts.map((m) => ({ name: m.name, mountPath: m.path }));
  const env = [...c.env];
  if (c.mountSources) {
    volumeMounts.push({ name: PROJECTS_VOLUME, mountPath: c.sourceMapping });
    env.push({ name: "PROJECTS_ROOT", value: c.sourceMapping }, { name: "PROJECT_SOURCE", value: c.sourceMapping });
  }
  volumeMounts.push({ name: VARIABLES_VOLUME, mountPath: VARIABLES_MOUNT_PATH });
  const resources = {
    limits: { cpu: c.cpuLimit ?? DEFAULT_RESOURCES.limits.cpu, memory: c.memoryLimit ?? DEFAULT_RESOURCES.limits.memory },
    requests: { cpu: c.cpuRequest ?? DEFAULT_RESOURCES.requests.cpu, memory: c.memoryRequest ?? DEFAULT_RESOURCES.requests.memory },
  };
  return {
    name: c.name,
    image: c.image,
    imagePullPolicy: "Always",
    ...(c.command ? { command: c.command } : {}),
    ...(c.args ? { args: c.args } : {}),
    env,
    envFrom: [{ secretRef: { name: secretName(input.name, "env_var") } }],
    ports: c.endpoints.map((e) => ({ name: e.name, containerPort: e.targetPort, protocol: e.protocol === "udp" ? "UDP" : "TCP" })),
    volumeMounts,
    resources,
    securityContext: { allowPrivilegeEscalation: false, privileged: false, runAsUser: WORKSPACE_RUN_AS_USER },
  };
}

function networkPolicy(input: DesiredConfigInput, metadata: K8sObject): K8sObject {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata,
    spec: {
      podSelector: {},
      policyTypes: ["Ingress", "Egress"],
      ingress: [
        {
          from: [
            {
              namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": input.proxyNamespace } },
              podSelector: { matchLabels: { "app.kubernetes.io/name": "gitlab-workspaces-proxy" } },
            },
          ],
        },
      ],
      egress: [
        {
          ports: [
            { port: 53, protocol: "TCP" },
            { port: 53, protocol: "UDP" },
          ],
          to: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } } }],
        },
        { to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] } }] },
      ],
    },
  };
}
