import { randomBytes } from "node:crypto";

/** A random positive int63, chosen once per agent process (GitLab's pod_id). */
export function randomPodId(): bigint {
  return randomBytes(8).readBigUInt64BE() & 0x7fff_ffff_ffff_ffffn || 1n;
}
