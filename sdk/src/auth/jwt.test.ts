import { describe, it } from "mocha";
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { SignJWT, jwtVerify } from "jose";
import {
  JwtVerificationError,
  KAS_JWT_AUDIENCE,
  KAS_JWT_ISSUER,
  signJwt,
  signKasApiRequestJwt,
  verifyJwt,
  verifyKasApiRequestJwt,
} from "./jwt.js";
import { rejectionOf } from "@kasbridge/testing/wait";

const rejection = (p: Promise<unknown>) => rejectionOf(p, Error);

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
    const missingExp = await rejection(verifyKasApiRequestJwt(secret, noExp));
    expect(missingExp).to.be.instanceOf(JwtVerificationError);
    expect(missingExp.message).to.contain("ERR_JWT_CLAIM_VALIDATION_FAILED");
    expect(((missingExp as Error & { cause: { claim?: string } }).cause).claim).to.equal("exp");
    // Signed with the right key and valid claims: only the algorithm allow-list refuses it.
    const hs512 = () =>
      new SignJWT({}).setProtectedHeader({ alg: "HS512" }).setIssuer("gitlab-kas").setAudience("gitlab").setExpirationTime("30s").sign(secret);
    const refused = await rejection(verifyKasApiRequestJwt(secret, await hs512()));
    expect(refused).to.be.instanceOf(JwtVerificationError);
    expect(refused.message).to.equal("invalid JWT: ERR_JOSE_ALG_NOT_ALLOWED");
    // The same token passes a verifier that allows HS512: the key and claims are fine.
    const { payload } = await jwtVerify(await hs512(), secret, { algorithms: ["HS512"], issuer: "gitlab-kas", audience: "gitlab" });
    expect(payload.iss).to.equal("gitlab-kas");
  });
});
