/** Ids that are also NATS subject tokens: letters and digits only. */
import { randomBytes } from "node:crypto";

export function newId(bytes = 9): string {
  return randomBytes(bytes).toString("base64url").replace(/[^A-Za-z0-9]/g, "x");
}
