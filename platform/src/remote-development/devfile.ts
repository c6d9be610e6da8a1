/**
 * Devfile 2.2 reading and the checks GitLab applies before it turns one into a workspace.
 *
 * There is no maintained devfile parser for Node: `@devfile/api` ships TypeScript types only and
 * `@eclipse-che/che-devworkspace-generator` emits DevWorkspace custom resources (and fetches
 * plugins), not the plain objects GitLab generates. The devfile JSON schema itself is not
 * vendored either (kasbridge commits nothing fetched), so the structure the generator needs is
 * checked here, field by field, with errors that name the field; GitLab's own restrictions
 * (what its devfile validators refuse) follow. See docs/workspaces.md.
 */
import { parseDocument } from "yaml";

export class DevfileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DevfileError";
  }
}

/** The component GitLab injects its editor into carries this attribute. */
export const INJECT_EDITOR_ATTRIBUTE = "gl/inject-editor";
/** Names GitLab reserves for what it generates. */
const RESERVED_PREFIX = "gl-";
const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_NAME = 63;
/** Largest devfile read from a repository. */
export const MAX_DEVFILE_BYTES = 1024 * 1024;

export interface DevfileEndpoint {
  name: string;
  targetPort: number;
  exposure: "public" | "internal" | "none";
  protocol: string;
  secure: boolean;
  path?: string;
}

export interface DevfileContainer {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env: Array<{ name: string; value: string }>;
  endpoints: DevfileEndpoint[];
  volumeMounts: Array<{ name: string; path: string }>;
  memoryLimit?: string;
  memoryRequest?: string;
  cpuLimit?: string;
  cpuRequest?: string;
  mountSources: boolean;
  sourceMapping: string;
  injectEditor: boolean;
}

export interface DevfileVolume {
  name: string;
  size: string;
}

export interface Devfile {
  schemaVersion: string;
  containers: DevfileContainer[];
  volumes: DevfileVolume[];
  /**
   * Container components that run to completion before the others (the `apply` commands of
   * `events.preStart`, in order): init containers of the workspace's pod, not long-running ones.
   */
  preStart: string[];
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** Parses and checks a devfile; throws DevfileError naming the first problem. */
export function parseDevfile(text: string): Devfile {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) throw new DevfileError(`Devfile is not valid YAML: ${doc.errors[0]!.message}`);
  const root: unknown = doc.toJS();
  if (!isObject(root)) throw new DevfileError("Devfile must be a YAML mapping");

  const schemaVersion = root.schemaVersion;
  if (typeof schemaVersion !== "string") throw new DevfileError("'schemaVersion' is missing");
  const version = /^(\d+)\.(\d+)\.(\d+)(-.*)?$/.exec(schemaVersion);
  if (!version) throw new DevfileError(`'schemaVersion' ${JSON.stringify(schemaVersion)} is not a version such as "2.2.0"`);
  if (version[1] !== "2" || version[2] !== "2") throw new DevfileError(`'schemaVersion' ${schemaVersion} is not supported, use 2.2.x`);

  // GitLab's restrictions: what its flattening and generation do not support.
  if (root.parent !== undefined) throw new DevfileError("Inheriting from 'parent' is not yet supported");
  if (root.projects !== undefined) throw new DevfileError("'projects' is not yet supported");
  if (root.starterProjects !== undefined) throw new DevfileError("'starterProjects' is not yet supported");
  checkEvents(root.events);
  checkCommands(root.commands);
  checkVariables(root.variables);

  const components = root.components;
  if (components === undefined || (Array.isArray(components) && components.length === 0)) throw new DevfileError("No components present in devfile");
  if (!Array.isArray(components)) throw new DevfileError("'components' must be a list");

  const containers: DevfileContainer[] = [];
  const volumes: DevfileVolume[] = [];
  const names = new Set<string>();
  components.forEach((c: unknown, i) => {
    if (!isObject(c)) throw new DevfileError(`components[${i}] must be a mapping`);
    const name = checkName(c.name, `components[${i}].name`, "Component");
    if (names.has(name)) throw new DevfileError(`Component name '${name}' is used more than once`);
    names.add(name);
    const kinds = ["container", "volume", "kubernetes", "openshift", "image", "custom", "plugin"].filter((k) => c[k] !== undefined);
    if (kinds.length !== 1) throw new DevfileError(`Component '${name}' must have exactly one type (container or volume)`);
    const kind = kinds[0]!;
    if (kind === "container") containers.push(readContainer(name, c.container, c.attributes));
    else if (kind === "volume") volumes.push(readVolume(name, c.volume));
    else throw new DevfileError(`Component type '${kind}' is not yet supported (component '${name}')`);
  });

  const editors = containers.filter((c) => c.injectEditor);
  if (editors.length === 0) throw new DevfileError(`No component has '${INJECT_EDITOR_ATTRIBUTE}' attribute`);
  if (editors.length > 1) throw new DevfileError(`Multiple components '${editors.map((e) => e.name).join(", ")}' have '${INJECT_EDITOR_ATTRIBUTE}' attribute`);

  const volumeNames = new Set(volumes.map((v) => v.name));
  const endpointNames = new Set<string>();
  const ports = new Set<number>();
  for (const container of containers) {
    for (const mount of container.volumeMounts) {
      if (!volumeNames.has(mount.name)) throw new DevfileError(`Container '${container.name}' mounts volume '${mount.name}', which no volume component defines`);
    }
    for (const endpoint of container.endpoints) {
      if (endpointNames.has(endpoint.name)) throw new DevfileError(`Endpoint name '${endpoint.name}' is used more than once`);
      if (ports.has(endpoint.targetPort)) throw new DevfileError(`Endpoint port ${endpoint.targetPort} is used more than once`);
      endpointNames.add(endpoint.name);
      ports.add(endpoint.targetPort);
    }
  }
  const preStart = preStartComponents(root.commands, root.events, new Set(containers.map((c) => c.name)));
  if (editors.some((e) => preStart.includes(e.name))) throw new DevfileError(`Component '${editors[0]!.name}' with '${INJECT_EDITOR_ATTRIBUTE}' cannot run at preStart`);
  return { schemaVersion, containers, volumes, preStart };
}

/** The container components `events.preStart` applies, in order (checked: known commands, `apply` of a container). */
function preStartComponents(commands: unknown, events: unknown, containerNames: Set<string>): string[] {
  const byId = new Map<string, Json>();
  for (const c of (commands ?? []) as Json[]) byId.set(c.id as string, c);
  const ids = isObject(events) && Array.isArray(events.preStart) ? (events.preStart as unknown[]) : [];
  return ids.map((id, i) => {
    if (typeof id !== "string") throw new DevfileError(`events.preStart[${i}] must be a command id`);
    const command = byId.get(id);
    if (!command) throw new DevfileError(`events.preStart names command '${id}', which is not defined`);
    const apply = command.apply;
    if (!isObject(apply) || typeof apply.component !== "string") throw new DevfileError(`Command '${id}' of events.preStart must be an 'apply' command (only those can run before the workspace starts)`);
    if (!containerNames.has(apply.component)) throw new DevfileError(`Command '${id}' applies '${apply.component}', which is not a container component`);
    return apply.component;
  }).filter((name, i, all) => {
    if (all.indexOf(name) !== i) throw new DevfileError(`Component '${name}' is applied more than once at preStart`);
    return true;
  });
}

function checkName(value: unknown, where: string, what: string): string {
  if (typeof value !== "string" || value === "") throw new DevfileError(`${where} is required`);
  if (value.startsWith(RESERVED_PREFIX)) throw new DevfileError(`${what} name '${value}' must not start with '${RESERVED_PREFIX}'`);
  if (value.length > MAX_NAME || !NAME_RE.test(value)) {
    throw new DevfileError(`${what} name '${value}' must be at most ${MAX_NAME} lowercase letters, digits and '-', starting and ending with a letter or digit`);
  }
  return value;
}

function checkEvents(events: unknown): void {
  if (events === undefined) return;
  if (!isObject(events)) throw new DevfileError("'events' must be a mapping");
  for (const [type, ids] of Object.entries(events)) {
    if (type !== "preStart") throw new DevfileError(`Event type '${type}' is not yet supported`);
    if (!Array.isArray(ids)) throw new DevfileError(`events.${type} must be a list of command ids`);
    for (const id of ids) {
      if (typeof id === "string" && id.startsWith(RESERVED_PREFIX)) throw new DevfileError(`Event '${id}' of '${type}' must not start with '${RESERVED_PREFIX}'`);
    }
  }
}

function checkCommands(commands: unknown): void {
  if (commands === undefined) return;
  if (!Array.isArray(commands)) throw new DevfileError("'commands' must be a list");
  commands.forEach((c: unknown, i) => {
    if (!isObject(c)) throw new DevfileError(`commands[${i}] must be a mapping`);
    if (typeof c.id !== "string" || c.id === "") throw new DevfileError(`commands[${i}].id is required`);
    if (c.id.startsWith(RESERVED_PREFIX)) throw new DevfileError(`Command id '${c.id}' must not start with '${RESERVED_PREFIX}'`);
  });
}

function checkVariables(variables: unknown): void {
  if (variables === undefined) return;
  if (!isObject(variables)) throw new DevfileError("'variables' must be a mapping");
  for (const name of Object.keys(variables)) {
    if (name.startsWith(RESERVED_PREFIX) || name.startsWith("gl_")) throw new DevfileError(`Variable name '${name}' must not start with '${RESERVED_PREFIX}' or 'gl_'`);
  }
}

function stringList(value: unknown, where: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) throw new DevfileError(`${where} must be a list of strings`);
  return value as string[];
}

function optionalString(value: unknown, where: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" && typeof value !== "number") throw new DevfileError(`${where} must be a string`);
  return String(value);
}

function readContainer(name: string, value: unknown, attributes: unknown): DevfileContainer {
  const where = `Component '${name}'`;
  if (!isObject(value)) throw new DevfileError(`${where}: 'container' must be a mapping`);
  if (typeof value.image !== "string" || value.image === "") throw new DevfileError(`${where}: 'container.image' is required`);
  if (value.dedicatedPod === true) throw new DevfileError(`${where}: 'dedicatedPod' is not yet supported`);
  const env = (value.env === undefined ? [] : value.env) as unknown;
  if (!Array.isArray(env)) throw new DevfileError(`${where}: 'env' must be a list`);
  const endpoints = (value.endpoints ?? []) as unknown;
  if (!Array.isArray(endpoints)) throw new DevfileError(`${where}: 'endpoints' must be a list`);
  const mounts = (value.volumeMounts ?? []) as unknown;
  if (!Array.isArray(mounts)) throw new DevfileError(`${where}: 'volumeMounts' must be a list`);
  return {
    name,
    image: value.image,
    command: stringList(value.command, `${where}: 'command'`),
    args: stringList(value.args, `${where}: 'args'`),
    env: env.map((e: unknown, i) => {
      if (!isObject(e) || typeof e.name !== "string" || e.name === "") throw new DevfileError(`${where}: env[${i}] needs a name`);
      if (e.name.startsWith("GL_")) throw new DevfileError(`${where}: env variable '${e.name}' must not start with 'GL_'`);
      return { name: e.name, value: optionalString(e.value, `${where}: env[${i}].value`) ?? "" };
    }),
    endpoints: endpoints.map((e: unknown, i) => readEndpoint(e, `${where}: endpoints[${i}]`)),
    volumeMounts: mounts.map((m: unknown, i) => {
      if (!isObject(m) || typeof m.name !== "string" || m.name === "") throw new DevfileError(`${where}: volumeMounts[${i}] needs a name`);
      return { name: m.name, path: optionalString(m.path, `${where}: volumeMounts[${i}].path`) ?? `/${m.name}` };
    }),
    memoryLimit: optionalString(value.memoryLimit, `${where}: 'memoryLimit'`),
    memoryRequest: optionalString(value.memoryRequest, `${where}: 'memoryRequest'`),
    cpuLimit: optionalString(value.cpuLimit, `${where}: 'cpuLimit'`),
    cpuRequest: optionalString(value.cpuRequest, `${where}: 'cpuRequest'`),
    mountSources: value.mountSources !== false,
    sourceMapping: optionalString(value.sourceMapping, `${where}: 'sourceMapping'`) ?? "/projects",
    injectEditor: isObject(attributes) && attributes[INJECT_EDITOR_ATTRIBUTE] === true,
  };
}

function readEndpoint(value: unknown, where: string): DevfileEndpoint {
  if (!isObject(value)) throw new DevfileError(`${where} must be a mapping`);
  const name = checkName(value.name, `${where}.name`, "Endpoint");
  const port = value.targetPort;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) throw new DevfileError(`${where}.targetPort must be a port number (1-65535)`);
  const exposure = value.exposure ?? "public";
  if (exposure !== "public" && exposure !== "internal" && exposure !== "none") throw new DevfileError(`${where}.exposure must be public, internal or none`);
  const protocol = value.protocol ?? "http";
  const protocols = ["http", "https", "ws", "wss", "tcp", "udp"];
  if (typeof protocol !== "string" || !protocols.includes(protocol)) throw new DevfileError(`${where}.protocol must be one of ${protocols.join(", ")}`);
  return { name, targetPort: port, exposure, protocol, secure: value.secure === true, path: optionalString(value.path, `${where}.path`) };
}

function readVolume(name: string, value: unknown): DevfileVolume {
  if (value === null) value = {};
  if (!isObject(value)) throw new DevfileError(`Component '${name}': 'volume' must be a mapping`);
  if (value.ephemeral === true) throw new DevfileError(`Component '${name}': ephemeral volumes are not yet supported`);
  return { name, size: optionalString(value.size, `Component '${name}': 'volume.size'`) ?? "1Gi" };
}
