import { UsageMetrics } from "../../kas/usage-metrics.js";
import { KasAuditLog } from "../../kas/audit-log.js";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { expect } from "chai";
import pino from "pino";
import {
  AgentConfiguration,
  ConfigurationRequestSchema,
  ConfigurationResponseSchema,
  type ConfigurationResponse,
} from "../../gen/gitlab/agent/agent_configuration/rpc/rpc_pb.js";
import { ConfigurationFileSchema } from "../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { PlatformError, type PlatformClient } from "../../platform-client/platform-client.js";
import { AgentAuthenticator } from "../../kas/agent-authenticator.js";
import { AgentTracker } from "../../kas/agent-tracker.js";
import type { KasModuleContext } from "../../kas/kas-module.js";
import { rawGrpcMethods } from "../../grpc/raw-dispatch.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import { bearer } from "../../grpc/interceptors.test-support.js";
import { waitFor } from "@kasbridge/testing/wait";
import { createAgentApiListener } from "../../transport/agent-api-listener.js";
import { encodeFrame, FrameReader } from "../../grpc/grpc-frames.js";
import { InMemoryTunnelRegistry } from "../../tunnel/server/tunnel-registry.js";
import { agentConfigurationServerModule } from "./server/agent-configuration-module.js";
import { noConfigCommitId } from "./server/to-agent-configuration.js";
import { Registry } from "prom-client";
import { localAgentCalls } from "../../tunnel/server/agent-calls.js";
import { Tracing } from "../../tracing/tracing.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const commitA = "a".repeat(40);
const commitB = "b".repeat(40);

/** The module wired as kas-server wires it: raw gRPC over HTTP/2 first, connect-es for the rest (counted). */
async function startModule(platform: PlatformClient & Partial<StaticPlatformClient>, pollIntervalMs?: number) {
  const shutdown = new AbortController();
  const auth = new AgentAuthenticator({ platform, logger });
  const registry = new InMemoryTunnelRegistry();
  const tracker = new AgentTracker({ kasInstance: "test" });
  const ctx: KasModuleContext = {
    platform,
    auth,
    tracker,
    connections: tracker,
    agentCalls: localAgentCalls(registry),
    registry,
    logger,
    metrics: new Registry(),
    usage: new UsageMetrics(),
    audit: new KasAuditLog({ platform, logger, metrics: new Registry() }),
    tracing: new Tracing(),
    shutdownSignal: shutdown.signal,
    maxMessageBytes: 1 << 20,
  };
  const module = agentConfigurationServerModule({ gitlabExternalUrl: "https://platform.example", pollIntervalMs });
  const connectHandler = connectNodeAdapter({ shutdownSignal: shutdown.signal, routes: (router) => module.registerAgentServices!(router, ctx) });
  let fallback = 0;
  const listener = await createAgentApiListener({
    port: 0,
    handler: (req, res) => {
      fallback++;
      connectHandler(req, res);
    },
    streamHandler: rawGrpcMethods(module.rawAgentMethods!(ctx)),
  });
  const sessions: Http2SessionManager[] = [];
  return {
    fallback: () => fallback,
    shutdown,
    url: listener.url("http"),
    transports(): Record<string, Transport> {
      const sessionManager = new Http2SessionManager(listener.url("http"));
      sessions.push(sessionManager);
      const baseUrl = listener.url("http");
      const interceptors = [bearer("glagent-cfg")];
      return {
        "gRPC over HTTP/2 (raw)": createGrpcTransport({ baseUrl, sessionManager, interceptors }),
        "Connect over HTTP/1.1 (connect-es)": createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors }),
        "gRPC-web over HTTP/1.1 (connect-es)": createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors }),
      };
    },
    async close() {
      for (const s of sessions) s.abort();
      shutdown.abort();
      auth.close();
      await listener.close(0);
    },
  };
}

function staticPlatform(): StaticPlatformClient {
  const platform = new StaticPlatformClient();
  platform.addToken("glagent-cfg", { agentId: 5, agentName: "cfg", projectId: 9, projectPath: "g/p", defaultBranch: "main", tokenId: 50 });
  return platform;
}

/** Reads a GetConfiguration stream in the background. */
function watch(transport: Transport, commitId: string) {
  const abort = new AbortController();
  const received: ConfigurationResponse[] = [];
  let error: ConnectError | undefined;
  const done = (async () => {
    try {
      for await (const res of createClient(AgentConfiguration, transport).getConfiguration({ commitId, skipRegister: true }, { signal: abort.signal })) {
        received.push(res);
      }
    } catch (e) {
      error = ConnectError.from(e);
    }
  })();
  return { received, abort, done, error: () => error };
}

describe("GetConfiguration: raw gRPC path and connect-es fallback behave the same", function () {
  this.timeout(20_000);

  for (const name of ["gRPC over HTTP/2 (raw)", "Connect over HTTP/1.1 (connect-es)", "gRPC-web over HTTP/1.1 (connect-es)"]) {
    it(`${name}: initial config, then each new commit, never the agent's own commit again`, async () => {
      const platform = staticPlatform();
      const kas = await startModule(platform);
      try {
        const transport = kas.transports()[name];
        const fresh = watch(transport, "");
        await waitFor(() => fresh.received.length === 1);
        expect(fresh.received[0].commitId).to.equal(noConfigCommitId);
        expect(fresh.received[0].configuration?.agentId).to.equal(5n);
        expect(fresh.received[0].configuration?.projectPath).to.equal("g/p");
        expect(fresh.received[0].configuration?.gitlabExternalUrl).to.equal("https://platform.example");

        platform.setConfiguration(5, commitA, create(ConfigurationFileSchema, { ciAccess: { projects: [{ id: "g/app" }] } }));
        // An agent that already has commit A gets nothing at connect, then only the next commit.
        const upToDate = watch(transport, commitA);
        await waitFor(() => fresh.received.length === 2);
        expect(fresh.received[1].commitId).to.equal(commitA);
        expect(fresh.received[1].configuration?.ciAccess?.projects[0].id).to.equal("g/app");
        platform.setConfiguration(5, commitA, create(ConfigurationFileSchema));
        platform.setConfiguration(5, commitB, create(ConfigurationFileSchema));
        await waitFor(() => fresh.received.length === 3 && upToDate.received.length === 1);
        expect(fresh.received.map((r) => r.commitId)).to.deep.equal([noConfigCommitId, commitA, commitB]);
        expect(upToDate.received.map((r) => r.commitId)).to.deep.equal([commitB]);

        fresh.abort.abort();
        upToDate.abort.abort();
        await Promise.all([fresh.done, upToDate.done]);
        if (name.includes("raw")) expect(kas.fallback()).to.equal(0);
        else expect(kas.fallback()).to.equal(2);
      } finally {
        await kas.close();
      }
    });
  }

  it("raw path: a config that cannot be converted ends that call with an error instead of escaping", async () => {
    const platform = staticPlatform();
    // BigInt(1.5) throws while the response is built.
    platform.addToken("glagent-odd", { agentId: 6, agentName: "odd", projectId: 1.5, projectPath: "g/p", defaultBranch: "main", tokenId: 60 });
    const kas = await startModule(platform);
    const sessionManager = new Http2SessionManager(kas.url);
    try {
      const transport = createGrpcTransport({ baseUrl: kas.url, sessionManager, interceptors: [bearer("glagent-odd")] });
      const odd = watch(transport, "");
      await waitFor(() => odd.error() !== undefined);
      await odd.done;
      expect(odd.received).to.have.length(0);
      expect(odd.error()?.code).to.equal(Code.Internal);
      expect(kas.fallback()).to.equal(0);
    } finally {
      sessionManager.abort();
      await kas.close();
    }
  });

  it("raw path: an agent call that does not read holds back neither the agent's other calls nor itself once it reads", async () => {
    const platform = staticPlatform();
    const big = create(ConfigurationFileSchema, { ciAccess: { projects: Array.from({ length: 5000 }, (_, i) => ({ id: `group/project-${i}` })) } });
    platform.setConfiguration(5, commitA, big);
    const kas = await startModule(platform);
    // A call whose client reads nothing: the config (> 100 KB) fills its flow-control window.
    const session = http2.connect(kas.url);
    const stalled = session.request({
      ":method": "POST",
      ":path": `/${AgentConfiguration.typeName}/${AgentConfiguration.method.getConfiguration.name}`,
      "content-type": "application/grpc",
      te: "trailers",
      authorization: "Bearer glagent-cfg",
    });
    stalled.end(encodeFrame(toBinary(ConfigurationRequestSchema, create(ConfigurationRequestSchema, { commitId: "" }))));
    stalled.pause();
    try {
      await new Promise((resolve) => stalled.once("response", resolve));
      // A new pod of the same agent gets its initial config, and later commits.
      const pod = watch(kas.transports()["gRPC over HTTP/2 (raw)"], "");
      await waitFor(() => pod.received.length === 1);
      expect(pod.received[0].commitId).to.equal(commitA);
      platform.setConfiguration(5, commitB, create(ConfigurationFileSchema));
      await waitFor(() => pod.received.length === 2);
      expect(pod.received[1].commitId).to.equal(commitB);
      // The stalled call reads at last: commit A, then it catches up with commit B.
      const reader = new FrameReader(1 << 20, "identity");
      const commits: string[] = [];
      stalled.on("data", (chunk: Buffer) => {
        for (const frame of reader.push(chunk)) commits.push(fromBinary(ConfigurationResponseSchema, frame).commitId);
      });
      stalled.resume();
      await waitFor(() => commits.length === 2);
      expect(commits).to.deep.equal([commitA, commitB]);
      pod.abort.abort();
      await pod.done;
    } finally {
      session.destroy();
      await kas.close();
    }
  });

  it("ends the stream with the platform's error on both paths, and with the token's revocation", async () => {
    const platform = staticPlatform();
    let fail = false;
    const failing = Object.assign(Object.create(platform) as StaticPlatformClient, {
      async getAgentConfiguration(agentId: number) {
        if (fail) throw new PlatformError("unavailable", "config store down");
        return platform.getAgentConfiguration(agentId);
      },
      watchAgentConfigurations: platform.watchAgentConfigurations.bind(platform),
      watchTokenRevocations: platform.watchTokenRevocations.bind(platform),
      getAgentInfo: platform.getAgentInfo.bind(platform),
    });
    const kas = await startModule(failing);
    try {
      const transports = kas.transports();
      const raw = watch(transports["gRPC over HTTP/2 (raw)"], "");
      const fallback = watch(transports["Connect over HTTP/1.1 (connect-es)"], "");
      await waitFor(() => raw.received.length === 1 && fallback.received.length === 1);
      fail = true;
      platform.setConfiguration(5, commitA, create(ConfigurationFileSchema));
      await Promise.all([raw.done, fallback.done]);
      expect(raw.error()?.code).to.equal(fallback.error()?.code);
      expect(raw.error()?.rawMessage).to.equal(fallback.error()?.rawMessage);

      fail = false;
      const rawRevoked = watch(transports["gRPC over HTTP/2 (raw)"], commitA);
      const fallbackRevoked = watch(transports["Connect over HTTP/1.1 (connect-es)"], commitA);
      // Whether the revocation comes before, during or after a call's authentication, it ends with
      // UNAUTHENTICATED (cache dropped, token known revoked, or the call's stream ended).
      await waitFor(() => kas.fallback() === 2);
      platform.revoke("glagent-cfg");
      await Promise.all([rawRevoked.done, fallbackRevoked.done]);
      expect(rawRevoked.error()?.code).to.equal(Code.Unauthenticated);
      expect(fallbackRevoked.error()?.code).to.equal(Code.Unauthenticated);
    } finally {
      await kas.close();
    }
  });

  it("polls a platform that cannot push changes", async () => {
    const platform = staticPlatform();
    const polled = Object.assign(Object.create(platform) as StaticPlatformClient, { watchAgentConfigurations: undefined });
    const kas = await startModule(polled, 20);
    try {
      const raw = watch(kas.transports()["gRPC over HTTP/2 (raw)"], "");
      await waitFor(() => raw.received.length === 1);
      platform.setConfiguration(5, commitA, create(ConfigurationFileSchema));
      await waitFor(() => raw.received.length === 2);
      expect(raw.received[1].commitId).to.equal(commitA);
      raw.abort.abort();
      await raw.done;
    } finally {
      await kas.close();
    }
  });
});
