import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import pino from "pino";
import { ConfigurationFileSchema, log_level_enum, type AgentConfiguration } from "../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { createAgent } from "../../agent/create-agent.js";
import { createKasServer } from "../../server/kas-server.js";
import { StaticPlatformClient } from "../../testing/fake-platform.test-support.js";
import { agentConfigurationModule } from "./server.js";
import { noConfigCommitId } from "./to-agent-configuration.js";

describe("agent configuration (GetConfiguration) over a real agent API", function () {
  this.timeout(20_000);

  it("delivers the config at connect and each change at once and applies the log level", async () => {
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-cfg", { agentId: 5, agentName: "cfg", projectId: 9, projectPath: "g/p", defaultBranch: "main", tokenId: 50 });
    const logger = pino({ level: "silent" });
    const kas = await createKasServer({
      platform,
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: new Uint8Array(32) },
      modules: [agentConfigurationModule({ platform, gitlabExternalUrl: "https://platform.example" })],
    });
    const received: Array<{ config: AgentConfiguration; commitId: string; at: number }> = [];
    const agentLogger = pino({ level: "info" }, { write() {} });
    const agent = createAgent({
      kasAddress: kas.agentApi.url("grpc"),
      token: "glagent-cfg",
      logger: agentLogger,
      onConfiguration: (config, commitId) => received.push({ config, commitId, at: Date.now() }),
    });
    try {
      agent.start();
      await until(() => received.length === 1);
      expect(received[0].commitId).to.equal(noConfigCommitId);
      expect(received[0].config.agentId).to.equal(5n);
      expect(received[0].config.projectPath).to.equal("g/p");
      expect(received[0].config.gitlabExternalUrl).to.equal("https://platform.example");

      const pushedAt = Date.now();
      platform.setConfiguration(
        5,
        "a".repeat(40),
        create(ConfigurationFileSchema, { observability: { logging: { level: log_level_enum.debug } }, ciAccess: { projects: [{ id: "g/app" }] } }),
      );
      await until(() => received.length === 2);
      expect(received[1].commitId).to.equal("a".repeat(40));
      expect(received[1].config.ciAccess?.projects[0].id).to.equal("g/app");
      expect(received[1].at - pushedAt).to.be.lessThan(1000);
      expect(agentLogger.level).to.equal("debug");

      // The same commit again is not re-sent.
      platform.setConfiguration(5, "a".repeat(40), create(ConfigurationFileSchema));
      await new Promise((r) => setTimeout(r, 200));
      expect(received).to.have.length(2);
    } finally {
      await agent.stop(100);
      await kas.close(100);
    }
  });
});

async function until(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}
