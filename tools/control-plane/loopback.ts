// Loopback networking for the components: free ports to give them, and the HTTPS GET (verified
// with the test CA) that their readiness probes use.
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";

/** Distinct free loopback ports (bound then released; a start that loses a race is retried). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const srv = createServer();
      srv.once("error", reject);
      srv.listen(0, "127.0.0.1", () => resolve(srv));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** A component binds a port that was free when picked: retry the start with new ports. */
export function isPortConflict(log: string): boolean {
  return /address already in use/i.test(log);
}

/** GET over HTTPS, trusting only `ca`; 3 s limit. */
export function httpsGet(url: string, ca: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, timeout: 3000 }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}
