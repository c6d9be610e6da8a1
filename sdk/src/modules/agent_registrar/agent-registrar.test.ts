import { expect } from "chai";
import { afterEach, describe, it } from "mocha";
import pino from "pino";
import { createAgent, type Agent } from "../../agent/create-agent.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import { waitFor } from "@kasbridge/testing/wait";
import { createKasServer, type KasServer } from "../../kas/kas-server.js";
import { agentRegistrarAgentModule } from "./agent/agent-registrar-module.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

describe("AgentRegistrar/Register on KAS", () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  async function start(): Promise<{ kas: KasServer; platform: StaticPlatformClient; agent(token: string): Agent }> {
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-a", { agentId: 1, agentName: "a", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 10 });
    platform.addToken("glagent-b", { agentId: 2, agentName: "b", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 20 });
    const kas = await createKasServer({ platform, logger, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: new Uint8Array(32).fill(1) } });
    cleanup.add(() => kas.close(100));
    return {
      kas,
      platform,
      agent(token) {
        const agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token, logger, podName: token, modules: [agentRegistrarAgentModule()] });
        agent.start();
        cleanup.add(() => agent.stop(100));
        return agent;
      },
    };
  }

  it("lists an agent's connection while it is connected, not after its connection closes", async () => {
    const { kas, agent } = await start();
    const a = agent("glagent-a");
    await waitFor(() => kas.tracker.count() === 1);
    const [conn] = await kas.tracker.listConnections(1);
    expect(conn.connectionId).to.equal(a.podId.toString());
    expect(conn.podName).to.equal("glagent-a");
    await a.stop(100);
    await waitFor(() => kas.tracker.count() === 0);
  });

  it("forgets the connections of a revoked token and keeps the others", async () => {
    const { kas, platform, agent } = await start();
    agent("glagent-a");
    agent("glagent-b");
    await waitFor(() => kas.tracker.count() === 2);
    platform.revoke("glagent-a");
    await waitFor(() => kas.tracker.count() === 1);
    expect(await kas.tracker.listConnections(1)).to.deep.equal([]);
    expect(await kas.tracker.listConnections(2)).to.have.length(1);
  });
});
