// TLS of the Kubernetes API proxy listener (8154), over real TLS connections to a real `kas`: its
// own certificate (KAS_K8S_PROXY_TLS_*), the agent API's as the fallback, HTTP/2 and HTTP/1.1 by
// ALPN, and the server URL of the KUBECONFIG that CI jobs get.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { expect } from "chai";
import { parse as parseYaml } from "yaml";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { api, createAgentWithToken, startKas, type KasProcess } from "./harness.test-support.js";

describe("e2e: Kubernetes API proxy TLS listener", function () {
  this.timeout(60_000);
  const dir = mkdtempSync(join(tmpdir(), "kubeproxy-tls-e2e-"));
  const agentCert = selfSignedCertificateFiles(dir, "agent", "kas-agent-api");
  const proxyCert = selfSignedCertificateFiles(dir, "proxy", "kas-k8s-proxy");
  const cleanups = new Cleanup();
  cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
  after(() => cleanups.run());

  async function kas(env: Record<string, string>) {
    const k = await startKas(env);
    cleanups.add(() => k.cleanup());
    return k;
  }

  /** The kubeconfig a CI job of the agent's own configuration project gets. */
  async function jobKubeconfig(k: KasProcess): Promise<{ server: string; token: string }> {
    const agent = await createAgentWithToken(k, "tls");
    const job = await api(k, "POST", `/projects/${agent.projectId}/jobs`, {});
    expect(job.status, JSON.stringify(job.json)).to.equal(201);
    const config = parseYaml(job.json.kubeconfig as string) as { clusters: Array<{ cluster: { server: string } }>; users: Array<{ user: { token: string } }> };
    return { server: config.clusters[0]!.cluster.server, token: config.users[0]!.user.token };
  }

  it("serves its own certificate (KAS_K8S_PROXY_TLS_*), HTTP/2 and HTTP/1.1 by ALPN; the agent API keeps its own", async () => {
    const k = await kas({
      KAS_AGENT_TLS_CERT_FILE: agentCert.certFile,
      KAS_AGENT_TLS_KEY_FILE: agentCert.keyFile,
      KAS_K8S_PROXY_TLS_CERT_FILE: proxyCert.certFile,
      KAS_K8S_PROXY_TLS_KEY_FILE: proxyCert.keyFile,
    });
    const proxyUrl = k.addresses.k8sProxy!;
    expect(proxyUrl).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
    const proxyCa = readFileSync(proxyCert.certFile);

    const h2 = await handshake(proxyUrl, proxyCa, ["h2"]);
    expect(h2).to.deep.equal({ alpn: "h2", commonName: "kas-k8s-proxy" });
    expect(await handshake(proxyUrl, proxyCa, ["http/1.1"])).to.deep.equal({ alpn: "http/1.1", commonName: "kas-k8s-proxy" });
    const agentApi = k.addresses.agent.replace(/^grpcs:/, "https:");
    expect(await handshake(agentApi, readFileSync(agentCert.certFile), ["h2"])).to.deep.equal({ alpn: "h2", commonName: "kas-agent-api" });

    // A CI job's KUBECONFIG points at the proxy's https URL, and its token is checked over both
    // protocols (against an agent of another project, which the job may not use: a quick answer).
    const job = await jobKubeconfig(k);
    expect(job.server).to.equal(proxyUrl);
    const other = await createAgentWithToken(k, "other");
    const otherAgentToken = job.token.replace(/^ci:\d+:/, `ci:${other.agentId}:`);
    for (const version of ["HTTP/2", "HTTP/1.1"] as const) {
      const get = version === "HTTP/2" ? getHttp2 : getHttp1;
      expect((await get(`${proxyUrl}/version`, proxyCa, undefined)).httpVersion).to.equal(version === "HTTP/2" ? "2.0" : "1.1");
      const anonymous = await get(`${proxyUrl}/api/v1/namespaces`, proxyCa, undefined);
      expect(anonymous.status, version).to.equal(401);
      expect(anonymous.headers["gitlab-unauthorized"]).to.equal("true");
      expect(JSON.parse(anonymous.body)).to.include({ kind: "Status", code: 401 });
      const refused = await get(`${proxyUrl}/api/v1/namespaces`, proxyCa, otherAgentToken);
      expect(refused.status, `${version}: ${refused.body}`).to.equal(403);
      expect(JSON.parse(refused.body).message).to.match(new RegExp(`^GitLab Agent Server: forbidden: .*may not use agent ${other.agentId}`));
    }
  });

  it("falls back to the agent API's certificate when the proxy has none", async () => {
    const k = await kas({ KAS_AGENT_TLS_CERT_FILE: agentCert.certFile, KAS_AGENT_TLS_KEY_FILE: agentCert.keyFile });
    expect(k.addresses.k8sProxy).to.match(/^https:/);
    expect(await handshake(k.addresses.k8sProxy!, readFileSync(agentCert.certFile), ["h2", "http/1.1"])).to.deep.equal({ alpn: "h2", commonName: "kas-agent-api" });
    expect((await jobKubeconfig(k)).server).to.equal(k.addresses.k8sProxy);
  });

  it("puts KAS_K8S_PROXY_EXTERNAL_URL, else a reachable host, in the KUBECONFIG; without any certificate the proxy is plain HTTP and says so", async () => {
    const k = await kas({ KAS_K8S_PROXY_EXTERNAL_URL: "https://kas.example.com/k8s-proxy/" });
    expect(k.addresses.k8sProxy).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await jobKubeconfig(k)).server).to.equal("https://kas.example.com/k8s-proxy");
    expect(k.output).to.not.include("the Kubernetes API proxy has no TLS");

    // Listening on every interface: the KUBECONFIG names the platform's host, not 0.0.0.0.
    const wildcard = await kas({ KAS_K8S_PROXY_ADDR: "0.0.0.0:0", KAS_EXTERNAL_URL: "http://gitlab.example.com:8080", KAS_K8S_PROXY_TLS_CERT_FILE: proxyCert.certFile, KAS_K8S_PROXY_TLS_KEY_FILE: proxyCert.keyFile });
    const port = new URL(wildcard.addresses.k8sProxy!).port;
    expect(wildcard.addresses.k8sProxy).to.equal(`https://0.0.0.0:${port}`);
    expect((await jobKubeconfig(wildcard)).server).to.equal(`https://gitlab.example.com:${port}`);

    const plain = await kas({});
    expect((await jobKubeconfig(plain)).server).to.equal(plain.addresses.k8sProxy);
    expect(plain.output).to.include("the Kubernetes API proxy has no TLS");
  });
});

/** A TLS handshake with the given ALPN offer: the protocol chosen and the certificate's CN. */
function handshake(url: string, ca: Buffer, alpn: string[]): Promise<{ alpn: string | false; commonName: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: u.hostname, port: Number(u.port), ca, ALPNProtocols: alpn, servername: "localhost" }, () => {
      const result = { alpn: socket.alpnProtocol ?? false, commonName: String(socket.getPeerCertificate().subject.CN) };
      socket.end();
      resolve(result);
    });
    socket.on("error", reject);
  });
}

interface Answer {
  httpVersion: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function getHttp1(url: string, ca: Buffer, token: string | undefined): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { agent: new https.Agent({ ca, ALPNProtocols: ["http/1.1"] }), headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ httpVersion: res.httpVersion, status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
  });
}

function getHttp2(url: string, ca: Buffer, token: string | undefined): Promise<Answer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const session = http2.connect(u.origin, { ca });
    session.on("error", reject);
    const stream = session.request({ ":path": u.pathname, ...(token ? { authorization: `Bearer ${token}` } : {}) });
    let headers: Answer["headers"] = {};
    let body = "";
    stream.on("response", (h) => (headers = h as Answer["headers"]));
    stream.setEncoding("utf8").on("data", (d: string) => (body += d));
    stream.on("end", () => {
      session.close();
      resolve({ httpVersion: "2.0", status: Number(headers[":status"]), headers, body });
    });
    stream.on("error", reject);
  });
}
