// Stage two: one event subscription per vault, from the vault's system topic
// to the rotate_on_event function, deployed by the azd postdeploy hook
// (infra/hooks/postdeploy.sh) with the parameters main.bicep outputs as
// ROTATION_EVENTGRID_PARAMETERS.
//
// Why a second stage: an AzureFunction destination names the function
// resource (.../sites/<app>/functions/rotate_on_event) and Event Grid
// validates it when the subscription is created. That resource only exists
// once the code is deployed and the host has indexed it, which is after
// `azd provision`. AzureFunction delivery also needs no webhook URL and no
// function key in any template or output.

targetScope = 'resourceGroup'

@description('Name of the function app (in this resource group).')
param functionAppName string

@description('Vaults to subscribe to: [{ name, resourceGroup, systemTopicName }].')
param vaults array

@description('App storage account holding the dead-letter container (in this resource group).')
param storageAccountName string

@description('Blob container undeliverable events are written to.')
param deadLetterContainerName string

@description('Delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 10

@description('Minutes Event Grid keeps retrying an event before dead-lettering it.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

// The Event Grid trigger of the app (decorator name in the Python code).
var eventFunctionName = 'rotate_on_event'

var functionResourceId = resourceId('Microsoft.Web/sites/functions', functionAppName, eventFunctionName)
var storageAccountId = resourceId('Microsoft.Storage/storageAccounts', storageAccountName)

module subscriptions 'modules/vault-subscription.bicep' = [for vault in vaults: {
  name: 'evgs-${vault.name}'
  scope: resourceGroup(vault.resourceGroup)
  params: {
    systemTopicName: vault.systemTopicName
    functionResourceId: functionResourceId
    deadLetterStorageAccountId: storageAccountId
    deadLetterContainerName: deadLetterContainerName
    maxDeliveryAttempts: maxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
  }
}]

output subscriptionIds array = [for i in range(0, length(vaults)): subscriptions[i].outputs.id]
