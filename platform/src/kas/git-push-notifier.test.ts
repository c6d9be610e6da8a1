import { expect } from "chai";
import pino from "pino";
import { createKasServer, type KasServer } from "@kasbridge/sdk/kas";
import { InMemoryGitPushEvents, notificationsServerModule, type GitPushEventInfo } from "@kasbridge/sdk/modules/notifications/server";
import { PlatformError, type PlatformClient } from "@kasbridge/sdk/platform-client";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { createGitPushNotifier } from "./git-push-notifier.js";

/** A platform that knows no agent: the notifier's calls are the platform's, not an agent's. */
const noAgents: PlatformClient = {
  getAgentInfo: () => Promise.reject(new PlatformError("unauthenticated", "no agents here")),
  watchTokenRevocations: () => {},
};

describe("git push notifier (platform -> KAS Notifications/GitPushEvent)", function () {
  this.timeout(20_000);
  const secret = new Uint8Array(32).fill(3);
  const cleanup = new Cleanup();
  let kas: KasServer;
  const received: GitPushEventInfo[] = [];

  beforeEach(async () => {
    received.length = 0;
    const events = new InMemoryGitPushEvents();
    kas = await createKasServer({
      platform: noAgents,
      logger: pino({ level: "silent" }),
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: secret },
      modules: [notificationsServerModule({ events })],
    });
    cleanup.add(() => kas.close(0));
    const stop = new AbortController();
    cleanup.add(() => stop.abort());
    events.subscribe((e) => received.push(e), stop.signal);
  });
  afterEach(() => cleanup.run());

  const notifier = (jwtSecret: Uint8Array, logger = pino({ level: "silent" })) => {
    const n = createGitPushNotifier({
      kasInternalUrl: `grpc://127.0.0.1:${kas.internalApiAddress.port}`,
      jwtSecret,
      projectPath: async (id) => (id === 404 ? undefined : `group/p${id}`),
      logger,
      maxAttempts: 2,
    });
    cleanup.add(() => n.close());
    return n;
  };

  it("sends each pushed project's id and full path; pushes during a call make one more call", async () => {
    const n = notifier(secret);
    n.pushed({ projectId: 7 });
    n.pushed({ projectId: 7 });
    n.pushed({ projectId: 7 });
    n.pushed({ projectId: 8 });
    n.pushed({ projectId: 404 }); // gone: nothing to send
    // KAS publishes before it answers: the notifier counts a call once the answer is back.
    await waitFor(() => n.sent === 3, undefined, "three calls answered");
    expect(received.filter((e) => e.projectId === 7)).to.deep.equal([
      { projectId: 7, fullPath: "group/p7" },
      { projectId: 7, fullPath: "group/p7" },
    ]);
    expect(received.filter((e) => e.projectId === 8)).to.deep.equal([{ projectId: 8, fullPath: "group/p8" }]);
    expect(received).to.have.length(3);
  });

  it("retries a refused call and then gives up with an error in the log", async () => {
    const lines: string[] = [];
    const n = notifier(new Uint8Array(32).fill(9), pino({ level: "warn" }, { write: (l: string) => lines.push(l) }));
    n.pushed({ projectId: 7 });
    await waitFor(() => lines.some((l) => l.includes("giving up")), undefined, "the notifier to give up");
    expect(lines.filter((l) => l.includes("retrying"))).to.have.length(1);
    expect(lines.join("\n")).to.include("JWT authentication invalid");
    expect(received).to.deep.equal([]);
    expect(n.sent).to.equal(0);
  });
});
