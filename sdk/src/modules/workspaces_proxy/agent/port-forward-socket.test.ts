import { expect } from "chai";
import http from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { waitFor } from "@kasbridge/testing/wait";
import { kubeConfig } from "../../kubernetes_api/kubernetes-api.test-support.js";
import { openPortForward } from "./port-forward-socket.js";

/**
 * A stand-in for the API server's (kubelet's) port-forward over WebSocket: the channel protocol
 * `v4.channel.k8s.io`, each channel's first message the port; data on channel 0 is echoed in
 * upper case, "fail" answers an error on channel 1.
 */
async function fakePortForward(cleanup: Cleanup) {
  const seen: Array<{ url: string; authorization?: string; protocol: string }> = [];
  const server = http.createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({
    server,
    handleProtocols: (protocols) => (protocols.has("v4.channel.k8s.io") ? "v4.channel.k8s.io" : false),
    verifyClient: (info, callback) => callback(!info.req.url?.includes("/pods/missing/"), 404),
  });
  wss.on("connection", (ws: WebSocket, req) => {
    seen.push({ url: req.url ?? "", authorization: req.headers.authorization, protocol: ws.protocol });
    const port = Number(new URL(req.url ?? "/", "http://x").searchParams.get("ports"));
    const portBytes = Buffer.alloc(2);
    portBytes.writeUInt16LE(port);
    ws.send(Buffer.concat([Buffer.of(0), portBytes]));
    ws.send(Buffer.concat([Buffer.of(1), portBytes]));
    ws.on("message", (data: Buffer) => {
      const text = data.subarray(1).toString("utf8");
      if (text === "fail") ws.send(Buffer.concat([Buffer.of(1), Buffer.from("connection refused")]));
      else if (text === "bye") ws.close();
      else ws.send(Buffer.concat([Buffer.of(0), Buffer.from(text.toUpperCase())]));
    });
  });
  const port = await listen(server);
  cleanup.add(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    return closeServer(server);
  });
  return { url: `http://127.0.0.1:${port}`, seen };
}

function readAll(stream: Duplex): { text(): string } {
  let text = "";
  stream.on("data", (d: Buffer) => (text += d.toString("utf8")));
  return { text: () => text };
}

describe("workspaces_proxy agent: port-forward over the API server's WebSocket", () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  it("speaks the channel protocol with the agent's credentials: port prefixes skipped, data both ways, closed by the far end", async () => {
    const api = await fakePortForward(cleanup);
    const stream = await openPortForward(await kubeConfig(api.url, "agent-sa-token"), { namespace: "ns-1", pod: "web-0", port: 3000 }, new AbortController().signal);
    cleanup.track(stream);
    expect(api.seen).to.deep.equal([{ url: "/api/v1/namespaces/ns-1/pods/web-0/portforward?ports=3000", authorization: "Bearer agent-sa-token", protocol: "v4.channel.k8s.io" }]);
    const received = readAll(stream);
    stream.write("hello ");
    stream.write("world");
    await waitFor(() => received.text() === "HELLO WORLD", undefined, "the echo");
    const ended = new Promise<void>((resolve) => stream.once("end", resolve));
    stream.write("bye");
    await ended;
  });

  it("fails the stream with the error channel's message", async () => {
    const api = await fakePortForward(cleanup);
    const stream = await openPortForward(await kubeConfig(api.url, "t"), { namespace: "ns", pod: "p", port: 8080 }, new AbortController().signal);
    const failed = new Promise<Error>((resolve) => stream.once("error", resolve));
    stream.resume();
    stream.write("fail");
    expect((await failed).message).to.equal("port-forward to ns/p:8080: connection refused");
  });

  it("names the refusal when the API server answers no WebSocket", async () => {
    const api = await fakePortForward(cleanup);
    const kc = await kubeConfig(api.url, "t");
    const err = await openPortForward(kc, { namespace: "ns", pod: "missing", port: 1 }, new AbortController().signal).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).to.equal("the API server refused the port-forward to ns/missing:1 (HTTP 404)");
  });
});
