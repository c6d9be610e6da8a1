import type { KasModule } from "../../../kas/kas-module.js";
import { hostPort } from "../../../util/host-port.js";
import { createObservabilityServer, type ObservabilityServer, type ObservabilityServerOptions } from "../observability-http-server.js";

export interface ObservabilityServerModuleOptions extends Omit<ObservabilityServerOptions, "metrics" | "notReadyReason" | "defaultLimits" | "serverName"> {
  /** Whether KAS should receive traffic (`/readiness`). Default: always. */
  ready?(): boolean;
}

/**
 * The KAS half of observability: `/metrics` (KAS's registry), `/liveness` and `/readiness` on
 * their own listener (GitLab port 8151), owned by the module.
 */
export function observabilityServerModule(options: ObservabilityServerModuleOptions = {}): KasModule {
  let server: ObservabilityServer | undefined;
  const { ready, ...listen } = options;
  return {
    name: "observability",
    async start(ctx) {
      server = await createObservabilityServer({
        ...listen,
        serverName: "gitlab-kas",
        metrics: ctx.metrics,
        notReadyReason: () => (!ready || ready() ? undefined : "KAS is not ready"),
      });
    },
    addresses(): Record<string, string> {
      return server ? { observability: `${listen.tls ? "https" : "http"}://${hostPort(server.address.host, server.address.port)}` } : {};
    },
    async close() {
      await server?.close();
    },
  };
}
