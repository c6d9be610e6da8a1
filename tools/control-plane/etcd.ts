// etcd, kube-apiserver's store: one member on two loopback ports (plain HTTP: loopback only),
// without fsync (the data dies with the test).
import { join } from "node:path";
import type { Supervisor } from "./supervisor.js";

/** Starts etcd with its data in `<dir>/etcd` and waits until it is healthy; resolves to its client URL. */
export async function startEtcd(supervisor: Supervisor, binary: string, dir: string, ports: { client: number; peer: number }): Promise<string> {
  const clientUrl = `http://127.0.0.1:${ports.client}`;
  const peerUrl = `http://127.0.0.1:${ports.peer}`;
  supervisor.start("etcd", binary, [
    "--name=control-plane", `--data-dir=${join(dir, "etcd")}`,
    `--listen-client-urls=${clientUrl}`, `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`, `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=control-plane=${peerUrl}`, "--initial-cluster-state=new",
    "--unsafe-no-fsync", "--log-level=warn",
  ], join(dir, "etcd.log"));
  await supervisor.waitUntil("etcd", async () => {
    const res = await fetch(`${clientUrl}/health`);
    return res.ok && (await res.json() as { health?: string }).health === "true";
  });
  return clientUrl;
}
