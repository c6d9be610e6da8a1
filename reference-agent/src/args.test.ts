import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { parseAgentArgs, UsageError } from "./args.js";

describe("agentk arguments", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "agentk-args-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("takes GitLab agentk's flags and POD_* identity", () => {
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, "glagent-abc\n");
    const a = parseAgentArgs(
      ["--kas-address", "wss://kas.example.com/-/kubernetes-agent/", "--token-file", tokenFile, "--kas-header", "X-Proxy-Auth: s3cret"],
      { POD_NAME: "agentk-1", POD_NAMESPACE: "gitlab-agent" },
    );
    expect(a.token).to.equal("glagent-abc");
    expect(a.headers).to.deep.equal({ "x-proxy-auth": "s3cret" });
    expect(a.podName).to.equal("agentk-1");
    expect(a.podNamespace).to.equal("gitlab-agent");
    // GitLab's default: the observability listener on :8080, plain HTTP; readiness after 60 s without KAS.
    expect(a.observability).to.deep.equal({ host: "0.0.0.0", port: 8080, certFile: undefined, keyFile: undefined });
    expect(a.kasLossTimeoutMs).to.equal(60_000);
  });

  it("serves observability where --observability-listen-address says, with TLS when given a certificate", () => {
    const b = parseAgentArgs(["--kas-address", "grpc://x:1"], { AGENTK_TOKEN: "t", AGENTK_OBSERVABILITY_LISTEN_ADDRESS: "[::1]:0" });
    expect(b.observability).to.include({ host: "::1", port: 0 });
    const c = parseAgentArgs(
      ["--kas-address", "grpc://x:1", "--observability-listen-network", "tcp6", "--observability-listen-address", ":9090", "--observability-cert-file", "c.pem", "--observability-key-file", "k.pem", "--readiness-kas-loss-timeout-ms", "5000"],
      { AGENTK_TOKEN: "t" },
    );
    expect(c.observability).to.deep.equal({ host: "::", port: 9090, certFile: "c.pem", keyFile: "k.pem" });
    expect(c.kasLossTimeoutMs).to.equal(5000);
    const bad = (args: string[], message: RegExp) => expect(() => parseAgentArgs(["--kas-address", "grpc://x:1", ...args], { AGENTK_TOKEN: "t" })).to.throw(UsageError, message);
    bad(["--observability-listen-address", "8080"], /observability-listen-address/);
    bad(["--observability-listen-network", "unix"], /observability-listen-network/);
    bad(["--observability-cert-file", "c.pem"], /go together/);
    bad(["--readiness-kas-loss-timeout-ms=-1"], /readiness-kas-loss-timeout-ms/);
  });

  it("takes the scanner's ServiceAccount from SERVICE_ACCOUNT_NAME and the container scanning flags", () => {
    const a = parseAgentArgs(
      [
        "--kas-address", "grpc://x:1",
        "--container-scanning-image", "registry.example/trivy:0.45.0",
        "--container-scanning-poll-interval-ms", "500",
        "--container-scanning-rescan-delay-ms", "2000",
      ],
      { AGENTK_TOKEN: "t", SERVICE_ACCOUNT_NAME: "agent-sa" },
    );
    expect(a.serviceAccountName).to.equal("agent-sa");
    expect(a.containerScanning).to.deep.equal({ image: "registry.example/trivy:0.45.0", pollIntervalMs: 500, rescanDelayMs: 2000 });
    expect(parseAgentArgs(["--kas-address", "grpc://x:1"], { AGENTK_TOKEN: "t" }).containerScanning).to.deep.equal({
      image: undefined,
      pollIntervalMs: undefined,
      rescanDelayMs: undefined,
    });
    expect(() => parseAgentArgs(["--kas-address", "grpc://x:1", "--container-scanning-poll-interval-ms", "0"], { AGENTK_TOKEN: "t" })).to.throw(
      UsageError,
      /--container-scanning-poll-interval-ms must be a positive integer/,
    );
  });

  it("exports spans when --otlp-endpoint (or AGENTK_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, off otherwise", () => {
    const base = ["--kas-address", "grpc://kas:8150"];
    const env = { AGENTK_TOKEN: "t" };
    expect(parseAgentArgs(base, env).tracing).to.equal(undefined);
    expect(parseAgentArgs([...base, "--otlp-endpoint", "https://tempo:4318/v1/traces", "--otlp-token-secret-file", "/run/tok", "--otlp-ca-certificate-file", "/ca.pem"], env).tracing).to.deep.equal({
      otlpEndpoint: "https://tempo:4318/v1/traces",
      otlpTokenSecretFile: "/run/tok",
      otlpCaCertificateFile: "/ca.pem",
    });
    expect(parseAgentArgs(base, { ...env, AGENTK_OTLP_ENDPOINT: "http://c:4318/v1/traces", AGENTK_OTLP_TOKEN_SECRET_FILE: "/t" }).tracing).to.deep.include({ otlpEndpoint: "http://c:4318/v1/traces", otlpTokenSecretFile: "/t" });
    expect(parseAgentArgs(base, { ...env, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://o:4318/v1/traces" }).tracing?.otlpEndpoint).to.equal("http://o:4318/v1/traces");
    expect(() => parseAgentArgs([...base, "--otlp-endpoint", "collector:4317"], env)).to.throw(UsageError, /--otlp-endpoint must be an http\(s\) URL/);
    expect(() => parseAgentArgs([...base, "--otlp-endpoint", "http://u:p@c/v1/traces"], env)).to.throw(UsageError, /credentials/);
    expect(() => parseAgentArgs([...base, "--otlp-token-secret-file", "/t"], env)).to.throw(UsageError, /need --otlp-endpoint/);
  });

  it("refuses bad input with usage errors", () => {
    expect(() => parseAgentArgs([], { AGENTK_TOKEN: "t" })).to.throw(UsageError, /--kas-address/);
    expect(() => parseAgentArgs(["--kas-address", "http://x:1"], { AGENTK_TOKEN: "t" })).to.throw(UsageError, /grpc/);
    expect(() => parseAgentArgs(["--kas-address", "grpc://x:1"], {})).to.throw(UsageError, /token/);
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, "t");
    expect(() => parseAgentArgs(["--kas-address", "grpc://x:1", "--token-file", tokenFile], { AGENTK_TOKEN: "t" })).to.throw(UsageError, /not both/);
    expect(() => parseAgentArgs(["--kas-address", "grpc://x:1", "--log-level", "loud"], { AGENTK_TOKEN: "t" })).to.throw(UsageError, /log-level/);
    expect(() => parseAgentArgs(["--kas-address", "grpc://x:1", "--kas-header", "novalue"], { AGENTK_TOKEN: "t" })).to.throw(UsageError, /kas-header/);
    expect(() => parseAgentArgs(["--kas-address", "grpc://x:1", "--workspaces-proxy-mode", "ingress"], { AGENTK_TOKEN: "t" })).to.throw(UsageError, /port-forward, service/);
    expect(parseAgentArgs(["--kas-address", "grpc://x:1"], { AGENTK_TOKEN: "t" }).workspacesProxyMode).to.equal("port-forward");
    expect(parseAgentArgs(["--kas-address", "grpc://x:1"], { AGENTK_TOKEN: "t", AGENTK_WORKSPACES_PROXY_MODE: "service" }).workspacesProxyMode).to.equal("service");
  });
});
