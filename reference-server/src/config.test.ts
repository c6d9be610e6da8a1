import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { ConfigError, loadConfig, parseHostPort } from "./config.js";

describe("kas configuration", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "kas-config-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function file(text: string): string {
    const path = join(dir, "kas.yaml");
    writeFileSync(path, text);
    return path;
  }

  it("runs with nothing set: GitLab's ports on loopback, SQLite in ./data", () => {
    const c = loadConfig({ env: {} });
    expect(c.listen.platform).to.deep.equal({ host: "127.0.0.1", port: 8080 });
    expect(c.listen.agent.port).to.equal(8150);
    expect(c.listen.observability.port).to.equal(8151);
    expect(c.listen.internal.port).to.equal(8153);
    expect(c.listen.k8sProxy.port).to.equal(8154);
    expect(c.listen.private.port).to.equal(8155);
    expect(c.dataDir).to.match(/\/data$/);
    expect(c.databaseUrl).to.equal(undefined);
    expect(c.platformEnabled).to.equal(true);
  });

  it("reads the YAML file, then lets KAS_* variables override it", () => {
    const path = file(`listen:\n  agent: "0.0.0.0:9150"\n  internal: "127.0.0.1:0"\ndata_dir: /var/lib/kas\nlog_level: debug\nmax_message_bytes: 1048576\n`);
    const c = loadConfig({ configFile: path, env: { KAS_AGENT_ADDR: "[::1]:0", KAS_DATABASE_URL: "postgres://u@db/kas" } });
    expect(c.listen.agent).to.deep.equal({ host: "::1", port: 0 });
    expect(c.listen.internal).to.deep.equal({ host: "127.0.0.1", port: 0 });
    expect(c.dataDir).to.equal("/var/lib/kas");
    expect(c.logLevel).to.equal("debug");
    expect(c.maxMessageBytes).to.equal(1048576);
    expect(c.databaseUrl).to.equal("postgres://u@db/kas");
  });

  it("takes the private API secret file from YAML or KAS_PRIVATE_API_SECRET_FILE", () => {
    expect(loadConfig({ env: {} }).privateApiSecretFile).to.equal(undefined);
    const path = file(`private_api_secret_file: /etc/kas/private\n`);
    expect(loadConfig({ configFile: path, env: {} }).privateApiSecretFile).to.equal("/etc/kas/private");
    expect(loadConfig({ configFile: path, env: { KAS_PRIVATE_API_SECRET_FILE: "/run/private" } }).privateApiSecretFile).to.equal("/run/private");
  });

  it("names the bad key in every error", () => {
    expect(() => loadConfig({ configFile: file("listen:\n  agnet: ':1'\n"), env: {} })).to.throw(ConfigError, /listen\.agnet/);
    expect(() => loadConfig({ configFile: file("colour: blue\n"), env: {} })).to.throw(ConfigError, /unknown key colour/);
    expect(() => loadConfig({ configFile: file("max_message_bytes: -1\n"), env: {} })).to.throw(ConfigError, /max_message_bytes/);
    expect(() => loadConfig({ env: { KAS_AGENT_ADDR: "8150" } })).to.throw(ConfigError, /KAS_AGENT_ADDR/);
    expect(() => loadConfig({ env: { KAS_DATABASE_URL: "mysql://x" } })).to.throw(ConfigError, /KAS_DATABASE_URL/);
    expect(() => loadConfig({ env: { KAS_LOG_LEVEL: "loud" } })).to.throw(ConfigError, /KAS_LOG_LEVEL/);
    expect(() => loadConfig({ env: { KAS_AGENT_TLS_CERT_FILE: "/c" } })).to.throw(ConfigError, /KAS_AGENT_TLS_KEY_FILE/);
  });

  it("parses host:port forms", () => {
    expect(parseHostPort(":8150", "k")).to.deep.equal({ host: "0.0.0.0", port: 8150 });
    expect(parseHostPort("[::]:0", "k")).to.deep.equal({ host: "::", port: 0 });
    expect(() => parseHostPort("host:70000", "k")).to.throw(ConfigError);
  });
});
