/**
 * What the Python side (tests/kits/test_node_kit.py) started for these tests:
 * the project's Key Vault emulator (HTTPS; its CA via NODE_EXTRA_CA_CERTS),
 * a real PostgreSQL and a real Redis. Nothing is mocked: the kit talks to them
 * through @azure/keyvault-secrets, node-postgres and node-redis.
 */
import type { AccessToken, TokenCredential } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";
import { CachedSecretClient } from "../src";

export function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through pytest tests/kits/test_node_kit.py`);
  return value;
}

/** The emulator accepts any token; a real service uses DefaultAzureCredential. */
export const staticCredential: TokenCredential = {
  async getToken(): Promise<AccessToken> {
    return { token: "local-emulator-token", expiresOnTimestamp: Date.now() + 3_600_000 };
  },
};

export function sdkClient(): SecretClient {
  return new SecretClient(env("KV_URL"), staticCredential, {
    disableChallengeResourceVerification: true,
    retryOptions: { maxRetries: 0 },
  });
}

export function cachedClient(options: ConstructorParameters<typeof CachedSecretClient>[1] = {}): CachedSecretClient {
  return new CachedSecretClient(sdkClient(), options);
}

let counter = 0;
export function unique(prefix: string): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

export async function put(name: string, value: string): Promise<string> {
  const secret = await sdkClient().setSecret(name, value);
  return secret.properties.version!;
}
