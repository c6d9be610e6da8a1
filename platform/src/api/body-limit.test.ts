import { request } from "node:http";
import { gzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { AUTHORIZE_PROXY_USER_PATH } from "@kasbridge/sdk/platform-client";
import { call, kasHeaders, sendEndlessly, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import { useTestStore } from "../testing/fixtures.test-support.js";

describe("platform HTTP: request body limits", () => {
  const db = useTestStore("sqlite");
  let p: TestPlatform;

  beforeEach(async () => {
    p = await startTestPlatform(db.store);
  });
  afterEach(async () => {
    await p.close();
  });

  /** A POST with `body` sent chunked (no length declared) unless `headers` say otherwise. */
  function post(path: string, headers: Record<string, string>, body: Buffer) {
    return new Promise<{ status: number; json: Record<string, unknown>; connection?: string }>((resolve, reject) => {
      const req = request(`${p.baseUrl}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers } });
      req.on("response", (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown>, connection: res.headers.connection }));
      });
      req.on("error", (err) => (req.destroyed ? undefined : reject(err)));
      req.end(body);
    });
  }

  const restMessage =
    "413 Request Entity Too Large - the request body is larger than 1048576 bytes, the limit set by PlatformApiOptions.bodyLimitBytes";

  it("refuses REST bodies over the limit with 413, whether declared, chunked or gzip-inflated, and creates nothing", async () => {
    const big = Buffer.from(JSON.stringify({ name: "big", description: "x".repeat(2 * 1024 * 1024) }));
    const auth = { "private-token": p.adminToken };
    for (const [what, headers, body] of [
      ["declared", { ...auth, "content-length": String(big.length) }, big],
      ["chunked", auth, big],
      ["gzip", { ...auth, "content-encoding": "gzip" }, gzipSync(big)],
    ] as const) {
      const res = await post("/api/v4/projects", headers, body);
      expect(res.status, what).to.equal(413);
      expect(res.json, what).to.deep.equal({ message: restMessage });
    }
    const projects = await p.services.projects.find("root/big");
    expect(projects).to.equal(undefined);
    // Under the limit, the same request works.
    const ok = await call(p.baseUrl, "POST", "/api/v4/projects", { token: p.adminToken, body: { name: "small" } });
    expect(ok.status).to.equal(201);
  });

  it("disconnects a client that goes on sending long after the limit", async () => {
    const sent = await sendEndlessly(`${p.baseUrl}/api/v4/projects`, { "private-token": p.adminToken, "content-type": "application/json" });
    // The limit (1 MiB) plus what is read off after the answer (4 MiB), plus socket buffers.
    expect(sent).to.be.below(32 * 1024 * 1024);
    expect((await call(p.baseUrl, "GET", "/api/v4/user", { token: p.adminToken })).status).to.equal(200);
  });

  it("refuses internal API bodies over the limit after the KAS JWT, and unauthenticated ones before reading", async () => {
    const big = Buffer.from(JSON.stringify({ agent_id: 1, access_type: "personal_access_token", access_key: "x".repeat(100 * 1024) }));
    const withJwt = await post(AUTHORIZE_PROXY_USER_PATH, await kasHeaders(p.jwtSecret), big);
    expect(withJwt.status).to.equal(413);
    expect(withJwt.json).to.deep.equal({
      message: "413 Request Entity Too Large - the request body is larger than 65536 bytes, the limit set by InternalApiOptions.bodyLimitBytes",
    });
    const anonymous = await post(AUTHORIZE_PROXY_USER_PATH, {}, big);
    expect(anonymous.status).to.equal(401);
  });
});
