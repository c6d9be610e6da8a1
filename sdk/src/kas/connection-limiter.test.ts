import { expect } from "chai";
import { agentTokenKey, InMemoryConnectionLimiter } from "./connection-limiter.js";

describe("per-token connection limit (one KAS)", () => {
  it("allows `limit` calls per token in each minute of the clock, and starts again the next minute", async () => {
    let now = Date.UTC(2024, 0, 1, 12, 0, 30);
    const limiter = new InMemoryConnectionLimiter(2, () => now);
    expect([await limiter.allow("glagent-a-token"), await limiter.allow("glagent-a-token"), await limiter.allow("glagent-a-token")]).to.deep.equal([true, true, false]);
    // Another token has its own count.
    expect(await limiter.allow("other-b-token00")).to.equal(true);
    now += 30_000;
    expect(await limiter.allow("glagent-a-token")).to.equal(true);
  });

  it("keys a token by the SHA-256 of its first half, as GitLab", () => {
    expect(agentTokenKey("abcdXXXX").toString("hex")).to.equal("88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589");
    expect(agentTokenKey("abcdXXXX")).to.deep.equal(agentTokenKey("abcdYYYY"));
  });
});
