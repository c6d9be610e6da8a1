import { expect } from "chai";
import { createClient } from "@connectrpc/connect";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { createAgentApiListener } from "./agent-api-listener.js";
import { createAgentTransport } from "./agent-transport.js";
import { echoHandler } from "./fixtures.test.js";
import { coalesce } from "./websocket-tunnel.js";

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
});
