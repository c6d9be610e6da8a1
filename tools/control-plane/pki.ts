// The control plane's certificates, made with openssl for each start: a test CA (EC P-256, valid
// 2 days) that signs every serving and client certificate, and the key pair that signs
// ServiceAccount tokens.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { mustRun } from "./run-command.js";

export interface CertAndKey {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  caCert: string;
  /** kube-apiserver's serving certificate (127.0.0.1, kubernetes.default.svc, ...). */
  apiServer: CertAndKey;
  /** The client certificate kube-apiserver presents to kwok's kubelet-like server. */
  apiServerKubeletClient: CertAndKey;
  /** kwok's kubelet-like server (logs, exec, attach, port-forward), verified by kube-apiserver. */
  kwok: CertAndKey;
  /** Client `CN=kasbridge-admin, O=system:masters`. */
  admin: CertAndKey;
  /**
   * kube-controller-manager and kube-scheduler (with `controllers`): one certificate each for
   * both their client identity (CN=system:kube-controller-manager / system:kube-scheduler, which
   * the default RBAC policy binds) and their own HTTPS port (127.0.0.1).
   */
  controllerManager?: CertAndKey;
  scheduler?: CertAndKey;
  /** ServiceAccount tokens: kube-apiserver signs and verifies, kube-controller-manager signs. */
  serviceAccountKey: string;
  serviceAccountPublicKey: string;
}

const SERVER = "extendedKeyUsage=serverAuth\n";
const CLIENT = "extendedKeyUsage=clientAuth\n";
const SERVER_AND_CLIENT = "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n";

/** Makes the CA and the certificates the components need, in `dir`. */
export async function makePki(dir: string, options: { controllers: boolean; kwokNodeName: string }): Promise<Pki> {
  await mkdir(dir, { recursive: true });
  const openssl = (args: string[]) => mustRun("openssl", args, { cwd: dir });
  await openssl(["req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-sha256", "-subj", "/CN=kasbridge-test-ca",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);

  /** A certificate signed by ca.crt: EC P-256, valid 2 days. */
  const issue = async (name: string, subject: string, ext: string): Promise<CertAndKey> => {
    await openssl(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
      "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
    await writeFile(join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n${ext}`);
    await openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
      "-days", "2", "-sha256", "-out", `${name}.crt`, "-extfile", `${name}.ext`]);
    return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  };

  const pki: Pki = {
    dir,
    caCert: join(dir, "ca.crt"),
    apiServer: await issue("apiserver", "/CN=kube-apiserver",
      `${SERVER}subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n`),
    kwok: await issue("kwok", `/CN=${options.kwokNodeName}`, `${SERVER}subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:${options.kwokNodeName}\n`),
    admin: await issue("admin", "/O=system:masters/CN=kasbridge-admin", CLIENT),
    apiServerKubeletClient: await issue("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", CLIENT),
    serviceAccountKey: join(dir, "sa.key"),
    serviceAccountPublicKey: join(dir, "sa.pub"),
  };
  if (options.controllers) {
    pki.controllerManager = await issue("kube-controller-manager", "/CN=system:kube-controller-manager", SERVER_AND_CLIENT);
    pki.scheduler = await issue("kube-scheduler", "/CN=system:kube-scheduler", SERVER_AND_CLIENT);
  }
  await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", "sa.key"]);
  await openssl(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
  return pki;
}
