// Per vault (created here or pre-existing): the function app's data-plane
// rights, each on the narrowest scope that works, and the Event Grid system
// topic that publishes the vault's events. The event subscription on that
// topic is stage two (infra/eventgrid.bicep), created after the code is
// deployed.
//
// Rights, derived from the operator file rotation.json (loaded by main.bicep):
//
// | what                                   | role                        | scope        |
// | -------------------------------------- | --------------------------- | ------------ |
// | list secrets, read properties and tags | metadata reader (custom)    | the vault    |
// | rotate a secret the file manages       | secret rotator (custom)     | that secret  |
// | force a manual secret with a generator | secret rotator (custom)     | that secret  |
// | a postgres secret's durable intent     | secret rotator (custom)     | <name>-rotation-intent |
// | read an admin secret (adminSecrets)    | Key Vault Secrets User      | that secret  |
// | read a consumer's HMAC key             | Key Vault Secrets User      | that secret  |
// | rotate tag-managed secrets (opt-in)    | secret rotator (custom)     | the vault    |
//
// Per-secret assignments are nested deployments of secret-access.bicep.
// Secrets the file lists as manual-only (without a generator for `force`)
// get nothing beyond the metadata reader: the app never reads or writes
// their values.

@description('Name of the vault (it exists when this module runs).')
param vaultName string

@description('Name of the Event Grid system topic for this vault.')
param systemTopicName string

@description('Principal id of the function app identity.')
param functionPrincipalId string

@description('Tags applied to the system topic.')
param tags object

@description('Name (GUID) of the custom "secret metadata reader" role (vault-roles.bicep).')
param metadataReaderRoleGuid string

@description('Name (GUID) of the custom "secret rotator" role (vault-roles.bicep).')
param secretWriterRoleGuid string

@description('The "secrets" object of rotation.json: secret name -> policy (rotator, ...).')
param secretPolicies object

@description('The "adminSecrets" list of rotation.json: secrets the app only reads (downstream admin credentials).')
param adminSecretNames array

@description('The "consumers" catalog of ROTATION_CONSUMERS: entries with an hmacSecret name a key the app reads.')
param consumerCatalog object = {}

@description('Grant the secret rotator role on the whole vault, for secrets rotation.json leaves to tags (tagManaged patterns); their names are unknown at deployment time. Off by default.')
param grantTagManagedVaultWide bool = false

@description('The "tagManaged" list of rotation.json (patterns); only relevant with grantTagManagedVaultWide.')
param tagManagedPatterns array = []

// Built-in Key Vault Secrets User: getSecret and readMetadata, nothing else.
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
// Rotators that never write their secret: the app only lists them.
var readOnlyRotators = [
  'manual'
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource metadataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionPrincipalId, metadataReaderRoleGuid)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', metadataReaderRoleGuid)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: list secrets and read their properties (never values) in this vault.'
  }
}

// The rotator role goes to every secret the app rotates: each non-manual
// entry, and a manual-only entry that names a `generator`, which an explicit
// HTTP `force` may use to rotate it. A manual-only entry without one is never
// written by the app.
//
// One nested deployment per secret (modules/secret-access.bicep): the name is
// short and unique per vault, secret and purpose (deployment names are
// limited to 64 characters, secret names are not).
module secretRotator 'secret-access.bicep' = [for entry in items(secretPolicies): if((!contains(readOnlyRotators, toLower(entry.value.rotator))) || contains(entry.value, 'generator')) {
  name: 'rotate-${uniqueString(vaultName, toLower(entry.key), 'rotator')}'
  params: {
    vaultName: vault.name
    secretName: entry.key
    functionPrincipalId: functionPrincipalId
    roleGuid: secretWriterRoleGuid
    purpose: 'rotate this secret (declared in rotation.json).'
  }
}]

// A PostgreSQL rotation with no overlap (strategy single) first records its new value in the
// companion secret <name>-rotation-intent (shared/engine.py, durable intent), so whoever runs
// next can finish it. Granted for every postgres secret: the strategy lives on the target, and
// the companion name is only ever written by the app.
module intentWriter 'secret-access.bicep' = [for entry in items(secretPolicies): if(toLower(entry.value.rotator) == 'postgres') {
  name: 'intent-${uniqueString(vaultName, toLower(entry.key), 'intent')}'
  params: {
    vaultName: vault.name
    secretName: '${toLower(entry.key)}-rotation-intent'
    functionPrincipalId: functionPrincipalId
    roleGuid: secretWriterRoleGuid
    purpose: 'record the durable intent of a single-credential rotation of ${entry.key}.'
  }
}]

module adminSecretReader 'secret-access.bicep' = [for name in adminSecretNames: {
  name: 'admin-${uniqueString(vaultName, toLower(name), 'reader')}'
  params: {
    vaultName: vault.name
    secretName: name
    functionPrincipalId: functionPrincipalId
    roleGuid: keyVaultSecretsUserRoleId
    purpose: 'read this admin credential (adminSecrets in rotation.json).'
  }
}]

module hmacKeyReader 'secret-access.bicep' = [for entry in items(consumerCatalog): if(contains(entry.value, 'hmacSecret')) {
  name: 'hmac-${uniqueString(vaultName, toLower(entry.key), 'reader')}'
  params: {
    vaultName: vault.name
    secretName: entry.value.hmacSecret
    functionPrincipalId: functionPrincipalId
    roleGuid: keyVaultSecretsUserRoleId
    purpose: 'read the HMAC key that signs refresh pings to a consumer.'
  }
}]

// Opt-in only: secrets matched by a tagManaged pattern are named by whoever
// creates them, so a per-secret grant is impossible; this grants the rotator
// role on every secret of the vault (still no delete/purge/backup/restore).
resource tagManagedRotator 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantTagManagedVaultWide && !empty(tagManagedPatterns)) {
  name: guid(vault.id, functionPrincipalId, secretWriterRoleGuid)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretWriterRoleGuid)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: rotate tag-managed secrets (rotation.json tagManaged), vault-wide by explicit opt-in.'
  }
}

// One system topic per vault, in the vault's region. Its identity
// dead-letters undeliverable events into the app storage account.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: vault.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

output vaultId string = vault.id
output systemTopicName string = systemTopic.name
output systemTopicPrincipalId string = systemTopic.identity.principalId
