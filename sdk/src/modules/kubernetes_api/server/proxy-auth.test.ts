import { describe, it } from "mocha";
import { expect } from "chai";
import {
  PlatformError,
  type AuthorizeProxyUserRequest,
  type JobAllowedAgents,
  type ProxyUserAuthorizationAnswer,
} from "../../../platform-client/platform-client.js";
import { StaticPlatformClient } from "../../../platform-client/static-platform-client.test-support.js";
import { deferred } from "@kasbridge/testing/wait";
import { K8sProxyError } from "./k8s-status.js";
import { ProxyAuthenticator, type ProxyAuthorization } from "./proxy-auth.js";

const job = (id: number): JobAllowedAgents => ({
  allowedAgents: [{ id: 7, configProject: { id: 3 }, configuration: {} }],
  job: { id },
  pipeline: { id: 10 },
  project: { id: 5, groups: [] },
  user: { id: 4, username: "dev", rolesInProject: ["developer"] },
});

/** A platform that counts its lookups, can hold them back (`gate`) and be down (`outage`). */
class ControlledPlatform extends StaticPlatformClient {
  jobs = new Map<string, JobAllowedAgents>([["job-a", job(1)], ["job-b", job(2)], ["job-c", job(3)]]);
  jobLookups: string[] = [];
  userLookups = 0;
  gate: Promise<void> | undefined;
  outage = false;

  async allowedAgentsForJob(token: string): Promise<JobAllowedAgents> {
    this.jobLookups.push(token);
    await this.gate;
    if (this.outage) throw new PlatformError("unavailable", "platform down");
    const j = this.jobs.get(token);
    if (!j) throw new PlatformError("unauthenticated", "unknown job token");
    return j;
  }

  async authorizeProxyUser(req: AuthorizeProxyUserRequest): Promise<ProxyUserAuthorizationAnswer> {
    this.userLookups++;
    if (req.accessKey !== "glpat-good") throw new PlatformError("unauthenticated", "bad token");
    return { agent: { id: req.agentId, configProject: { id: 3 } }, user: { id: 4, username: "dev" }, accessAs: { agent: {} } };
  }
}

function setup(options: { ttlMs?: number; maxEntries?: number } = {}) {
  const platform = new ControlledPlatform();
  const clock = { now: 1_000_000 };
  const auth = new ProxyAuthenticator({ platform, cacheTtlMs: options.ttlMs, maxCacheEntries: options.maxEntries, now: () => clock.now });
  return { platform, clock, auth };
}

async function refusal(p: Promise<ProxyAuthorization>): Promise<K8sProxyError> {
  const outcome = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(outcome instanceof K8sProxyError)) throw new Error(`expected a K8sProxyError, got ${String(outcome)}`);
  return outcome;
}

describe("kubeproxy: the proxy's credential cache (ProxyAuthenticator)", () => {
  it("reuses a platform answer for its TTL (5 s by default), then asks again", async () => {
    const { platform, clock, auth } = setup();
    const first = await auth.authorize("Bearer ci:7:job-a");
    expect(first.caller).to.include({ kind: "ci_job", jobId: 1 });
    clock.now += 4_999;
    // Within the TTL: the same answer, and what was derived from it, without a platform call.
    expect(await auth.authorize("Bearer ci:7:job-a")).to.equal(first);
    expect(platform.jobLookups).to.deep.equal(["job-a"]);
    clock.now += 1;
    expect((await auth.authorize("Bearer ci:7:job-a")).caller).to.include({ jobId: 1 });
    expect(platform.jobLookups).to.deep.equal(["job-a", "job-a"]);
  });

  it("keeps a refusal for another agent as long as the answer it came from", async () => {
    const { platform, auth } = setup();
    const forbidden = await refusal(auth.authorize("Bearer ci:8:job-a"));
    expect(forbidden.code).to.equal(403);
    expect(await refusal(auth.authorize("Bearer ci:8:job-a"))).to.equal(forbidden);
    expect(platform.jobLookups).to.have.length(1);
  });

  it("caches no failure: an unknown token or an outage is asked again on the next request", async () => {
    const { platform, auth } = setup();
    expect((await refusal(auth.authorize("Bearer ci:7:job-unknown"))).code).to.equal(401);
    platform.jobs.set("job-unknown", job(9));
    expect((await auth.authorize("Bearer ci:7:job-unknown")).caller).to.include({ jobId: 9 });
    platform.outage = true;
    expect((await refusal(auth.authorize("Bearer ci:7:job-b"))).code).to.equal(503);
    platform.outage = false;
    expect((await auth.authorize("Bearer ci:7:job-b")).caller).to.include({ jobId: 2 });
    expect(platform.jobLookups).to.deep.equal(["job-unknown", "job-unknown", "job-b", "job-b"]);
  });

  it("shares one platform call among concurrent requests with the same credential", async () => {
    const { platform, auth } = setup();
    const gate = deferred();
    platform.gate = gate.promise;
    const requests = [auth.authorize("Bearer ci:7:job-a"), auth.authorize("Bearer ci:7:job-a"), auth.authorize("Bearer ci:7:job-b")];
    gate.resolve();
    const answers = await Promise.all(requests);
    expect(answers.map((a) => (a.caller as { jobId: number }).jobId)).to.deep.equal([1, 1, 2]);
    expect(platform.jobLookups).to.deep.equal(["job-a", "job-b"]);
  });

  it("evicts the oldest answers beyond maxCacheEntries, never a lookup in flight", async () => {
    const { platform, auth } = setup({ maxEntries: 2 });
    for (const token of ["job-a", "job-b", "job-c"]) await auth.authorize(`Bearer ci:7:${token}`);
    // job-a, the oldest, made room for job-c; job-b and job-c are still cached.
    await auth.authorize("Bearer ci:7:job-b");
    await auth.authorize("Bearer ci:7:job-c");
    expect(platform.jobLookups).to.deep.equal(["job-a", "job-b", "job-c"]);
    await auth.authorize("Bearer ci:7:job-a");
    expect(platform.jobLookups).to.deep.equal(["job-a", "job-b", "job-c", "job-a"]);

    // Three lookups in flight over a limit of two: none is dropped (each is shared until it settles).
    const gate = deferred();
    platform.gate = gate.promise;
    platform.jobs.set("job-d", job(4));
    platform.jobs.set("job-e", job(5));
    platform.jobs.set("job-f", job(6));
    const inFlight = ["job-d", "job-e", "job-f"].map((t) => auth.authorize(`Bearer ci:7:${t}`));
    const again = ["job-d", "job-e", "job-f"].map((t) => auth.authorize(`Bearer ci:7:${t}`));
    gate.resolve();
    await Promise.all([...inFlight, ...again]);
    expect(platform.jobLookups.slice(4)).to.deep.equal(["job-d", "job-e", "job-f"]);
  });

  it("caches a user's answer per agent: the same token for another agent is its own lookup", async () => {
    const { platform, auth } = setup();
    await auth.authorize("Bearer pat:7:glpat-good");
    await auth.authorize("Bearer pat:7:glpat-good");
    expect(platform.userLookups).to.equal(1);
    await auth.authorize("Bearer pat:8:glpat-good");
    expect(platform.userLookups).to.equal(2);
    expect((await refusal(auth.authorize("Bearer pat:7:glpat-bad"))).code).to.equal(401);
    expect((await refusal(auth.authorize("Bearer pat:7:glpat-bad"))).code).to.equal(401);
    expect(platform.userLookups).to.equal(4);
  });
});
