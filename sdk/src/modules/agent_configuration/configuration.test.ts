import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import pino from "pino";
import { ConfigurationFileSchema, log_level_enum, type AgentConfiguration } from "../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { createAgent } from "../../agent/create-agent.js";
import { createKasServer } from "../../kas/kas-server.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import { waitFor } from "@kasbridge/testing/wait";
import { agentConfigurationServerModule } from "./server/agent-configuration-module.js";
import { noConfigCommitId } from "./server/to-agent-configuration.js";

describe("agent configuration (GetConfiguration) over a real agent API", function () {
  this.timeout(20_000);

  it("delivers the config at connect and each change at once and applies the log level", async () => {
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-cfg", { agentId: 5, agentName: "cfg", projectId: 9, projectPath: "g/p", defaultBranch: "main", tokenId: 50 });
    // KAS's debug log names each config it sends: what the agent would drop as a duplicate shows there.
    const kasLog: string[] = [];
    const logger = pino({ level: "debug" }, { write: (line: string) => kasLog.push(line) });
    const sent = (commitId: string) => kasLog.filter((l) => l.includes('"msg":"sending agent configuration"') && l.includes(`"commitId":"${commitId}"`)).length;
    const kas = await createKasServer({
      platform,
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: new Uint8Array(32) },
      modules: [agentConfigurationServerModule({ gitlabExternalUrl: "https://platform.example" })],
    });
    const received: Array<{ config: AgentConfiguration; commitId: string }> = [];
    const agentLogger = pino({ level: "info" }, { write() {} });
    const agent = createAgent({
      kasAddress: kas.agentApi.url("grpc"),
      token: "glagent-cfg",
      logger: agentLogger,
      onConfiguration: (config, commitId) => received.push({ config, commitId }),
    });
    try {
      agent.start();
      await waitFor(() => received.length === 1);
      expect(received[0].commitId).to.equal(noConfigCommitId);
      expect(received[0].config.agentId).to.equal(5n);
      expect(received[0].config.projectPath).to.equal("g/p");
      expect(received[0].config.gitlabExternalUrl).to.equal("https://platform.example");

      platform.setConfiguration(
        5,
        "a".repeat(40),
        create(ConfigurationFileSchema, { observability: { logging: { level: log_level_enum.debug } }, ciAccess: { projects: [{ id: "g/app" }] } }),
      );
      await waitFor(() => received.length === 2);
      expect(received[1].commitId).to.equal("a".repeat(40));
      expect(received[1].config.ciAccess?.projects[0].id).to.equal("g/app");
      expect(agentLogger.level).to.equal("debug");

      // The same commit again is not re-sent: KAS reads it, and the next commit is what arrives next.
      const reads = platform.configurationReads;
      platform.setConfiguration(5, "a".repeat(40), create(ConfigurationFileSchema));
      await waitFor(() => platform.configurationReads > reads, undefined, "KAS to read the config again");
      platform.setConfiguration(5, "b".repeat(40), create(ConfigurationFileSchema));
      await waitFor(() => received.length === 3);
      expect(received.map((r) => r.commitId)).to.deep.equal([noConfigCommitId, "a".repeat(40), "b".repeat(40)]);
      expect(sent("a".repeat(40))).to.equal(1);
      expect(sent("b".repeat(40))).to.equal(1);
    } finally {
      await agent.stop(100);
      await kas.close(100);
    }
  });
});

