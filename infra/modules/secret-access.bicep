// One role assignment for the function app on one secret of one vault: the
// narrowest Key Vault scope there is. vault-access.bicep deploys it once per
// secret that rotation.json (or the consumer catalog) names.
//
// The scope is the secret's resource id (vault + name), not an object: the
// assignment covers every version, and also a secret of that name created
// after the deployment. Nothing is read from the secret at deployment time.

@description('Name of the vault (it exists when this module runs).')
param vaultName string

@description('Name of the secret.')
@minLength(1)
@maxLength(127)
param secretName string

@description('Principal id of the function app identity.')
param functionPrincipalId string

@description('Name (GUID) of the role definition to assign: the custom secret rotator, or the built-in Key Vault Secrets User.')
param roleGuid string

@description('Why the app holds this role on this secret (shown in the portal).')
param purpose string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: secretName
}

resource secretRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secret.id, functionPrincipalId, roleGuid)
  scope: secret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleGuid)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: ${purpose}'
  }
}
