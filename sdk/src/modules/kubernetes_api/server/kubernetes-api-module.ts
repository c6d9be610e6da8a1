import type { AddressInfo } from "node:net";
import { KubernetesApi } from "../../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import type { KasModule } from "../../../kas/kas-module.js";
import { createKubernetesApiProxy, type KubernetesApiProxy, type KubernetesApiProxyOptions } from "./kubernetes-api-proxy.js";

export interface KubernetesApiServerModuleOptions extends Omit<KubernetesApiProxyOptions, "agentCalls" | "platform" | "logger" | "metrics" | "tracing"> {
  /**
   * Longest grace period of requests in flight when KAS shuts down (watches and `logs -f` never
   * end by themselves): KAS's own grace when shorter. Default: KAS's grace period.
   */
  shutdownGraceMs?: number;
}

/** The KAS half of kubernetes_api, once started: where the proxy listens. */
export interface KubernetesApiServerModule extends KasModule {
  /** "https://host:port/prefix": the server of generated kubeconfigs. Throws before KAS started the module. */
  readonly url: string;
  readonly address: AddressInfo;
}

/**
 * The KAS half of kubernetes_api: the Kubernetes API proxy (GitLab port 8154), its listener owned
 * by the module. CI jobs and users reach agents' clusters through it; each request goes down one of
 * the agent's tunnels as `KubernetesApi/MakeRequest`, with the impersonation decided from the
 * agent's `ci_access` / `user_access`.
 */
export function kubernetesApiServerModule(options: KubernetesApiServerModuleOptions = {}): KubernetesApiServerModule {
  let proxy: KubernetesApiProxy | undefined;
  const started = (): KubernetesApiProxy => {
    if (!proxy) throw new Error("the kubernetes_api module has not been started");
    return proxy;
  };
  return {
    name: "kubernetes_api",
    tunnelServices: [KubernetesApi],
    configSections: ["ci_access", "user_access"],
    async start(ctx) {
      proxy = await createKubernetesApiProxy({ ...options, agentCalls: ctx.agentCalls, platform: ctx.platform, logger: ctx.logger, metrics: ctx.metrics, usage: ctx.usage, audit: ctx.audit, tracing: ctx.tracing });
    },
    addresses: () => ({ k8sProxy: started().url }),
    get url() {
      return started().url;
    },
    get address() {
      return started().address;
    },
    async close(graceMs) {
      await proxy?.close(Math.min(graceMs, options.shutdownGraceMs ?? graceMs));
    },
  };
}
