// The two custom roles the function app holds on its vaults, defined once in
// the vaults' resource group (assignable there only). Built-in roles are
// broader than the app needs:
//
// * Key Vault Reader would add metadata of keys and certificates, and Key
//   Vault Secrets User would add every secret's *value*; listing and reading
//   properties needs only `secrets/readMetadata/action`.
// * Key Vault Secrets Officer (even scoped to one secret) adds delete, purge,
//   backup and restore; rotating needs to read the current value
//   (`getSecret`), write a new version (`setSecret`) and change attributes and
//   tags of versions, i.e. disable the old one (`update`). Nothing else.
//
// Data action names: Key Vault RBAC guide / built-in roles reference
// ("Microsoft.KeyVault/vaults/secrets/readMetadata/action: List or view the
// properties of a secret, but not its value", getSecret/action: "Gets the
// value of a secret", setSecret/action, update/action).
//
// Creating role definitions needs Microsoft.Authorization/roleDefinitions/write
// on the vaults' resource group (Owner or User Access Administrator; the Role
// Based Access Control Administrator role cannot), see docs/deploy.md.

@description('Token that makes the role names unique in the tenant (one pair per azd environment and vault resource group).')
param nameToken string

var metadataReaderGuid = guid(subscription().id, resourceGroup().id, nameToken, 'secret-rotation-metadata-reader')
var secretWriterGuid = guid(subscription().id, resourceGroup().id, nameToken, 'secret-rotation-secret-writer')

resource metadataReader 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: metadataReaderGuid
  properties: {
    roleName: 'Secret rotation - secret metadata reader (${nameToken})'
    description: 'List secrets and read their properties and tags, never a value. Assigned to the secret rotation function app on each vault.'
    type: 'customRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.KeyVault/vaults/secrets/readMetadata/action'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource secretWriter 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: secretWriterGuid
  properties: {
    roleName: 'Secret rotation - secret rotator (${nameToken})'
    description: 'Read the value of, write new versions of and update the attributes of a secret; no delete, purge, backup or restore. Assigned per secret that rotation.json manages.'
    type: 'customRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.KeyVault/vaults/secrets/getSecret/action'
          'Microsoft.KeyVault/vaults/secrets/setSecret/action'
          'Microsoft.KeyVault/vaults/secrets/update/action'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// Role assignments name a role by its subscription-level id,
// subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <guid>),
// whatever scope the definition was deployed from.
output metadataReaderRoleGuid string = metadataReader.name
output secretWriterRoleGuid string = secretWriter.name
