import { expect } from "chai";
import { afterEach, describe, it } from "mocha";
import pino from "pino";
import { Registry } from "prom-client";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { selfSignedCertificate } from "@kasbridge/testing/tls";
import { ProxyPlatform } from "../modules/kubernetes_api/kubernetes-api.test-support.js";
import { createKubernetesApiProxy, K8S_PROXY_LIMITS } from "../modules/kubernetes_api/server/kubernetes-api-proxy.js";
import { createObservabilityServer } from "../modules/observability/observability-http-server.js";
import { localAgentCalls } from "../tunnel/server/agent-calls.js";
import { GATEWAY_LIMITS, listenGateway } from "../tunnel/server/gateway-listener.js";
import { createTunnelGateway } from "../tunnel/server/tunnel-gateway.js";
import { InMemoryTunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import {
  advertisedMaxConcurrentStreams,
  expectConnectionsBeyondMaxClosed,
  expectSilentHttp2SessionClosed,
  expectSlowHeadClosed,
} from "./listener-limits.test-support.js";
import { AGENT_API_LIMITS } from "./agent-api-listener-options.js";
import { createAgentApiListener } from "./agent-api-listener.js";
import type { ListenerLimits } from "./listener-limits.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/** Small limits, so each is reached quickly. */
const small: ListenerLimits = { maxConnections: 2, maxConcurrentStreams: 7, headersTimeoutMs: 200, idleTimeoutMs: 200 };

describe("listener limits on every KAS listener", function () {
  this.timeout(30_000);
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  it("the agent API: its defaults, and the limits it is given", async () => {
    const defaults = await createAgentApiListener({ handler: (_req, res) => res.end(), port: 0 });
    cleanup.add(() => defaults.close(0));
    expect(await advertisedMaxConcurrentStreams({ port: defaults.address.port }, cleanup)).to.equal(AGENT_API_LIMITS.maxConcurrentStreams);
    const listener = await createAgentApiListener({ handler: (_req, res) => res.end(), port: 0, ...small });
    cleanup.add(() => listener.close(0));
    const target = { port: listener.address.port };
    expect(await advertisedMaxConcurrentStreams(target, cleanup)).to.equal(7);
    await expectSilentHttp2SessionClosed(target, cleanup);
    await expectSlowHeadClosed(target, cleanup);
    await expectConnectionsBeyondMaxClosed(target, 2, cleanup);
  });

  for (const name of ["internal API", "private API over TLS"]) {
    it(`the ${name}: its defaults, and the limits it is given`, async () => {
      const tls = name.includes("TLS") ? selfSignedCertificate() : undefined;
      const gateway = createTunnelGateway({ agentCalls: localAgentCalls(new InMemoryTunnelRegistry()), logger, authorize: async () => {} });
      const defaults = await listenGateway(name, { port: 0, tls }, gateway, logger);
      cleanup.add(() => defaults.close());
      cleanup.add(() => defaults.destroySessions());
      expect(await advertisedMaxConcurrentStreams({ port: defaults.address.port, tls: !!tls }, cleanup)).to.equal(GATEWAY_LIMITS.maxConcurrentStreams);
      const limited = await listenGateway(name, { port: 0, tls, ...small }, gateway, logger);
      cleanup.add(() => limited.close());
      cleanup.add(() => limited.destroySessions());
      const target = { port: limited.address.port, tls: !!tls };
      expect(await advertisedMaxConcurrentStreams(target, cleanup)).to.equal(7);
      await expectSilentHttp2SessionClosed(target, cleanup);
      await expectConnectionsBeyondMaxClosed(target, 2, cleanup);
    });
  }

  for (const withTls of [true, false]) {
    it(`the Kubernetes API proxy ${withTls ? "with TLS (HTTP/2 and HTTP/1.1)" : "without TLS (HTTP/1.1)"}: its defaults, and the limits it is given`, async () => {
      const tls = withTls ? selfSignedCertificate() : undefined;
      const start = async (limits: ListenerLimits) => {
        const proxy = await createKubernetesApiProxy({ agentCalls: localAgentCalls(new InMemoryTunnelRegistry()), platform: new ProxyPlatform(), port: 0, tls, metrics: new Registry(), ...limits });
        cleanup.add(() => proxy.close(0));
        return { port: proxy.address.port, tls: withTls };
      };
      if (withTls) expect(await advertisedMaxConcurrentStreams(await start({}), cleanup)).to.equal(K8S_PROXY_LIMITS.maxConcurrentStreams);
      const target = await start(small);
      if (withTls) {
        expect(await advertisedMaxConcurrentStreams(target, cleanup)).to.equal(7);
        await expectSilentHttp2SessionClosed(target, cleanup);
      }
      await expectSlowHeadClosed(target, cleanup);
      await expectConnectionsBeyondMaxClosed(target, 2, cleanup);
    });
  }

  it("the observability server: the limits it is given", async () => {
    const server = await createObservabilityServer({ port: 0, metrics: new Registry(), ...small });
    cleanup.add(() => server.close());
    await expectSlowHeadClosed({ port: server.address.port }, cleanup);
    await expectConnectionsBeyondMaxClosed({ port: server.address.port }, 2, cleanup);
  });
});
