import { execFileSync } from "node:child_process";
import { join } from "node:path";

/** A self-signed P-256 certificate for localhost/127.0.0.1 (valid 2 days), written into `dir`. */
export function selfSignedLocalhostCert(dir: string, name = "tls"): { certFile: string; keyFile: string } {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", keyFile, "-out", certFile,
  ], { stdio: "pipe" });
  return { certFile, keyFile };
}
