import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

/** Smallest key the platform accepts for secrets at rest (as the KAS secrets: 32 random bytes). */
export const MIN_SECRET_KEY_BYTES = 32;
const VERSION = "v1";

/**
 * Encrypts values the platform must read back (workspace variables) before they go to the
 * database: AES-256-GCM with a random 96-bit IV per value, a key derived (HKDF-SHA256) from the
 * operator's key for this one use, and `context` (where the value belongs: workspace and variable)
 * as additional data, so a ciphertext copied to another row does not decrypt there.
 */
export class SecretBox {
  private readonly key: Buffer;

  constructor(secret: Uint8Array, purpose: string) {
    if (secret.byteLength < MIN_SECRET_KEY_BYTES) throw new Error(`the encryption key must have at least ${MIN_SECRET_KEY_BYTES} bytes`);
    this.key = Buffer.from(hkdfSync("sha256", secret, Buffer.alloc(0), `kasbridge ${purpose}`, 32));
  }

  /** `v1:<iv>:<tag>:<ciphertext>`, each base64. */
  seal(plaintext: string, context: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, iv);
    cipher.setAAD(Buffer.from(context));
    const data = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return [VERSION, iv.toString("base64"), cipher.getAuthTag().toString("base64"), data.toString("base64")].join(":");
  }

  /** The plaintext; throws when the value was not sealed with this key and context. */
  open(sealed: string, context: string): string {
    const [version, iv, tag, data] = sealed.split(":");
    if (version !== VERSION || iv === undefined || tag === undefined || data === undefined) throw new Error("not a sealed value");
    const decipher = createDecipheriv("aes-256-gcm", this.key, Buffer.from(iv, "base64"));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(Buffer.from(tag, "base64"));
    return Buffer.concat([decipher.update(Buffer.from(data, "base64")), decipher.final()]).toString("utf8");
  }
}
