/**
 * What GitLab adds to every workspace beside the user's devfile: the editor (its VS Code fork,
 * copied into the workspace volume by an injector and started in the `gl/inject-editor`
 * container), the project cloner (clones the project into the volume on first start), and the
 * variables that let git in the workspace use a token made for the workspace. Same ports, paths,
 * names and variables as GitLab's, so devfiles and habits carry over.
 */
import type { Devfile, DevfileContainer } from "./devfile.js";
import { DevfileError } from "./devfile.js";
import { VARIABLES_MOUNT_PATH, type WorkspaceVariable } from "./desired-config.js";

export const EDITOR_PORT = 60001;
export const SSH_PORT = 60022;
/** Where the workspace volume is mounted in the editor and tool containers. */
export const WORKSPACE_DATA_PATH = "/projects";
export const EDITOR_DIR = `${WORKSPACE_DATA_PATH}/.gl-editor`;
export const TOKEN_FILE = `${VARIABLES_MOUNT_PATH}/gl_token`;
export const GIT_CREDENTIAL_STORE_FILE = `${VARIABLES_MOUNT_PATH}/gl_git_credential_store.sh`;

export interface WorkspaceToolImages {
  /** Copies the editor into the workspace volume. Default GitLab's `web-ide-injector:4`. */
  editorInjector: string;
  /** Has git and sh; clones the project. Default GitLab's `alpine/git:2.36.3`. */
  projectCloner: string;
}

export const DEFAULT_WORKSPACE_TOOL_IMAGES: WorkspaceToolImages = {
  editorInjector: "registry.gitlab.com/gitlab-org/gitlab-web-ide-vscode-fork/web-ide-injector:4",
  projectCloner: "alpine/git:2.36.3",
};

/** The project a workspace clones: its path (the folder under /projects), git URL and ref. */
export interface WorkspaceProject {
  path: string;
  repositoryUrl: string;
  ref: string;
}

const TOOL_RESOURCES = { memoryLimit: "256Mi", memoryRequest: "128Mi", cpuLimit: "500m", cpuRequest: "100m" };
const EDITOR_ENV = [
  { name: "EDITOR_VOLUME_DIR", value: EDITOR_DIR },
  { name: "EDITOR_PORT", value: String(EDITOR_PORT) },
  { name: "SSH_PORT", value: String(SSH_PORT) },
];

/** Refuses devfiles that take what the tools need (ports, endpoint names). */
export function checkToolsFit(devfile: Devfile): void {
  for (const c of devfile.containers) {
    for (const e of c.endpoints) {
      if (e.targetPort === EDITOR_PORT || e.targetPort === SSH_PORT) throw new DevfileError(`Endpoint port ${e.targetPort} is reserved for the editor`);
      if (e.name === "editor-server" || e.name === "ssh-server") throw new DevfileError(`Endpoint name '${e.name}' is reserved for the editor`);
    }
  }
}

/**
 * The devfile as the workspace runs it: the editor container starts the editor (command
 * replaced, as GitLab does) and exposes it; the editor injector and the project cloner run first,
 * after the devfile's own preStart components.
 */
export function withWorkspaceTools(devfile: Devfile, project: WorkspaceProject | undefined, images: WorkspaceToolImages): Devfile {
  const tool = (name: string, image: string, extra: Partial<DevfileContainer>): DevfileContainer => ({
    name,
    image,
    env: [],
    endpoints: [],
    volumeMounts: [],
    ...TOOL_RESOURCES,
    mountSources: true,
    sourceMapping: WORKSPACE_DATA_PATH,
    injectEditor: false,
    ...extra,
  });
  const containers = devfile.containers.map((c) => (c.injectEditor ? editorContainer(c) : c));
  const tools = [tool("gl-editor-injector", images.editorInjector, { env: EDITOR_ENV })];
  if (project) {
    tools.push(tool("gl-cloner-injector", images.projectCloner, { command: ["/bin/sh", "-c"], args: [clonerScript(project)] }));
  }
  return { ...devfile, containers: [...containers, ...tools], preStart: [...devfile.preStart, ...tools.map((t) => t.name)] };
}

function editorContainer(c: DevfileContainer): DevfileContainer {
  return {
    ...c,
    // GitLab replaces the container's command with the editor's (gitlab-org/gitlab#392853).
    command: ["/bin/sh", "-c"],
    args: [`${EDITOR_DIR}/start_server.sh`],
    mountSources: true,
    sourceMapping: c.mountSources ? c.sourceMapping : WORKSPACE_DATA_PATH,
    env: [...c.env, ...EDITOR_ENV],
    endpoints: [
      ...c.endpoints,
      { name: "editor-server", targetPort: EDITOR_PORT, exposure: "public", protocol: "https", secure: true },
      { name: "ssh-server", targetPort: SSH_PORT, exposure: "internal", protocol: "tcp", secure: true },
    ],
  };
}

/** Clones once: a volume that already has the project keeps the user's changes. */
function clonerScript(project: WorkspaceProject): string {
  const dir = `${WORKSPACE_DATA_PATH}/${project.path}`;
  return [
    `if [ ! -d ${sh(dir)} ];`,
    "then",
    `  git clone --branch ${sh(project.ref)} ${sh(project.repositoryUrl)} ${sh(dir)};`,
    "fi",
  ].join("\n");
}

/** One shell word, whatever it holds. */
function sh(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** A git credential helper that answers `get` with the workspace's token (read-only store). */
export const GIT_CREDENTIAL_STORE_SCRIPT = `#!/bin/sh
# A read-only store: git's store and erase actions are accepted and ignored.
if [ "$1" != "get" ];
then
  exit 0
fi

if [ -z "\${GL_TOKEN_FILE_PATH}" ];
then
  echo "We could not find the GL_TOKEN_FILE_PATH variable"
  exit 1
fi
password=$(cat "\${GL_TOKEN_FILE_PATH}")

# The platform takes any username with a token.
echo "username=workspace"
echo "password=\${password}"
exit 0`;

/** The variables the platform gives every workspace (GitLab's names), beside the user's. */
export function internalVariables(input: { workspaceName: string; dnsZone: string; token: string; userName: string; userEmail: string }): WorkspaceVariable[] {
  const env = (key: string, value: string): WorkspaceVariable => ({ key, value, type: "env_var" });
  return [
    { key: "gl_token", value: input.token, type: "file" },
    { key: "gl_git_credential_store.sh", value: GIT_CREDENTIAL_STORE_SCRIPT, type: "file" },
    env("GIT_CONFIG_COUNT", "3"),
    env("GIT_CONFIG_KEY_0", "credential.helper"),
    env("GIT_CONFIG_VALUE_0", GIT_CREDENTIAL_STORE_FILE),
    env("GIT_CONFIG_KEY_1", "user.name"),
    env("GIT_CONFIG_VALUE_1", input.userName),
    env("GIT_CONFIG_KEY_2", "user.email"),
    env("GIT_CONFIG_VALUE_2", input.userEmail),
    env("GL_GIT_CREDENTIAL_STORE_FILE_PATH", GIT_CREDENTIAL_STORE_FILE),
    env("GL_TOKEN_FILE_PATH", TOKEN_FILE),
    env("GL_WORKSPACE_DOMAIN_TEMPLATE", `\${PORT}-${input.workspaceName}.${input.dnsZone}`),
  ];
}
