import { expect } from "chai";
import type { AddressInfo } from "node:net";
import { createClient } from "@connectrpc/connect";
import { WebSocket, WebSocketServer } from "ws";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { HUNG_MS, waitFor, within } from "@kasbridge/testing/wait";
import { createAgentApiListener } from "./agent-api-listener.js";
import { createAgentTransport } from "./agent-transport.js";
import { echoHandler } from "./fixtures.test-support.js";
import { WS_TUNNEL_SUBPROTOCOL, coalesce, dialWebSocketTunnel } from "./websocket-tunnel.js";

describe("transport/websocket-tunnel", function () {
  this.timeout(20_000);

  it("joins writes into messages no bigger than the cap, in order", () => {
    const b = (n: number, fill: number): Buffer => Buffer.alloc(n, fill);
    const out = coalesce([b(3, 1), b(4, 2), b(2, 3), b(10, 4), b(1, 5)], 8);
    expect(out.map((m) => m.length)).to.deep.equal([7, 2, 10, 1]);
    expect(Buffer.concat(out)).to.deep.equal(Buffer.concat([b(3, 1), b(4, 2), b(2, 3), b(10, 4), b(1, 5)]));
    expect(coalesce([], 8)).to.deep.equal([]);
  });

  it("keeps messages small when HTTP/2 flow-control windows are wide", async () => {
    // With a 32 MiB window a single HTTP/2 write can carry megabytes; GitLab
    // peers refuse WebSocket messages over 10 MiB, this listener over 1 MiB.
    const window = 32 * 1024 * 1024;
    const listener = await createAgentApiListener({
      handler: echoHandler(),
      port: 0,
      webSocketMaxMessageBytes: 1024 * 1024,
      http2Settings: { initialWindowSize: 16 * 1024 * 1024 },
    });
    listener.onSessionOpen((session) => session.setLocalWindowSize(window));
    const t = createAgentTransport({ url: listener.url("ws"), sendCompression: null });
    try {
      const client = createClient(EchoService, t.transport);
      const res = await client.clientStream(
        (async function* () {
          for (let i = 0; i < 20; i++) yield { payload: new Uint8Array(1024 * 1024) };
        })(),
      );
      expect(res.totalBytes).to.equal(20n * 1024n * 1024n);
    } finally {
      t.close();
      await listener.close(0);
    }
  });

  it("closes a ws-tunnel whose agent sends a message over the limit (1009) and keeps serving", async () => {
    const listener = await createAgentApiListener({ handler: echoHandler(), port: 0, webSocketMaxMessageBytes: 64 * 1024 });
    const ws = new WebSocket(listener.url("ws"), [WS_TUNNEL_SUBPROTOCOL]);
    const t = createAgentTransport({ url: listener.url("ws"), sendCompression: null });
    try {
      await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
      const closed = new Promise<number>((resolve) => ws.once("close", (code: number) => resolve(code)));
      ws.on("error", () => {});
      ws.send(Buffer.alloc(64 * 1024 + 1, 0x5a));
      expect(await within(HUNG_MS, closed, "tunnel close")).to.equal(1009); // Message Too Big
      await waitFor(() => listener.sessions.size === 0, HUNG_MS, "the session to close");
      // Messages up to the limit pass, and other agents are served.
      const client = createClient(EchoService, t.transport);
      const payload = new Uint8Array(32 * 1024).fill(3);
      expect((await client.echo({ payload })).payload).to.deep.equal(payload);
    } finally {
      ws.terminate();
      t.close();
      await listener.close(0);
    }
  });

  it("closes the agent's ws-tunnel when KAS sends a message over the agent's limit (1009)", async () => {
    const server = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: () => WS_TUNNEL_SUBPROTOCOL });
    const peerClosed = new Promise<number>((resolve) =>
      server.on("connection", (peer) => {
        peer.on("error", () => {});
        peer.once("close", (code: number) => resolve(code));
        peer.send(Buffer.alloc(64 * 1024 + 1, 0x5a));
      }),
    );
    try {
      await new Promise((resolve) => server.once("listening", resolve));
      const { port } = server.address() as AddressInfo;
      const { stream } = dialWebSocketTunnel(`ws://127.0.0.1:${port}`, { maxMessageBytes: 64 * 1024 });
      const received: Buffer[] = [];
      stream.on("data", (d: Buffer) => received.push(d));
      const failed = new Promise<Error & { code?: string }>((resolve) => stream.once("error", resolve));
      expect((await within(HUNG_MS, failed, "tunnel failure")).code).to.equal("WS_ERR_UNSUPPORTED_MESSAGE_LENGTH");
      expect(await within(HUNG_MS, peerClosed, "KAS side close")).to.equal(1009); // Message Too Big
      expect(received).to.deep.equal([]); // nothing of the message reached HTTP/2
    } finally {
      for (const peer of server.clients) peer.terminate();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
