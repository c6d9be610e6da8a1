// A TCP proxy between a client and a server under test.
import * as net from "node:net";
import { closeServer, listen } from "./servers.js";

export interface TcpProxyOptions {
  /**
   * Sees every chunk before it is passed on (`toServer`: client -> server). Runs synchronously, so
   * the proxy, and with backpressure the peers, wait for it: e.g. to sample memory as bytes flow.
   */
  onData?(chunk: Buffer, toServer: boolean): void;
}

/**
 * A TCP proxy to 127.0.0.1:targetPort with backpressure both ways. While `frozen` it drops bytes
 * both ways but keeps connections open, like a peer that hangs or a network path that went black.
 * `targetPort` may be a function, asked for each new connection: a load balancer over servers
 * that come and go.
 */
export interface TcpProxy {
  readonly port: number;
  frozen: boolean;
  /** While set, new connections are closed at once and open ones are cut: the server is down. */
  down: boolean;
  close(): Promise<void>;
}

export async function tcpProxy(targetPort: number | (() => number), options: TcpProxyOptions = {}): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  const state = { frozen: false, down: false };
  const server = net.createServer((client) => {
    if (state.down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(typeof targetPort === "function" ? targetPort() : targetPort, "127.0.0.1");
    for (const [from, to, toServer] of [[client, upstream, true], [upstream, client, false]] as const) {
      sockets.add(from);
      from.on("error", () => {});
      from.on("data", (d: Buffer) => {
        if (state.frozen) return;
        options.onData?.(d, toServer);
        if (!to.write(d)) {
          from.pause();
          to.once("drain", () => from.resume());
        }
      });
      from.on("end", () => to.end());
      from.on("close", () => {
        sockets.delete(from);
        to.destroy();
      });
    }
  });
  const port = await listen(server);
  return {
    port,
    get frozen() {
      return state.frozen;
    },
    set frozen(v: boolean) {
      state.frozen = v;
    },
    get down() {
      return state.down;
    },
    set down(v: boolean) {
      state.down = v;
      if (v) for (const s of sockets) s.destroy();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await closeServer(server);
    },
  };
}
