import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { ConfigError, loadConfig, parseHostPort } from "./config.js";
import { proxyUrlForClients } from "./start-kas.js";

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
    expect(c.databasePoolSize).to.equal(10);
    expect(loadConfig({ configFile: file("database_pool_size: 3\n"), env: {} }).databasePoolSize).to.equal(3);
    expect(loadConfig({ env: { KAS_DATABASE_POOL_SIZE: "25" } }).databasePoolSize).to.equal(25);
    expect(() => loadConfig({ env: { KAS_DATABASE_POOL_SIZE: "0" } })).to.throw(ConfigError, /KAS_DATABASE_POOL_SIZE must be a positive integer/);
  });

  it("takes the private API's TLS files from YAML or KAS_PRIVATE_TLS_*, both or neither", () => {
    const path = file(`private_tls:\n  cert_file: /etc/kas/p.crt\n  key_file: /etc/kas/p.key\n`);
    expect(loadConfig({ configFile: path, env: {} }).privateTls).to.deep.equal({ certFile: "/etc/kas/p.crt", keyFile: "/etc/kas/p.key" });
    expect(loadConfig({ env: { KAS_PRIVATE_TLS_CERT_FILE: "/c", KAS_PRIVATE_TLS_KEY_FILE: "/k" } }).privateTls).to.deep.equal({ certFile: "/c", keyFile: "/k" });
    expect(() => loadConfig({ env: { KAS_PRIVATE_TLS_CERT_FILE: "/c" } })).to.throw(ConfigError, /KAS_PRIVATE_TLS_KEY_FILE/);
  });

  it("takes Redis (URL, key prefix, password file, TLS) and the own private API URL from YAML or KAS_*", () => {
    expect(loadConfig({ env: {} }).redis).to.equal(undefined);
    const path = file(
      `redis_url: redis://redis.internal:6379/2\nredis_key_prefix: kas-prod\nredis_password_file: /etc/kas/redis-password\n` +
        `redis_tls:\n  ca_file: /etc/kas/redis-ca.pem\nown_private_api_url: grpc://10.0.0.5:8155\nprivate_tls:\n  cert_file: /c\n  key_file: /k\n  ca_file: /ca\n`,
    );
    const c = loadConfig({ configFile: path, env: {} });
    expect(c.redis).to.deep.equal({ url: "redis://redis.internal:6379/2", keyPrefix: "kas-prod", passwordFile: "/etc/kas/redis-password", tls: { caFile: "/etc/kas/redis-ca.pem" } });
    expect(c.ownPrivateApiUrl).to.equal("grpc://10.0.0.5:8155");
    expect(c.privateTlsCaFile).to.equal("/ca");
    const e = loadConfig({ env: { KAS_REDIS_URL: "rediss://r:6380", KAS_REDIS_TLS_CERT_FILE: "/rc", KAS_REDIS_TLS_KEY_FILE: "/rk", KAS_OWN_PRIVATE_API_URL: "grpcs://kas-1:8155" } });
    expect(e.redis).to.deep.equal({ url: "rediss://r:6380", keyPrefix: "gitlab-kas", tls: { certFile: "/rc", keyFile: "/rk" } });
    expect(e.ownPrivateApiUrl).to.equal("grpcs://kas-1:8155");
    expect(() => loadConfig({ env: { KAS_REDIS_URL: "http://r" } })).to.throw(ConfigError, /KAS_REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/);
    expect(() => loadConfig({ env: { KAS_REDIS_KEY_PREFIX: "x" } })).to.throw(ConfigError, /need redis_url/);
    expect(() => loadConfig({ env: { KAS_REDIS_URL: "redis://r", KAS_REDIS_TLS_CERT_FILE: "/c" } })).to.throw(ConfigError, /both redis_tls.cert_file and key_file/);
    expect(() => loadConfig({ env: { KAS_OWN_PRIVATE_API_URL: "http://x:1" } })).to.throw(ConfigError, /grpc:\/\/host:port/);
  });

  it("limits the calls per agent token and minute: 40 000 by default, 0 for none (YAML, then KAS_*)", () => {
    expect(loadConfig({ env: {} }).connectionsPerTokenPerMinute).to.equal(40_000);
    expect(loadConfig({ configFile: file("connections_per_token_per_minute: 100\n"), env: {} }).connectionsPerTokenPerMinute).to.equal(100);
    expect(loadConfig({ env: { KAS_CONNECTIONS_PER_TOKEN_PER_MINUTE: "0" } }).connectionsPerTokenPerMinute).to.equal(0);
    expect(() => loadConfig({ env: { KAS_CONNECTIONS_PER_TOKEN_PER_MINUTE: "-1" } })).to.throw(ConfigError, /non-negative/);
  });

  it("takes the private API secret file from YAML or KAS_PRIVATE_API_SECRET_FILE", () => {
    expect(loadConfig({ env: {} }).privateApiSecretFile).to.equal(undefined);
    const path = file(`private_api_secret_file: /etc/kas/private\n`);
    expect(loadConfig({ configFile: path, env: {} }).privateApiSecretFile).to.equal("/etc/kas/private");
    expect(loadConfig({ configFile: path, env: { KAS_PRIVATE_API_SECRET_FILE: "/run/private" } }).privateApiSecretFile).to.equal("/run/private");
  });

  it("takes the encryption key file from YAML or KAS_ENCRYPTION_KEY_FILE", () => {
    expect(loadConfig({ env: {} }).encryptionKeyFile).to.equal(undefined);
    const path = file(`encryption_key_file: /etc/kas/key\n`);
    expect(loadConfig({ configFile: path, env: {} }).encryptionKeyFile).to.equal("/etc/kas/key");
    expect(loadConfig({ configFile: path, env: { KAS_ENCRYPTION_KEY_FILE: "/run/key" } }).encryptionKeyFile).to.equal("/run/key");
  });

  it("takes the workspace tool images from YAML or the environment", () => {
    const path = file(`workspace_editor_injector_image: mirror/injector:4\nworkspace_project_cloner_image: mirror/git:2\n`);
    expect(loadConfig({ configFile: path, env: {} })).to.deep.include({ workspaceEditorInjectorImage: "mirror/injector:4", workspaceProjectClonerImage: "mirror/git:2" });
    const fromEnv = loadConfig({ env: { KAS_WORKSPACE_EDITOR_INJECTOR_IMAGE: "a/b:1", KAS_WORKSPACE_PROJECT_CLONER_IMAGE: "c/d:2" } });
    expect(fromEnv).to.deep.include({ workspaceEditorInjectorImage: "a/b:1", workspaceProjectClonerImage: "c/d:2" });
  });

  it("takes the Redis URL for events between replicas from YAML or KAS_REDIS_URL", () => {
    expect(loadConfig({ env: {} }).redis?.url).to.equal(undefined);
    const path = file(`redis_url: redis://127.0.0.1:6379/0\n`);
    expect(loadConfig({ configFile: path, env: {} }).redis?.url).to.equal("redis://127.0.0.1:6379/0");
    expect(loadConfig({ configFile: path, env: { KAS_REDIS_URL: "rediss://cache:6380" } }).redis?.url).to.equal("rediss://cache:6380");
    expect(() => loadConfig({ env: { KAS_REDIS_URL: "http://cache" } })).to.throw(ConfigError, /KAS_REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/);
  });

  it("has limits on every listener by default, and takes each from YAML (limits.<listener>) or KAS_<LISTENER>_*", () => {
    const defaults = loadConfig({ env: {} }).limits;
    for (const limits of Object.values(defaults)) {
      expect(limits.maxConnections).to.be.greaterThan(0);
      expect(limits.headersTimeoutMs).to.be.greaterThan(0);
      expect(limits.idleTimeoutMs).to.be.greaterThan(0);
    }
    expect(defaults.agent).to.deep.equal({ maxConnections: 10_000, maxConcurrentStreams: 1_000, headersTimeoutMs: 20_000, idleTimeoutMs: 600_000 });
    const path = file(
      "limits:\n  agent:\n    max_connections: 50\n    max_concurrent_streams: 600\n    headers_timeout_seconds: 5\n    idle_timeout_seconds: 0\n  k8s_proxy:\n    idle_timeout_seconds: 30\n",
    );
    const c = loadConfig({ configFile: path, env: { KAS_AGENT_MAX_CONNECTIONS: "70", KAS_PLATFORM_HEADERS_TIMEOUT_SECONDS: "3" } });
    expect(c.limits.agent).to.deep.equal({ maxConnections: 70, maxConcurrentStreams: 600, headersTimeoutMs: 5_000, idleTimeoutMs: 0 });
    expect(c.limits.k8sProxy.idleTimeoutMs).to.equal(30_000);
    expect(c.limits.k8sProxy.maxConnections).to.equal(defaults.k8sProxy.maxConnections);
    expect(c.limits.platform.headersTimeoutMs).to.equal(3_000);
    expect(() => loadConfig({ configFile: file("limits:\n  agent:\n    max_streams: 1\n"), env: {} })).to.throw(ConfigError, /limits\.agent\.max_streams/);
    expect(() => loadConfig({ configFile: file("limits:\n  platform:\n    max_concurrent_streams: 10\n"), env: {} })).to.throw(ConfigError, /no HTTP\/2/);
    expect(() => loadConfig({ env: { KAS_INTERNAL_HEADERS_TIMEOUT_SECONDS: "0" } })).to.throw(ConfigError, /KAS_INTERNAL_HEADERS_TIMEOUT_SECONDS/);
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

  it("takes the workspace proxy's address, limits, TLS and login URL (YAML, then KAS_WORKSPACES_PROXY_*)", () => {
    const none = loadConfig({ env: {} });
    expect(none.listen.workspacesProxy).to.deep.equal({ host: "127.0.0.1", port: 8156 });
    expect(none.workspacesProxyEnabled).to.equal(true);
    expect(none.workspacesProxyTls).to.equal(undefined);
    const path = file(
      "listen:\n  workspaces_proxy: 0.0.0.0:443\nlimits:\n  workspaces_proxy:\n    max_connections: 50\n" +
        "workspaces_proxy_tls:\n  cert_file: /w.crt\n  key_file: /w.key\nworkspaces_proxy_login_url: https://gitlab.example.com\n",
    );
    const c = loadConfig({ configFile: path, env: {} });
    expect(c.listen.workspacesProxy).to.deep.equal({ host: "0.0.0.0", port: 443 });
    expect(c.limits.workspacesProxy.maxConnections).to.equal(50);
    expect(c.workspacesProxyTls).to.deep.equal({ certFile: "/w.crt", keyFile: "/w.key" });
    expect(c.workspacesProxyLoginUrl).to.equal("https://gitlab.example.com");
    const e = loadConfig({
      configFile: path,
      env: { KAS_WORKSPACES_PROXY_ADDR: ":8443", KAS_WORKSPACES_PROXY_IDLE_TIMEOUT_SECONDS: "30", KAS_WORKSPACES_PROXY_ENABLED: "false" },
    });
    expect(e.listen.workspacesProxy.port).to.equal(8443);
    expect(e.limits.workspacesProxy.idleTimeoutMs).to.equal(30_000);
    expect(e.workspacesProxyEnabled).to.equal(false);
    expect(() => loadConfig({ env: { KAS_WORKSPACES_PROXY_TLS_CERT_FILE: "/c" } })).to.throw(ConfigError, /KAS_WORKSPACES_PROXY_TLS_KEY_FILE/);
    expect(() => loadConfig({ env: { KAS_WORKSPACES_PROXY_MAX_CONCURRENT_STREAMS: "5" } })).to.throw(ConfigError, /no HTTP\/2 streams/);
  });

  it("takes the Kubernetes API proxy's own TLS files, external URL and path prefix (YAML, then KAS_K8S_PROXY_*)", () => {
    const none = loadConfig({ env: {} });
    expect(none.k8sProxyTls).to.equal(undefined);
    expect(none.k8sProxyExternalUrl).to.equal(undefined);
    const path = file(
      `agent_tls:\n  cert_file: /a.crt\n  key_file: /a.key\nk8s_proxy_tls:\n  cert_file: /p.crt\n  key_file: /p.key\n` +
        `k8s_proxy_external_url: https://kas.example.com/k8s-proxy/\n`,
    );
    const c = loadConfig({ configFile: path, env: {} });
    expect(c.agentTls).to.deep.equal({ certFile: "/a.crt", keyFile: "/a.key" });
    expect(c.k8sProxyTls).to.deep.equal({ certFile: "/p.crt", keyFile: "/p.key" });
    expect(c.k8sProxyExternalUrl).to.equal("https://kas.example.com/k8s-proxy");
    const e = loadConfig({
      configFile: path,
      env: { KAS_K8S_PROXY_TLS_CERT_FILE: "/e.crt", KAS_K8S_PROXY_TLS_KEY_FILE: "/e.key", KAS_K8S_PROXY_EXTERNAL_URL: "https://k8s.example.com:8154" },
    });
    expect(e.k8sProxyTls).to.deep.equal({ certFile: "/e.crt", keyFile: "/e.key" });
    expect(e.agentTls).to.deep.equal({ certFile: "/a.crt", keyFile: "/a.key" });
    expect(e.k8sProxyExternalUrl).to.equal("https://k8s.example.com:8154");
    expect(() => loadConfig({ env: { KAS_K8S_PROXY_TLS_KEY_FILE: "/k" } })).to.throw(ConfigError, /KAS_K8S_PROXY_TLS_CERT_FILE/);
    expect(() => loadConfig({ configFile: file("k8s_proxy_tls:\n  cert_file: /c\n  ca_file: /x\n"), env: {} })).to.throw(ConfigError, /k8s_proxy_tls\.ca_file/);
    expect(() => loadConfig({ configFile: file("k8s_proxy_tls:\n  cert_file: /c\n"), env: {} })).to.throw(ConfigError, /k8s_proxy_tls\.key_file/);
    expect(() => loadConfig({ env: { KAS_K8S_PROXY_EXTERNAL_URL: "kas:8154" } })).to.throw(ConfigError, /KAS_K8S_PROXY_EXTERNAL_URL/);
    expect(none.k8sProxyUrlPathPrefix).to.equal("/");
    expect(loadConfig({ configFile: file("k8s_proxy_url_path_prefix: /-/k8s-proxy/\n"), env: {} }).k8sProxyUrlPathPrefix).to.equal("/-/k8s-proxy/");
    expect(loadConfig({ env: { KAS_K8S_PROXY_URL_PATH_PREFIX: "/k8s" } }).k8sProxyUrlPathPrefix).to.equal("/k8s");
    expect(() => loadConfig({ env: { KAS_K8S_PROXY_URL_PATH_PREFIX: "k8s-proxy" } })).to.throw(ConfigError, /KAS_K8S_PROXY_URL_PATH_PREFIX/);
    expect(() => loadConfig({ env: { KAS_K8S_PROXY_URL_PATH_PREFIX: "/a/../b" } })).to.throw(ConfigError, /KAS_K8S_PROXY_URL_PATH_PREFIX/);
  });

  it("limits platform request bodies and pushes (YAML, then KAS_MAX_REQUEST_BODY_BYTES / KAS_MAX_PUSH_BYTES)", () => {
    const none = loadConfig({ env: {} });
    expect(none.maxRequestBodyBytes).to.equal(1024 * 1024);
    expect(none.maxPushBytes).to.equal(100 * 1024 * 1024);
    const path = file("max_request_body_bytes: 65536\nmax_push_bytes: 10485760\n");
    expect(loadConfig({ configFile: path, env: {} })).to.deep.include({ maxRequestBodyBytes: 65536, maxPushBytes: 10485760 });
    const e = loadConfig({ configFile: path, env: { KAS_MAX_REQUEST_BODY_BYTES: "2048", KAS_MAX_PUSH_BYTES: "4096" } });
    expect(e).to.deep.include({ maxRequestBodyBytes: 2048, maxPushBytes: 4096 });
    expect(() => loadConfig({ configFile: file("max_push_bytes: 0\n"), env: {} })).to.throw(ConfigError, /max_push_bytes/);
    expect(() => loadConfig({ env: { KAS_MAX_REQUEST_BODY_BYTES: "1MB" } })).to.throw(ConfigError, /KAS_MAX_REQUEST_BODY_BYTES/);
  });

  it("takes the proxy's re-authorization interval and the CI job token lifetime (YAML, then KAS_*)", () => {
    const none = loadConfig({ env: {} });
    expect([none.k8sProxyReauthorizeIntervalSeconds, none.ciJobTokenTtlSeconds]).to.deep.equal([60, 3600]);
    const y = loadConfig({ configFile: file("k8s_proxy_reauthorize_interval_seconds: 0\nci_job_token_ttl_seconds: 30\n"), env: {} });
    expect([y.k8sProxyReauthorizeIntervalSeconds, y.ciJobTokenTtlSeconds]).to.deep.equal([0, 30]);
    const e = loadConfig({ env: { KAS_K8S_PROXY_REAUTHORIZE_INTERVAL_SECONDS: "15", KAS_CI_JOB_TOKEN_TTL_SECONDS: "120" } });
    expect([e.k8sProxyReauthorizeIntervalSeconds, e.ciJobTokenTtlSeconds]).to.deep.equal([15, 120]);
    expect(() => loadConfig({ env: { KAS_K8S_PROXY_REAUTHORIZE_INTERVAL_SECONDS: "-1" } })).to.throw(ConfigError, /KAS_K8S_PROXY_REAUTHORIZE_INTERVAL_SECONDS must be a non-negative integer/);
    expect(() => loadConfig({ env: { KAS_CI_JOB_TOKEN_TTL_SECONDS: "0" } })).to.throw(ConfigError, /KAS_CI_JOB_TOKEN_TTL_SECONDS must be a positive integer/);
  });

  it("derives the KUBECONFIG server from the proxy's listening URL, never a wildcard host", () => {
    expect(proxyUrlForClients("https://127.0.0.1:8154", undefined)).to.equal("https://127.0.0.1:8154");
    expect(proxyUrlForClients("https://0.0.0.0:8154", "https://gitlab.example.com")).to.equal("https://gitlab.example.com:8154");
    expect(proxyUrlForClients("https://[::]:8154/k8s", "http://gitlab.example.com:8080")).to.equal("https://gitlab.example.com:8154/k8s");
    expect(proxyUrlForClients("https://0.0.0.0:8154", undefined)).to.equal(`https://${hostname().toLowerCase()}:8154`);
  });

  it("takes GitLab's observability.tracing (YAML, then KAS_OTLP_*): off by default, bad values named", () => {
    expect(loadConfig({ env: {} }).tracing).to.equal(undefined);
    const path = file(
      `observability:\n  tracing:\n    otlp_endpoint: http://collector:4318/v1/traces\n    otlp_token_secret_file: /run/otlp-token\n`,
    );
    expect(loadConfig({ configFile: path, env: {} }).tracing).to.deep.equal({ otlpEndpoint: "http://collector:4318/v1/traces", otlpTokenSecretFile: "/run/otlp-token" });
    const c = loadConfig({ configFile: path, env: { KAS_OTLP_ENDPOINT: "https://tempo:4318/v1/traces", KAS_OTLP_CA_CERTIFICATE_FILE: "/etc/ca.pem" } });
    expect(c.tracing).to.deep.equal({ otlpEndpoint: "https://tempo:4318/v1/traces", otlpTokenSecretFile: "/run/otlp-token", otlpCaCertificateFile: "/etc/ca.pem" });
    expect(() => loadConfig({ env: { KAS_OTLP_ENDPOINT: "grpc://collector:4317" } })).to.throw(ConfigError, /KAS_OTLP_ENDPOINT must be an http\(s\) URL/);
    expect(() => loadConfig({ env: { KAS_OTLP_ENDPOINT: "http://user:secret@collector:4318/v1/traces" } })).to.throw(ConfigError, /must not carry credentials/);
    expect(() => loadConfig({ env: { KAS_OTLP_TOKEN_SECRET_FILE: "/run/t" } })).to.throw(ConfigError, /need otlp_endpoint/);
    expect(() => loadConfig({ configFile: file("observability:\n  tracing:\n    otlp_url: x\n"), env: {} })).to.throw(ConfigError, /unknown key observability\.tracing\.otlp_url/);
    expect(() => loadConfig({ configFile: file("observability:\n  logging: {}\n"), env: {} })).to.throw(ConfigError, /unknown key observability\.logging/);
  });

  it("parses host:port forms", () => {
    expect(parseHostPort(":8150", "k")).to.deep.equal({ host: "0.0.0.0", port: 8150 });
    expect(parseHostPort("[::]:0", "k")).to.deep.equal({ host: "::", port: 0 });
    expect(() => parseHostPort("host:70000", "k")).to.throw(ConfigError);
  });
});
