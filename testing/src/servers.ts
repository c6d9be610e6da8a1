// Servers in tests: on 127.0.0.1, port 0, closed by the test.
import type { AddressInfo, Server } from "node:net";
import { listen as listenOn } from "@kasbridge/sdk/util";

/** Listens on 127.0.0.1 (or `host`), port 0; resolves with the port, rejects on a listen error. */
export async function listen(server: Server, host = "127.0.0.1"): Promise<number> {
  return (await listenOn(server, 0, host)).port;
}

export function port(server: Server): number {
  return (server.address() as AddressInfo).port;
}

/** Stops listening and waits for open connections to end (callers destroy them first if needed). */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
