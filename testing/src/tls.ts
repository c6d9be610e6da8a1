// Certificates for tests, made with openssl.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A self-signed EC certificate (PEM) for localhost, 127.0.0.1 and ::1, valid 2 days. */
export interface TestCertificate {
  cert: string;
  key: string;
}

const made = new Map<string, TestCertificate>();

/** One certificate per `commonName` (which tells certificates apart in tests), made once. */
export function selfSignedCertificate(commonName = "localhost"): TestCertificate {
  let certificate = made.get(commonName);
  if (certificate) return certificate;
  const dir = mkdtempSync(join(tmpdir(), "kasbridge-cert-"));
  try {
    execFileSync(
      "openssl",
      [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-subj", `/CN=${commonName}`,
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
      ],
      { stdio: "pipe" },
    );
    certificate = { cert: readFileSync(join(dir, "cert.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
    made.set(commonName, certificate);
    return certificate;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes `selfSignedCertificate(commonName)` as `<dir>/<name>.crt` and `<dir>/<name>.key` (mode 0600). */
export function selfSignedCertificateFiles(dir: string, name: string, commonName = "localhost"): { certFile: string; keyFile: string } {
  const { cert, key } = selfSignedCertificate(commonName);
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  writeFileSync(certFile, cert);
  writeFileSync(keyFile, key, { mode: 0o600 });
  return { certFile, keyFile };
}
