import { expect } from "chai";
import { createHttpPlatformClient } from "@kasbridge/sdk/platform-client";
import { createInProcessPlatformClient } from "../client/in-process-platform-client.js";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { call, kasHeaders, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";

describeEachStore("usage metrics from KAS (GitLab's usage_metrics)", (getStore) => {
  let p: TestPlatform;
  let clock: Date;
  beforeEach(async () => {
    clock = new Date("2026-03-01T10:00:00Z");
    p = await startTestPlatform(getStore(), { now: () => clock });
  });
  afterEach(() => p.close());

  const totals = async (query = "") => {
    const res = await call(p.baseUrl, "GET", `/api/v4/usage_metrics/kubernetes${query}`, { token: p.adminToken });
    expect(res.status).to.equal(200);
    return res.body as { counters: Record<string, number>; unique_counters: Record<string, number> };
  };

  it("adds up the deltas KAS sends over HTTP and in process, counts distinct ids, per day", async () => {
    const http = createHttpPlatformClient({ baseUrl: p.baseUrl, jwtSecret: p.jwtSecret });
    await http.sendUsageMetrics!({ counters: { k8s_api_proxy_request: 3, k8s_api_proxy_requests_via_ci_access: 2 }, unique_counters: { agent_users_using_ci_tunnel: [1, 2] } });
    await createInProcessPlatformClient(p.services).sendUsageMetrics!({ counters: { k8s_api_proxy_request: 1 }, unique_counters: { agent_users_using_ci_tunnel: [2, 3] } });
    clock = new Date("2026-03-02T10:00:00Z");
    await http.sendUsageMetrics!({ counters: { k8s_api_proxy_request: 5 }, unique_counters: { agent_users_using_ci_tunnel: [3] } });
    expect(await totals()).to.deep.equal({
      counters: { k8s_api_proxy_request: 9, k8s_api_proxy_requests_via_ci_access: 2 },
      unique_counters: { agent_users_using_ci_tunnel: 3 },
    });
    expect(await totals("?since=2026-03-02")).to.deep.equal({ counters: { k8s_api_proxy_request: 5 }, unique_counters: { agent_users_using_ci_tunnel: 1 } });
  });

  it("answers 204, 400 naming the bad key, 401 without the KAS JWT; totals are for admins", async () => {
    const path = "/api/v4/internal/kubernetes/usage_metrics";
    const headers = await kasHeaders(p.jwtSecret);
    expect((await call(p.baseUrl, "POST", path, { headers, body: { counters: { gitops_sync: 1 } } })).status).to.equal(204);
    for (const [body, message] of [
      [{ counters: { gitops_sync: -1 } }, /counters\.gitops_sync/],
      [{ counters: { gitops_sync: "1" } }, /counters\.gitops_sync/],
      [{ unique_counters: { x: [1.5] } }, /unique_counters\.x/],
      [{ counters: [] }, /counters must be an object/],
      [{ other: {} }, /unknown key other/],
      [{ counters: { "Bad Name": 1 } }, /invalid event name/],
    ] as const) {
      const res = await call(p.baseUrl, "POST", path, { headers, body });
      expect(res.status, JSON.stringify(body)).to.equal(400);
      expect(JSON.stringify(res.body)).to.match(message);
    }
    expect((await call(p.baseUrl, "POST", path, { body: { counters: { gitops_sync: 1 } } })).status).to.equal(401);
    expect((await totals()).counters).to.deep.equal({ gitops_sync: 1 });
    const user = await call(p.baseUrl, "POST", "/api/v4/users", { token: p.adminToken, body: { username: "dev", name: "Dev", email: "dev@example.com", password: "password-123456" } });
    const pat = await call(p.baseUrl, "POST", `/api/v4/users/${user.body.id}/personal_access_tokens`, { token: p.adminToken, body: { name: "t", scopes: ["api"] } });
    expect((await call(p.baseUrl, "GET", "/api/v4/usage_metrics/kubernetes", { token: pat.body.token })).status).to.equal(403);
    expect((await call(p.baseUrl, "GET", "/api/v4/usage_metrics/kubernetes?since=yesterday", { token: p.adminToken })).status).to.equal(400);
  });
});
