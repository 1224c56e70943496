// Per vault (created here or pre-existing): the function app's data-plane
// role, scoped to this vault only, and the Event Grid system topic that
// publishes the vault's events. The event subscription on that topic is
// stage two (infra/eventgrid.bicep), created after the code is deployed.

@description('Name of the vault (it exists when this module runs).')
param vaultName string

@description('Name of the Event Grid system topic for this vault.')
param systemTopicName string

@description('Principal id of the function app identity.')
param functionPrincipalId string

@description('Tags applied to the system topic.')
param tags object

// Key Vault Secrets Officer: read, set, and manage secrets and their
// versions (needed to write the new version and disable the old one).
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionPrincipalId, keyVaultSecretsOfficerRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: rotate secrets in this vault only.'
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
