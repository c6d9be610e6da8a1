/**
 * Where a workspace request goes, checked against the cluster: the agent forwards only to a
 * Service that carries its own `agent.gitlab.com/id` label and the workspace's id annotation, only
 * to a port that Service declares, so KAS (or whoever holds a tunnel call) cannot use the agent as
 * an open proxy into the cluster.
 */
import net from "node:net";
import type { Duplex } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import type { KubeConfig } from "@kubernetes/client-node";
import { KubeApiError, type KubeHttp } from "../../../agent/kube/kube-http.js";
import { AGENT_ID_LABEL, WORKSPACE_ID_ANNOTATION } from "../rpc.js";
import { openPortForward } from "./port-forward-socket.js";

/** How the agent reaches a workspace: the API server's pod port-forward, or the Service directly (in-cluster). */
export type WorkspaceConnectMode = "port-forward" | "service";
export const WORKSPACE_CONNECT_MODES: readonly WorkspaceConnectMode[] = ["port-forward", "service"];

export interface WorkspaceTarget {
  namespace: string;
  service: string;
  port: number;
  workspaceId: bigint;
}

interface ServiceObject {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: { selector?: Record<string, string>; ports?: Array<{ port?: number; targetPort?: number | string; protocol?: string }> };
}

interface PodObject {
  metadata?: { name?: string; labels?: Record<string, string>; deletionTimestamp?: string };
  status?: { phase?: string; conditions?: Array<{ type?: string; status?: string }> };
}

export interface WorkspaceDialerOptions {
  kube: KubeHttp;
  kubeconfig: KubeConfig;
  mode: WorkspaceConnectMode;
  /** The cluster's DNS domain (service mode). Default "cluster.local". */
  clusterDomain?: string;
  /** Service mode: where `<service>.<namespace>` listens on `port`. Default: its cluster DNS name. */
  serviceAddress?: (namespace: string, service: string, port: number) => { host: string; port: number };
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Checks the target and opens a connection to it; ConnectError with a code the proxy maps to an HTTP status. */
export async function dialWorkspace(options: WorkspaceDialerOptions, agentId: string | undefined, target: WorkspaceTarget, signal: AbortSignal): Promise<Duplex> {
  if (agentId === undefined) throw new ConnectError("the agent has not received its configuration yet", Code.Unavailable);
  const { namespace, service, port } = target;
  if (!DNS_LABEL.test(namespace) || !DNS_LABEL.test(service)) throw new ConnectError("namespace and service must be DNS labels", Code.InvalidArgument);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConnectError(`invalid port ${port}`, Code.InvalidArgument);

  const svc = await get<ServiceObject>(options.kube, `/api/v1/namespaces/${namespace}/services/${service}`, signal, `service ${namespace}/${service}`);
  if (svc.metadata?.labels?.[AGENT_ID_LABEL] !== agentId || svc.metadata?.annotations?.[WORKSPACE_ID_ANNOTATION] !== String(target.workspaceId)) {
    throw new ConnectError(`service ${namespace}/${service} is not workspace ${target.workspaceId} of agent ${agentId}`, Code.PermissionDenied);
  }
  const declared = svc.spec?.ports?.find((p) => p.port === port && (p.protocol ?? "TCP") === "TCP");
  if (!declared) throw new ConnectError(`service ${namespace}/${service} has no TCP port ${port}`, Code.NotFound);

  if (options.mode === "service") {
    const address = options.serviceAddress?.(namespace, service, port) ?? { host: `${service}.${namespace}.svc.${options.clusterDomain ?? "cluster.local"}`, port };
    return connect(address.host, address.port, signal);
  }

  const targetPort = declared.targetPort === undefined ? port : declared.targetPort;
  if (typeof targetPort !== "number") throw new ConnectError(`service ${namespace}/${service} port ${port} has a named target port (${targetPort}): not supported`, Code.Unimplemented);
  const selector = Object.entries(svc.spec?.selector ?? {});
  if (selector.length === 0) throw new ConnectError(`service ${namespace}/${service} selects no pods`, Code.FailedPrecondition);
  const pods = await get<{ items?: PodObject[] }>(
    options.kube,
    `/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent(selector.map(([k, v]) => `${k}=${v}`).join(","))}`,
    signal,
    `pods of service ${namespace}/${service}`,
  );
  const pod = (pods.items ?? []).find(
    (p) =>
      p.metadata?.name &&
      !p.metadata.deletionTimestamp &&
      p.metadata.labels?.[AGENT_ID_LABEL] === agentId &&
      p.status?.phase === "Running" &&
      p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
  );
  if (!pod) throw new ConnectError(`no ready pod of workspace service ${namespace}/${service}`, Code.Unavailable);
  try {
    return await openPortForward(options.kubeconfig, { namespace, pod: pod.metadata!.name!, port: targetPort }, signal);
  } catch (err) {
    throw new ConnectError((err as Error).message, Code.Unavailable);
  }
}

async function get<T>(kube: KubeHttp, pathAndQuery: string, signal: AbortSignal, what: string): Promise<T> {
  const [path, query] = pathAndQuery.split("?");
  try {
    return await kube.json<T>("GET", path!, { signal, query: Object.fromEntries(new URLSearchParams(query ?? "")) });
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) throw new ConnectError(`${what} not found`, Code.NotFound);
    if (err instanceof KubeApiError && err.status === 403) throw new ConnectError(`the agent may not read ${what}: ${err.message}`, Code.PermissionDenied);
    throw new ConnectError(`cannot read ${what}: ${(err as Error).message}`, Code.Unavailable);
  }
}

function connect(host: string, port: number, signal: AbortSignal): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, signal });
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", (err) => reject(new ConnectError(`cannot connect to ${host}:${port}: ${err.message}`, Code.Unavailable)));
  });
}
