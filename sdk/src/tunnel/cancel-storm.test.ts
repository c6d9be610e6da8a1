import type { ServerHttp2Session } from "node:http2";
import { expect } from "chai";
import pino from "pino";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { createAgent } from "../agent/create-agent.js";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { internalApiClientInterceptor } from "../kas/internal-api-auth.js";
import { createKasServer } from "../kas/kas-server.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { waitFor } from "@kasbridge/testing/wait";
import { agentRegistrarAgentModule } from "../modules/agent_registrar/agent/agent-registrar-module.js";
import { echoAgentModule } from "../modules/echo/agent/echo-service.js";

// Regression: the agent used to reset (RST_STREAM CANCEL) every tunnel stream whose call KAS had
// ended with a non-OK status. KAS's HTTP/2 server (nghttp2's rapid-reset protection: a burst of
// about 1,000 resets, then 33 per second) then refused new tunnel streams with ENHANCE_YOUR_CALM,
// so a few hundred calls cancelled by their callers (two resets each) cut the agent off.
describe("a storm of calls cancelled mid-stream by their callers (real KAS, real agent)", function () {
  this.timeout(120_000);

  it("keeps the agent connection's flow-control window and keeps serving", async () => {
    const logger = pino({ level: "silent" });
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-storm", { agentId: 4, agentName: "storm", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 40 });
    const secret = new Uint8Array(32).fill(5);
    const kas = await createKasServer({ platform, logger, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: secret } });
    const agentSessions: ServerHttp2Session[] = [];
    kas.agentApi.onSessionOpen((session) => agentSessions.push(session));
    const agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token: "glagent-storm", logger, modules: [agentRegistrarAgentModule(), echoAgentModule()] });
    const baseUrl = `http://127.0.0.1:${kas.internalApiAddress.port}`;
    const sessions = new Http2SessionManager(baseUrl);
    const client = createClient(EchoService, createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: [internalApiClientInterceptor(secret, 4)] }));
    try {
      agent.start();
      await waitFor(() => kas.registry.stats().idleTunnels >= 1, 10_000);
      const calls = 2500;
      for (let i = 0; i < calls; i++) {
        const abort = new AbortController();
        try {
          // The agent streams 1,000 x 1 KB; the caller goes away after the first message.
          for await (const _ of client.serverStream({ count: 1000, size: 1000 }, { signal: abort.signal, timeoutMs: 10_000 })) abort.abort();
        } catch (error) {
          const e = ConnectError.from(error);
          // nghttp2's rapid-reset protection on KAS's internal API may close the *caller's*
          // connection after a burst of 1,000+ cancellations (the client reconnects); that is the
          // caller's session, not the agent's, which is what this test is about.
          if (e.code !== Code.Canceled && !/Session closed with error code 2/.test(e.message)) throw new Error(`call ${i} failed: ${e.message}`);
        }
      }
      const reply = await client.echo({ payload: new TextEncoder().encode("still here") }, { timeoutMs: 10_000 });
      expect(new TextDecoder().decode(reply.payload)).to.equal("still here");
      // And no data was left unconsumed on the agent's connection: nghttp2 sends WINDOW_UPDATE once
      // half of the 32 MiB connection window is consumed, so more than that pending would be a leak.
      expect(agentSessions).to.have.length(1);
      expect(agentSessions[0]!.state.effectiveRecvDataLength).to.be.lessThan(16 << 20);
    } finally {
      sessions.abort();
      await agent.stop(100);
      await kas.close(100);
    }
  });
});
