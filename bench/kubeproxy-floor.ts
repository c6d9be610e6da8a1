/**
 * The floor of the kubeproxy benchmark (`bench/kubeproxy.ts`): the proxy's hop count with no
 * kasbridge code on the path, only node:http2 forwarders from `bench/passthrough.ts`, each hop in
 * its own process as KAS and the agent are:
 *
 *   client ──HTTP/2+TLS──> A ──one HTTP/2 connection (h2c)──> B ──HTTPS keep-alive──> kube-apiserver
 *
 *   node kubeproxy-floor.js a   TLS HTTP/2 server (the proxy's certificate), every stream replayed
 *                               as-is on one h2c connection to B (as the tunnel is one connection)
 *   node kubeproxy-floor.js b   h2c server, every stream replayed as an HTTP/1.1 request on a
 *                               keep-alive https.Agent pool with the agent's bearer token (as the
 *                               agent reaches the API server), response piped back
 *
 * No parsing, no authentication, no logging: the least any design with these hops can do.
 * IPC as kubeproxy-servers.ts: -> { type: "ready", url }; <- { type: "cpu" | "close" }.
 * Environment: BENCH_KP_FLOOR_TARGET (a: B's URL), BENCH_KP_TLS_CERT/KEY (a);
 * BENCH_KP_API_URL, BENCH_KP_API_CA, BENCH_KP_API_TOKEN (b).
 */
import { readFileSync } from "node:fs";
import { startForwarder, startHttp1Forwarder, type BenchServer } from "./passthrough.js";

if (!process.send) throw new Error("run as a forked child");
const send = process.send.bind(process);
const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const role = process.argv[2];
let server: BenchServer;
if (role === "a") {
  server = await startForwarder(env("BENCH_KP_FLOOR_TARGET"), {
    tls: { cert: readFileSync(env("BENCH_KP_TLS_CERT")), key: readFileSync(env("BENCH_KP_TLS_KEY")) },
  });
} else if (role === "b") {
  server = await startHttp1Forwarder(env("BENCH_KP_API_URL"), {
    ca: readFileSync(env("BENCH_KP_API_CA")),
    setHeaders: { authorization: `Bearer ${env("BENCH_KP_API_TOKEN")}` },
  });
} else {
  throw new Error(`unknown role ${role}: expected a or b`);
}
send({ type: "ready", url: server.url });

process.on("message", (msg: { type: string }) => {
  if (msg.type === "cpu") send({ type: "cpu", usage: process.cpuUsage() });
  if (msg.type !== "close") return;
  void server.close().finally(() => {
    process.disconnect();
    process.exit(0);
  });
});
process.on("disconnect", () => process.exit(0));
