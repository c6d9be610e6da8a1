/**
 * Parsing and validation of an agent's `.gitlab/agents/<agent name>/config.yaml` into the
 * `ConfigurationFile` message, with GitLab's rules:
 *
 * - GitLab's KAS turns the YAML into JSON (sigs.k8s.io/yaml, YAML 1.1) and reads it with protojson:
 *   keys are the proto json names (snake_case), unknown keys and wrong types are errors, `null`
 *   means "not set", durations are protojson strings (`"3600s"`, `"0.5s"`), enums are value names.
 * - It then runs the protoc-gen-validate rules of agentcfg.proto (required non-empty ids, exactly
 *   one `access_as`, enum-like string sets, ...). They are reproduced in RULES below, since our
 *   proto copy carries no validate annotations.
 *
 * Unlike GitLab, every problem is reported (not only the first), each with its key path and line:
 * `ci_access.projects[0].acces_as: unknown key (line 7)`.
 */
import { fromJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import type { DescEnum, DescField, DescMessage } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import {
  LineCounter,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  parseDocument,
  type Document,
  type Node as YamlNode,
  type Pair,
  type YAMLMap,
} from "yaml";
import { ConfigurationFileSchema, type ConfigurationFile } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { globMatcher } from "../modules/gitops/server/glob.js";
import {
  DEFAULT_SCANNER_RESOURCES,
  cadenceProblem,
  namespaceProblem,
  quantityProblem,
  requestOverLimitProblem,
} from "../modules/starboard_vulnerability/scanning-config.js";

/** GitLab KAS's default `agent.configuration.max_configuration_file_size` (128 KiB). */
export const AGENT_CONFIG_MAX_BYTES = 128 * 1024;

/** One thing wrong with a config file. */
export interface AgentConfigProblem {
  /** Key path in json names, e.g. `ci_access.projects[0].access_as`; "" for the file itself. */
  path: string;
  message: string;
  /** 1-based line in the file, when the problem has a place. */
  line?: number;
}

/** Renders a problem as `path: message (line N)`. */
export function formatAgentConfigProblem(p: AgentConfigProblem): string {
  const where = p.line === undefined ? "" : ` (line ${p.line})`;
  return `${p.path === "" ? "config" : p.path}: ${p.message}${where}`;
}

/** A config file that cannot be accepted; `problems` lists every problem found, in file order. */
export class AgentConfigError extends Error {
  override readonly name = "AgentConfigError";
  constructor(readonly problems: readonly AgentConfigProblem[]) {
    super(problems.map(formatAgentConfigProblem).join("; "));
  }
}

export type AgentConfigParseResult =
  | { ok: true; config: ConfigurationFile }
  | { ok: false; problems: AgentConfigProblem[] };

/**
 * Parses and validates a config file. An empty file (or only comments, or `null`) is the empty
 * configuration, as in GitLab. Never throws for bad input.
 */
export function checkAgentConfigFile(source: string | Uint8Array, options: { maxBytes?: number } = {}): AgentConfigParseResult {
  const maxBytes = options.maxBytes ?? AGENT_CONFIG_MAX_BYTES;
  let text: string;
  if (typeof source === "string") {
    text = source;
    if (Buffer.byteLength(text, "utf8") > maxBytes) return tooBig(Buffer.byteLength(text, "utf8"), maxBytes);
  } else {
    if (source.byteLength > maxBytes) return tooBig(source.byteLength, maxBytes);
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(source);
    } catch {
      return { ok: false, problems: [{ path: "", message: "is not valid UTF-8" }] };
    }
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);

  const lineCounter = new LineCounter();
  // YAML 1.1, as GitLab's parsers (go-yaml v2 in KAS, Psych in Rails): `yes`/`on` are booleans,
  // `<<` merges. Duplicate keys are errors.
  const doc = parseDocument(text, { version: "1.1", lineCounter, uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      problems: doc.errors.map((e) => ({
        path: "",
        message: `invalid YAML: ${firstLine(e.message)}`,
        line: e.linePos?.[0]?.line,
      })),
    };
  }
  const walker = new Walker(doc, lineCounter);
  const json = walker.root(doc.contents as YamlNode | null);
  if (walker.problems.length > 0) {
    // Rules run after a message's fields were walked: sort so problems read top to bottom.
    const problems = walker.problems.map((p, i) => ({ p, i }));
    problems.sort((a, b) => (a.p.line ?? 0) - (b.p.line ?? 0) || a.i - b.i);
    return { ok: false, problems: problems.map(({ p }) => p) };
  }
  try {
    return { ok: true, config: fromJson(ConfigurationFileSchema, json ?? {}) };
  } catch (err) {
    // The walk checks everything fromJson does; this is a safety net.
    return { ok: false, problems: [{ path: "", message: (err as Error).message }] };
  }
}

/** Like checkAgentConfigFile, but throws AgentConfigError for a bad file. */
export function parseAgentConfigFile(source: string | Uint8Array, options: { maxBytes?: number } = {}): ConfigurationFile {
  const result = checkAgentConfigFile(source, options);
  if (!result.ok) throw new AgentConfigError(result.problems);
  return result.config;
}

function tooBig(size: number, max: number): AgentConfigParseResult {
  return { ok: false, problems: [{ path: "", message: `file is too big (${size} bytes, maximum is ${max})` }] };
}

/** The yaml package's message without its position suffix and code excerpt (we give the line). */
function firstLine(s: string): string {
  return s.split("\n")[0]!.trim().replace(/\s*at line \d+, column \d+:?$/, "");
}

// ---- the walk: YAML nodes -> protojson value, checked against the message descriptors ----

/** Where a field was found in the file, for rules that need to point at it. */
interface FieldSite {
  keyLine: number | undefined;
  valueLine: number | undefined;
  /** Lines of list items, for rules on items. */
  itemLines: (number | undefined)[];
  /** The value was null (not set). */
  isNull: boolean;
  /** The value had a problem already reported (rules leave the field alone). */
  invalid: boolean;
}

interface MessageSite {
  path: string;
  /** Line of the key that holds this message (or of its first line). */
  line: number | undefined;
  fields: Map<string, FieldSite>;
}

const DURATION_RE = /^(-)?([0-9]+)(?:\.([0-9]{1,9}))?s$/;
/** protojson's range for google.protobuf.Duration: ±10 000 years. */
const MAX_DURATION_SECONDS = 315_576_000_000;

class Walker {
  readonly problems: AgentConfigProblem[] = [];

  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  root(node: YamlNode | null): JsonObject | undefined {
    const n = this.deref(node, "");
    if (n === undefined || this.isNull(n)) return undefined;
    if (!isMap(n)) {
      this.report("", "must be a mapping of top-level keys (gitops, ci_access, ...)", this.lineOf(n));
      return undefined;
    }
    return this.message(ConfigurationFileSchema, n, "", this.lineOf(n));
  }

  private report(path: string, message: string, line: number | undefined): void {
    this.problems.push(line === undefined ? { path, message } : { path, message, line });
  }

  private lineOf(node: YamlNode | null | undefined): number | undefined {
    const offset = node?.range?.[0];
    return offset === undefined ? undefined : this.lines.linePos(offset).line;
  }

  /** Resolves aliases; undefined (after reporting) for an alias to nothing. */
  private deref(node: YamlNode | null | undefined, path: string): YamlNode | null | undefined {
    let n = node;
    for (let hops = 0; n && isAlias(n); hops++) {
      const target = hops < 100 ? (n.resolve(this.doc) as YamlNode | undefined) : undefined;
      if (!target) {
        this.report(path, `unresolved alias *${n.source}`, this.lineOf(n));
        return undefined;
      }
      n = target;
    }
    return n;
  }

  private isNull(node: YamlNode | null | undefined): boolean {
    return node === null || node === undefined || (isScalar(node) && node.value === null);
  }

  /** The pairs of a map, `<<` merges expanded (explicit keys win over merged ones). */
  private pairs(map: YAMLMap, path: string): Pair[] {
    const explicit: Pair[] = [];
    const merged: Pair[] = [];
    for (const pair of map.items as Pair[]) {
      const key = pair.key as YamlNode | null;
      if (isScalar(key) && (key.value === "<<" || (typeof key.value === "symbol" && key.value.description === "<<"))) {
        const value = this.deref(pair.value as YamlNode | null, path);
        const sources = value && isSeq(value) ? (value.items as YamlNode[]).map((i) => this.deref(i, path)) : [value];
        for (const source of sources) {
          if (source && isMap(source)) merged.push(...this.pairs(source, path));
          else this.report(path, "<< must merge a mapping", this.lineOf(key));
        }
      } else {
        explicit.push(pair);
      }
    }
    if (merged.length === 0) return explicit;
    const keyOf = (p: Pair) => (isScalar(p.key) ? String(p.key.value) : undefined);
    const explicitKeys = new Set(explicit.map(keyOf));
    const seen = new Set<string | undefined>();
    // Later merge sources do not override earlier ones (YAML merge semantics).
    const kept = merged.filter((p) => {
      const k = keyOf(p);
      if (explicitKeys.has(k) || seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    return [...kept, ...explicit];
  }

  private message(desc: DescMessage, map: YAMLMap, path: string, line: number | undefined): JsonObject {
    const out: JsonObject = {};
    const site: MessageSite = { path, line, fields: new Map() };
    const oneofSet = new Map<string, string>();
    for (const pair of this.pairs(map, path)) {
      const keyNode = pair.key as YamlNode | null;
      const keyLine = this.lineOf(keyNode);
      if (!isScalar(keyNode) || keyNode.value === null || typeof keyNode.value === "object") {
        this.report(path, "keys must be plain strings", keyLine);
        continue;
      }
      const key = typeof keyNode.value === "string" ? keyNode.value : (keyNode.source ?? String(keyNode.value));
      const fieldPath = path === "" ? key : `${path}.${key}`;
      const field = desc.fields.find((f) => f.jsonName === key || f.name === key);
      if (!field) {
        this.report(fieldPath, "unknown key", keyLine);
        continue;
      }
      const valueNode = this.deref(pair.value as YamlNode | null, fieldPath);
      if (valueNode === undefined) continue;
      const fieldSite: FieldSite = {
        keyLine,
        valueLine: this.lineOf(valueNode) ?? keyLine,
        itemLines: [],
        isNull: this.isNull(valueNode),
        invalid: false,
      };
      site.fields.set(field.name, fieldSite);
      // protojson: null means "not set" for any field.
      if (fieldSite.isNull) continue;
      if (field.oneof) {
        const other = oneofSet.get(field.oneof.name);
        if (other !== undefined) {
          const members = field.oneof.fields.map((f) => f.jsonName).join(", ");
          this.report(fieldPath, `cannot be set together with ${other} (only one of ${members})`, keyLine);
          continue;
        }
        oneofSet.set(field.oneof.name, field.jsonName);
      }
      const before = this.problems.length;
      const value = this.field(field, valueNode!, fieldPath, keyLine, fieldSite);
      if (value !== undefined) out[field.jsonName] = value;
      fieldSite.invalid = this.problems.length > before;
    }
    RULES[desc.typeName]?.(out, new RuleContext(this, site));
    return out;
  }

  private field(field: DescField, node: YamlNode, path: string, keyLine: number | undefined, site: FieldSite): JsonValue | undefined {
    switch (field.fieldKind) {
      case "scalar":
        return this.scalar(field.scalar, node, path);
      case "enum":
        return this.enumValue(field.enum, node, path);
      case "message":
        return this.messageValue(field.message, node, path, keyLine);
      case "list": {
        if (!isSeq(node)) {
          this.report(path, `must be a list${this.got(node)}`, this.lineOf(node));
          return undefined;
        }
        const items: JsonValue[] = [];
        (node.items as (YamlNode | null)[]).forEach((raw, i) => {
          const itemPath = `${path}[${i}]`;
          const item = this.deref(raw, itemPath);
          site.itemLines.push(this.lineOf(item) ?? this.lineOf(node));
          if (item === undefined) return;
          if (this.isNull(item)) {
            this.report(itemPath, "must not be null", this.lineOf(item) ?? this.lineOf(node));
            return;
          }
          let value: JsonValue | undefined;
          if (field.listKind === "scalar") value = this.scalar(field.scalar, item!, itemPath);
          else if (field.listKind === "enum") value = this.enumValue(field.enum, item!, itemPath);
          else value = this.messageValue(field.message, item!, itemPath, this.lineOf(item));
          if (value !== undefined) items.push(value);
        });
        return items;
      }
      case "map":
        // ConfigurationFile has no map fields.
        this.report(path, "map fields are not supported", keyLine);
        return undefined;
    }
  }

  private messageValue(desc: DescMessage, node: YamlNode, path: string, line: number | undefined): JsonValue | undefined {
    if (desc.typeName === "google.protobuf.Duration") return this.duration(node, path);
    if (!isMap(node)) {
      this.report(path, `must be a mapping${this.got(node)}`, this.lineOf(node));
      return undefined;
    }
    return this.message(desc, node, path, line);
  }

  private scalar(type: ScalarType, node: YamlNode, path: string): JsonValue | undefined {
    const line = this.lineOf(node);
    const value = isScalar(node) ? node.value : undefined;
    switch (type) {
      case ScalarType.STRING:
        if (typeof value === "string") return value;
        this.report(path, `must be a string${this.got(node)}`, line);
        return undefined;
      case ScalarType.BOOL:
        if (typeof value === "boolean") return value;
        this.report(path, `must be true or false${this.got(node)}`, line);
        return undefined;
      default:
        // ConfigurationFile has only string and bool scalars; anything else is a schema change.
        this.report(path, `unsupported field type ${ScalarType[type]}`, line);
        return undefined;
    }
  }

  private enumValue(desc: DescEnum, node: YamlNode, path: string): JsonValue | undefined {
    const value = isScalar(node) ? node.value : undefined;
    // protojson accepts value names and numbers; unknown numbers are refused here (agentk would).
    if (typeof value === "string" && desc.values.some((v) => v.name === value)) return value;
    if (typeof value === "number" && desc.values.some((v) => v.number === value)) return value;
    const names = desc.values.map((v) => JSON.stringify(v.name)).join(", ");
    this.report(path, `must be one of ${names}${this.got(node)}`, this.lineOf(node));
    return undefined;
  }

  private duration(node: YamlNode, path: string): JsonValue | undefined {
    const value = isScalar(node) ? node.value : undefined;
    const m = typeof value === "string" ? DURATION_RE.exec(value) : null;
    if (!m || Number(m[2]) > MAX_DURATION_SECONDS) {
      this.report(path, `must be a duration in seconds with an "s" suffix, e.g. "3600s" or "1.5s"${this.got(node)}`, this.lineOf(node));
      return undefined;
    }
    return value as string;
  }

  /** ", got <what>" for type errors. */
  private got(node: YamlNode): string {
    if (isMap(node)) return ", got a mapping";
    if (isSeq(node)) return ", got a list";
    if (isScalar(node)) {
      const v = node.value;
      if (typeof v === "string") return `, got ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
      if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return `, got ${String(v)}`;
    }
    return "";
  }

  /** Used by rules. */
  addProblem(path: string, message: string, line: number | undefined): void {
    this.report(path, message, line);
  }
}

// ---- protoc-gen-validate rules of GitLab's agentcfg.proto ----

class RuleContext {
  constructor(
    private readonly walker: Walker,
    private readonly site: MessageSite,
  ) {}

  private path(field?: string, index?: number): string {
    let p = field === undefined ? this.site.path : this.site.path === "" ? field : `${this.site.path}.${field}`;
    if (index !== undefined) p += `[${index}]`;
    return p;
  }

  /** `string.min_bytes = 1` on a field that must be present (proto3 string: absent = ""). */
  nonEmpty(msg: JsonObject, field: string): void {
    const where = this.site.fields.get(field);
    if (where?.invalid) return;
    if (where === undefined) this.walker.addProblem(this.path(field), "is required", this.site.line);
    else if (msg[field] === "" || where.isNull) this.walker.addProblem(this.path(field), "must not be empty", where.valueLine);
  }

  /** `string.min_bytes = 1` on an optional field: checked only when set. */
  nonEmptyIfSet(msg: JsonObject, field: string): void {
    if (msg[field] === "") this.walker.addProblem(this.path(field), "must not be empty", this.site.fields.get(field)?.valueLine);
  }

  /** `repeated.items.string.min_bytes = 1`. */
  nonEmptyItems(msg: JsonObject, field: string): void {
    const items = msg[field];
    if (!Array.isArray(items)) return;
    items.forEach((item, i) => {
      if (item === "") this.walker.addProblem(this.path(field, i), "must not be empty", this.site.fields.get(field)?.itemLines[i]);
    });
  }

  /** `repeated.min_items = 1`. */
  minItems(msg: JsonObject, field: string, min: number): void {
    const items = msg[field];
    const count = Array.isArray(items) ? items.length : 0;
    if (count >= min) return;
    const where = this.site.fields.get(field);
    if (where?.invalid) return;
    const what = min === 1 ? "at least one item" : `at least ${min} items`;
    this.walker.addProblem(this.path(field), where ? `must have ${what}` : `is required (${what})`, where?.valueLine ?? this.site.line);
  }

  /** `string = {in: [...]}`; "" (unset) is in every set GitLab declares. */
  oneOfStrings(msg: JsonObject, field: string, allowed: readonly string[]): void {
    const v = msg[field];
    if (typeof v !== "string" || v === "" || allowed.includes(v)) return;
    const list = allowed.map((a) => JSON.stringify(a)).join(", ");
    this.walker.addProblem(this.path(field), `must be one of ${list}, got ${JSON.stringify(v)}`, this.site.fields.get(field)?.valueLine);
  }

  /** `oneof { option (validate.required) = true; }`. */
  oneofRequired(msg: JsonObject, members: readonly string[]): void {
    if (members.some((m) => msg[m] !== undefined)) return;
    // A member present but null also lands here (`agent:` instead of `agent: {}`).
    const nullMember = members.find((m) => this.site.fields.has(m));
    const hint = nullMember ? ` (${nullMember} is empty: write "${nullMember}: {}")` : "";
    this.walker.addProblem(this.path(), `must set exactly one of ${members.join(", ")}${hint}`, this.site.line);
  }

  /** A check of kasbridge's own (what the agent or the API server would refuse later): `message` is the problem, if any. */
  check(msg: JsonObject, field: string, message: string | undefined, index?: number): void {
    if (message === undefined) return;
    const where = this.site.fields.get(field);
    if (where?.invalid) return;
    const line = index === undefined ? (where?.keyLine ?? where?.valueLine) : where?.itemLines[index];
    this.walker.addProblem(this.path(field, index), message, line ?? where?.keyLine ?? this.site.line);
  }

  /** A GitOps glob that kasbridge's KAS can match (doublestar syntax). */
  validGlob(msg: JsonObject, field: string): void {
    const v = msg[field];
    if (typeof v !== "string" || v === "") return;
    try {
      globMatcher(v);
    } catch (err) {
      this.walker.addProblem(this.path(field), (err as Error).message, this.site.fields.get(field)?.valueLine);
    }
  }

  /** No two list items with the same identity (`what` names an item in the message). */
  uniqueItems(msg: JsonObject, field: string, identity: (item: JsonValue) => JsonValue, what: string): void {
    const items = msg[field];
    if (!Array.isArray(items)) return;
    const seen = new Set<string>();
    items.forEach((item, i) => {
      const id = JSON.stringify(identity(item));
      if (seen.has(id)) this.walker.addProblem(this.path(field, i), `duplicate ${what} ${String(identity(item))}`, this.site.fields.get(field)?.itemLines[i]);
      seen.add(id);
    });
  }

  /** `duration = {gt: {}}`: checked when set. */
  positiveDuration(msg: JsonObject, field: string): void {
    const v = msg[field];
    if (typeof v !== "string") return;
    const m = DURATION_RE.exec(v);
    if (m && (m[1] === "-" || (/^0+$/.test(m[2]!) && /^0*$/.test(m[3] ?? "")))) {
      this.walker.addProblem(this.path(field), `must be greater than 0s, got ${JSON.stringify(v)}`, this.site.fields.get(field)?.valueLine);
    }
  }

  /** A lowercase DNS name (RFC 1123 labels, dot-separated): checked when set. */
  dnsName(msg: JsonObject, field: string): void {
    const v = msg[field];
    if (typeof v !== "string" || v === "" || DNS_NAME_RE.test(v)) return;
    this.walker.addProblem(this.path(field), `must be a lowercase DNS name such as "workspaces.example.dev", got ${JSON.stringify(v)}`, this.site.fields.get(field)?.valueLine);
  }
}

const DNS_NAME_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

type Rule = (msg: JsonObject, ctx: RuleContext) => void;

const P = "gitlab.agent.agentcfg.";
const RULES: Record<string, Rule> = {
  [`${P}PathCF`]: (m, c) => {
    c.nonEmpty(m, "glob");
    c.validGlob(m, "glob");
  },
  [`${P}GitopsCF`]: (m, c) => c.uniqueItems(m, "manifest_projects", (p) => (p as JsonObject).id ?? "(the agent's configuration project)", "manifest project"),
  [`${P}ManifestProjectCF`]: (m, c) => {
    c.nonEmptyIfSet(m, "id");
    c.oneOfStrings(m, "dry_run_strategy", ["none", "client", "server"]);
    c.oneOfStrings(m, "prune_propagation_policy", ["orphan", "background", "foreground"]);
    c.oneOfStrings(m, "inventory_policy", ["must_match", "adopt_if_no_inventory", "adopt_all"]);
  },
  [`${P}GitRefCF`]: (m, c) => {
    c.oneofRequired(m, ["tag", "branch", "commit"]);
    for (const f of ["tag", "branch", "commit"]) c.nonEmptyIfSet(m, f);
  },
  [`${P}CiAccessProjectCF`]: ciAccessEntry,
  [`${P}CiAccessGroupCF`]: ciAccessEntry,
  [`${P}CiAccessAsCF`]: (m, c) => c.oneofRequired(m, ["agent", "impersonate", "ci_job"]),
  [`${P}CiAccessAsImpersonateCF`]: (m, c) => {
    c.nonEmpty(m, "username");
    c.nonEmptyItems(m, "groups");
  },
  [`${P}ExtraKeyValCF`]: (m, c) => {
    c.nonEmpty(m, "key");
    c.minItems(m, "val", 1);
    c.nonEmptyItems(m, "val");
  },
  [`${P}UserAccessProjectCF`]: (m, c) => c.nonEmpty(m, "id"),
  [`${P}UserAccessGroupCF`]: (m, c) => c.nonEmpty(m, "id"),
  [`${P}UserAccessAsCF`]: (m, c) => c.oneofRequired(m, ["agent", "user"]),
  [`${P}ContainerScanningCF`]: (m, c) => {
    c.nonEmpty(m, "cadence");
    // GitLab's agentk refuses a cadence robfig/cron cannot parse; the platform says so at push time.
    if (typeof m.cadence === "string" && m.cadence !== "") c.check(m, "cadence", cadenceProblem(m.cadence));
  },
  [`${P}VulnerabilityReport`]: (m, c) => {
    if (Array.isArray(m.namespaces)) m.namespaces.forEach((ns, i) => typeof ns === "string" && c.check(m, "namespaces", namespaceProblem(ns), i));
  },
  [`${P}ResourceRequirements`]: (m, c) => {
    const value = (kind: "limits" | "requests", resource: "cpu" | "memory") => {
      const given = (m[kind] as JsonObject | undefined)?.[resource];
      return typeof given === "string" && given !== "" && quantityProblem(given, resource) === undefined ? given : DEFAULT_SCANNER_RESOURCES[kind][resource];
    };
    for (const resource of ["cpu", "memory"] as const) {
      const problem = requestOverLimitProblem(value("requests", resource), value("limits", resource));
      c.check(m, "requests", problem && `${resource} ${problem}`);
    }
  },
  [`${P}Resource`]: (m, c) => {
    for (const resource of ["cpu", "memory"] as const) if (typeof m[resource] === "string") c.check(m, resource, quantityProblem(m[resource], resource));
  },
  [`${P}RemoteDevelopmentCF`]: (m, c) => {
    c.positiveDuration(m, "partial_sync_interval");
    c.positiveDuration(m, "full_sync_interval");
    // GitLab refuses an enabled remote_development without its DNS zone: every workspace URL is
    // `<port>-<workspace>.<dns_zone>`.
    if (m.enabled === true) c.nonEmpty(m, "dns_zone");
    c.dnsName(m, "dns_zone");
  },
  [`${P}GitLabWorkspacesProxy`]: (m, c) => c.nonEmptyIfSet(m, "namespace"),
};

function ciAccessEntry(m: JsonObject, c: RuleContext): void {
  c.nonEmpty(m, "id");
  c.nonEmptyItems(m, "environments");
}
