import type { AddressInfo, Server } from "node:net";

/**
 * Starts `server` listening on `host`:`port` (0: a free port); resolves with the bound address,
 * rejects with the listen error (address in use, permission) and leaves no listener behind.
 */
export function listen(server: Server, port: number, host: string): Promise<{ host: string; port: number }> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      const bound = server.address() as AddressInfo;
      resolve({ host: bound.address, port: bound.port });
    });
  });
}
