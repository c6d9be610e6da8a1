import type { AddressInfo } from "node:net";
import { WorkspacesProxyService } from "../../../gen/kasbridge/workspaces_proxy/v1/workspaces_proxy_pb.js";
import type { KasModule } from "../../../kas/kas-module.js";
import { createWorkspacesProxy, type WorkspacesProxy, type WorkspacesProxyOptions } from "./workspaces-proxy.js";

export interface WorkspacesProxyServerModuleOptions extends Omit<WorkspacesProxyOptions, "agentCalls" | "platform" | "logger" | "metrics"> {
  /** Longest grace of requests in flight when KAS shuts down (WebSockets never end by themselves): KAS's own when shorter. Default: KAS's. */
  shutdownGraceMs?: number;
}

/** The KAS half of workspaces_proxy, once started: where the proxy listens. */
export interface WorkspacesProxyServerModule extends KasModule {
  /** Throws before KAS started the module. */
  readonly url: string;
  readonly address: AddressInfo;
}

/**
 * The KAS half of workspaces_proxy (kasbridge; docs/workspaces.md "Reaching a workspace"): the
 * listener serving `https://<port>-<workspace>.<dns_zone>`, owned by the module. Requests go to the
 * workspace agent's tunnels as `WorkspacesProxyService/MakeRequest`.
 */
export function workspacesProxyServerModule(options: WorkspacesProxyServerModuleOptions = {}): WorkspacesProxyServerModule {
  let proxy: WorkspacesProxy | undefined;
  const started = (): WorkspacesProxy => {
    if (!proxy) throw new Error("the workspaces_proxy module has not been started");
    return proxy;
  };
  return {
    name: "workspaces_proxy",
    tunnelServices: [WorkspacesProxyService],
    async start(ctx) {
      proxy = await createWorkspacesProxy({ ...options, agentCalls: ctx.agentCalls, platform: ctx.platform, logger: ctx.logger, metrics: ctx.metrics });
    },
    addresses: () => ({ workspacesProxy: started().url }),
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
