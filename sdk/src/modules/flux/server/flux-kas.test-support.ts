// A KAS with the notifications and Flux modules, for the Flux tests (a *.test-support.ts file: no tests).
import pino from "pino";
import { createKasServer, type KasServer } from "../../../kas/kas-server.js";
import type { Cleanup } from "@kasbridge/testing/cleanup";
import { StaticPlatformClient } from "../../../platform-client/static-platform-client.test-support.js";
import type { GitPushEvents } from "../../notifications/server/git-push-events.js";
import { notificationsServerModule } from "../../notifications/server/notifications-server-module.js";
import { fluxServerModule } from "./flux-server-module.js";

/** KAS on port 0 with `events`; the platform knows `token` as agent 1, which may read `readable`. */
export async function startFluxKas(options: {
  events: GitPushEvents;
  jwtSecret: Uint8Array;
  token: string;
  readable: string[];
  cleanup: Cleanup;
}): Promise<{ kas: KasServer; platform: StaticPlatformClient }> {
  const platform = new StaticPlatformClient();
  platform.addToken(options.token, { agentId: 1, agentName: "a", projectId: 10, projectPath: "g/config", defaultBranch: "main", tokenId: 1 });
  platform.readableProjects.set(options.token, new Set(options.readable));
  const kas = await createKasServer({
    platform,
    logger: pino({ level: "silent" }),
    agentApi: { port: 0 },
    internalApi: { port: 0, jwtSecret: options.jwtSecret },
    modules: [notificationsServerModule({ events: options.events }), fluxServerModule({ platform, events: options.events })],
  });
  options.cleanup.add(() => kas.close(0));
  return { kas, platform };
}
