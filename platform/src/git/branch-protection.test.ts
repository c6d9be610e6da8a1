import { PassThrough } from "node:stream";
import { expect } from "chai";
import { describe, it } from "mocha";
import { AccessLevel } from "../services/access-levels.js";
import type { ProtectedBranch } from "../services/protected-branches.js";
import { BRANCH_PROTECTION_MESSAGES as M, decidePush, type PushPolicyInput } from "./branch-protection.js";
import { PushRequestError, parseCommandList, peekPushCommands } from "./receive-pack-commands.js";
import { pkt } from "./git-fixtures.test-support.js";
import { formatDecisions } from "./repositories.js";

const ZERO = "0".repeat(40);
const A = "a".repeat(40);
const B = "b".repeat(40);

function rule(name: string, push = 40, merge = 40, allowForcePush = false): ProtectedBranch {
  return { id: 1, projectId: 1, name, pushAccessLevel: push, mergeAccessLevel: merge, allowForcePush, createdAt: new Date(0) };
}

function decide(ref: string, before: string, after: string, overrides: Partial<PushPolicyInput> = {}) {
  const [decision] = decidePush({
    commands: [{ before, after, ref }],
    rules: [rule("main")],
    access: AccessLevel.DEVELOPER,
    isAdmin: false,
    defaultBranch: "main",
    projectPath: "g/p",
    emptyRepository: false,
    ...overrides,
  });
  return decision;
}

describe("platform/git branch protection decisions (GitLab's BranchCheck)", () => {
  it("refuses Developers on the protected default branch and lets them use others", () => {
    expect(decide("refs/heads/main", A, B)).to.deep.equal({ ref: "refs/heads/main", action: "deny", message: [M.push] });
    expect(decide("refs/heads/feature", A, B).action).to.equal("allow");
    expect(decide("refs/heads/feature", ZERO, B).action).to.equal("allow");
    expect(decide("refs/heads/feature", A, ZERO).action).to.equal("allow");
    expect(decide("refs/tags/v1", ZERO, A).action).to.equal("allow");
    expect(decide("refs/heads/main", A, ZERO)).to.deep.include({ action: "deny", message: [M.deleteDefaultBranch] });
  });

  it("lets Maintainers and admins push, never force-push unless a rule allows it", () => {
    const maintainer = { access: AccessLevel.MAINTAINER };
    expect(decide("refs/heads/main", A, B, maintainer)).to.deep.equal({ ref: "refs/heads/main", action: "no-force", message: [M.forcePush] });
    expect(decide("refs/heads/main", A, B, { access: AccessLevel.OWNER, isAdmin: true }).action).to.equal("no-force");
    expect(decide("refs/heads/main", A, B, { ...maintainer, rules: [rule("main"), rule("ma*", 40, 40, true)] }).action).to.equal("allow");
    const branchOnlyRule = { ...maintainer, rules: [rule("main"), rule("release")] };
    expect(decide("refs/heads/release", A, ZERO, branchOnlyRule)).to.deep.include({ message: [M.nonWebDelete] });
    expect(decide("refs/heads/release", A, ZERO, { rules: [rule("release")] })).to.deep.include({ message: [M.nonMaintainerDelete] });
  });

  it("matches wildcard rules on the whole name and checks levels as GitLab's ProtectedRefAccess", () => {
    const rules = [rule("main"), rule("release/*", 30, 30), rule("*-stable", 40, 30), rule("frozen", 0, 0), rule("admins", 60, 60)];
    expect(decide("refs/heads/release/1/2", A, B, { rules }).action).to.equal("no-force");
    expect(decide("refs/heads/old-release/1", A, B, { rules }).action).to.equal("allow");
    expect(decide("refs/heads/1-stable", ZERO, A, { rules })).to.deep.include({ message: [M.nonWebCreate] });
    expect(decide("refs/heads/frozen", ZERO, A, { rules, access: AccessLevel.OWNER, isAdmin: true })).to.deep.include({ message: [M.create] });
    expect(decide("refs/heads/admins", A, B, { rules, access: AccessLevel.OWNER })).to.deep.include({ message: [M.push] });
    expect(decide("refs/heads/admins", A, B, { rules, access: AccessLevel.OWNER, isAdmin: true }).action).to.equal("no-force");
  });

  it("in an empty repository, lets only Maintainers create the first branch", () => {
    const empty = { emptyRepository: true };
    expect(decide("refs/heads/topic", ZERO, A, empty)).to.deep.equal({
      ref: "refs/heads/topic",
      action: "deny",
      message: ["A default branch (e.g. main) does not yet exist for g/p", "Ask a project Owner or Maintainer to create a default branch."],
    });
    expect(decide("refs/heads/main", ZERO, A, { ...empty, access: AccessLevel.MAINTAINER }).action).to.equal("allow");
    // Without a rule on the default branch, an empty repository is like any other.
    expect(decide("refs/heads/main", ZERO, A, { ...empty, rules: [] }).action).to.equal("allow");
  });

  it("refuses branch names that look like commit ids", () => {
    expect(decide(`refs/heads/${"c".repeat(40)}`, ZERO, A)).to.deep.include({ message: [M.hexBranchName] });
    expect(decide(`refs/heads/${"c".repeat(40)}/x`, ZERO, A)).to.deep.include({ message: [M.hexBranchName] });
    expect(decide(`refs/heads/${"c".repeat(39)}`, ZERO, A).action).to.equal("allow");
  });

  it("writes one hook line per decision and message line", () => {
    expect(
      formatDecisions([
        { ref: "refs/heads/a", action: "allow" },
        { ref: "refs/heads/main", action: "deny", message: ["line one", "line\ntwo"] },
        { ref: "refs/heads/b", action: "no-force", message: [M.forcePush] },
      ]),
    ).to.equal(`allow refs/heads/a\ndeny refs/heads/main line one\ndeny refs/heads/main line two\nno-force refs/heads/b ${M.forcePush}\n`);
    expect(() => formatDecisions([{ ref: "refs/heads/a b", action: "allow" }])).to.throw(/not a ref name/);
  });
});

describe("platform/git receive-pack command lists", () => {

  it("parses commands after shallow lines and stops at the flush packet", () => {
    const data = Buffer.from(
      pkt(`shallow ${A}\n`) + pkt(`${ZERO} ${A} refs/heads/main\0report-status side-band-64k\n`) + pkt(`${A} ${ZERO} refs/heads/old\n`) + "0000PACK...",
    );
    expect(parseCommandList(data)).to.deep.equal([
      { before: ZERO, after: A, ref: "refs/heads/main" },
      { before: A, after: ZERO, ref: "refs/heads/old" },
    ]);
    expect(parseCommandList(data.subarray(0, 30))).to.equal(undefined); // needs more
    expect(parseCommandList(Buffer.from("0000"))).to.deep.equal([]);
  });

  it("refuses what git would not send", () => {
    for (const bad of ["xyz1", "0003", pkt("not a command\n") + "0000", pkt(`${ZERO} ${A}\n`) + "0000", pkt(`${ZERO} ${A} refs/heads/a b\n`) + "0000", pkt(`${ZERO} ${A} refs/heads/a\tb\n`) + "0000"]) {
      expect(() => parseCommandList(Buffer.from(bad)), bad).to.throw(PushRequestError);
    }
    expect(() => parseCommandList(Buffer.from(pkt(`${ZERO} ${A} refs/heads/a\0caps\n`) + pkt(`${ZERO} ${A} refs/heads/b\0caps\n`) + "0000"))).to.throw(
      PushRequestError,
    );
  });

  it("puts back what it read, so the next reader gets the whole body", async () => {
    const body = new PassThrough();
    const head = pkt(`${ZERO} ${A} refs/heads/main\0report-status\n`) + "0000";
    body.write(head.slice(0, 10));
    setImmediate(() => body.end(Buffer.from(head.slice(10) + "PACKDATA")));
    const commands = await peekPushCommands(body, 1024);
    expect(commands).to.have.length(1);
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).to.equal(head + "PACKDATA");

    const endless = new PassThrough();
    endless.write(pkt(`${ZERO} ${A} refs/heads/a\0caps\n`).repeat(1));
    endless.write(pkt(`${ZERO} ${A} refs/heads/b\n`).repeat(40));
    await peekPushCommands(endless, 1024).then(
      () => expect.fail("no limit"),
      (err: unknown) => expect((err as Error).message).to.include("longer than 1024 bytes"),
    );
  });
});
