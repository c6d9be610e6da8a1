import { describe, it } from "mocha";
import { expect } from "chai";
import pino from "pino";
import { StaticPlatformClient } from "../testing/fake-platform.test-support.js";
import { AgentAuthenticator } from "./agent-authenticator.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

describe("AgentAuthenticator revocation", function () {
  it("tells every listener of a revoked token, even when one releases another on the way", async () => {
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-good", { agentId: 7, agentName: "a7", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 70 });
    const auth = new AgentAuthenticator({ platform, logger });
    try {
      const info = await auth.authenticate(new Headers({ authorization: "Bearer glagent-good" }), new AbortController().signal);
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
