import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import pino from "pino";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { selfSignedCertificate } from "@kasbridge/testing/tls";
import { waitFor } from "@kasbridge/testing/wait";
import { createAgent } from "../../agent/create-agent.js";
import { ConfigurationFileSchema, log_level_enum } from "../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { createKasServer, type KasServer } from "../../kas/kas-server.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import { agentConfigurationAgentModule } from "../agent_configuration/agent/configuration-watcher.js";
import { agentConfigurationServerModule } from "../agent_configuration/server/agent-configuration-module.js";
import { agentRegistrarAgentModule } from "../agent_registrar/agent/agent-registrar-module.js";
import { agentRegistrarServerModule } from "../agent_registrar/server/agent-registrar-module.js";
import { observabilityAgentModule } from "./agent/observability-agent-module.js";

describe("agent observability: probes, real readiness, metrics, live log levels", function () {
  this.timeout(30_000);
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  const platform = new StaticPlatformClient();
  platform.addToken("glagent-obs", { agentId: 7, agentName: "obs", projectId: 3, projectPath: "g/p", defaultBranch: "main", tokenId: 70 });

  async function startKas(port: number, withConfiguration: boolean): Promise<KasServer> {
    const kas = await createKasServer({
      platform,
      logger: pino({ level: "silent" }),
      agentApi: { host: "127.0.0.1", port },
      internalApi: { port: 0, jwtSecret: new Uint8Array(32) },
      modules: [agentRegistrarServerModule(), ...(withConfiguration ? [agentConfigurationServerModule({ gitlabExternalUrl: "https://platform.example" })] : [])],
    });
    cleanup.add(() => kas.close(0));
    return kas;
  }

  it("is not ready before registration and configuration, nor after losing KAS for longer than the timeout; ready again when KAS is back", async () => {
    // KAS 1 registers the agent but serves no configuration.
    let kas = await startKas(0, false);
    const port = kas.agentApi.address.port;
    const agentLog: string[] = [];
    const observability = observabilityAgentModule({ listen: { host: "127.0.0.1", port: 0 } });
    const agent = createAgent({
      kasAddress: kas.agentApi.url("grpc"),
      token: "glagent-obs",
      logger: pino({ level: "info" }, { write: (line: string) => agentLog.push(line) }),
      modules: [agentRegistrarAgentModule(), agentConfigurationAgentModule(), observability],
      kasLossTimeoutMs: 300,
      pool: { backoff: { initialMs: 50, maxMs: 200 } },
    });
    cleanup.add(() => agent.stop(0));
    agent.start();
    const server = (await observability.listening)!;
    const get = async (path: string) => {
      const res = await fetch(`${server.url}${path}`);
      return { status: res.status, body: await res.text(), server: res.headers.get("server") };
    };
    expect(await get("/liveness")).to.deep.equal({ status: 200, body: "", server: "gitlab-agent" });
    await waitFor(async () => (await get("/readiness")).body === "no configuration received yet", undefined, "registered, no configuration");
    expect((await get("/readiness")).status).to.equal(500);
    expect(await metric(server.url, "agentk_ready")).to.equal(0);

    // KAS 2 on the same port serves the configuration: ready.
    await kas.close(0);
    kas = await startKas(port, true);
    await waitFor(async () => (await get("/readiness")).status === 200, undefined, "ready");
    expect((await get("/readiness")).body).to.equal("");
    expect(await metric(server.url, "agentk_ready")).to.equal(1);
    expect(await metric(server.url, "agentk_configurations_applied_total")).to.equal(1);
    expect(await metric(server.url, 'agentk_tunnels{state="idle"}')).to.be.greaterThan(0);

    // KAS goes away: not ready once it has been gone for longer than kasLossTimeoutMs.
    await kas.close(0);
    await waitFor(async () => (await get("/readiness")).status === 500, undefined, "not ready without KAS");
    expect((await get("/readiness")).body).to.match(/^KAS unreachable for \d+ s: /);
    expect(await metric(server.url, "agentk_kas_reconnects_total", /\{code="[A-Za-z]+"\}/)).to.be.greaterThan(0);
    expect((await get("/liveness")).status).to.equal(200);

    // KAS is back (registration succeeds again): ready.
    kas = await startKas(port, true);
    await waitFor(async () => (await get("/readiness")).status === 200, undefined, "ready again");
  });

  it("applies logging.level and grpc_level live, with GitLab's defaults (info, error)", async () => {
    const kas = await startKas(0, true);
    const agentLog: string[] = [];
    const logger = pino({ level: "warn" }, { write: (line: string) => agentLog.push(line) });
    const configs: string[] = [];
    const agent = createAgent({
      kasAddress: kas.agentApi.url("grpc"),
      token: "glagent-obs",
      logger,
      modules: [agentRegistrarAgentModule(), agentConfigurationAgentModule(), observabilityAgentModule()],
      onConfiguration: (_, commitId) => configs.push(commitId),
    });
    cleanup.add(() => agent.stop(0));
    agent.start();
    // No configuration file: GitLab's defaults.
    await waitFor(() => configs.length === 1);
    expect(logger.level).to.equal("info");
    platform.setConfiguration(7, "c".repeat(40), create(ConfigurationFileSchema, { observability: { logging: { level: log_level_enum.debug, grpcLevel: log_level_enum.warn } } }));
    await waitFor(() => configs.length === 2);
    expect(logger.level).to.equal("debug");
    expect(agentLog.some((l) => l.includes('"grpcLogLevel":"warn"'))).to.equal(true);
    platform.setConfiguration(7, "d".repeat(40), create(ConfigurationFileSchema, { observability: { logging: { level: log_level_enum.error } } }));
    await waitFor(() => configs.length === 3);
    expect(logger.level).to.equal("error");
  });

  it("serves TLS with the given certificate", async () => {
    const kas = await startKas(0, true);
    const cert = selfSignedCertificate("127.0.0.1");
    const observability = observabilityAgentModule({ listen: { host: "127.0.0.1", port: 0 }, tls: { cert: cert.cert, key: cert.key } });
    const agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token: "glagent-obs", logger: pino({ level: "silent" }), modules: [observability] });
    cleanup.add(() => agent.stop(0));
    agent.start();
    const server = (await observability.listening)!;
    expect(server.url).to.match(/^https:/);
    const { get } = await import("node:https");
    const status = await new Promise<number | undefined>((resolve, reject) =>
      get(`${server.url}/liveness`, { ca: cert.cert }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on("error", reject),
    );
    expect(status).to.equal(200);
  });
});

/** The value of one sample on `/metrics` (`name` with its labels, or any labels matching `labels`). */
async function metric(url: string, name: string, labels?: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    const key = line.slice(0, space);
    if (key === name || (labels && key.startsWith(name) && labels.test(key.slice(name.length)))) return Number(line.slice(space + 1));
  }
  return NaN;
}
