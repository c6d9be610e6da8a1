import { describe, it } from "mocha";
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { SignJWT } from "jose";
import {
  JwtVerificationError,
  KAS_JWT_AUDIENCE,
  KAS_JWT_ISSUER,
  signJwt,
  signKasApiRequestJwt,
  verifyJwt,
  verifyKasApiRequestJwt,
} from "./jwt.js";

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

describe("auth/jwt", () => {
  const secret = new Uint8Array(randomBytes(32));

  it("round-trips a KAS API request JWT with GitLab's claims", async () => {
    const now = Date.now();
    const token = await signKasApiRequestJwt(secret, now);
    const [, payloadB64] = token.split(".");
    const payload = JSON.parse(Buffer.from(payloadB64!, "base64url").toString()) as Record<string, number | string>;
    expect(payload.iss).to.equal("gitlab-kas");
    expect(payload.aud).to.equal("gitlab");
    const nowS = Math.floor(now / 1000);
    expect(payload.exp).to.equal(nowS + 30);
    expect(payload.nbf).to.equal(nowS - 5);
    await verifyKasApiRequestJwt(secret, token);
  });

  it("refuses a missing, expired, wrongly-signed or wrong-audience JWT", async () => {
    expect(await rejection(verifyKasApiRequestJwt(secret, undefined))).to.be.instanceOf(JwtVerificationError);
    const expired = await signKasApiRequestJwt(secret, Date.now() - 60_000);
    expect((await rejection(verifyKasApiRequestJwt(secret, expired))).message).to.contain("ERR_JWT_EXPIRED");
    const otherSecret = await signKasApiRequestJwt(new Uint8Array(randomBytes(32)));
    expect(await rejection(verifyKasApiRequestJwt(secret, otherSecret))).to.be.instanceOf(JwtVerificationError);
    const internal = await signJwt(secret, { issuer: KAS_JWT_ISSUER, audience: KAS_JWT_AUDIENCE });
    expect(await rejection(verifyKasApiRequestJwt(secret, internal))).to.be.instanceOf(JwtVerificationError);
    await verifyJwt(secret, internal, { issuer: KAS_JWT_ISSUER, audience: KAS_JWT_AUDIENCE });
    expect(await rejection(verifyKasApiRequestJwt(secret, "not.a.jwt"))).to.be.instanceOf(JwtVerificationError);
  });

  it("tolerates 5 s of clock skew on nbf but not more", async () => {
    // Signed by a clock 8 s ahead: nbf = now + 3 s, within the 5 s tolerance.
    await verifyKasApiRequestJwt(secret, await signKasApiRequestJwt(secret, Date.now() + 8_000));
    // 20 s ahead: nbf = now + 15 s, refused.
    const future = await signKasApiRequestJwt(secret, Date.now() + 20_000);
    expect((await rejection(verifyKasApiRequestJwt(secret, future))).message).to.contain("ERR_JWT_CLAIM_VALIDATION_FAILED");
  });

  it("requires exp and refuses other algorithms", async () => {
    const noExp = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setIssuer("gitlab-kas").setAudience("gitlab").sign(secret);
    expect(await rejection(verifyKasApiRequestJwt(secret, noExp))).to.be.instanceOf(JwtVerificationError);
    const hs512 = await new SignJWT({})
      .setProtectedHeader({ alg: "HS512" })
      .setIssuer("gitlab-kas")
      .setAudience("gitlab")
      .setExpirationTime("30s")
      .sign(new Uint8Array(randomBytes(64)));
    expect(await rejection(verifyKasApiRequestJwt(secret, hs512))).to.be.instanceOf(JwtVerificationError);
  });
});
