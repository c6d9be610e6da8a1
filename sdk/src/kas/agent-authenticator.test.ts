import { describe, it } from "mocha";
import { expect } from "chai";
import pino from "pino";
import { Code } from "@connectrpc/connect";
import { PlatformError, type AgentInfo } from "../platform-client/platform-client.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { deferred, rejection } from "@kasbridge/testing/wait";
import { AgentAuthenticator } from "./agent-authenticator.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const info: AgentInfo = { agentId: 7, agentName: "a7", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 70 };
const as = (token: string) => new Headers({ authorization: `Bearer ${token}` });

/** A platform whose agent_info can be held back (`gate`) or be down (`outage`); counts lookups. */
class ControlledPlatform extends StaticPlatformClient {
  lookups = 0;
  gate: Promise<void> | undefined;
  outage = false;

  override async getAgentInfo(agentToken: string): Promise<AgentInfo> {
    this.lookups++;
    await this.gate;
    if (this.outage) throw new PlatformError("unavailable", "platform down");
    return super.getAgentInfo(agentToken);
  }
}

/** An authenticator on a clock the test moves. */
function setup() {
  const platform = new ControlledPlatform();
  platform.addToken("glagent-good", info);
  const clock = { now: 1_000_000 };
  const auth = new AgentAuthenticator({ platform, logger, now: () => clock.now });
  return { platform, clock, auth };
}

describe("AgentAuthenticator agent_info cache", function () {
  it("reuses an answer for 60 s, then asks the platform again", async () => {
    const { platform, clock, auth } = setup();
    try {
      expect(await auth.authenticate(as("glagent-good"))).to.deep.equal(info);
      clock.now += 59_999;
      expect(await auth.authenticate(as("glagent-good"))).to.deep.equal(info);
      expect(platform.lookups).to.equal(1);
      clock.now += 1;
      expect(await auth.authenticate(as("glagent-good"))).to.deep.equal(info);
      expect(platform.lookups).to.equal(2);
    } finally {
      auth.close();
    }
  });

  it("remembers an unknown token for 10 s, so a token made meanwhile works after that", async () => {
    const { platform, clock, auth } = setup();
    try {
      expect((await rejection(auth.authenticate(as("glagent-later")))).code).to.equal(Code.Unauthenticated);
      platform.addToken("glagent-later", { ...info, tokenId: 71 });
      clock.now += 9_999;
      expect((await rejection(auth.authenticate(as("glagent-later")))).code).to.equal(Code.Unauthenticated);
      expect(platform.lookups).to.equal(1);
      clock.now += 1;
      expect((await auth.authenticate(as("glagent-later"))).tokenId).to.equal(71);
      expect(platform.lookups).to.equal(2);
    } finally {
      auth.close();
    }
  });

  it("shares one lookup among concurrent callers; a caller that gives up does not cancel it for the others", async () => {
    const { platform, auth } = setup();
    const gate = deferred();
    platform.gate = gate.promise;
    try {
      const leaving = new AbortController();
      const first = auth.authenticate(as("glagent-good"));
      const second = auth.authenticate(as("glagent-good"), leaving.signal);
      const third = auth.authenticate(as("glagent-good"), new AbortController().signal);
      leaving.abort();
      expect((await rejection(second)).code).to.equal(Code.Canceled);
      gate.resolve();
      expect(await first).to.deep.equal(info);
      expect(await third).to.deep.equal(info);
      expect(platform.lookups).to.equal(1);
    } finally {
      auth.close();
    }
  });

  it("does not cache a platform outage: the next call asks again", async () => {
    const { platform, auth } = setup();
    try {
      platform.outage = true;
      const down = await rejection(auth.authenticate(as("glagent-good")));
      expect(down.code).to.equal(Code.Unavailable);
      expect(down.rawMessage).to.contain("platform unavailable");
      platform.outage = false;
      expect(await auth.authenticate(as("glagent-good"))).to.deep.equal(info);
      expect(platform.lookups).to.equal(2);
    } finally {
      auth.close();
    }
  });

  it("drops a revoked token's answer at once, within the TTL", async () => {
    const { platform, auth } = setup();
    try {
      await auth.authenticate(as("glagent-good"));
      platform.revoke("glagent-good");
      // The eviction waits for the cached answer (already settled): one turn of the event loop.
      await new Promise((resolve) => setImmediate(resolve));
      expect((await rejection(auth.authenticate(as("glagent-good")))).code).to.equal(Code.Unauthenticated);
      expect(platform.lookups).to.equal(2);
    } finally {
      auth.close();
    }
  });

  it("refuses a missing or malformed Authorization header without asking the platform", async () => {
    const { platform, auth } = setup();
    try {
      expect((await rejection(auth.authenticate(new Headers()))).code).to.equal(Code.Unauthenticated);
      expect((await rejection(auth.authenticate(new Headers({ authorization: "Basic eDp5" })))).code).to.equal(Code.Unauthenticated);
      expect(platform.lookups).to.equal(0);
    } finally {
      auth.close();
    }
  });
});

describe("AgentAuthenticator revocation", function () {
  it("tells every listener of a revoked token, even when one releases another on the way", async () => {
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-good", info);
    const auth = new AgentAuthenticator({ platform, logger });
    try {
      const info = await auth.authenticate(as("glagent-good"), new AbortController().signal);
      const first = auth.watchToken(info);
      const second = auth.watchToken(info);
      // Ending the first call releases the second's watch (as a connection ending its calls would).
      first.signal.addEventListener("abort", () => second.release());
      platform.revoke("glagent-good");
      expect(first.signal.aborted).to.equal(true);
      expect(second.signal.aborted).to.equal(true);
    } finally {
      auth.close();
    }
  });
});
