import { describe, it } from "mocha";
import { expect } from "chai";
import {
  AGENT_TOKEN_PREFIX,
  digestToken,
  digestsEqual,
  generateAgentToken,
  generatePersonalAccessToken,
  looksLikeAgentToken,
  randomBase62,
  redactToken,
} from "./tokens.js";

describe("auth/tokens", () => {
  it("generates agent tokens with the glagent- prefix and 50 base62 characters", () => {
    const token = generateAgentToken();
    expect(token).to.match(/^glagent-[A-Za-z0-9]{50}$/);
    expect(looksLikeAgentToken(token)).to.equal(true);
    expect(generateAgentToken()).to.not.equal(token);
  });

  it("generates personal access tokens with the glpat- prefix", () => {
    expect(generatePersonalAccessToken()).to.match(/^glpat-[A-Za-z0-9]{40}$/);
  });

  it("draws base62 characters roughly uniformly", () => {
    const counts = new Map<string, number>();
    for (const ch of randomBase62(62_000)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect(counts.size).to.equal(62);
    for (const n of counts.values()) expect(n).to.be.within(800, 1200);
  });

  it("digests deterministically and compares digests", () => {
    const d = digestToken("glagent-abc");
    expect(d).to.match(/^[0-9a-f]{64}$/);
    expect(digestToken("glagent-abc")).to.equal(d);
    expect(digestsEqual(d, digestToken("glagent-abc"))).to.equal(true);
    expect(digestsEqual(d, digestToken("glagent-abd"))).to.equal(false);
    expect(digestsEqual(d, "short")).to.equal(false);
  });

  it("recognises token shapes and redacts tokens for logs", () => {
    expect(looksLikeAgentToken("glpat-" + "a".repeat(40))).to.equal(false);
    expect(looksLikeAgentToken(AGENT_TOKEN_PREFIX + "short")).to.equal(false);
    expect(redactToken("glagent-secretsecret")).to.equal("glagent-[REDACTED]");
    expect(redactToken("whatever")).to.equal("[REDACTED]");
  });
});
