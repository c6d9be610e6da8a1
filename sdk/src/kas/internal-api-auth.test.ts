import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { KAS_JWT_AUDIENCE, signJwt } from "../auth/jwt.js";
import { rejectionOf } from "@kasbridge/testing/wait";
import { internalApiAuthorizer } from "./internal-api-auth.js";

describe("internal API JWT authorizer", () => {
  const secret = new Uint8Array(32).fill(1);
  const bearer = (token: string) => new Headers({ authorization: `Bearer ${token}` });

  async function refused(promise: Promise<void>): Promise<ConnectError> {
    const err = await rejectionOf(promise, ConnectError);
    expect(err.code).to.equal(Code.Unauthenticated);
    return err;
  }

  it("accepts a valid token (any issuer, as GitLab) again and again", async () => {
    const authorize = internalApiAuthorizer(secret);
    const token = await signJwt(secret, { issuer: "gitlab.example.com", audience: KAS_JWT_AUDIENCE });
    await authorize(bearer(token));
    await authorize(bearer(token));
  });

  it("refuses missing, wrongly signed, wrong-audience and expired tokens, cached or not", async () => {
    const authorize = internalApiAuthorizer(secret);
    await refused(authorize(new Headers()));
    await refused(authorize(bearer(await signJwt(new Uint8Array(32).fill(2), { issuer: "gitlab", audience: KAS_JWT_AUDIENCE }))));
    await refused(authorize(bearer(await signJwt(secret, { issuer: "gitlab", audience: "gitlab" }))));
    // Expired 7 s ago: beyond the 5 s clock tolerance.
    const shortLived = await signJwt(secret, { issuer: "gitlab", audience: KAS_JWT_AUDIENCE, validForMs: 1000, nowMs: Date.now() - 8000 });
    await refused(authorize(bearer(shortLived)));
    const token = await signJwt(secret, { issuer: "gitlab", audience: KAS_JWT_AUDIENCE });
    await authorize(bearer(token));
    await refused(authorize(bearer(`${token}x`)));
  });
});
