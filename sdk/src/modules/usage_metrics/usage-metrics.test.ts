import { expect } from "chai";
import pino from "pino";
import { waitFor } from "@kasbridge/testing/wait";
import { createKasServer } from "../../kas/kas-server.js";
import { UsageMetrics } from "../../kas/usage-metrics.js";
import { PlatformError, type UsageMetricsPayload } from "../../platform-client/platform-client.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import { usageMetricsServerModule } from "./server/usage-metrics-module.js";

/** A platform that records usage reports, or refuses them while `refuse` is set. */
class UsagePlatform extends StaticPlatformClient {
  readonly reports: UsageMetricsPayload[] = [];
  refuse = false;
  async sendUsageMetrics(payload: UsageMetricsPayload): Promise<void> {
    if (this.refuse) throw new PlatformError("unavailable", "platform down");
    this.reports.push(structuredClone(payload));
  }
}

function startKas(platform: UsagePlatform, periodMs: number) {
  return createKasServer({
    platform,
    logger: pino({ level: "silent" }),
    agentApi: { port: 0 },
    internalApi: { port: 0, jwtSecret: new Uint8Array(32) },
    modules: [usageMetricsServerModule({ periodMs })],
  });
}

describe("usage metrics (KAS -> platform)", function () {
  this.timeout(20_000);

  it("sends nothing when empty, and only what was not sent yet", () => {
    const usage = new UsageMetrics();
    expect(usage.pending()).to.equal(undefined);
    usage.inc("k8s_api_proxy_request", 2);
    usage.addUnique("agent_users_using_ci_tunnel", 7);
    const first = usage.pending()!;
    expect(first).to.deep.equal({ counters: { k8s_api_proxy_request: 2 }, unique_counters: { agent_users_using_ci_tunnel: [7] } });
    // Counted while the first report was on its way: stays for the next one.
    usage.inc("k8s_api_proxy_request");
    usage.addUnique("agent_users_using_ci_tunnel", 8);
    usage.subtract(first);
    expect(usage.pending()).to.deep.equal({ counters: { k8s_api_proxy_request: 1 }, unique_counters: { agent_users_using_ci_tunnel: [8] } });
    usage.subtract(usage.pending()!);
    expect(usage.pending()).to.equal(undefined);
  });

  it("sends deltas every period, keeps them when the platform refuses, and flushes at shutdown", async () => {
    const platform = new UsagePlatform();
    const kas = await startKas(platform, 50);
    try {
      kas.usage.inc("k8s_api_proxy_request", 3);
      await waitFor(() => platform.reports.length === 1, undefined, "the first report");
      expect(platform.reports[0]).to.deep.equal({ counters: { k8s_api_proxy_request: 3 } });

      platform.refuse = true;
      kas.usage.inc("k8s_api_proxy_request");
      // Refused sends keep the count: it goes out once the platform takes reports again.
      await waitFor(() => kas.usage.pending() !== undefined && platform.reports.length === 1);
      platform.refuse = false;
      await waitFor(() => platform.reports.length === 2, undefined, "the kept report");
      expect(platform.reports[1]).to.deep.equal({ counters: { k8s_api_proxy_request: 1 } });
      // Nothing new: nothing sent.
      kas.usage.addUnique("k8s_api_proxy_requests_unique_agents_via_ci_access", 5);
    } finally {
      await kas.close(0);
    }
    // The final flush at shutdown carries what the last period had not sent.
    expect(platform.reports.at(-1)).to.deep.equal({ unique_counters: { k8s_api_proxy_requests_unique_agents_via_ci_access: [5] } });
    expect(platform.reports.filter((r) => r.counters?.k8s_api_proxy_request).length).to.equal(2);
  });

  for (const [periodMs, expected] of [
    [3_600_000, [{ counters: { k8s_api_proxy_request: 1 } }]],
    [0, []],
  ] as const) {
    it(`with a period of ${periodMs} ms, ${expected.length ? "sends what is left at shutdown" : "sends nothing, not even at shutdown"}`, async () => {
      const platform = new UsagePlatform();
      const kas = await startKas(platform, periodMs);
      kas.usage.inc("k8s_api_proxy_request");
      await kas.close(0);
      expect(platform.reports).to.deep.equal(expected);
    });
  }
});
