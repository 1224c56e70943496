// Lets the Event Grid system topics write undeliverable events into the
// dead-letter container, and nowhere else in the storage account.

@description('The app storage account.')
param storageAccountName string

@description('The dead-letter blob container.')
param deadLetterContainerName string

@description('Principal ids of the system topic identities.')
param principalIds array

var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource container 'containers' existing = {
      name: deadLetterContainerName
    }
  }
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(storage::blobService::container.id, principalId, storageBlobDataContributorRoleId)
  scope: storage::blobService::container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid system topic: dead-letter Key Vault events.'
  }
}]
